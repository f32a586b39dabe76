"""What changed since a runbook was last proven, and how long its failovers took.

The proof is the last **succeeded failover** of the runbook (a drill's failover leg is one): its
summary keeps the sha256 of the runbook and inventory it ran from, and every host of the
inventory with its address and the key it presented. ``drx check`` compares the present with it
(docs/reference.md, "drx check").
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from orchestrator.record.summary import RunSummary
from orchestrator.vocab import Direction, RunStatus


@dataclass(frozen=True)
class Change:
    """One difference from the last good run: ``kind`` is runbook, inventory, host-added,
    host-removed, host-readdressed or host-key; ``subject`` the file or host it is about."""

    kind: str
    subject: str
    text: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "subject": self.subject, "text": self.text}


@dataclass(frozen=True)
class RtoStats:
    """The measured RTOs of a runbook's succeeded failovers to one site."""

    count: int = 0
    p50_s: float | None = None
    p90_s: float | None = None
    max_s: float | None = None
    last_s: float | None = None
    last_at: str | None = None
    last_run: str | None = None
    sum_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "p50_s": self.p50_s,
            "p90_s": self.p90_s,
            "max_s": self.max_s,
            "last_s": self.last_s,
            "last_at": self.last_at,
            "last_run": self.last_run,
        }


def proven(summaries: Iterable[RunSummary], runbook: str) -> list[RunSummary]:
    """The runbook's succeeded failovers, oldest first."""
    return [
        s
        for s in summaries
        if s.runbook == runbook
        and s.direction == Direction.FAILOVER
        and s.status == RunStatus.SUCCEEDED
    ]


def quantile(values: list[float], q: float) -> float:
    """The q-quantile with linear interpolation between the closest ranks (numpy's default),
    so that 12 drills give a p90 between the 10th and 11th fastest, not the slowest."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def rto_stats(summaries: Iterable[RunSummary], runbook: str, site: str) -> RtoStats:
    """count, p50, p90, max and the last of the measured RTOs of failovers to ``site``."""
    runs = [
        s for s in proven(summaries, runbook) if s.target == site and s.rto.measured_s is not None
    ]
    values = [float(s.rto.measured_s) for s in runs if s.rto.measured_s is not None]
    if not values:
        return RtoStats()
    last = runs[-1]
    return RtoStats(
        count=len(values),
        p50_s=round(statistics.median(values), 3),
        p90_s=round(quantile(values, 0.9), 3),
        max_s=round(max(values), 3),
        last_s=values[-1],
        last_at=last.finished_at or last.started_at,
        last_run=last.run_id,
        sum_s=round(sum(values), 3),
    )


def day(timestamp: str | None) -> str:
    """``2026-12-01`` of an ISO timestamp (the date a drill is remembered by)."""
    return (timestamp or "?")[:10]


def changes(
    last: RunSummary,
    *,
    runbook_sha256: str | None,
    inventory_sha256: str | None,
    hosts_now: Mapping[str, Mapping[str, Any]],
    keys_now: Mapping[str, str],
) -> list[Change]:
    """What differs from ``last``: the files' sha256, hosts added, removed or re-addressed,
    and host keys (only where both the run and this check saw one)."""
    since = f"since the last successful drill ({day(last.finished_at)}, run {last.run_id})"
    found: list[Change] = []
    for kind, then, now, path in (
        ("runbook", last.runbook_sha256, runbook_sha256, last.runbook_file),
        ("inventory", last.inventory_sha256, inventory_sha256, last.inventory_file),
    ):
        if then is not None and now is not None and then != now:
            found.append(Change(kind, path or kind, f"{kind} changed {since}"))
    if not last.hosts:
        return found  # recorded before hosts were: nothing to compare them with
    then_hosts = {str(h.get("name")): h for h in last.hosts}
    for name, now_h in hosts_now.items():
        was = then_hosts.get(name)
        where = f"{now_h['address']}:{now_h['port']}"
        if was is None:
            found.append(
                Change(
                    "host-added", name, f"host {name} ({where}) added to {now_h['site']} {since}"
                )
            )
        elif (was.get("address"), was.get("port")) != (now_h["address"], now_h["port"]):
            found.append(
                Change(
                    "host-readdressed",
                    name,
                    f"host {name} moved from {was.get('address')}:{was.get('port')} to "
                    f"{where} {since}",
                )
            )
        elif was.get("host_key") and name in keys_now and keys_now[name] != was["host_key"]:
            found.append(
                Change(
                    "host-key",
                    name,
                    f"host key of {name} changed {since}: was {was['host_key']}, "
                    f"now {keys_now[name]}",
                )
            )
    for name, was in then_hosts.items():
        if name not in hosts_now:
            found.append(
                Change("host-removed", name, f"host {name} ({was.get('site')}) removed {since}")
            )
    return found


def age_s(last: RunSummary, now: datetime | None = None) -> float | None:
    """Seconds since ``last`` finished."""
    stamp = last.finished_at or last.started_at
    if stamp is None:
        return None
    try:
        then = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return ((now or datetime.now(UTC)) - then).total_seconds()
