"""The summary of a run, typed: what ``summary.json`` holds (docs/reference.md, "summary.json"),
built from the run's journal events alone — so a run whose controller died (no summary of its
own) is read back the same way, as ``crashed``.

``RunSummary.to_dict()`` is the document's exact layout; ``RunSummary.from_dict()`` reads one back,
tolerantly (files written by other versions, or by hand). Nothing outside this module reads
summary documents as dictionaries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from orchestrator.bulk import paused_gc
from orchestrator.kinds import kind_of
from orchestrator.model.units import parse_when
from orchestrator.record.children import child_records
from orchestrator.record.document import (
    FALSY,
    NONE,
    as_int,
    as_number,
    as_text,
    doc,
    from_doc,
    to_doc,
)
from orchestrator.record.events import (
    GateAnswered,
    GateWaiting,
    HealthPolling,
    HostFinished,
    HostStarted,
    JournalEvent,
    Poll,
    ProbeBreached,
    ProbePoll,
    RpoGuardTripped,
    RunStarted,
    StepCarried,
    StepsDone,
)
from orchestrator.record.fold import FOLDS, RUNNING, WAITING, RunState
from orchestrator.record.progress import Progress
from orchestrator.vocab import Direction, RunStatus, StepKind, StepStatus

#: check polls kept per host attempt in the summary (the journal has them all)
POLLS_IN_SUMMARY = 200


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


def _between(start: str | None, end: str | None) -> float | None:
    """Seconds from one timestamp to another; None when either is missing or unreadable."""
    began, ended = parse_when(start), parse_when(end)
    if began is None or ended is None:
        return None
    return (ended - began).total_seconds()


def _who(by: str | None, via: str | None, comment: str | None) -> str | None:
    if not by:
        return None
    who = "the operator" if by == "operator" else by
    if via:
        who += f" ({via})"
    if comment:
        who += f': "{comment}"'
    return who


# -- reading a document back ------------------------------------------------------------------


def _host_status(raw: Mapping[str, Any]) -> StepStatus:
    """A host's status where an older summary does not record it: from its rc and error."""
    error, rc = raw.get("error"), as_int(raw.get("rc"))
    if error in (StepStatus.CANCELLED, StepStatus.UNKNOWN):
        return StepStatus(error)
    if error or (rc is not None and rc != 0):
        return StepStatus.FAILED
    return StepStatus.SUCCEEDED if rc == 0 else StepStatus.UNKNOWN


def _text(value: Any) -> str:
    return as_text(value) or ""


# -- the records ------------------------------------------------------------------------------


@dataclass
class PollRecord:
    """One poll of a check on one host."""

    start_offset_s: float | None
    duration_s: float | None
    ok: bool | None

    def to_dict(self) -> dict[str, Any]:
        return {"duration_s": self.duration_s, "ok": self.ok, "start_offset_s": self.start_offset_s}


@dataclass
class AttemptRecord:
    """One attempt of a step on one host."""

    n: int
    started_at: str | None
    finished_at: str | None = None
    start_offset_s: float | None = None
    duration_s: float | None = None
    rc: int | None = None
    error: str | None = None
    polls: list[PollRecord] = field(default_factory=list)

    @property
    def end_offset_s(self) -> float | None:
        if self.start_offset_s is None:
            return None
        return self.start_offset_s + (self.duration_s or 0.0)

    def to_dict(self) -> dict[str, Any]:
        return to_doc(self)


@dataclass
class HostRecord:
    """What one step did on one host."""

    host: str = field(metadata=doc(missing=lambda d: "?"))
    rc: int | None = None
    duration_s: float | None = None
    output_tail: str = ""
    error: str | None = None
    status: StepStatus = field(default=StepStatus.UNKNOWN, metadata=doc(missing=_host_status))
    attempts: list[AttemptRecord] = field(default_factory=list)
    value: Any = None
    #: as rendered for this host (its last attempt), secrets masked
    command: str | None = field(default=None, metadata=doc(omit=NONE))
    #: the outcome came from the host's spool: the command outlived the controller that ran it
    reattached: bool = field(default=False, metadata=doc(omit=FALSY))
    #: bytes of output its last attempt printed past ``output_limit``, not kept in the log
    output_cut: int | None = field(default=None, metadata=doc(omit=FALSY))

    @property
    def failed(self) -> bool:
        """Whether this host ended badly (its attempts may still include earlier failures)."""
        return self.status in (StepStatus.FAILED, StepStatus.UNKNOWN)

    def to_dict(self) -> dict[str, Any]:
        return to_doc(self)


_BUILT_IN_KINDS = frozenset(k.value for k in StepKind)


@dataclass
class StepRecord:
    """What one step of the run did."""

    id: str
    name: str = field(metadata=doc(missing=lambda d: _text(d.get("id"))))
    kind: str = StepKind.COMMAND  # a StepKind, or the name of a kind registered beside them
    status: StepStatus = StepStatus.NOT_RUN
    started_at: str | None = None
    finished_at: str | None = None
    duration_s: float | None = None
    start_offset_s: float | None = None
    attempts: int = 0
    needs: list[str] = field(default_factory=list)
    undo_of: str | None = None
    wave: int | None = None
    error: str | None = None
    carried_from: str | None = None
    outcome_unknown: bool = False
    manual_wait_s: float | None = None
    approved_by: str | None = None  # user@host of the approver
    value: Any = None
    message: str | None = None
    hosts: list[HostRecord] = field(default_factory=list)
    prompt: str | None = field(default=None, metadata=doc(omit=NONE))
    #: "--yes" or "terminal", and the comment given (written only for an approved gate)
    approved_via: str | None = field(default=None, metadata=doc(omit=NONE))
    approval_comment: str | None = field(default=None, metadata=doc(beside="approved_via"))
    #: user@host of the operator who declined the gate, how ("terminal", ...) and why
    declined_by: str | None = field(default=None, metadata=doc(omit=NONE))
    declined_via: str | None = field(default=None, metadata=doc(beside="declined_by"))
    decline_comment: str | None = field(default=None, metadata=doc(beside="declined_by"))

    def __post_init__(self) -> None:
        # a built-in kind reads back as its member; a kind registered beside them keeps its name
        if self.kind in _BUILT_IN_KINDS:
            self.kind = StepKind(self.kind)

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
        if self.start_offset_s is None:
            return None
        return self.start_offset_s + (self.duration_s or 0.0)

    @property
    def started(self) -> bool:
        """Whether the step began in this run (carried-over steps ran in an earlier one)."""
        return self.start_offset_s is not None and self.carried_from is None

    @property
    def broke(self) -> bool:
        """Whether the step needs an auditor's attention: failed, or its outcome is not known."""
        return self.status in (StepStatus.FAILED, StepStatus.UNKNOWN) or self.outcome_unknown

    def to_dict(self) -> dict[str, Any]:
        return to_doc(self)


@dataclass
class RtoRecord:
    """The measured RTO against its target (and, for a resumed run, end to end)."""

    measured_s: float | None = None
    target_s: float | None = None
    met: bool | None = None
    start_step: str | None = None
    predicted_s: float | None = None
    end_to_end_s: float | None = field(default=None, metadata=doc(omit=NONE))

    def to_dict(self) -> dict[str, Any]:
        return to_doc(self)

    def headline(self, parent_run: str | None = None) -> str | None:
        """The RTO in one phrase, the figure the business saw first: for a resumed run the RTO
        end to end (from the original run's start), then this run's own part; None when no RTO
        was measured."""
        from orchestrator.model.units import format_duration

        if self.measured_s is None:
            return None
        if self.end_to_end_s is not None:
            since = f" from the start of {parent_run}" if parent_run else ""
            text = f"measured RTO {format_duration(self.end_to_end_s)} end to end{since}"
        else:
            text = f"measured RTO {format_duration(self.measured_s)}"
        if self.target_s is not None:
            text += f" (target {format_duration(self.target_s)}: "
            text += "met)" if self.met else "MISSED)"
        if self.end_to_end_s is not None:
            text += f"; the resumed part {format_duration(self.measured_s)}"
        return text


@dataclass
class ReprotectRecord:
    """The reprotect phase of a mirrored failback (or a reprotect run): its steps and how long
    they took, from the first start to the last end — time outside the failback's RTO. A phase
    carried from an earlier ``drx reprotect`` names that run and took no time here."""

    steps: list[str] = field(default_factory=list)
    duration_s: float | None = None
    carried_from: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return to_doc(self)


@dataclass
class RpoGuardRecord:
    """What the RPO guard (runbook ``rpo_guard: true``) did: not tripped; tripped and refused
    (``blocked``: the steps that never started); or tripped and accepted by the operator with
    --accept-data-loss (``accepted_loss``: the data given up, in the RPO's unit)."""

    tripped: bool = False
    accepted: bool = False
    blocked: list[str] = field(default_factory=list)
    accepted_loss: float | None = None
    message: str | None = None

    @property
    def state(self) -> str:
        """held (not tripped), refused (tripped, steps blocked) or accepted (let through)."""
        if not self.tripped:
            return "held"
        return "accepted" if self.accepted else "refused"

    def to_dict(self, unit: str) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "tripped": self.tripped,
            "accepted": self.accepted,
            "blocked": list(self.blocked),
            "message": self.message,
        }
        if self.accepted:
            doc[f"accepted_loss_{unit}"] = self.accepted_loss
        return doc


@dataclass
class RpoRecord:
    """The measured RPO: seconds, or bytes when the runbook's ``rpo_target`` is a size."""

    measured: float | None = None
    target: float | None = None
    met: bool | None = None
    step: str | None = None
    in_bytes: bool = False
    guard: RpoGuardRecord | None = None  # None: the runbook sets no rpo_guard

    @property
    def unit(self) -> str:
        """``s`` or ``bytes``: the suffix of the document's keys and the unit of every figure."""
        return "bytes" if self.in_bytes else "s"

    def to_dict(self) -> dict[str, Any]:
        unit = self.unit
        doc: dict[str, Any] = {
            f"measured_{unit}": self.measured,
            f"target_{unit}": self.target,
            "met": self.met,
            "step": self.step,
        }
        if self.guard is not None:
            doc["guard"] = self.guard.to_dict(unit)
        return doc

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RpoRecord:
        """Read back: the keys carry the unit (``measured_s`` or ``measured_bytes``)."""
        in_bytes = "measured_bytes" in raw or "target_bytes" in raw
        unit = "bytes" if in_bytes else "s"
        guard = raw.get("guard")
        return cls(
            measured=as_number(raw.get(f"measured_{unit}")),
            target=as_number(raw.get(f"target_{unit}")),
            met=raw.get("met") if isinstance(raw.get("met"), bool) else None,
            step=as_text(raw.get("step")),
            in_bytes=in_bytes,
            guard=RpoGuardRecord(
                tripped=guard.get("tripped") is True,
                accepted=guard.get("accepted") is True,
                blocked=[str(s) for s in guard.get("blocked") or () if isinstance(s, str | int)],
                accepted_loss=as_number(guard.get(f"accepted_loss_{unit}")),
                message=as_text(guard.get("message")),
            )
            if isinstance(guard, Mapping)
            else None,
        )


@dataclass
class HealthRecord:
    """Health at the site the run moved to."""

    held_at: str | None = None
    polls: int = 0
    held_offset_s: float | None = None
    duration_s: float | None = None
    timed_out: bool = False

    def to_dict(self) -> dict[str, Any]:
        return to_doc(self)


@dataclass
class ProbeRecord:
    """A probe over the run: its polls, down windows (offsets from the run's start) and
    whether a window outlasted ``max_down``."""

    name: str
    polls: int = 0
    failed_polls: int = 0
    down_s: float = 0.0
    longest_down_s: float = 0.0
    windows: list[list[float | None]] = field(default_factory=list)
    breached: bool = False
    max_down_s: float | None = None
    interval_s: float | None = None

    @property
    def spans(self) -> list[tuple[float, float | None]]:
        """The down windows that have a start, as (start, end) pairs."""
        return [
            (w[0], w[1] if len(w) > 1 else None) for w in self.windows if w and w[0] is not None
        ]

    def to_dict(self) -> dict[str, Any]:
        return to_doc(self)


@dataclass(kw_only=True)
class RunSummary:
    """A run: who, what, how it ended, its RTO and RPO, and every step."""

    run_id: str
    runbook: str
    direction: Direction = field(metadata=doc(missing=lambda d: Direction.FAILOVER))
    source: str
    target: str
    parent_run: str | None = None
    #: the run this one continues (``drx resume``), and the failover a failback reverses
    resumes: str | None = None
    reverses: str | None = None
    status: RunStatus = field(metadata=doc(missing=lambda d: RunStatus.CRASHED))
    emergency: bool = False
    started_at: str | None = None
    finished_at: str | None = None
    rto: RtoRecord = field(default_factory=RtoRecord)
    rpo: RpoRecord | None = None
    manual_wait_s: float | None = None
    critical_path: list[str] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    health: HealthRecord | None = None
    exit_code: int | None = None
    yes: bool = False
    runbook_file: str | None = None
    inventory_file: str | None = None
    runbook_sha256: str | None = None  # of the files as they were when the run started
    inventory_sha256: str | None = None
    runbook_description: str | None = None  # the runbook's one-line description
    rto_started_at: str | None = None
    moves_to: str | None = None
    #: a failback's mode: ``undo`` (source/target are the failover's) or ``mirror`` (the
    #: runbook's steps from the failover's target back to its source); None for other runs
    failback_mode: str | None = None
    reprotect: ReprotectRecord | None = None
    message: str | None = field(default=None, metadata=doc(omit=FALSY))
    mode: str = "real"  # "drill": a leg (or rollback) of drx drill
    drill_id: str | None = None  # the drill's failover leg, on both legs
    rollback: bool = False  # a failback that rolled back a failed or cancelled failover
    rolled_back_by: str | None = None  # of a failover: the rollback that reversed it
    probes: list[ProbeRecord] = field(default_factory=list)
    #: runs that reversed / continued this one (filled in when runs are listed together)
    failed_back_by: list[str] = field(default_factory=list, metadata=doc(omit=FALSY, listed=True))
    resumed_by: list[str] = field(
        default_factory=list, metadata=doc(key="resumed_by_runs", omit=FALSY, listed=True)
    )
    #: every host of the inventory when the run started: name, site, address, port and the
    #: host key it presented (null when not connected)
    hosts: list[dict[str, Any]] = field(default_factory=list)
    #: a run still running, read back: elapsed so far and its projected RTO
    progress: Progress | None = field(default=None, metadata=doc(omit=NONE))
    #: a site plan's children: id, runbook, status, rto, rpo (record/children.py)
    children: list[dict[str, Any]] = field(default_factory=list, metadata=doc(omit=FALSY))

    @property
    def site(self) -> str:
        """The site this run moves the service to."""
        if self.moves_to:
            return self.moves_to
        return self.target if self.direction == Direction.FAILOVER else self.source

    @cached_property
    def by_id(self) -> dict[str, StepRecord]:
        """The steps by id (as when first asked: a summary is not changed once read)."""
        return {s.id: s for s in self.steps}

    @property
    def critical(self) -> frozenset[str]:
        return frozenset(self.critical_path)

    @property
    def is_running(self) -> bool:
        return self.status == RunStatus.RUNNING

    @property
    def is_failback(self) -> bool:
        return self.direction == Direction.FAILBACK

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
        return (self.target if self.is_failback and not self.is_mirror else self.source) or None

    @property
    def to_site(self) -> str | None:
        """The site the run moved the service to, where health is polled afterwards."""
        return (self.source if self.is_failback and not self.is_mirror else self.target) or None

    @property
    def elapsed_s(self) -> float | None:
        """Wall-clock duration of the whole run, pre-flight included (so far, if running)."""
        if self.progress is not None:
            return self.progress.elapsed_s
        return _between(self.started_at, self.finished_at)

    @property
    def rto_shift_s(self) -> float:
        """How long after the run's start the RTO clock started (probe windows are offsets
        from the run's start, the timeline's from the RTO start)."""
        return _between(self.started_at, self.rto_started_at) or 0.0

    @paused_gc()
    def to_dict(self) -> dict[str, Any]:
        return to_doc(self)

    @classmethod
    @paused_gc()
    def from_dict(cls, raw: Mapping[str, Any]) -> RunSummary:
        """Read a summary document back; missing or mistyped fields take their defaults."""
        return from_doc(cls, raw)


# -- building from the journal ----------------------------------------------------------------


@dataclass
class _StepTimes:
    """Monotonic offsets of one step, kept beside its record while the journal is read."""

    record: StepRecord
    t0: float | None = None
    t1: float | None = None
    hosts: dict[str, HostRecord] = field(default_factory=dict)
    attempt_t0: dict[int, float] = field(default_factory=dict)  # id(attempt) -> offset
    poll_t: dict[int, float] = field(default_factory=dict)  # id(poll) -> offset


class _Builder:
    """Reads a run's typed events in order. What a step did (status, times, attempts, value,
    carried, approval) is the shared fold's (``RunState``); this keeps what only the summary
    shows: each host's attempts and polls, gate prompts, waits and declines, probes, the RPO
    guard and the health polls."""

    def __init__(self, start: RunStarted) -> None:
        self.start = start
        self.state = RunState()
        self.steps: dict[str, _StepTimes] = {}
        for m in start.steps:
            record = StepRecord(
                id=m["id"],
                name=m.get("name", m["id"]),
                kind=m.get("kind", StepKind.COMMAND),
                needs=list(m.get("needs", [])),
                undo_of=m.get("undo_of"),
                wave=m.get("wave"),
            )
            self.steps[m["id"]] = _StepTimes(record)
        self.host_order = {h: i for i, h in enumerate(start.host_order)}
        self.health_polls = 0
        self.health_started_t: float | None = None
        self.steps_done_t: float | None = None
        self.manual_wait = 0.0
        self.guard: RpoGuardTripped | None = None  # if it tripped
        self.probe_polls: dict[str, list[ProbePoll]] = {}
        self.probe_breached: set[str] = set()
        self.handlers: dict[type[JournalEvent], Callable[[Any], None]] = {
            StepCarried: self._step_carried,
            HostStarted: self._host_started,
            Poll: self._poll,
            HostFinished: self._host_finished,
            GateWaiting: self._gate_waiting,
            GateAnswered: self._gate_answered,
            StepsDone: self._steps_done,
            HealthPolling: self._health_polling,
            RpoGuardTripped: self._rpo_guard,
            ProbePoll: self._probe_poll,
            ProbeBreached: self._probe_breached,
        }

    def read(self, events: Iterable[JournalEvent]) -> None:
        # ``RunState.apply`` unrolled, beside the summary's own handler: one lookup per event
        state, handlers = self.state, self.handlers
        both = {kind: (FOLDS.get(kind), handlers.get(kind)) for kind in {*FOLDS, *handlers}}
        for e in events:
            pair = both.get(type(e))
            if pair is None:
                continue
            fold, handler = pair
            if fold is not None:
                fold(state, e)
            if handler is not None:
                handler(e)

    def settle(self) -> None:
        """Each planned step's record from the fold's state of it."""
        folded = self.state.steps
        for sid, st in self.steps.items():
            s = folded.get(sid)
            if s is None:
                continue
            rec = st.record
            if s.carried_from is not None:
                rec.status, rec.carried_from = StepStatus.SUCCEEDED, s.carried_from
            else:
                st.t0, st.t1 = s.t0, s.t1
                rec.started_at, rec.finished_at = s.started_at, s.finished_at
                ended = s.status not in (RUNNING, WAITING)
                rec.status = s.status if ended else StepStatus.UNKNOWN  # type: ignore[assignment]
                rec.error, rec.message = s.error, s.message
                rec.outcome_unknown = s.outcome_unknown if ended else False
            rec.value, rec.attempts = s.value, s.attempts
            if s.approval is not None:  # a gate keeps its original approval on resume
                rec.approved_by = s.approval.get("by")
                rec.approved_via = s.approval.get("via")
                rec.approval_comment = s.approval.get("comment")

    def _rpo_guard(self, e: RpoGuardTripped) -> None:
        self.guard = e

    def _probe_poll(self, e: ProbePoll) -> None:
        self.probe_polls.setdefault(str(e.probe), []).append(e)

    def _probe_breached(self, e: ProbeBreached) -> None:
        self.probe_breached.add(str(e.probe))

    # -- hosts
    def _step_carried(self, e: StepCarried) -> None:
        st = self.steps.get(e.step)
        if st is None:
            return
        for h in e.hosts:
            st.hosts[h["host"]] = HostRecord(
                host=h["host"],
                status=StepStatus.SUCCEEDED,
                rc=h.get("rc"),
                duration_s=h.get("duration_s"),
                output_tail=h.get("output_tail", ""),
            )

    def _host_started(self, e: HostStarted) -> None:
        st = self.steps.get(e.step)
        if st is None:
            return
        host = st.hosts.get(e.host)
        if host is None:
            host = st.hosts[e.host] = HostRecord(host=e.host)
        host.status = StepStatus.UNKNOWN
        attempt = AttemptRecord(n=e.attempt, started_at=e.ts)
        host.attempts.append(attempt)
        st.attempt_t0[id(attempt)] = e.t

    def _poll(self, e: Poll) -> None:
        if e.step and e.step.startswith("health:"):
            self.health_polls += 1
            return
        st = self.steps.get(e.step)
        if st is None:
            return
        host = st.hosts.get(e.host)
        if host and host.attempts and len(host.attempts[-1].polls) < POLLS_IN_SUMMARY:
            poll = PollRecord(None, e.duration_s, e.ok)
            host.attempts[-1].polls.append(poll)
            st.poll_t[id(poll)] = e.t

    def _host_finished(self, e: HostFinished) -> None:
        st = self.steps.get(e.step)
        host = st.hosts.get(e.host) if st is not None else None
        if host is None or not host.attempts:
            return
        attempt = host.attempts[-1]
        attempt.finished_at, attempt.duration_s = e.ts, e.duration_s
        attempt.rc, attempt.error = e.rc, e.error
        host.rc, host.error = e.rc, e.error
        host.status = e.status or StepStatus.UNKNOWN  # type: ignore[assignment]
        host.output_tail = e.output_tail
        host.command = e.command or host.command
        host.output_cut = e.output_cut
        host.duration_s = _r(sum(a.duration_s for a in host.attempts if a.duration_s is not None))
        host.value = e.value
        host.reattached = e.reattached is True

    # -- gates
    def _gate_waiting(self, e: GateWaiting) -> None:
        st = self.steps.get(e.step)
        if st is not None:
            st.record.prompt = e.prompt

    def _gate_answered(self, e: GateAnswered) -> None:
        st = self.steps.get(e.step)
        if st is None:
            return
        waited = float(e.waited_s or 0.0)
        self.manual_wait += waited
        st.record.manual_wait_s = _r(waited)
        if not e.approved and e.by:
            st.record.declined_by = e.by
            st.record.declined_via = e.via
            st.record.decline_comment = e.comment

    # -- the end of the run
    def _steps_done(self, e: StepsDone) -> None:
        self.steps_done_t = e.t

    def _health_polling(self, e: HealthPolling) -> None:
        self.health_started_t = e.t


@paused_gc()
def build_summary(events: Sequence[JournalEvent]) -> RunSummary:
    """The summary of the run journaled by ``events``."""
    if not events or not isinstance(events[0], RunStarted):
        raise ValueError("journal does not start with run_started")
    start = events[0]
    b = _Builder(start)
    b.read(events)
    b.settle()
    finished = b.state.finished
    t_start, start_step = _rto_start(start, b.steps)
    _place_in_time(b, t_start)
    status = finished.status if finished else RunStatus.CRASHED
    t_end = _rto_end(b, status)
    scope = {
        "direction": start.direction,
        "reprotect_steps": start.reprotect_steps,
        "children": start.children,
    }
    summary = RunSummary(
        run_id=start.run_id,
        runbook=start.runbook,
        direction=start.direction,  # type: ignore[arg-type]
        source=start.source,
        target=start.target,
        parent_run=start.parent_run,
        resumes=start.resumes,
        reverses=start.reverses,
        status=status,  # type: ignore[arg-type]
        emergency=bool(start.emergency),
        started_at=start.ts,
        finished_at=finished.ts if finished else events[-1].ts,
        rto=_rto(start, t_start, t_end, start_step),
        rpo=_rpo(start, b.steps, b.guard),
        manual_wait_s=_r(b.manual_wait),
        critical_path=_critical_path(b.steps),
        steps=[st.record for st in b.steps.values()],
        health=_health(start, b, t_start),
        exit_code=finished.exit_code if finished else None,
        yes=bool(start.yes),
        runbook_file=start.runbook_file,
        inventory_file=start.inventory_file,
        runbook_sha256=start.runbook_sha256,
        inventory_sha256=start.inventory_sha256,
        hosts=list(start.hosts or []),
        runbook_description=start.runbook_description,
        rto_started_at=_wall(start, t_start) if t_start is not None else None,
        moves_to=start.moves_to,
        message=(finished.message or None) if finished else None,
        mode=start.mode or "real",
        drill_id=start.drill_id,
        rollback=bool(start.rollback),
        probes=probe_records(start, b.probe_polls, b.probe_breached, events[-1].t),
        children=child_records(scope, b.steps),
        failback_mode=start.failback_mode,
        reprotect=_reprotect(start, b.steps),
    )
    return summary


def probe_records(
    start: RunStarted,
    polls: Mapping[str, list[ProbePoll]],
    breached: set[str],
    t_end: float,
) -> list[ProbeRecord]:
    """Each probe's figures from its polls: it is down from its first failing poll (on any of
    its hosts) to the next poll after which every host passes; a window still open at the end
    of the run has no end (null) and counts until then."""
    records = []
    for meta in start.probes or []:
        name = str(meta.get("name"))
        mine = sorted(polls.get(name, []), key=lambda e: e.t)
        down_hosts: set[str] = set()
        windows: list[list[float | None]] = []
        since: float | None = None
        for e in mine:
            if e.ok:
                down_hosts.discard(str(e.host))
            else:
                down_hosts.add(str(e.host))
            if down_hosts and since is None:
                since = e.t
            elif not down_hosts and since is not None:
                windows.append([round(since, 3), round(e.t, 3)])
                since = None
        if since is not None:
            windows.append([round(since, 3), None])
        lengths = [(w[1] if w[1] is not None else t_end) - (w[0] or 0.0) for w in windows]
        records.append(
            ProbeRecord(
                name=name,
                polls=len(mine),
                failed_polls=sum(1 for e in mine if not e.ok),
                down_s=round(sum(lengths), 3),
                longest_down_s=round(max(lengths, default=0.0), 3),
                windows=windows,
                breached=name in breached,
                max_down_s=meta.get("max_down_s"),
                interval_s=meta.get("interval_s"),
            )
        )
    return records


def _reprotect(start: RunStarted, steps: Mapping[str, _StepTimes]) -> ReprotectRecord | None:
    ids = [s for s in start.reprotect_steps or () if s in steps]
    if not ids:
        return None
    phase = [steps[s] for s in ids]
    t0 = [st.t0 for st in phase if st.t0 is not None]
    t1 = [st.t1 for st in phase if st.t1 is not None]
    carried = {st.record.carried_from for st in phase}
    return ReprotectRecord(
        steps=ids,
        duration_s=_r(max(t1) - min(t0)) if t0 and t1 else None,
        carried_from=carried.pop() if len(carried) == 1 else None,
    )


def _rto_start(
    start: RunStarted, steps: Mapping[str, _StepTimes]
) -> tuple[float | None, str | None]:
    """Where the RTO starts: ``rto_start``'s start, else the first step that started (not
    counting a mirrored failback's reprotect phase, which runs while the service is up)."""
    named = steps.get(start.rto_start or "")
    if named is not None and named.t0 is not None:
        return named.t0, named.record.id
    phase = set(start.reprotect_steps or ())
    if phase and start.direction != Direction.REPROTECT:
        steps = {k: st for k, st in steps.items() if k not in phase}
    started = [st for st in steps.values() if st.t0 is not None]
    if not started:
        return None, None
    first = min(started, key=lambda st: st.t0 or 0.0)
    return first.t0, first.record.id


def _place_in_time(b: _Builder, t_start: float | None) -> None:
    """Offsets from the RTO start, durations, hosts in inventory order, attempts counted."""
    order = b.host_order.get
    for st in b.steps.values():
        rec = st.record
        if st.t0 is not None and t_start is not None:
            rec.start_offset_s = _r(st.t0 - t_start)
        if st.t0 is not None and st.t1 is not None:
            rec.duration_s = _r(st.t1 - st.t0)
        hosts = list(st.hosts.values())
        if len(hosts) > 1:
            hosts.sort(key=lambda h: order(h.host, 10**9))
        rec.hosts = hosts
        if t_start is not None:
            for h in rec.hosts:
                for a in h.attempts:
                    a.start_offset_s = _r(st.attempt_t0[id(a)] - t_start)
                    for p in a.polls:
                        p.start_offset_s = _r(st.poll_t[id(p)] - t_start)
        if kind_of(rec.kind).runs_commands and rec.status not in (
            StepStatus.NOT_RUN,
            StepStatus.SKIPPED,
        ):
            rec.attempts = max([rec.attempts, *(len(h.attempts) for h in rec.hosts)])


def _rto_end(b: _Builder, status: str) -> float | None:
    """The end of the RTO: health first holding, else (no health) the end of the last step."""
    if status != RunStatus.SUCCEEDED:
        return None
    if b.state.held_t is not None:
        return b.state.held_t
    if b.steps_done_t is None:
        return None
    ends = [st.t1 for st in b.steps.values() if st.t0 is not None and st.t1 is not None]
    return max(ends, default=b.steps_done_t)


def _rto(
    start: RunStarted, t_start: float | None, t_end: float | None, start_step: str | None
) -> RtoRecord:
    measured = _r(t_end - t_start) if t_end is not None and t_start is not None else None
    if t_end is not None and t_start is None:
        measured = 0.0
    target = start.rto_target_s
    rto = RtoRecord(
        measured_s=measured,
        target_s=target,
        met=(measured <= target) if measured is not None and target is not None else None,
        start_step=start_step,
        predicted_s=start.predicted_rto_s,
    )
    if start.parent_start_wall is not None and t_end is not None:
        end_to_end = round((start.wall0 or 0.0) + t_end - start.parent_start_wall, 3)
        rto.end_to_end_s = end_to_end
        if target is not None:  # a resumed run: the outage lasted from the original start
            rto.met = end_to_end <= target
    return rto


def _health(start: RunStarted, b: _Builder, t_start: float | None) -> HealthRecord | None:
    if not start.health_names:
        return None
    held = b.state.held_t
    base = b.health_started_t if b.health_started_t is not None else b.steps_done_t
    return HealthRecord(
        held_at=b.state.held_at,
        polls=b.health_polls,
        held_offset_s=_r(held - t_start) if held is not None and t_start is not None else None,
        duration_s=_r(held - base) if held is not None and base is not None else None,
        timed_out=b.state.phase == "timeout",
    )


def _wall(start: RunStarted, t: float) -> str:
    from orchestrator.record.journal import utc_iso

    return utc_iso((start.wall0 or 0.0) + t)


def _rpo(
    start: RunStarted, steps: Mapping[str, _StepTimes], guard: RpoGuardTripped | None
) -> RpoRecord | None:
    name = start.rpo_step
    if not name:  # nothing measures it (no rpo_step; a failback without one): not measured
        return None
    value = None
    st = steps.get(name) if name else None
    if st is not None:
        value = st.record.value
        if value is None:  # the last value seen while polling, even if the check never held
            for h in st.hosts.values():
                if h.value is not None:
                    value = h.value
    measured = (
        float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    )
    target = start.rpo_target
    met = measured <= target if measured is not None and target is not None else None
    record = RpoRecord(measured, target, met, name, in_bytes=bool(start.rpo_is_bytes))
    if start.rpo_guard:
        record.guard = RpoGuardRecord()
        if guard is not None:
            accepted = bool(guard.accepted)
            record.guard = RpoGuardRecord(
                tripped=True,
                accepted=accepted,
                blocked=[] if accepted else list(guard.blocked or []),
                accepted_loss=guard.measured if accepted else None,
                message=guard.message,
            )
    return record


def _critical_path(steps: Mapping[str, _StepTimes]) -> list[str]:
    """From the step that finished last, repeatedly step back to the need that finished last."""
    timed = {sid: st for sid, st in steps.items() if st.t1 is not None}
    if not timed:
        return []
    current = max(timed.values(), key=lambda st: st.t1 or 0.0)
    path = [current.record.id]
    while True:
        needs = [timed[n] for n in current.record.needs if n in timed]
        if not needs:
            break
        current = max(needs, key=lambda st: st.t1 or 0.0)
        path.append(current.record.id)
    path.reverse()
    return path
