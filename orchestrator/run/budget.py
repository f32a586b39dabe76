"""The live RTO budget: elapsed RTO plus the predicted remaining critical path, against the
target; journals ``rto_budget_at_risk`` once each time the projection crosses the target."""

from __future__ import annotations

import threading

from orchestrator.plan.build import Plan, longest_path, topological
from orchestrator.record.events import (
    JournalEvent,
    RtoBudgetAtRisk,
    RtoBudgetRecovered,
    StepCarried,
    StepFinished,
    StepStarted,
)
from orchestrator.record.fold import RunState
from orchestrator.record.journal import Journal


class BudgetWatcher:
    """Tracks step progress from journal events and projects the RTO."""

    def __init__(self, plan: Plan, journal: Journal, tick_s: float = 0.25):
        self.plan = plan
        self.journal = journal
        self.target = plan.runbook.rto_target
        #: the run's steps as far as they went (the fold of their start/end events only: the
        #: projection needs no host-level facts, and this runs on the scheduler's path)
        self.run = RunState()
        self.at_risk = False
        self.projection: float | None = None
        self._order = topological(plan.graph)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._tick_s = tick_s
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.target is None:
            return  # nothing to project against: no fold of the steps on the scheduler's path
        self.journal.listeners.append(self.on_event)
        if self.target is not None:
            self._thread = threading.Thread(target=self._loop, name="rto-budget", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop projecting; returns once the ticker can journal nothing more."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(1.0)

    def _loop(self) -> None:
        while not self._stop.wait(self._tick_s):
            self.check()

    @property
    def t_start(self) -> float | None:
        """When the first step started (None: none yet)."""
        return self.run.first_step_t

    def on_event(self, event: JournalEvent) -> None:
        if isinstance(event, StepStarted | StepFinished | StepCarried):
            with self._lock:
                self.run.apply(event)
        # The projection walks the whole DAG: it is recomputed on the ticker (every tick_s),
        # never per event, so a 10,000-step run does not pay a graph walk per step.

    def remaining(self, now: float) -> float:
        """Predicted time still needed: the heaviest path through unfinished steps, plus health."""

        steps = self.run.steps

        def weight(sid: str) -> float:
            st = steps.get(sid)
            if st is not None and st.finished:
                return 0.0
            predicted = self.plan.steps[sid].predicted_s or 0.0
            if st is not None and st.t0 is not None:
                return max(0.0, predicted - (now - st.t0))
            return predicted

        total, _ = longest_path(self.plan.graph, self._order, weight)
        return total + (self.plan.predicted_health_s or 0.0)

    def check(self) -> None:
        if self.target is None:
            return
        with self._lock:
            if self.t_start is None:
                return
            now = self.journal.now()
            elapsed = now - self.t_start
            projection = elapsed + self.remaining(now)
            self.projection = projection
            crossing = projection > self.target and not self.at_risk
            recovered = projection <= self.target and self.at_risk
            if crossing:
                self.at_risk = True
            elif recovered:
                self.at_risk = False
        if crossing:
            self.journal.write(
                RtoBudgetAtRisk(
                    elapsed_s=round(elapsed, 3),
                    projected_s=round(projection, 3),
                    target_s=self.target,
                )
            )
        elif recovered:
            self.journal.write(
                RtoBudgetRecovered(elapsed_s=round(elapsed, 3), projected_s=round(projection, 3))
            )
