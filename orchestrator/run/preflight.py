"""The pre-flight: one connection to every host of a plan, opened in parallel, each proven by
running one command. It can start in the background while the rest of the engine loads."""

from __future__ import annotations

import contextlib
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from orchestrator.errors import TransportError
from orchestrator.model.inventory import Host
from orchestrator.plan.build import Plan
from orchestrator.transport import open_transport
from orchestrator.transport.base import Connection

#: at most this many connections are opened at once at the pre-flight
PREFLIGHT_CONCURRENCY = 64

Connected = tuple[dict[str, Connection], dict[str, TransportError]]


def connect_all(hosts: list[Host]) -> tuple[dict[str, Connection], dict[str, TransportError]]:
    """Open one connection to every host, in parallel (the pre-flight)."""
    transports: dict[str, Any] = {}
    for h in hosts:
        kind = h.spec.transport
        if kind not in transports:
            transports[kind] = open_transport(kind)

    def connect(host: Host) -> tuple[str, Connection | TransportError]:
        try:
            conn = transports[host.spec.transport].connect(host.spec)
        except TransportError as exc:
            return host.name, exc
        # One command now proves the host can run commands, and takes the first session's
        # set-up cost (tens of ms over SSH) out of the measured RTO.
        try:
            res = conn.run("true", timeout=max(host.spec.connect_timeout, 1.0))
        except TransportError as exc:
            conn.close()
            return host.name, exc
        if not res.ok:
            conn.close()
            return host.name, TransportError(
                host.name, f"cannot run commands (rc={res.rc}, {res.error or res.output_tail})"
            )
        return host.name, conn

    connections: dict[str, Connection] = {}
    failures: dict[str, TransportError] = {}
    if not hosts:
        return connections, failures
    with ThreadPoolExecutor(max_workers=min(PREFLIGHT_CONCURRENCY, len(hosts))) as pool:
        for name, result in pool.map(connect, hosts):
            if isinstance(result, TransportError):
                failures[name] = result
            else:
                connections[name] = result
    return connections, failures


def start(plan: Plan) -> Future[Connected]:
    """Begin the pre-flight of ``plan`` on a background thread."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="preflight")
    future = pool.submit(connect_all, plan.hosts())
    pool.shutdown(wait=False)
    return future


def close_all(connections: dict[str, Connection]) -> None:
    for conn in connections.values():
        # closing must not hide the run's outcome
        with contextlib.suppress(Exception):
            conn.close()
