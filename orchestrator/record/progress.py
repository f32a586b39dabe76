"""A run that is still running, read back: how long it has been going, how far its RTO clock
has run, and the RTO its plan projects (the figure the live view shows: elapsed plus the
heaviest predicted path through the steps not finished yet, plus the predicted health wait)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from orchestrator.record.journal import utc_iso
from orchestrator.vocab import StepStatus

if TYPE_CHECKING:
    from orchestrator.record.store import PlanRecord


@dataclass(frozen=True)
class Progress:
    """Where a running run stands at ``as_of`` (summary.json's ``progress``)."""

    as_of: str
    elapsed_s: float | None  # since the run started
    rto_elapsed_s: float | None  # since the RTO clock started (None: no step started yet)
    projected_rto_s: float | None  # None: the plan has no prediction

    def to_dict(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of,
            "elapsed_s": self.elapsed_s,
            "rto_elapsed_s": self.rto_elapsed_s,
            "projected_rto_s": self.projected_rto_s,
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Progress:
        def num(key: str) -> float | None:
            value = doc.get(key)
            if isinstance(value, bool) or not isinstance(value, int | float):
                return None
            return float(value)

        return cls(str(doc.get("as_of") or ""), *(num(k) for k in _FIGURES))


_FIGURES = ("elapsed_s", "rto_elapsed_s", "projected_rto_s")


def _seconds_since(ts: str | None, now: float) -> float | None:
    if not ts:
        return None
    try:
        then = datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
    return round(max(0.0, now - then), 3)


def progress(
    started_at: str | None,
    rto_started_at: str | None,
    steps: Mapping[str, tuple[str, str | None]],
    plan: PlanRecord | None,
    now: float,
) -> Progress:
    """Where a running run stands at ``now`` (epoch seconds). ``steps``: each step's status and
    start time as the journal has them so far; ``plan``: its plan.json (predictions)."""
    rto_elapsed = _seconds_since(rto_started_at, now)
    projected = None
    predicted = {s.id: s for s in plan.steps} if plan is not None else {}
    if rto_elapsed is not None and any(s.predicted_s for s in predicted.values()):
        memo: dict[str, float] = {}

        def weight(sid: str) -> float:
            status, started = steps.get(sid, (StepStatus.NOT_RUN, None))
            if status not in (StepStatus.NOT_RUN, StepStatus.RUNNING, StepStatus.UNKNOWN):
                return 0.0
            guess = predicted[sid].predicted_s or 0.0
            ran = (
                _seconds_since(started, now)
                if status in (StepStatus.RUNNING, StepStatus.UNKNOWN)
                else None
            )
            return max(0.0, guess - (ran or 0.0))

        def heaviest(sid: str, seen: frozenset[str] = frozenset()) -> float:
            if sid not in memo:
                needs = [n for n in predicted[sid].needs if n in predicted]
                before = max(
                    (heaviest(n, seen | {sid}) for n in needs if n not in seen), default=0.0
                )
                memo[sid] = before + weight(sid)
            return memo[sid]

        remaining = max((heaviest(sid) for sid in predicted), default=0.0)
        health = plan.predicted_health_s if plan is not None else None
        if health is not None:
            remaining += health
        projected = round(rto_elapsed + remaining, 3)
    return Progress(utc_iso(now), _seconds_since(started_at, now), rto_elapsed, projected)
