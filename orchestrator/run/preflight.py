"""The pre-flight: one connection to every host of a plan, opened in parallel, each proven by
running one command. It can start in the background while the rest of the engine loads."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from orchestrator.errors import AuthenticationFailed, HostKeyError, TransportError
from orchestrator.model.inventory import Host, Inventory
from orchestrator.plan.build import Plan
from orchestrator.run import connecting
from orchestrator.transport import open_transport
from orchestrator.transport.base import Connection, Sudo, Transport
from orchestrator.transport.spool import SPOOL_REFUSED_RC, SpoolKey, check_program, ssh_dir

#: at most this many connections are opened at once at the pre-flight, unless
#: DRX_MAX_CONNECTING says otherwise (connecting.max_connecting)
PREFLIGHT_CONCURRENCY = connecting.DEFAULT_MAX_CONNECTING
#: the most bytes of first-attempt directory names the pre-flight creates on one host
FIRST_ATTEMPTS_MAX = 64 * 1024
#: how many spooled commands a polling check counts as when a connection picks how to start them
SPOOLED_POLLS = 10
#: how long the pre-flight waits, at most, for the starters it started (transport/starter.py)
STARTER_WARM_S = 2.0

Connected = tuple[dict[str, Connection], dict[str, TransportError]]
#: gives the transport of a kind of host ("ssh", "local"); tests and benchmarks pass a fake
TransportFactory = Callable[[str], Transport]


def prove(
    transport: Transport,
    host: Host,
    *,
    sudo: Sequence[Sudo] = (),
    spool_dirs: Sequence[str] = (),
    spooled: int = 0,
) -> Connection:
    """Open a connection to ``host`` and prove it can run commands (and ``sudo -n`` as each of
    ``sudo``: True for root, or a user name);
    raise TransportError naming what failed. One command now also takes the first session's
    set-up cost (tens of ms over SSH) out of the measured RTO; over SSH it is the spool's check,
    which also creates ``spool_dirs`` (shell words: the run's first attempts on the host).

    ``spooled``: the spooled commands the run has for the host. A connection that runs
    enough of them through a starter on the host (``expect_spooled``) has it started here,
    once the host is proven (``connect_all`` waits for it)."""
    conn: Connection = connecting.connect(transport, host.spec)
    try:
        timeout = max(host.spec.connect_timeout, 1.0)
        # over SSH the proving command is the spool's check: no extra round trip
        ssh = host.spec.transport == "ssh"
        res = conn.run(
            check_program(ssh_dir(None, host.spec.spool_dir), spool_dirs) if ssh else "true",
            timeout=timeout,
        )
        if ssh and res.rc == SPOOL_REFUSED_RC:
            raise SpoolRefused(
                host.name,
                f"spool refused: {res.stdout.strip()}; drx will not run commands through it "
                "(make it the login user's, mode 0700, or remove it)",
            )
        if not res.ok:
            raise TransportError(
                host.name, f"cannot run commands (rc={res.rc}, {res.error or res.output_tail})"
            )
        for as_user in sudo:
            res = conn.run("true", timeout=timeout, sudo=as_user)
            if not res.ok:
                tail = " | ".join(res.output_tail.strip().splitlines()[-2:])
                who = f" -u {as_user}" if isinstance(as_user, str) else ""
                target = f"as {as_user}" if isinstance(as_user, str) else "as root"
                raise SudoRefused(
                    host.name,
                    f"sudo -n{who} true failed (rc={res.rc}{', ' + tail if tail else ''}); a "
                    f"step on this host uses sudo: allow {host.spec.user} passwordless sudo "
                    f"{target} there",
                )
        # a starter, if it is worth one, starts now (after the check: a server allowing one
        # session at a time sees one at a time); connect_all waits for it
        expect = getattr(conn, "expect_spooled", None) if spooled else None
        if expect is not None:
            expect(spooled)
    except BaseException:
        conn.close()
        raise
    return conn


class SpoolRefused(TransportError):
    """The host's spool directory is not safe to use (another owner, writable by others, a
    symlink)."""

    error = "spool"


class SudoRefused(TransportError):
    """The host runs commands, but not through ``sudo -n``."""

    error = "sudo"


def open_transports(
    hosts: list[Host], factory: TransportFactory = open_transport
) -> dict[str, Transport]:
    """One transport object per kind the hosts use."""
    transports: dict[str, Transport] = {}
    for h in hosts:
        if h.spec.transport not in transports:
            transports[h.spec.transport] = factory(h.spec.transport)
    return transports


def connect_all(
    hosts: list[Host],
    factory: TransportFactory = open_transport,
    spool_dirs: Mapping[str, Sequence[str]] | None = None,
    spooled: Mapping[str, int] | None = None,
) -> tuple[dict[str, Connection], dict[str, TransportError]]:
    """Open one connection to every host, in parallel (the pre-flight); ``spool_dirs``: the
    spool directories to create on each, ``spooled``: how many spooled commands each will
    run (by host name, see ``prove``). The starters this starts are waited for at the end,
    STARTER_WARM_S at most for all: their start-up (python3 on the host) is paid before the
    run's first step, not inside the measured RTO, and set-ups are not held back by it."""
    transports = open_transports(hosts, factory)
    dirs = spool_dirs or {}
    counts = spooled or {}

    def connect(host: Host) -> tuple[str, Connection | TransportError]:
        try:
            transport = transports[host.spec.transport]
            return host.name, prove(
                transport,
                host,
                spool_dirs=dirs.get(host.name, ()),
                spooled=counts.get(host.name, 0),
            )
        except TransportError as exc:
            return host.name, exc

    connections: dict[str, Connection] = {}
    failures: dict[str, TransportError] = {}
    if not hosts:
        return connections, failures
    connecting.raise_fd_limit(len(hosts))
    with ThreadPoolExecutor(max_workers=min(connecting.max_connecting(), len(hosts))) as pool:
        for name, result in pool.map(connect, hosts):
            if isinstance(result, TransportError):
                failures[name] = result
            else:
                connections[name] = result
    _warm(connections, counts)
    return connections, failures


def _warm(connections: Mapping[str, Connection], spooled: Mapping[str, int]) -> None:
    """Wait for the starters of ``connections`` (STARTER_WARM_S at most, for all together).
    One that is not ready by then is used once it is, the wrapper until then."""
    deadline = time.monotonic() + STARTER_WARM_S
    for name, conn in connections.items():
        expect = getattr(conn, "expect_spooled", None) if spooled.get(name) else None
        if expect is not None:
            expect(spooled[name], wait_s=max(0.0, deadline - time.monotonic()))


def login(host: Host) -> str:
    """How drx reaches ``host``: ``user@address:port`` (and the bastion), or ``local``."""
    spec = host.spec
    if spec.transport != "ssh":
        return "local"
    text = f"{spec.user}@{spec.address}:{spec.port}"
    return text + (f" via {spec.proxy_jump}" if spec.proxy_jump else "")


def cause(exc: TransportError, host: Host) -> str:
    """What went wrong, without the host's name and address (the line names them)."""
    text = str(exc)
    for prefix in (f"{exc.host}: ", f"{host.spec.address}:{host.spec.port}: "):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    return text


def _hint(exc: TransportError, host: Host) -> str | None:
    text = str(exc)
    spec = host.spec
    if isinstance(exc, HostKeyError) and "changed" in text:
        known = spec.known_hosts or "~/.ssh/known_hosts"
        where = spec.address if spec.port == 22 else f"[{spec.address}]:{spec.port}"
        return (
            f"if {host.name} was rebuilt, check its new key and run: "
            f"ssh-keygen -R '{where}' -f {known}"
        )
    if isinstance(exc, AuthenticationFailed):
        key = f" -i {spec.identity_file}" if spec.identity_file else ""
        return (
            f"check user and identity_file: ssh{key} -p {spec.port} {spec.user}@{spec.address} true"
        )
    if "connection refused" in text:
        return "is sshd running there, on that port?"
    if "timed out" in text or "no SSH handshake" in text:
        return "wrong address, a firewall, or a hung host?"
    return None


def failure_lines(failures: Mapping[str, TransportError], inventory: Inventory) -> list[str]:
    """One line per problem, naming each host with its user, address and port; hosts that
    failed the same way share a line."""
    groups: dict[str, list[tuple[Host, TransportError]]] = {}
    for name, exc in failures.items():
        host = inventory.host(name)
        groups.setdefault(cause(exc, host), []).append((host, exc))
    lines = []
    for text, members in groups.items():
        who = ", ".join(f"{h.name} ({login(h)})" for h, _ in members)
        hints = {_hint(exc, h) for h, exc in members} - {None}
        line = f"{who}: {text}"
        if len(hints) == 1:
            line += f" — {hints.pop()}"
        lines.append(line)
    return lines


def first_attempts(plan: Plan) -> dict[str, list[str]]:
    """The spool directories (shell words) of the first attempts ``plan`` will spool on each SSH
    host: created by the pre-flight's check, so that no command needs a ``mkdir`` of its own.
    A check that polls is left out (its polls are answered at once), as is a host with so many
    that their names would make too long a command."""
    if not plan.run_id:
        return {}
    dirs: dict[str, list[str]] = {}
    for ps, host, polls in plan.commands():
        if not polls and host.spec.transport == "ssh":
            key = SpoolKey(plan.run_id, ps.id, host.name, "1")
            dirs.setdefault(host.name, []).append(ssh_dir(key, host.spec.spool_dir))
    return {
        name: words for name, words in dirs.items() if sum(map(len, words)) <= FIRST_ATTEMPTS_MAX
    }


def spooled_counts(plan: Plan) -> dict[str, int]:
    """How many spooled commands ``plan`` runs on each host (a check that polls counts as
    SPOOLED_POLLS): what a connection picks its way of starting them by."""
    counts: dict[str, int] = {}
    for _, host, polls in plan.commands():
        counts[host.name] = counts.get(host.name, 0) + (SPOOLED_POLLS if polls else 1)
    return counts


def start(plan: Plan, factory: TransportFactory = open_transport) -> Future[Connected]:
    """Begin the pre-flight of ``plan`` on a background thread."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="preflight")
    spooled = spooled_counts(plan) if plan.run_id else None
    future = pool.submit(connect_all, plan.hosts(), factory, first_attempts(plan), spooled)
    pool.shutdown(wait=False)
    return future


def close_all(connections: dict[str, Connection]) -> None:
    """Close every connection, several at once (each waits for its transport's thread)."""

    def close(conn: Connection) -> None:
        with contextlib.suppress(Exception):  # closing must not hide the run's outcome
            conn.close()

    if len(connections) < 4:
        for conn in connections.values():
            close(conn)
        return
    with ThreadPoolExecutor(max_workers=min(16, len(connections))) as pool:
        list(pool.map(close, connections.values()))
