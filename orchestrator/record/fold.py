"""One fold of a run's journal into what the run has done so far.

``RunState`` reads typed events (``orchestrator.record.events``) one at a time — as they are
written (the live view, the RTO budget) or from a stored journal (resume, failback, reports)
— and keeps the facts those readers share: each step's status, timing, attempts, value and
per-host outcome, who approved its gate, whether it was carried from an earlier run, and where
the run's health check stands. Readers project it (``StepOutcome`` for templates, rows of the
live view); none of them re-interprets the events on its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from orchestrator.record.events import (
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
    finished: RunFinished | None = None

    @classmethod
    def of(cls, events: Iterable[JournalEvent]) -> RunState:
        state = cls()
        for event in events:
            state.apply(event)
        return state

    def apply(self, event: JournalEvent) -> StepState | None:
        """Take one event into the state; returns the step it changed, if any."""
        step_id: str | None = getattr(event, "step", None)
        if step_id is not None and step_id.startswith("health:"):
            return None
        if isinstance(event, StepStarted):
            started = self.steps[event.step] = StepState(event.step, kind=event.kind, t0=event.t)
            started.outcome_unknown = True  # until it finishes
            if self.first_step_t is None:
                self.first_step_t = event.t
            return started
        if isinstance(event, StepCarried):
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
        if isinstance(event, StepFinished):
            done = self.steps.get(event.step)
            if done is None:
                done = self.steps[event.step] = StepState(event.step)
            done.status, done.t1 = event.status, event.t
            done.error, done.value, done.message = event.error, event.value, event.message
            done.attempts = event.attempts or done.attempts
            done.outcome_unknown = bool(event.outcome_unknown)
            return done
        st = self.steps.get(step_id) if step_id is not None else None
        if isinstance(event, HostStarted) and st is not None:
            st.hosts[event.host] = HostState(event.host, attempt=event.attempt, t0=event.t)
        elif isinstance(event, HostFinished) and st is not None:
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
        elif isinstance(event, GateWaiting) and st is not None:
            st.status = WAITING
        elif isinstance(event, GateAnswered) and st is not None:
            if st.status == WAITING:
                st.status = RUNNING
            if event.approved:
                st.approval = {"by": event.by, "via": event.via, "comment": event.comment}
        elif isinstance(event, RunStarted):
            self.started = event
        elif isinstance(event, HealthPolling):
            self.phase = "health"
        elif isinstance(event, HealthHeld):
            self.phase, self.held_t = "held", event.t
        elif isinstance(event, HealthTimeout):
            self.phase = "timeout"
        elif isinstance(event, RunFinished):
            self.finished = event
        return st
