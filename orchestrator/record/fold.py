"""One fold of a run's journal into what the run has done so far.

``RunState`` reads typed events (``orchestrator.record.events``) one at a time — as they are
written (the live view, the RTO budget) or from a stored journal (resume, failback, reports)
— and keeps the facts those readers share: each step's status, timing, attempts, value and
per-host outcome, who approved its gate, whether it was carried from an earlier run, and where
the run's health check stands. Readers project it (``StepOutcome`` for templates, rows of the
live view); none of them re-interprets the events on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from orchestrator.record.events import (
    EVENT_TYPES,
    GateAnswered,
    GateWaiting,
    HealthHeld,
    HealthPolling,
    HealthTimeout,
    HostFinished,
    HostStarted,
    JournalEvent,
    RunFinished,
    RunStarted,
    StepCarried,
    StepFinished,
    StepStarted,
)

#: a step's status while it runs (``step_finished`` then says how it ended)
RUNNING = "running"
#: a manual gate asking
WAITING = "waiting"
#: a host's attempt under way (or whose end the journal never got)
UNKNOWN = "unknown"


@dataclass(slots=True)
class HostState:
    """One host of a step: its latest attempt."""

    host: str
    status: str = UNKNOWN
    attempt: int = 1
    rc: int | None = None
    error: str | None = None
    stdout: str = ""
    value: Any = None
    t0: float | None = None
    t1: float | None = None


@dataclass(slots=True)
class StepState:
    """One step as far as the journal has got."""

    id: str
    status: str = RUNNING
    kind: str = "command"
    t0: float | None = None
    t1: float | None = None
    attempts: int = 0
    error: str | None = None
    value: Any = None
    message: str | None = None
    outcome_unknown: bool = False
    #: the run it was carried from (a resumed run does not run it again)
    carried_from: str | None = None
    hosts: dict[str, HostState] = field(default_factory=dict)
    #: who approved its gate (by, via, comment), kept across resumes
    approval: dict[str, Any] | None = None
    #: wall-clock times (``ts``) of its start and its end
    started_at: str | None = None
    finished_at: str | None = None

    @property
    def finished(self) -> bool:
        """Ended (or carried): nothing more of it is to come."""
        return self.carried_from is not None or self.status not in (RUNNING, WAITING)


@dataclass(slots=True)
class RunState:
    """A run as its journal tells it so far; ``apply`` each event in order."""

    started: RunStarted | None = None
    #: the run's steps, in the order the journal first names them (health checks aside)
    steps: dict[str, StepState] = field(default_factory=dict)
    #: when the first step started: the start of the run's work
    first_step_t: float | None = None
    #: ``steps``, then ``health`` while it is polled, ``held`` or ``timeout``
    phase: str = "steps"
    held_t: float | None = None
    held_at: str | None = None
    finished: RunFinished | None = None

    @classmethod
    def of(cls, events: Iterable[JournalEvent]) -> RunState:
        state = cls()
        for event in events:
            state.apply(event)
        return state

    def apply(self, event: JournalEvent) -> StepState | None:
        """Take one event into the state; returns the step it changed, if any."""
        fold = FOLDS.get(type(event))
        return fold(self, event) if fold is not None else None

    # one method per event kind, found by the event's class (not a chain of isinstance: the
    # summary folds every event of a 10,000-step run at its end)
    def _step_started(self, event: StepStarted) -> StepState | None:
        if (event.step or "").startswith("health:"):  # a line without one reads as None
            return None
        started = self.steps[event.step] = StepState(event.step, kind=event.kind, t0=event.t)
        started.outcome_unknown = True  # until it finishes
        started.started_at = event.ts
        if self.first_step_t is None:
            self.first_step_t = event.t
        return started

    def _step_carried(self, event: StepCarried) -> StepState | None:
        carried = self.steps[event.step] = StepState(
            event.step, status="succeeded", value=event.value, attempts=event.attempts
        )
        carried.carried_from = event.from_run
        carried.approval = dict(event.approval) if event.approval else None
        for h in event.hosts:
            carried.hosts[h["host"]] = HostState(
                h["host"],
                "succeeded",
                h.get("attempts", 1),
                h.get("rc"),
                None,
                h.get("stdout", ""),
                h.get("value"),
            )
        return carried

    def _step_finished(self, event: StepFinished) -> StepState | None:
        if (event.step or "").startswith("health:"):
            return None
        done = self.steps.get(event.step)
        if done is None:
            done = self.steps[event.step] = StepState(event.step)
        done.status, done.t1, done.finished_at = event.status, event.t, event.ts
        done.error, done.value, done.message = event.error, event.value, event.message
        done.attempts = event.attempts or done.attempts
        done.outcome_unknown = bool(event.outcome_unknown)
        return done

    def _host_started(self, event: HostStarted) -> StepState | None:
        st = self.steps.get(event.step)
        if st is not None:
            st.hosts[event.host] = HostState(event.host, attempt=event.attempt, t0=event.t)
        return st

    def _host_finished(self, event: HostFinished) -> StepState | None:
        st = self.steps.get(event.step)
        if st is not None:
            host = st.hosts.get(event.host)
            st.hosts[event.host] = HostState(
                event.host,
                event.status or "failed",
                event.attempt,
                event.rc,
                event.error,
                event.stdout,
                event.value,
                host.t0 if host is not None else None,
                event.t,
            )
        return st

    def _step_event(self, event: JournalEvent) -> StepState | None:
        """An event of a step that changes nothing folded (a poll): the step it names."""
        return self.steps.get(event.step)  # type: ignore[attr-defined]

    def _gate_waiting(self, event: GateWaiting) -> StepState | None:
        st = self.steps.get(event.step)
        if st is not None:
            st.status = WAITING
        return st

    def _gate_answered(self, event: GateAnswered) -> StepState | None:
        st = self.steps.get(event.step)
        if st is not None:
            if st.status == WAITING:
                st.status = RUNNING
            if event.approved:
                st.approval = {"by": event.by, "via": event.via, "comment": event.comment}
        return st

    def _run_started(self, event: RunStarted) -> None:
        self.started = event

    def _health_polling(self, event: HealthPolling) -> None:
        self.phase = "health"

    def _health_held(self, event: HealthHeld) -> None:
        self.phase, self.held_t, self.held_at = "held", event.t, event.ts

    def _health_timeout(self, event: HealthTimeout) -> None:
        self.phase = "timeout"

    def _run_finished(self, event: RunFinished) -> None:
        self.finished = event


def _steps_of(event_types: Iterable[type[JournalEvent]]) -> list[type[JournalEvent]]:
    """The kinds that name a step (its ``step`` field): others return no step."""
    return [cls for cls in event_types if "step" in cls.__dataclass_fields__]


#: what each event kind does to the state (kinds not named change nothing)
FOLDS: dict[type[JournalEvent], Callable[[RunState, Any], StepState | None]] = {
    **{cls: RunState._step_event for cls in _steps_of(EVENT_TYPES.values())},
    StepStarted: RunState._step_started,
    StepCarried: RunState._step_carried,
    StepFinished: RunState._step_finished,
    HostStarted: RunState._host_started,
    HostFinished: RunState._host_finished,
    GateWaiting: RunState._gate_waiting,
    GateAnswered: RunState._gate_answered,
    RunStarted: RunState._run_started,
    HealthPolling: RunState._health_polling,
    HealthHeld: RunState._health_held,
    HealthTimeout: RunState._health_timeout,
    RunFinished: RunState._run_finished,
}
