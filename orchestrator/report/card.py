"""The decision card of ``drx check SITE``: can we fail over now, how long will it take, how much
data would we lose — in one place, as text (top of the check) and as JSON
(docs/reference.md, "drx check")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from orchestrator.record.drift import Change, RtoStats, day
from orchestrator.report.units import DASH, nbytes, secs


@dataclass
class RpoExposure:
    """The data at risk now, from the rpo_probe: seconds or bytes, as rpo_target."""

    unit: str  # "bytes" | "seconds"
    value: float | None  # None: the probe failed (unknown)
    target: float | None
    host: str | None = None
    why: str | None = None

    @property
    def within_target(self) -> bool | None:
        if self.value is None or self.target is None:
            return None
        return self.value <= self.target

    def show(self, value: float | None) -> str:
        if value is None:
            return "unknown"
        return nbytes(value) if self.unit == "bytes" else secs(value)

    def to_dict(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "value": self.value,
            "target": self.target,
            "within_target": self.within_target,
            "host": self.host,
            "why": self.why,
        }


@dataclass
class Card:
    """What the card says; ``problems`` make it not ready, ``warnings`` do not."""

    runbook: str
    site: str
    active: str
    predicted_rto_s: float
    predicted_rto_is_lower_bound: bool
    critical_path: list[str]
    rto_target_s: float | None
    measured: RtoStats
    rpo: RpoExposure | None
    health_ok: bool | None  # None: the runbook has no health
    readiness_ok: int
    readiness_total: int
    last_success: str | None  # run id
    last_success_at: str | None
    drill_every_s: float | None
    overdue: bool
    drift: list[Change]
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0  # how long the whole check took

    @property
    def ready(self) -> bool:
        return not self.problems

    def expect(self) -> str:
        """'expect 1.1 s (p90 1.4 s over 12 drills)'."""
        at_least = "at least " if self.predicted_rto_is_lower_bound else ""
        text = f"expect {at_least}{secs(self.predicted_rto_s)}"
        m = self.measured
        if m.count:
            drills = "drill" if m.count == 1 else "drills"
            text += f" (p90 {secs(m.p90_s)} over {m.count} {drills})"
        else:
            text += " (no drill to SITE yet)".replace("SITE", self.site)
        return text

    def verdict(self) -> str:
        """The card in one line."""
        if not self.ready:
            first = self.problems[0]
            more = f" (+{len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
            return f"NOT READY: {first}{more}"
        parts = [f"ready: {self.expect()}"]
        if self.rpo is not None:
            over = self.rpo.within_target is False
            parts.append(
                f"RPO exposure {self.rpo.show(self.rpo.value)}"
                + (f" (over the {self.rpo.show(self.rpo.target)} target)" if over else "")
            )
        if self.drift:
            n = len(self.drift)
            parts.append(f"{n} change{'s' if n > 1 else ''} since the last successful drill")
        if self.overdue:
            parts.append("drill overdue")
        return "; ".join(parts)

    def lines(self) -> list[str]:
        """The card as text: one labelled line each."""
        m = self.measured
        path = " → ".join(self.critical_path) or DASH
        target = f" (target {secs(self.rto_target_s)})" if self.rto_target_s is not None else ""
        at_least = "≥ " if self.predicted_rto_is_lower_bound else ""
        rows = [
            ("verdict", self.verdict()),
            ("predicted RTO", f"{at_least}{secs(self.predicted_rto_s)}{target} via {path}"),
        ]
        if m.count:
            rows.append(
                (
                    "measured RTO",
                    f"{m.count} failover{'s' if m.count > 1 else ''} to {self.site}: "
                    f"p50 {secs(m.p50_s)} · p90 {secs(m.p90_s)} · max {secs(m.max_s)} · "
                    f"last {secs(m.last_s)} ({day(m.last_at)}, run {m.last_run})",
                )
            )
        else:
            rows.append(("measured RTO", f"no succeeded failover to {self.site} yet"))
        if self.rpo is not None:
            r = self.rpo
            text = f"{r.show(r.value)} now"
            if r.target is not None:
                text += f" (target {r.show(r.target)})"
            if r.host:
                text += f" from {r.host}"
            if r.value is None and r.why:
                text += f": {r.why}"
            rows.append(("RPO exposure", text))
        if self.health_ok is not None:
            rows.append(
                ("source health", f"{'ok' if self.health_ok else 'FAILING'} at {self.active}")
            )
        if self.readiness_total:
            rows.append(("readiness", f"{self.readiness_ok}/{self.readiness_total} ok"))
        rows.append(("last proven", self._last_proven()))
        if self.drift:
            rows.extend(("drift", c.text) for c in self.drift)
        elif self.last_success:
            rows.append(("drift", "none since the last successful drill"))
        rows.append(("checked in", secs(self.seconds)))
        width = max(len(k) for k, _ in rows)
        head = f"drx check {self.site}: runbook {self.runbook}, {self.active} active"
        return [head] + [f"  {k.ljust(width)}  {v}" for k, v in rows]

    def _last_proven(self) -> str:
        every = (
            f"; drill every {interval(self.drill_every_s)}"
            if self.drill_every_s is not None
            else ""
        )
        if self.last_success is None:
            due = ": OVERDUE" if self.overdue else ""
            return f"never (no succeeded failover of {self.runbook}){every}{due}"
        text = f"{day(self.last_success_at)} (run {self.last_success}){every}"
        return text + (": OVERDUE" if self.overdue else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict(),
            "ready": self.ready,
            "predicted_rto_s": self.predicted_rto_s,
            "predicted_rto_is_lower_bound": self.predicted_rto_is_lower_bound,
            "critical_path": self.critical_path,
            "rto_target_s": self.rto_target_s,
            "measured_rto": self.measured.to_dict(),
            "rpo_exposure": self.rpo.to_dict() if self.rpo else None,
            "source_health_ok": self.health_ok,
            "readiness": {"ok": self.readiness_ok, "total": self.readiness_total},
        }


def interval(seconds: float | None) -> str:
    """A drill interval as people say it: '90d', '12h'."""
    if seconds is None:
        return DASH
    if seconds >= 86400 and seconds % 86400 == 0:
        return f"{int(seconds // 86400)}d"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    return secs(seconds)
