"""What ``drx check`` finds now, without changing anything: every host reached, its key and its
sudo proven (in parallel), then — on those same connections, in parallel again — one poll of
each health entry at the active site, each readiness entry on each of its hosts, and the
rpo_probe. Nothing is journaled: a check is not a run."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from orchestrator.errors import TransportError
from orchestrator.model.inventory import Host
from orchestrator.model.templating import render
from orchestrator.plan.build import CheckPlan, Plan
from orchestrator.run import connecting
from orchestrator.run.executor import check_holds, poll_failure, render_env, run_command
from orchestrator.run.preflight import open_transports, prove
from orchestrator.transport.base import Connection, Sudo

if TYPE_CHECKING:
    import jinja2
else:
    from orchestrator.model.templating import jinja2  # imported when first used


def host_key(conn: Connection) -> str | None:
    """The SHA256 fingerprint of the key an SSH host presented (as ``ssh-keygen -l`` prints
    it), or None for a local host."""
    transport = getattr(conn, "paramiko_transport", None)
    if transport is None:
        return None
    try:
        key = transport.get_remote_server_key()
    except Exception:
        return None
    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    return f"{key.get_name()} SHA256:{digest}"


@dataclass
class HostCheck:
    """What checking one host found."""

    host: Host
    sudo: bool
    seconds: float
    error: TransportError | None = None
    key: str | None = None  # the host key's fingerprint (SSH hosts reached)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class ProbeResult:
    """One poll of a readiness entry (or the rpo_probe) on one host."""

    name: str
    host: str
    ok: bool
    rc: int | None
    value: Any
    seconds: float
    why: str = ""  # when not ok: the exit code or error and the last lines of output

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "host": self.host,
            "ok": self.ok,
            "rc": self.rc,
            "value": self.value,
            "seconds": round(self.seconds, 3),
            "why": self.why or None,
        }


@dataclass
class Findings:
    """Everything one check found."""

    hosts: list[HostCheck]
    health: list[str] | None = None  # None: the runbook has no health; else what failed
    health_s: float = 0.0
    readiness: list[ProbeResult] = field(default_factory=list)
    rpo: ProbeResult | None = None


def prove_hosts(
    hosts: Sequence[Host], sudo: Mapping[str, set[Sudo]]
) -> tuple[list[HostCheck], dict[str, Connection]]:
    """Connect to every host in parallel, check its key, run ``true`` (and ``sudo -n true`` as
    each account a step needs there); the connections that worked stay open for the checks."""
    transports = open_transports(list(hosts))

    def one(host: Host) -> tuple[HostCheck, Connection | None]:
        t0 = time.monotonic()
        needs_sudo = host.name in sudo
        try:
            as_users = sorted(sudo.get(host.name, ()), key=str)
            conn = prove(transports[host.spec.transport], host, sudo=as_users)
        except TransportError as exc:
            return HostCheck(host, needs_sudo, time.monotonic() - t0, exc), None
        return HostCheck(host, needs_sudo, time.monotonic() - t0, key=host_key(conn)), conn

    if not hosts:
        return [], {}
    connecting.raise_fd_limit(len(hosts))
    with ThreadPoolExecutor(max_workers=min(connecting.max_connecting(), len(hosts))) as pool:
        done = list(pool.map(one, hosts))
    return [c for c, _ in done], {c.host.name: conn for c, conn in done if conn is not None}


def poll(
    plan: Plan, connections: Mapping[str, Connection], cp: CheckPlan, host: Host
) -> ProbeResult:
    """One poll of a readiness entry or the rpo_probe on one host: held or not, rc, value."""
    conn = connections.get(host.name)
    step = cp.check.as_step()
    step = replace(step, timeout=max(step.timeout, 1.0))
    t0 = time.monotonic()
    if conn is None:
        return ProbeResult(step.name, host.name, False, None, None, 0.0, "host not reached")
    ctx = plan.context(host=host)
    try:
        command, env = render(step.run or "", ctx), render_env(step.env, ctx)
    except jinja2.TemplateError as exc:
        return ProbeResult(step.name, host.name, False, None, None, 0.0, f"template error: {exc}")
    res = run_command(conn, step, command, env=env, timeout=step.timeout, redact=plan.redactor)
    seconds = time.monotonic() - t0
    if res.connection_failed:
        return ProbeResult(step.name, host.name, False, None, None, seconds, res.output_tail)
    held, value = check_holds(step, ctx, res)
    why = "" if held else poll_failure(step, res, value)
    return ProbeResult(step.name, host.name, held, res.rc, value, seconds, why)


def check_now(
    plan: Plan,
    connections: Mapping[str, Connection],
    hosts: list[HostCheck],
    source_health: Callable[[Plan, Mapping[str, Connection]], list[str]],
) -> Findings:
    """Source health, every readiness entry on each of its hosts and the rpo_probe, all at
    once on the open connections."""
    found = Findings(hosts)
    jobs: list[tuple[str, CheckPlan, Host]] = [
        ("readiness", cp, h) for cp in plan.readiness for h in cp.hosts
    ]
    if plan.rpo_probe is not None:
        # several hosts: the largest value is the exposure (the worst replica)
        jobs += [("rpo", plan.rpo_probe, h) for h in plan.rpo_probe.hosts]

    def health() -> tuple[list[str], float]:
        t0 = time.monotonic()
        bad = source_health(plan, connections)
        return bad, time.monotonic() - t0

    with ThreadPoolExecutor(
        max_workers=max(1, min(connecting.DEFAULT_MAX_CONNECTING, len(jobs) + 1))
    ) as pool:
        health_job = pool.submit(health) if plan.health or plan.source_health else None
        results = list(pool.map(lambda j: poll(plan, connections, j[1], j[2]), jobs))
        if health_job is not None:
            found.health, found.health_s = health_job.result()
    probes: list[ProbeResult] = []
    for (kind, _, _), res in zip(jobs, results, strict=True):
        (found.readiness if kind == "readiness" else probes).append(res)
    if probes:
        measured = [p for p in probes if p.ok and isinstance(p.value, int | float)]
        found.rpo = max(measured, key=lambda p: p.value) if measured else probes[0]
        if measured and len(measured) < len(probes):
            found.rpo = next(p for p in probes if not p.ok)  # one unmeasured: unknown
    return found


def close(connections: Mapping[str, Connection]) -> None:
    for conn in connections.values():
        with contextlib.suppress(Exception):
            conn.close()
