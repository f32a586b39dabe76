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
from orchestrator.record.events import HostFinished, HostStarted, JournalEvent
from orchestrator.transport import open_transport
from orchestrator.transport.base import Connection
from orchestrator.transport.spool import SpoolKey, probe_program, ssh_dir

#: how long the probe of one host may take (connect and one command)
PROBE_TIMEOUT_S = 15.0


class Found(Enum):
    """What is known of one in-flight host attempt."""

    JOURNAL = "journal"  # it finished and the journal says how
    ENDED = "ended"  # the spool holds its rc and output
    LIVE = "live"  # its command still runs on the host
    NOTHING = "nothing"  # no trace: outcome unknown


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


def _quote(path: Path) -> str:
    import shlex

    return shlex.quote(str(path))


def unresolved(recoveries: Mapping[tuple[str, str], Recovery], step: str) -> list[Recovery]:
    """The hosts of ``step`` whose outcome nothing tells (they need a re-run to be known)."""
    return [r for r in recoveries.values() if r.step == step and r.found is Found.NOTHING]
