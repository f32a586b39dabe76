"""What the reports draw, computed from the run's one summary model (``record/summary.py``).

Reports are asked to render summaries written by other versions of drx, by runs that crashed, and
by hand; ``RunSummary.from_dict`` reads them tolerantly. What an older summary lacks for drawing a
timeline — a step's offset from the RTO start, per-host attempts — is reconstructed here from what
is there (timestamps, host durations), on a copy: the summary itself is never changed.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from orchestrator.model.units import parse_when
from orchestrator.record.summary import AttemptRecord, HostRecord, RunSummary, StepRecord
from orchestrator.vocab import StepStatus

# How a host attempt ended, as drawn and counted by the reports.
ATTEMPT_OUTCOMES = ("ok", "failed", "timeout", "cancelled", "unknown", "skipped")

_STATUS_TO_OUTCOME: dict[str, str] = {
    StepStatus.SUCCEEDED: "ok",
    StepStatus.FAILED: "failed",
    StepStatus.CANCELLED: "cancelled",
    StepStatus.UNKNOWN: "unknown",
    StepStatus.SKIPPED: "skipped",
    StepStatus.NOT_RUN: "skipped",
    StepStatus.RUNNING: "running",  # a run still running, read back
}


def _since(base: datetime | None, when: str | None) -> float | None:
    moment = parse_when(when)
    if base is None or moment is None:
        return None
    return (moment - base).total_seconds()


def attempt_outcome(host: HostRecord, attempt: AttemptRecord) -> str:
    """How one attempt ended: from its rc/error, else (its last) from the host's status."""
    if attempt.error == "timeout":
        return "timeout"
    if attempt.error in (StepStatus.CANCELLED, StepStatus.UNKNOWN):
        return attempt.error
    if attempt.error:
        return "failed"
    if attempt.rc is not None:
        return "ok" if attempt.rc == 0 else "failed"
    if attempt is not host.attempts[-1]:
        # A later attempt exists, so this one cannot have succeeded.
        return "failed"
    return _STATUS_TO_OUTCOME.get(host.status, "unknown")


def _time_base(summary: RunSummary) -> datetime | None:
    """The moment offsets count from: the RTO start, else the first step's start, else the run's."""
    explicit = parse_when(summary.rto_started_at)
    if explicit is not None:
        return explicit
    starts = [parse_when(s.started_at) for s in summary.steps if not s.carried_from]
    known = [moment for moment in starts if moment is not None]
    if known:
        return min(known)
    return parse_when(summary.started_at)


def _attempts(host: HostRecord, offset: float | None, base: datetime | None) -> list[AttemptRecord]:
    if not host.attempts:
        # Older summaries record one result per host: draw it as a single attempt.
        return [AttemptRecord(1, None, None, offset, host.duration_s, host.rc, host.error)]
    attempts = []
    for position, attempt in enumerate(host.attempts):
        start = attempt.start_offset_s
        if start is None:
            start = _since(base, attempt.started_at)
        if start is None and position == 0:
            start = offset
        duration = attempt.duration_s
        if duration is None:
            duration = _since(parse_when(attempt.started_at), attempt.finished_at)
        attempts.append(
            replace(attempt, n=attempt.n or position + 1, start_offset_s=start, duration_s=duration)
        )
    return attempts


def _step(step: StepRecord, base: datetime | None) -> StepRecord:
    offset = step.start_offset_s
    if offset is None and step.carried_from is None:
        # An older summary: derive the offset from the wall clock. A carried step ran in an
        # earlier run, so its timestamps say nothing about this run's timeline.
        offset = _since(base, step.started_at)
    duration = step.duration_s
    if duration is None:
        duration = _since(parse_when(step.started_at), step.finished_at)
    own = None if step.carried_from else base
    hosts = [replace(h, attempts=_attempts(h, offset, own)) for h in step.hosts]
    return replace(step, start_offset_s=offset, duration_s=duration, hosts=hosts)


def for_report(summary: RunSummary) -> RunSummary:
    """The summary with every offset and attempt a timeline needs, on a copy."""
    base = _time_base(summary)
    health = summary.health
    if health is not None and health.held_offset_s is None:
        health = replace(health, held_offset_s=_since(base, health.held_at))
    return replace(summary, steps=[_step(s, base) for s in summary.steps], health=health)
