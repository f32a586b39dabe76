"""What the steps a crashed run had in flight left on their hosts: read from the journal (hosts
that finished) and from each host's spool (commands that ended, or still run, while no
controller watched them), so that ``drx resume`` and a takeover re-run nothing whose outcome
can be known. See docs/reference.md (The host-side spool)."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any

from orchestrator.errors import TransportError
from orchestrator.model.inventory import Inventory
from orchestrator.model.siteplan import MAX_DEPTH
from orchestrator.record.events import HostFinished, HostStarted, JournalEvent
from orchestrator.transport import open_transport
from orchestrator.transport.base import Connection
from orchestrator.transport.spool import (
    FENCE,
    SpoolKey,
    check_program,
    fence_program,
    probe_program,
    ssh_dir,
)

#: how long the probe of one host may take (connect and one command)
PROBE_TIMEOUT_S = 15.0


class Found(Enum):
    """What is known of one in-flight host attempt."""

    JOURNAL = "journal"  # it finished and the journal says how
    ENDED = "ended"  # the spool holds its rc and output
    LIVE = "live"  # its command still runs on the host
    NOTHING = "nothing"  # no trace: outcome unknown
    #: started (the host's spool says so; the journal never got its start), but neither
    #: ended nor running: outcome unknown; a resume refuses unless asked (--rerun-inflight)
    STARTED = "started"


@dataclass(frozen=True)
class Recovery:
    """One host of a step the resumed run had in flight."""

    step: str
    host: str
    attempt: int
    key: SpoolKey
    started_at: float | None = None  # wall clock (epoch s) the attempt started
    found: Found = Found.NOTHING
    rc: int | None = None
    finished: HostFinished | None = None  # the journal's host_finished event
    why: str = ""  # why nothing was found (an unreachable host...)

    def left_s(self, timeout: float, now: float) -> float:
        """What remains of ``timeout`` for this attempt at wall time ``now``."""
        if self.started_at is None:
            return timeout
        return timeout - (now - self.started_at)


def _epoch(ts: Any) -> float | None:
    try:
        return datetime.datetime.fromisoformat(str(ts).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def in_flight(
    events: Iterable[JournalEvent],
    run_id: str,
    steps: Iterable[str],
    spool_root: Path | None,
) -> dict[tuple[str, str], Recovery]:
    """Every host attempt of ``steps`` (the in-flight ones) in ``run_id``'s journal: its last
    attempt, finished (``JOURNAL``) or not (to be probed)."""
    wanted = set(steps)
    found: dict[tuple[str, str], Recovery] = {}
    for e in events:
        if isinstance(e, HostStarted) and e.step in wanted and e.host:
            key = SpoolKey(run_id, e.step, e.host, str(e.attempt), spool_root)
            found[(e.step, e.host)] = Recovery(e.step, e.host, e.attempt, key, _epoch(e.ts))
        elif isinstance(e, HostFinished) and (e.step, e.host) in found:
            found[(e.step, e.host)] = replace(
                found[(e.step, e.host)], found=Found.JOURNAL, finished=e
            )
    return found


def _parse(rec: Recovery, text: str) -> Recovery:
    words = text.split()
    if words[:1] == ["rc"] and len(words) >= 2 and words[1].lstrip("-").isdigit():
        return replace(rec, found=Found.ENDED, rc=int(words[1]))
    if words[:1] == ["live"]:
        return replace(rec, found=Found.LIVE)
    return replace(rec, found=Found.NOTHING, why="nothing in the host's spool")


def probe(
    recoveries: Mapping[tuple[str, str], Recovery], inventory: Inventory
) -> dict[tuple[str, str], Recovery]:
    """Ask each host what its spool holds for the unfinished attempts (one connection per
    host, in parallel); hosts that cannot be reached leave their attempts ``NOTHING``."""
    by_host: dict[str, list[Recovery]] = {}
    for rec in recoveries.values():
        if rec.found is not Found.JOURNAL:
            by_host.setdefault(rec.host, []).append(rec)
    out = dict(recoveries)

    def ask(host_name: str) -> list[Recovery]:
        recs = by_host[host_name]
        try:
            spec = inventory.host(host_name).spec
        except KeyError:
            return [replace(r, why="not in the inventory") for r in recs]
        conn: Connection | None = None
        try:
            conn = open_transport(spec.transport).connect(spec)
            answers = []
            for rec in recs:
                if spec.transport == "ssh":
                    where = ssh_dir(rec.key, spec.spool_dir)
                else:
                    where = _quote(rec.key.local_dir())
                res = conn.run(probe_program(where), timeout=PROBE_TIMEOUT_S)
                answers.append(
                    _parse(rec, res.stdout) if res.ok else replace(rec, why="probe failed")
                )
            return answers
        except (TransportError, OSError, ValueError) as exc:
            return [replace(r, why=f"host not reachable: {exc}") for r in recs]
        finally:
            if conn is not None:
                conn.close()

    if by_host:
        with ThreadPoolExecutor(max_workers=min(16, len(by_host))) as pool:
            for answers in pool.map(ask, list(by_host)):
                for rec in answers:
                    out[(rec.step, rec.host)] = rec
    return out


#: how long fencing one host may take: its command, and the wait for attempts caught claiming
FENCE_TIMEOUT_S = 30.0


def fence(
    run_id: str,
    connections: Mapping[str, Connection],
    spool_root: Path,
    known: Mapping[tuple[str, str], Recovery],
    events: Iterable[JournalEvent] = (),
    *,
    rerun: bool = False,
) -> dict[tuple[str, str], Recovery]:
    """Fence ``run_id`` off on every host of ``connections`` (a run taking it over), and add to
    ``known`` (what its journal and the probe said) the attempts its journal never heard of:
    started on a host in the run's last moments, their ``host_started`` lost with its
    controller (see ``spool.fence_program``). Each is ``ENDED`` or ``LIVE`` (taken or followed
    as a recorded one), or ``STARTED`` (outcome lost; ``NOTHING``, to be run again, with
    ``rerun``). A check's polls are left out: they may run again. One command a host, in
    parallel; a host that cannot answer raises ``TransportError`` — the run cannot know what
    started there. ``events``: the run's journal (an attempt it has a ``host_started`` of is
    ``known``'s business, or over)."""
    out = dict(known)
    recorded = _recorded(events)
    if connections:
        with ThreadPoolExecutor(max_workers=min(16, len(connections))) as pool:
            asked = pool.map(
                lambda name: _fence_one(connections[name], run_id, spool_root, rerun),
                list(connections),
            )
            for found in asked:
                for rec in found:
                    at = (rec.step, rec.host)
                    before = out.get(at)
                    if _newer(rec, before, recorded.get(at, 0)):
                        out[at] = rec
    return out


def _newer(rec: Recovery, before: Recovery | None, recorded: int) -> bool:
    """Whether the fence's ``rec`` tells more than ``before`` (what the journal, and the
    probe before the fence, said of that step on that host): an attempt the journal never
    heard of, or a recorded one the probe found no trace of (its start came after the probe,
    before the fence)."""
    if before is None or before.attempt < rec.attempt:
        return rec.attempt > recorded
    return before.found is Found.NOTHING and before.attempt == rec.attempt


def _recorded(events: Iterable[JournalEvent]) -> dict[tuple[str, str], int]:
    """The last attempt a journal has a ``host_started`` of, for each step and host."""
    recorded: dict[tuple[str, str], int] = {}
    for e in events:
        if isinstance(e, HostStarted) and e.host:
            recorded[(e.step, e.host)] = max(e.attempt, recorded.get((e.step, e.host), 0))
    return recorded


def _fence_one(
    conn: Connection, run_id: str, spool_root: Path, rerun: bool, *, checked: bool = False
) -> list[Recovery]:
    """Fence ``run_id`` off on ``conn``'s host: its attempts that had started there
    (``checked``: first check the spool as the pre-flight does, on a connection that had none)."""
    spec = conn.host
    if spec.transport == "ssh":
        where = ssh_dir(None, f"{spec.spool_dir.rstrip('/')}/{run_id}")
    elif spec.transport == "local":
        where = _quote(spool_root / run_id)
    else:
        return []  # no spool on the host
    program = fence_program(where, spec.name, MAX_DEPTH + 1)
    if checked and spec.transport == "ssh":  # the spool refused as the pre-flight does
        program = check_program(ssh_dir(None, spec.spool_dir)) + program
    res = conn.run(program, timeout=FENCE_TIMEOUT_S)
    if not res.ok:
        raise TransportError(
            spec.name, f"cannot fence run {run_id} off ({res.error or res.output_tail.strip()})"
        )
    lines = res.stdout.splitlines()
    return [r for line in lines if (r := _claimed(line, run_id, spec.name, spool_root, rerun))]


def unrecorded_starts(
    run_id: str,
    inventory: Inventory,
    hosts: Iterable[str],
    spool_root: Path,
    events: Iterable[JournalEvent],
) -> tuple[dict[str, list[Recovery]], dict[str, str]]:
    """For a run that stopped without its end (crashed): fence it off on ``hosts`` and return
    the steps it had started there that its journal never heard of (by step), and the hosts
    that could not be asked (name: why). What a failback of such a run needs to know: those
    steps may have changed things."""
    recorded = _recorded(events)
    names = sorted(set(hosts))

    def ask(name: str) -> list[Recovery] | str:
        conn: Connection | None = None
        try:
            spec = inventory.host(name).spec
            conn = open_transport(spec.transport).connect(spec)
            return _fence_one(conn, run_id, spool_root, rerun=False, checked=True)
        except (TransportError, OSError, ValueError, KeyError) as exc:
            return str(exc)
        finally:
            if conn is not None:
                conn.close()

    steps: dict[str, list[Recovery]] = {}
    failed: dict[str, str] = {}
    if names:
        with ThreadPoolExecutor(max_workers=min(16, len(names))) as pool:
            for name, found in zip(names, pool.map(ask, names), strict=True):
                if isinstance(found, str):
                    failed[name] = found
                    continue
                for rec in sorted(found, key=lambda r: r.attempt):  # the last one counts
                    if rec.attempt > recorded.get((rec.step, rec.host), 0):
                        steps.setdefault(rec.step, []).append(rec)
    return steps, failed


def _claimed(line: str, run_id: str, host: str, root: Path, rerun: bool) -> Recovery | None:
    """One line of ``fence_program``'s answer as a Recovery (None: a poll, or not this
    host's)."""
    where, _, what = line.partition(" ")
    step, name, attempt = [*where.rsplit("/", 2), "", ""][:3]
    if name != host or not attempt.isdigit() or not step or FENCE in step:
        return None
    rec = _parse(
        Recovery(step, host, int(attempt), SpoolKey(run_id, step, host, attempt, root)), what
    )
    if rec.found is not Found.NOTHING:
        return rec
    why = "started, but neither ended nor running on the host"
    return replace(rec, found=Found.NOTHING if rerun else Found.STARTED, why=why)


def _quote(path: Path) -> str:
    import shlex

    return shlex.quote(str(path))


def unresolved(recoveries: Mapping[tuple[str, str], Recovery], step: str) -> list[Recovery]:
    """The hosts of ``step`` whose outcome nothing tells (they need a re-run to be known)."""
    return [r for r in recoveries.values() if r.step == step and r.found is Found.NOTHING]
