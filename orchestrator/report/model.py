"""A summary.json document (SPEC §7 and its extensions) read into typed, frozen records.

Reports are asked to render summaries written by other versions of drx, by runs that crashed, and
by hand. So reading is tolerant: a missing, null or mistyped field becomes ``None`` (or an empty
tuple), never an exception, and the renderers say "—" or "not recorded" instead. Derived values that
older summaries lack (a step's offset from the RTO start, per-host attempts) are reconstructed from
what is there — timestamps, host durations — so the timeline can still be drawn.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from orchestrator.record.progress import Progress
from orchestrator.report.units import parse_when

# How a host attempt ended, as drawn and counted by the reports.
ATTEMPT_OUTCOMES = ("ok", "failed", "timeout", "cancelled", "unknown", "skipped")

_STATUS_TO_OUTCOME = {
    "succeeded": "ok",
    "failed": "failed",
    "cancelled": "cancelled",
    "unknown": "unknown",
    "skipped": "skipped",
    "not_run": "skipped",
    "running": "running",  # a run still running, read back
}


def _num(value: Any) -> float | None:
    """A finite number, or None (booleans are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _int(value: Any) -> int | None:
    number = _num(value)
    return int(number) if number is not None else None


def _str(value: Any) -> str | None:
    """A non-empty string; numbers are accepted as text (e.g. a host named 1)."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _seq(value: Any) -> Sequence[Any]:
    return value if isinstance(value, list | tuple) else ()


def _strs(value: Any) -> tuple[str, ...]:
    return tuple(text for text in (_str(item) for item in _seq(value)) if text)


def _between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return (end - start).total_seconds()


@dataclass(frozen=True)
class ProbeFigures:
    """A probe over the run: polls, down windows (s from the *run's* start; end None: still
    down at the end) and whether a window outlasted ``max_down``."""

    name: str
    polls: int
    failed_polls: int
    down_s: float
    longest_down_s: float
    windows: tuple[tuple[float, float | None], ...]
    breached: bool
    max_down_s: float | None
    interval_s: float | None


@dataclass(frozen=True)
class Poll:
    """One poll of a check on one host: when it began (s from the RTO start), how long, did it hold."""

    offset_s: float | None
    duration_s: float | None
    ok: bool | None


@dataclass(frozen=True)
class Attempt:
    """One attempt of a step on one host; retries are separate attempts."""

    n: int
    started_at: str | None
    finished_at: str | None
    offset_s: float | None
    duration_s: float | None
    rc: int | None
    error: str | None
    polls: tuple[Poll, ...]
    outcome: str  # one of ATTEMPT_OUTCOMES

    @property
    def end_offset_s(self) -> float | None:
        if self.offset_s is None:
            return None
        return self.offset_s + (self.duration_s or 0.0)


@dataclass(frozen=True)
class HostResult:
    """What one host did for one step: its final rc/error, output tail and every attempt."""

    host: str
    status: str | None
    rc: int | None
    duration_s: float | None
    error: str | None
    output_tail: str
    attempts: tuple[Attempt, ...]
    command: str | None = None  # as rendered for this host, secrets masked
    reattached: bool = False  # the outcome was read from the host's spool
    output_cut: int | None = None  # bytes past the runbook's output_limit, not kept

    @property
    def failed(self) -> bool:
        """Whether this host ended badly (its attempts may still include earlier failures)."""
        if self.status is not None:
            return self.status in ("failed", "unknown")
        return bool(self.error) or (self.rc is not None and self.rc != 0)


def _who(by: str | None, via: str | None, comment: str | None) -> str | None:
    if not by:
        return None
    who = "the operator" if by == "operator" else by
    if via:
        who += f" ({via})"
    if comment:
        who += f': "{comment}"'
    return who


@dataclass(frozen=True)
class Step:
    """One step of the run as recorded, with ``index`` its position in the summary."""

    index: int
    id: str
    name: str
    kind: str
    status: str
    started_at: str | None
    finished_at: str | None
    duration_s: float | None
    offset_s: float | None
    attempts: int | None
    needs: tuple[str, ...]
    undo_of: str | None
    wave: int | None
    error: str | None
    carried_from: str | None
    outcome_unknown: bool
    manual_wait_s: float | None
    approved_by: str | None
    value: Any
    hosts: tuple[HostResult, ...]
    prompt: str | None = None  # a manual step's rendered question
    approved_via: str | None = None  # "--yes" or "terminal"
    approval_comment: str | None = None
    declined_by: str | None = None
    declined_via: str | None = None
    decline_comment: str | None = None
    message: str | None = None  # who declined a gate or did a step by hand, and why

    @property
    def approver(self) -> str | None:
        """Who approved this gate, how, and what they said: ``root@host (--yes): "ok"``."""
        return _who(self.approved_by, self.approved_via, self.approval_comment)

    @property
    def decliner(self) -> str | None:
        """Who declined this gate, how, and what they said (as ``approver``)."""
        return _who(self.declined_by, self.declined_via, self.decline_comment)

    @property
    def end_offset_s(self) -> float | None:
        if self.offset_s is None:
            return None
        return self.offset_s + (self.duration_s or 0.0)

    @property
    def started(self) -> bool:
        """Whether the step began in this run (carried-over steps ran in an earlier one)."""
        return self.offset_s is not None and self.carried_from is None

    @property
    def broke(self) -> bool:
        """Whether the step needs an auditor's attention: failed, or its outcome is not known."""
        return self.status in ("failed", "unknown") or self.outcome_unknown


@dataclass(frozen=True)
class Rto:
    """The measured RTO against its target; ``end_to_end_s`` only for a resumed run."""

    measured_s: float | None
    target_s: float | None
    met: bool | None
    start_step: str | None
    end_to_end_s: float | None
    predicted_s: float | None


@dataclass(frozen=True)
class RpoGuard:
    """What the runbook's RPO guard did: held (not tripped), refused (tripped: the steps that
    need the rpo_step never started) or accepted (tripped, let through by the operator with
    --accept-data-loss: ``accepted_loss`` is the data given up, in the RPO's unit)."""

    tripped: bool
    accepted: bool
    blocked: tuple[str, ...]
    accepted_loss: float | None
    message: str | None

    @property
    def state(self) -> str:
        if not self.tripped:
            return "held"
        return "accepted" if self.accepted else "refused"


@dataclass(frozen=True)
class Rpo:
    """The measured RPO against its target, in seconds (unit 's') or bytes (unit 'bytes')."""

    unit: str
    measured: float | None
    target: float | None
    met: bool | None
    step: str | None
    guard: RpoGuard | None = None


@dataclass(frozen=True)
class Health:
    """The post-run health polling at the site the run moved the service to."""

    held_at: str | None
    polls: int | None
    held_offset_s: float | None
    timed_out: bool


@dataclass(frozen=True)
class Run:
    """One run's summary, ready for reporting."""

    run_id: str
    runbook: str
    direction: str
    source: str | None
    target: str | None
    parent_run: str | None
    status: str
    emergency: bool
    started_at: str | None
    finished_at: str | None
    runbook_file: str | None
    inventory_file: str | None
    rto_started_at: str | None
    rto: Rto
    rpo: Rpo | None
    manual_wait_s: float | None
    critical_path: tuple[str, ...]
    health: Health | None
    exit_code: int | None
    yes: bool | None
    steps: tuple[Step, ...]
    #: the run this one continues, and (a failback) the failover it reverses
    resumes: str | None = None
    reverses: str | None = None
    runbook_sha256: str | None = None  # of the files the run was started from
    inventory_sha256: str | None = None
    #: a run still running: as of when, elapsed so far, on the RTO clock, projected RTO
    progress: Progress | None = None

    probes: tuple[ProbeFigures, ...] = ()
    #: a site plan's children, as summary.json lists them (report/children.py)
    children: tuple[Mapping[str, Any], ...] = ()
    mode: str = "real"
    drill_id: str | None = None
    rollback: bool = False

    @property
    def is_running(self) -> bool:
        return self.status == "running"

    @property
    def rto_shift_s(self) -> float:
        """How long after the run's start the RTO clock started (probe windows are offsets
        from the run's start, the timeline's from the RTO start)."""
        return _between(parse_when(self.started_at), parse_when(self.rto_started_at)) or 0.0

    message: str | None = None  # why the run ended as it did (who aborted it)
    runbook_description: str | None = None  # the runbook's one-line description
    #: a failback's mode: ``undo`` (the reverse plan) or ``mirror`` (the steps the other way)
    failback_mode: str | None = None
    #: a mirrored failback's reprotect phase: its time (outside the RTO), or the run it was
    #: carried from
    reprotect_s: float | None = None
    reprotect_carried_from: str | None = None

    @property
    def is_failback(self) -> bool:
        return self.direction == "failback"

    @property
    def is_mirror(self) -> bool:
        """A mirrored failback: source/target name the way this run moved the service."""
        return self.is_failback and self.failback_mode == "mirror"

    @property
    def is_resumed(self) -> bool:
        """A continuation of an earlier run (a failback's parent_run is the failover it reverses,
        unless the failback resumes another failback: then ``resumes`` says so)."""
        return self.resumes is not None or (self.parent_run is not None and not self.is_failback)

    @property
    def reversed_run(self) -> str | None:
        """The failover run a failback reverses."""
        if not self.is_failback:
            return None
        return self.reverses or (None if self.resumes else self.parent_run)

    @property
    def from_site(self) -> str | None:
        """The site the run moved the service away from (an undo failback keeps the failover's
        names)."""
        return self.target if self.is_failback and not self.is_mirror else self.source

    @property
    def to_site(self) -> str | None:
        """The site the run moved the service to, where health is polled afterwards."""
        return self.source if self.is_failback and not self.is_mirror else self.target

    @property
    def elapsed_s(self) -> float | None:
        """Wall-clock duration of the whole run, pre-flight included (so far, if running)."""
        if self.progress is not None:
            return self.progress.elapsed_s
        return _between(parse_when(self.started_at), parse_when(self.finished_at))

    @cached_property
    def by_id(self) -> dict[str, Step]:
        return {step.id: step for step in self.steps}

    @cached_property
    def critical(self) -> frozenset[str]:
        return frozenset(self.critical_path)


def _attempt_outcome(rc: int | None, error: str | None, fallback: str | None, last: bool) -> str:
    """Classify an attempt from its rc/error, else from the host's or step's status."""
    if error == "timeout":
        return "timeout"
    if error in ("cancelled", "unknown"):
        return error
    if error:
        return "failed"
    if rc is not None:
        return "ok" if rc == 0 else "failed"
    if not last:
        # A later attempt exists, so this one cannot have succeeded.
        return "failed"
    return _STATUS_TO_OUTCOME.get(fallback or "", "unknown")


def _poll(raw: Any) -> Poll:
    data = _map(raw)
    return Poll(
        _num(data.get("start_offset_s")), _num(data.get("duration_s")), _bool(data.get("ok"))
    )


def _attempts(
    host: Mapping[str, Any],
    step_offset: float | None,
    base: datetime | None,
    fallback_status: str | None,
) -> tuple[Attempt, ...]:
    raws = [_map(item) for item in _seq(host.get("attempts"))]
    if not raws:
        # Older summaries record one result per host: draw it as a single attempt.
        raws = [
            {
                "n": 1,
                "start_offset_s": step_offset,
                "duration_s": host.get("duration_s"),
                "rc": host.get("rc"),
                "error": host.get("error"),
            }
        ]
    attempts = []
    for position, raw in enumerate(raws):
        n = _int(raw.get("n")) or position + 1
        started_at, finished_at = _str(raw.get("started_at")), _str(raw.get("finished_at"))
        offset = _num(raw.get("start_offset_s"))
        if offset is None and base is not None:
            offset = _between(base, parse_when(started_at))
        if offset is None and position == 0:
            offset = step_offset
        duration = _num(raw.get("duration_s"))
        if duration is None:
            duration = _between(parse_when(started_at), parse_when(finished_at))
        rc, error = _int(raw.get("rc")), _str(raw.get("error"))
        last = position == len(raws) - 1
        attempts.append(
            Attempt(
                n=n,
                started_at=started_at,
                finished_at=finished_at,
                offset_s=offset,
                duration_s=duration,
                rc=rc,
                error=error,
                polls=tuple(_poll(p) for p in _seq(raw.get("polls"))),
                outcome=_attempt_outcome(rc, error, fallback_status, last),
            )
        )
    return tuple(attempts)


def _step(index: int, raw: Mapping[str, Any], base: datetime | None) -> Step:
    step_id = _str(raw.get("id")) or f"step-{index + 1}"
    status = _str(raw.get("status")) or "unknown"
    carried_from = _str(raw.get("carried_from"))
    started_at, finished_at = _str(raw.get("started_at")), _str(raw.get("finished_at"))
    offset = _num(raw.get("start_offset_s"))
    if offset is None and "start_offset_s" not in raw and carried_from is None and base is not None:
        # An older summary: derive the offset from the wall clock. A carried step ran in an
        # earlier run, so its timestamps say nothing about this run's timeline.
        offset = _between(base, parse_when(started_at))
    duration = _num(raw.get("duration_s"))
    if duration is None:
        duration = _between(parse_when(started_at), parse_when(finished_at))
    hosts = []
    for item in _seq(raw.get("hosts")):
        host = _map(item)
        name = _str(host.get("host")) or "?"
        host_status = _str(host.get("status"))
        hosts.append(
            HostResult(
                host=name,
                status=host_status,
                rc=_int(host.get("rc")),
                duration_s=_num(host.get("duration_s")),
                error=_str(host.get("error")),
                output_tail=_str(host.get("output_tail")) or "",
                attempts=_attempts(
                    host, offset, None if carried_from else base, host_status or status
                ),
                command=_str(host.get("command")),
                reattached=host.get("reattached") is True,
                output_cut=_int(host.get("output_cut")),
            )
        )
    return Step(
        index=index,
        id=step_id,
        name=_str(raw.get("name")) or step_id,
        kind=_str(raw.get("kind")) or "command",
        status=status,
        started_at=started_at,
        finished_at=finished_at,
        duration_s=duration,
        offset_s=offset,
        attempts=_int(raw.get("attempts")),
        needs=_strs(raw.get("needs")),
        undo_of=_str(raw.get("undo_of")),
        wave=_int(raw.get("wave")),
        error=_str(raw.get("error")),
        carried_from=carried_from,
        outcome_unknown=raw.get("outcome_unknown") is True,
        manual_wait_s=_num(raw.get("manual_wait_s")),
        approved_by=_str(raw.get("approved_by")),
        value=raw.get("value"),
        hosts=tuple(hosts),
        prompt=_str(raw.get("prompt")),
        approved_via=_str(raw.get("approved_via")),
        approval_comment=_str(raw.get("approval_comment")),
        declined_by=_str(raw.get("declined_by")),
        declined_via=_str(raw.get("declined_via")),
        decline_comment=_str(raw.get("decline_comment")),
        message=_str(raw.get("message")),
    )


def _rpo(raw: Any) -> Rpo | None:
    data = _map(raw)
    if not data:
        return None
    if "measured_bytes" in data or "target_bytes" in data:
        unit, measured, target = "bytes", data.get("measured_bytes"), data.get("target_bytes")
    else:
        unit, measured, target = "s", data.get("measured_s"), data.get("target_s")
    guard = _map(data.get("guard"))
    return Rpo(
        unit,
        _num(measured),
        _num(target),
        _bool(data.get("met")),
        _str(data.get("step")),
        RpoGuard(
            tripped=guard.get("tripped") is True,
            accepted=guard.get("accepted") is True,
            blocked=_strs(guard.get("blocked")),
            accepted_loss=_num(guard.get(f"accepted_loss_{unit}")),
            message=_str(guard.get("message")),
        )
        if guard
        else None,
    )


def _health(raw: Any, base: datetime | None) -> Health | None:
    data = _map(raw)
    if not data:
        return None
    held_at = _str(data.get("held_at"))
    held_offset = _num(data.get("held_offset_s"))
    if held_offset is None:
        held_offset = _between(base, parse_when(held_at))
    return Health(
        held_at=held_at,
        polls=_int(data.get("polls")),
        held_offset_s=held_offset,
        timed_out=data.get("timed_out") is True,
    )


def _time_base(summary: Mapping[str, Any], steps: Sequence[Any]) -> datetime | None:
    """The moment offsets count from: the RTO start, else the first step's start, else the run's."""
    explicit = parse_when(_str(summary.get("rto_started_at")))
    if explicit is not None:
        return explicit
    starts = [
        parse_when(_str(_map(s).get("started_at")))
        for s in steps
        if not _map(s).get("carried_from")
    ]
    known = [moment for moment in starts if moment is not None]
    if known:
        return min(known)
    return parse_when(_str(summary.get("started_at")))


def load(summary: Mapping[str, Any]) -> Run:
    """Read a summary.json document; never raises for missing or mistyped fields."""
    if not isinstance(summary, Mapping):
        raise TypeError(f"a run summary must be a JSON object, not {type(summary).__name__}")
    raw_steps = _seq(summary.get("steps"))
    base = _time_base(summary, raw_steps)
    rto = _map(summary.get("rto"))
    return Run(
        run_id=_str(summary.get("run_id")) or "(unknown run)",
        runbook=_str(summary.get("runbook")) or "(unnamed runbook)",
        direction=_str(summary.get("direction")) or "failover",
        source=_str(summary.get("source")),
        target=_str(summary.get("target")),
        parent_run=_str(summary.get("parent_run")),
        resumes=_str(summary.get("resumes")),
        reverses=_str(summary.get("reverses")),
        status=_str(summary.get("status")) or "unknown",
        emergency=summary.get("emergency") is True,
        started_at=_str(summary.get("started_at")),
        finished_at=_str(summary.get("finished_at")),
        runbook_file=_str(summary.get("runbook_file")),
        inventory_file=_str(summary.get("inventory_file")),
        runbook_sha256=_str(summary.get("runbook_sha256")),
        inventory_sha256=_str(summary.get("inventory_sha256")),
        runbook_description=_str(summary.get("runbook_description")),
        rto_started_at=_str(summary.get("rto_started_at")),
        rto=Rto(
            measured_s=_num(rto.get("measured_s")),
            target_s=_num(rto.get("target_s")),
            met=_bool(rto.get("met")),
            start_step=_str(rto.get("start_step")),
            end_to_end_s=_num(rto.get("end_to_end_s")),
            predicted_s=_num(rto.get("predicted_s")),
        ),
        rpo=_rpo(summary.get("rpo")),
        manual_wait_s=_num(summary.get("manual_wait_s")),
        critical_path=_strs(summary.get("critical_path")),
        health=_health(summary.get("health"), base),
        exit_code=_int(summary.get("exit_code")),
        yes=_bool(summary.get("yes")),
        steps=tuple(_step(i, _map(s), base) for i, s in enumerate(raw_steps)),
        progress=Progress.from_dict(_map(summary["progress"])) if summary.get("progress") else None,
        probes=tuple(_probe(_map(p)) for p in _seq(summary.get("probes"))),
        mode=_str(summary.get("mode")) or "real",
        drill_id=_str(summary.get("drill_id")),
        rollback=summary.get("rollback") is True,
        children=tuple(c for c in _seq(summary.get("children")) if isinstance(c, Mapping)),
        message=_str(summary.get("message")),
        failback_mode=_str(summary.get("failback_mode")),
        reprotect_s=_num(_map(summary.get("reprotect")).get("duration_s")),
        reprotect_carried_from=_str(_map(summary.get("reprotect")).get("carried_from")),
    )


def _probe(raw: Mapping[str, Any]) -> ProbeFigures:
    windows = []
    for item in _seq(raw.get("windows")):
        pair = _seq(item)
        start = _num(pair[0]) if pair else None
        if start is not None:
            windows.append((start, _num(pair[1]) if len(pair) > 1 else None))
    return ProbeFigures(
        name=_str(raw.get("name")) or "probe",
        polls=_int(raw.get("polls")) or 0,
        failed_polls=_int(raw.get("failed_polls")) or 0,
        down_s=_num(raw.get("down_s")) or 0.0,
        longest_down_s=_num(raw.get("longest_down_s")) or 0.0,
        windows=tuple(windows),
        breached=raw.get("breached") is True,
        max_down_s=_num(raw.get("max_down_s")),
        interval_s=_num(raw.get("interval_s")),
    )
