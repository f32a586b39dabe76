"""The kinds of event a run's journal holds, in the order a run writes them, and one frozen
dataclass per kind: what the engine writes and what every reader folds.

Every event also carries ``t`` (seconds since the run started, monotonic) and ``ts`` (UTC). The
summary, failback, resume and the reports are all derived from these events alone, so a run whose
controller died is read back the same way as one that finished.

A journal line is ``{"event": kind, "t": …, "ts": …, <fields in declaration order>}``; a field
named in its class's ``sparse`` is left out while it is None (the way those fields were always
written). ``to_json``/``from_json`` convert between the two with functions written once per
class from its fields, never ``dataclasses.asdict`` (a deep copy per event, on the scheduler's
path). A line
written by an older drx may lack a field: it reads as the field's default, or None.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, FrozenInstanceError, dataclass, field, fields
from enum import StrEnum
from typing import Any, ClassVar, TypeVar, dataclass_transform

from orchestrator.bulk import slot_init


class Event(StrEnum):
    """A journal event kind (the ``event`` field); its fields are those of its class below."""

    #: the run began
    RUN_STARTED = "run_started"
    #: a succeeded step of the resumed run, not re-run
    STEP_CARRIED = "step_carried"
    STEP_STARTED = "step_started"
    #: one attempt on one host began
    HOST_STARTED = "host_started"
    #: one poll of a check on one host
    POLL = "poll"
    #: one attempt on one host ended
    HOST_FINISHED = "host_finished"
    STEP_FINISHED = "step_finished"
    #: a manual gate asks
    GATE_WAITING = "gate_waiting"
    GATE_ANSWERED = "gate_answered"
    #: the projected RTO crossed the target
    RTO_BUDGET_AT_RISK = "rto_budget_at_risk"
    #: the projection is back under the target
    RTO_BUDGET_RECOVERED = "rto_budget_recovered"
    #: the RPO guard tripped: the rpo_step's value exceeds rpo_target (or none was measured). Not
    #: accepted: the blocked steps never start and the run fails; accepted (with
    #: --accept-data-loss): the run goes on.
    RPO_GUARD = "rpo_guard"
    #: a step failed with on_failure: abort; nothing new starts
    RUN_ABORTING = "run_aborting"
    #: the run lock of a shared store could not be confirmed in time: nothing new starts
    LOCK_IN_DOUBT = "lock_in_doubt"
    #: a renewal confirmed the lock again: scheduling resumes
    LOCK_CONFIRMED = "lock_confirmed"
    #: the run lock is lost (lease gone, a write fenced, the store unreachable)
    LOCK_LOST = "lock_lost"
    #: the first Ctrl-C: nothing new starts
    INTERRUPT = "interrupt"
    #: a Ctrl-C refused once, with a warning: a rollback (or a drill's way home) goes on
    INTERRUPT_REFUSED = "interrupt_refused"
    #: the second Ctrl-C: running commands are closed
    CANCEL_RUNNING = "cancel_running"
    #: one poll of a probe on one host (``t``: when it started)
    PROBE_POLL = "probe_poll"
    #: a probe's down window outlasted its max_down
    PROBE_BREACHED = "probe_breached"
    #: no step is running or left to start
    STEPS_DONE = "steps_done"
    #: health is polled at the site the run moves to
    HEALTH_POLLING = "health_polling"
    #: every health entry held; the RTO ends here
    HEALTH_HELD = "health_held"
    #: health did not hold within its timeout
    HEALTH_TIMEOUT = "health_timeout"
    #: the run ended
    RUN_FINISHED = "run_finished"


_T = TypeVar("_T")


@dataclass_transform(kw_only_default=True, frozen_default=True)
def _event(cls: type[_T]) -> type[_T]:
    """The dataclass options of every event class. Frozen by ``JournalEvent``'s own
    ``__setattr__``/``__delattr__``, hashed by its ``__hash__``, built by ``slot_init``'s
    ``__init__``: ``frozen=True`` and ``init=True`` would write those functions again for each
    of the 27 classes, which was most of the cost of importing this module on every run."""
    return dataclass(slots=True, kw_only=True, init=False)(cls)


@_event
class JournalEvent:
    """One journal event. ``t``/``ts`` are stamped by the journal as it writes the event."""

    event: ClassVar[Event]
    #: fields left out of the line while they are None
    sparse: ClassVar[frozenset[str]] = frozenset()
    t: float = 0.0
    ts: str = ""

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def _hash(self) -> int:
        return hash((type(self), *(getattr(self, f.name) for f in fields(self))))


@_event
class RunStarted(JournalEvent):
    """The run began: what it is, where it goes, its targets, files, hosts and steps."""

    event = Event.RUN_STARTED
    run_id: str
    runbook: str
    direction: str
    source: str
    target: str
    moves_to: str | None = None
    parent_run: str | None = None
    resumes: str | None = None
    reverses: str | None = None
    failback_mode: str | None = None
    reprotect_steps: list[str] = field(default_factory=list)
    emergency: bool = False
    mode: str | None = None
    drill_id: str | None = None
    rollback: bool = False
    yes: bool = False
    wall0: float | None = None
    parent_start_wall: float | None = None
    rto_target_s: float | None = None
    rpo_target: float | None = None
    rpo_is_bytes: bool = False
    rpo_step: str | None = None
    rpo_guard: bool = False
    accept_data_loss: bool = False
    rto_start: str | None = None
    predicted_rto_s: float | None = None
    runbook_file: str | None = None
    inventory_file: str | None = None
    runbook_sha256: str | None = None
    inventory_sha256: str | None = None
    runbook_description: str | None = None
    host_order: list[str] = field(default_factory=list)
    #: every inventory host: name, site, address, host key (what ``drx check`` compares)
    hosts: list[dict[str, Any]] = field(default_factory=list)
    health_names: list[str] = field(default_factory=list)
    #: each probe: name, hosts, interval_s, max_down_s
    probes: list[dict[str, Any]] = field(default_factory=list)
    children: list[dict[str, Any]] | None = None
    unreachable: dict[str, str] = field(default_factory=dict)
    #: each step as planned: id, name, kind, needs, undo_of, wave, hosts, idempotent,
    #: outcome_unknown
    steps: list[dict[str, Any]] = field(default_factory=list)


@_event
class StepCarried(JournalEvent):
    """A succeeded step of the resumed run, not re-run."""

    event = Event.STEP_CARRIED
    step: str
    from_run: str
    value: Any = None
    attempts: int = 0
    #: each host: host, rc, stdout, value
    hosts: list[dict[str, Any]] = field(default_factory=list)
    #: a gate's original approval: by, via, comment
    approval: dict[str, Any] | None = None


@_event
class StepStarted(JournalEvent):
    event = Event.STEP_STARTED
    step: str
    kind: str = "command"
    hosts: list[str] = field(default_factory=list)
    wave: int | None = None
    undo_of: str | None = None


@_event
class HostStarted(JournalEvent):
    """One attempt on one host began."""

    event = Event.HOST_STARTED
    step: str
    host: str
    attempt: int = 1


@_event
class Poll(JournalEvent):
    """One poll of a check on one host."""

    event = Event.POLL
    step: str
    host: str
    attempt: int = 1
    poll: int | None = None
    rc: int | None = None
    ok: bool | None = None
    value: Any = None
    duration_s: float | None = None


@_event
class HostFinished(JournalEvent):
    """One attempt on one host ended (``command`` as rendered for the host, secrets masked)."""

    event = Event.HOST_FINISHED
    sparse = frozenset({"polls", "reattached", "from_run", "message", "output_cut"})
    step: str
    host: str
    attempt: int = 1
    status: str | None = None
    rc: int | None = None
    error: str | None = None
    duration_s: float | None = None
    output_tail: str = ""
    stdout: str = ""
    value: Any = None
    command: str | None = None
    polls: int | None = None
    #: followed after its controller died, not run again (and the run that started it)
    reattached: bool | None = None
    from_run: str | None = None
    message: str | None = None
    #: bytes past the runbook's output_limit, not kept in the output log
    output_cut: int | None = None


@_event
class StepFinished(JournalEvent):
    event = Event.STEP_FINISHED
    #: named only by a gate answered from elsewhere
    sparse = frozenset({"by", "via", "comment"})
    step: str
    status: str
    error: str | None = None
    attempts: int | None = None
    value: Any = None
    outcome_unknown: bool | None = None
    #: who answered a gate from elsewhere, how, and what they said
    by: str | None = None
    via: str | None = None
    comment: str | None = None
    message: str | None = None


@_event
class GateWaiting(JournalEvent):
    """A manual gate asks."""

    event = Event.GATE_WAITING
    step: str
    prompt: str | None = None


@_event
class GateAnswered(JournalEvent):
    """A gate was answered (by user@host, via --yes/terminal/drx approve)."""

    event = Event.GATE_ANSWERED
    step: str
    approved: bool | None = None
    by: str | None = None
    via: str | None = None
    comment: str | None = None
    waited_s: float | None = None
    message: str | None = None


@_event
class RtoBudgetAtRisk(JournalEvent):
    event = Event.RTO_BUDGET_AT_RISK
    elapsed_s: float | None = None
    projected_s: float = 0.0
    target_s: float | None = None


@_event
class RtoBudgetRecovered(JournalEvent):
    event = Event.RTO_BUDGET_RECOVERED
    elapsed_s: float | None = None
    projected_s: float = 0.0


@_event
class RpoGuardTripped(JournalEvent):
    event = Event.RPO_GUARD
    step: str
    measured: float | None = None
    target: float | None = None
    unit: str = "s"
    accepted: bool = False
    blocked: list[str] = field(default_factory=list)
    message: str | None = None


@_event
class RunAborting(JournalEvent):
    event = Event.RUN_ABORTING
    step: str


@_event
class LockInDoubt(JournalEvent):
    event = Event.LOCK_IN_DOUBT


@_event
class LockConfirmed(JournalEvent):
    event = Event.LOCK_CONFIRMED


@_event
class RunLockLost(JournalEvent):
    event = Event.LOCK_LOST
    reason: str | None = None


@_event
class Interrupt(JournalEvent):
    """The first Ctrl-C, or an abort asked from elsewhere (by, via, comment)."""

    event = Event.INTERRUPT
    sparse = frozenset({"by", "via", "comment"})
    by: str | None = None
    via: str | None = None
    comment: str | None = None


@_event
class InterruptRefused(JournalEvent):
    event = Event.INTERRUPT_REFUSED


@_event
class CancelRunning(JournalEvent):
    event = Event.CANCEL_RUNNING


@_event
class ProbePoll(JournalEvent):
    event = Event.PROBE_POLL
    probe: str
    host: str
    ok: bool | None = None
    rc: int | None = None
    error: str | None = None
    value: Any = None
    duration_s: float | None = None


@_event
class ProbeBreached(JournalEvent):
    event = Event.PROBE_BREACHED
    probe: str
    down_s: float | None = None
    since: float | None = None
    max_down_s: float | None = None
    stops_run: bool = False
    message: str | None = None


@_event
class StepsDone(JournalEvent):
    event = Event.STEPS_DONE


@_event
class HealthPolling(JournalEvent):
    event = Event.HEALTH_POLLING
    site: str | None = None


@_event
class HealthHeld(JournalEvent):
    event = Event.HEALTH_HELD
    site: str | None = None


@_event
class HealthTimeout(JournalEvent):
    event = Event.HEALTH_TIMEOUT
    site: str | None = None


@_event
class RunFinished(JournalEvent):
    event = Event.RUN_FINISHED
    status: str
    exit_code: int | None = None
    message: str | None = None


E = TypeVar("E", bound=JournalEvent)

#: each event class, by its ``event`` string
EVENT_TYPES: dict[str, type[JournalEvent]] = {}
#: per class: its fields (beyond t/ts) in order, and the fields a line must name (None when a
#: line of an older drx lacks them)
_FIELDS: dict[type[JournalEvent], tuple[tuple[str, ...], tuple[str, ...]]] = {}
#: per class: its line as a dict, from a function written for that class's fields (the way
#: dataclasses writes ``__init__``): a dict display, no per-field loop or generic copy
_DUMPERS: dict[type[JournalEvent], Callable[[JournalEvent], dict[str, Any]]] = {}


def _dumper(
    cls: type[JournalEvent], names: tuple[str, ...]
) -> Callable[[JournalEvent], dict[str, Any]]:
    # the fields up to the first sparse one in the dict display, the rest assigned in order
    first = next((i for i, n in enumerate(names) if n in cls.sparse), len(names))
    items = "".join(f", {n!r}: ev.{n}" for n in names[:first])
    lines = [f"    d = {{'event': EVENT, 't': ev.t, 'ts': ev.ts{items}}}"]
    for n in names[first:]:
        if n in cls.sparse:
            lines.append(f"    if ev.{n} is not None:\n        d[{n!r}] = ev.{n}")
        else:
            lines.append(f"    d[{n!r}] = ev.{n}")
    source = "def dump(ev):\n" + "\n".join(lines) + "\n    return d\n"
    scope: dict[str, Any] = {"EVENT": cls.event.value}
    exec(source, scope)  # built from the class's own field names only
    dump: Callable[[JournalEvent], dict[str, Any]] = scope["dump"]
    return dump


def _register(cls: type[JournalEvent]) -> None:
    own = [f for f in fields(cls) if f.name not in ("t", "ts")]
    names = tuple(f.name for f in own)
    required = tuple(f.name for f in own if f.default is MISSING and f.default_factory is MISSING)
    EVENT_TYPES[cls.event.value] = cls
    _FIELDS[cls] = (names, required)
    _DUMPERS[cls] = _dumper(cls, names)
    cls.__init__ = slot_init(cls)  # type: ignore[method-assign]
    cls.__hash__ = JournalEvent._hash  # type: ignore[assignment]  # eq without frozen: None


# the module's classes, not ``__subclasses__()``: that also lists the classes ``slots=True``
# replaced
for _cls in list(globals().values()):
    if isinstance(_cls, type) and issubclass(_cls, JournalEvent) and _cls is not JournalEvent:
        _register(_cls)
JournalEvent.__init__ = slot_init(JournalEvent)  # type: ignore[method-assign]

_SET_T = JournalEvent.__dict__["t"].__set__
_SET_TS = JournalEvent.__dict__["ts"].__set__


def stamp(event: E, t: float, ts: str) -> E:
    """Give a freshly built event its time (the journal does, as it writes it)."""
    _SET_T(event, t)
    _SET_TS(event, ts)
    return event


def to_json(event: JournalEvent) -> dict[str, Any]:
    """The event as its journal line holds it (``event``, ``t``, ``ts``, then its fields)."""
    return _DUMPERS[type(event)](event)


def from_json(record: Mapping[str, Any]) -> JournalEvent | None:
    """The typed event of one journal line; None for a kind this drx does not know (a newer
    drx wrote it: readers skip it, as they always have)."""
    cls = EVENT_TYPES.get(record.get("event"))  # type: ignore[arg-type]
    if cls is None:
        return None
    names, required = _FIELDS[cls]
    values = {name: record[name] for name in names if name in record}
    for name in required:
        values.setdefault(name, None)
    t = record.get("t")
    ts = record.get("ts")
    return cls(
        t=float(t) if isinstance(t, int | float) else 0.0,
        ts=ts if isinstance(ts, str) else "",
        **values,
    )


def parse(records: Iterable[Mapping[str, Any]]) -> list[JournalEvent]:
    """The typed events of journal lines, in order (unknown kinds left out)."""
    out = []
    for record in records:
        event = from_json(record)
        if event is not None:
            out.append(event)
    return out
