"""Runs a plan: starts each step the moment its needs are met, runs it on its hosts (bounded by
``serial``), retries, polls checks, opens manual gates, and journals every event.

The scheduler lives on the calling (main) thread, so Ctrl-C is seen at once: the first stops
scheduling and lets running commands end, the second cancels them. Steps run on a thread pool
bounded by ``max_parallel``; the hosts of one step on threads of their own.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.errors import (
    GateTimeout,
    GateUnavailable,
    TransportError,
)
from orchestrator.kinds import kind_of
from orchestrator.model.inventory import Host, SelectorError, select
from orchestrator.model.runbook import OnFailure, Step
from orchestrator.model.templating import StepsView, evaluate, render
from orchestrator.model.units import format_duration
from orchestrator.plan.build import Plan, PlanStep, resolve_durations
from orchestrator.record.events import (
    CancelRunning,
    GateAnswered,
    GateWaiting,
    HostFinished,
    HostStarted,
    Interrupt,
    Poll,
    RpoGuardTripped,
    RunAborting,
    StepFinished,
    StepStarted,
)
from orchestrator.record.journal import Journal
from orchestrator.record.outcomes import HostOutcome, Status, StepOutcome
from orchestrator.record.store import inside
from orchestrator.run.recover import Found, Recovery
from orchestrator.run.rpo_guard import GuardVerdict, RpoGuard, judge
from orchestrator.transport.base import (
    TAIL_BYTES,
    CancelToken,
    CommandResult,
    Connection,
    LogTarget,
    OutputLog,
    Redactor,
)
from orchestrator.transport.spool import SpoolKey, cleanup_program, words

if TYPE_CHECKING:
    import jinja2
else:
    from orchestrator.model.templating import jinja2  # imported when first used

#: how much of stdout is journaled per host (for templates of a resumed run or a failback)
JOURNAL_STDOUT_BYTES = 4096
#: how long the creation (before the first step) or removal (at the end) of a host's spool
#: directories may take
SPOOL_CLEAN_TIMEOUT_S = 10.0
#: check polls journaled per host attempt before only every 10th is
POLL_JOURNAL_FULL = 200


#: a gate asks the operator; returns True to approve
GateFn = Callable[[str, str], bool]


_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def capture_value(kind: str | None, stdout: str) -> Any:
    """The captured value of ``stdout`` (SPEC §4 ``capture``); None when nothing is found."""
    if kind is None:
        return None
    if kind == "text":
        return stdout.strip()
    if kind == "number":
        match = _NUMBER.search(stdout)
        if not match:
            return None
        text = match.group(0)
        if re.fullmatch(r"[-+]?\d+", text):
            return int(text)
        return float(text)
    if kind == "json":
        try:
            return json.loads(stdout)
        except ValueError:
            return None
    match = re.search(kind, stdout, re.MULTILINE)
    return match.group(1) if match else None


def render_env(env: Mapping[str, str], ctx: Mapping[str, Any]) -> dict[str, str]:
    """A step's ``env`` with each value rendered as a template, in the context of ``run`` (so a
    secret can reach a command through its environment, never through its command line)."""
    return {name: render(value, ctx) for name, value in env.items()}


def check_holds(step: Step, ctx: Mapping[str, Any], res: CommandResult) -> tuple[bool, Any]:
    """Whether one poll of a check holds (``until``, default ``rc == 0``), and its captured
    value. A capture that finds nothing never holds; a failing ``until`` counts as false."""
    value = capture_value(step.capture, res.stdout)
    if res.error is not None or (step.capture and value is None):
        return False, value
    if not step.until:
        return res.rc == 0, value
    env = {**ctx, "rc": res.rc, "stdout": res.stdout, "stderr": res.stderr, "value": value}
    try:
        return bool(evaluate(step.until, env)), value
    except (jinja2.TemplateError, TypeError, ValueError):
        return False, value


class TemplateViews(Mapping[str, dict[str, Any]]):
    """What ``steps['id']`` shows templates, by step: each finished step's view built the
    first time a template reads it (most steps' never are), not as every step ends."""

    def __init__(self, order: Mapping[str, int]) -> None:
        self._order = order
        self._outcomes: dict[str, StepOutcome] = {}
        self._views: dict[str, dict[str, Any]] = {}

    def put(self, sid: str, outcome: StepOutcome) -> None:
        self._outcomes[sid] = outcome
        self._views.pop(sid, None)

    def __getitem__(self, sid: str) -> dict[str, Any]:
        view = self._views.get(sid)
        if view is None:
            view = self._views[sid] = self._outcomes[sid].template_view(self._order)
        return view

    def __contains__(self, sid: object) -> bool:
        return sid in self._outcomes

    def __iter__(self) -> Iterator[str]:
        return iter(self._outcomes)

    def __len__(self) -> int:
        return len(self._outcomes)


class Executor:
    """Runs the steps of one plan on open connections, journaling every event."""

    def __init__(
        self,
        plan: Plan,
        connections: Mapping[str, Connection],
        journal: Journal,
        output_dir: Path,
        *,
        max_parallel: int = 32,
        gate: GateFn,
        unreachable: Mapping[str, str] | None = None,
        carried: Mapping[str, StepOutcome] | None = None,
        extra_results: Mapping[str, StepOutcome] | None = None,
        rpo_guard: RpoGuard | None = None,
        run_id: str = "",
        spool_root: Path | None = None,
        recovered: Mapping[tuple[str, str], Recovery] | None = None,
    ):
        self.plan = plan
        self.connections = connections
        self.journal = journal
        self.output_dir = output_dir
        self.max_parallel = max_parallel
        self.gate = gate
        self.unreachable = dict(unreachable or {})
        self.cancel = CancelToken()
        self.stopping = threading.Event()  # first Ctrl-C: start nothing new
        #: extra conditions of :meth:`may_start` (e.g. a shared-state lease still held); each
        #: returns why nothing new may start, or None
        self.start_guards: list[Callable[[], str | None]] = []
        # set whenever nothing new may start any more: wakes retry delays and poll intervals
        self._halt = threading.Event()
        self.outcomes: dict[str, StepOutcome] = dict(carried or {})
        # results visible to templates: carried/earlier results, then this run's as they finish
        self._results = TemplateViews(plan.inventory.order)
        for sid, outcome in {**(extra_results or {}), **(carried or {})}.items():
            self._results.put(sid, outcome)
        self._gate_lock = threading.Lock()
        self._gate_lock_answers = threading.Lock()
        self._todo: set[str] = set()
        self._waiting: dict[str, int] = {}
        self._ready: list[tuple[int, str]] = []
        self._running = 0
        self._idle = threading.Condition()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._cleaning: threading.Thread | None = None
        self.manual_wait_s = 0.0
        #: gates asking now, and answers given to them from elsewhere (drx approve/deny, the
        #: web page): the first answer wins, the terminal's or another's
        self._asking: set[str] = set()
        self._answers: dict[str, Answer] = {}
        self.aborted_by: str | None = None
        self.rpo_guard = rpo_guard
        #: step commands are spooled under ``run_id`` on their hosts (``spool_root`` for local
        #: hosts) when ``run_id`` is set
        self.run_id = run_id
        self.spool_root = spool_root
        #: in-flight host attempts of the resumed run, taken (once each) instead of a re-run
        self.recovered = dict(recovered or {})
        self._recovered_lock = threading.Lock()
        #: spooled attempts whose outcome is journaled and nothing needs any more, per host
        self._spent: dict[str, list[SpoolKey]] = {}
        #: the guard's verdict once it tripped (refused, or accepted with --accept-data-loss)
        self.guard_verdict: GuardVerdict | None = None

    # -- scheduling -------------------------------------------------------------------------
    def may_start(self) -> bool:
        """The one check before anything new starts: a step, a host's attempt, a retry, a
        check's poll. False once the operator pressed Ctrl-C, a step aborted the run, or a
        guard in :attr:`start_guards` objects; what already runs is left to end."""
        return self.why_stopped() is None

    def why_stopped(self) -> str | None:
        """Why nothing new may start (None: it may)."""
        if self.stopping.is_set():
            return "cancelled by the operator"
        if self.aborted_by is not None:
            return f"the run stopped: step '{self.aborted_by}' failed"
        if self.guard_refuses and self.guard_verdict is not None:
            return self.guard_verdict.message
        for guard in self.start_guards:
            reason = guard()
            if reason is not None:
                return reason
        return None

    def halt(self) -> None:
        """Wake every pause (retry delay, poll interval) to re-check :meth:`may_start`."""
        self._halt.set()

    def _may_go(self, ps: PlanStep | None) -> bool:
        """May ``ps`` start an attempt, a poll or a retry? Cleanup (``always``) goes on after
        the run stopped scheduling, until a second Ctrl-C."""
        if self.may_start():
            return True
        return ps is not None and ps.step.always and self._cleanup_may_start()

    def _pause(self, seconds: float, ps: PlanStep | None = None) -> bool:
        """Sleep up to ``seconds``; False as soon as nothing new may start (then at once)."""
        deadline = time.monotonic() + seconds
        while True:
            if not self._may_go(ps):
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            # guards are re-checked at least every 0.2 s, even if nobody calls halt()
            self._halt.wait(min(left, 0.2))

    def interrupt(self, **who: Any) -> None:
        """Ctrl-C: the first stops scheduling, the second cancels running commands. ``who``
        (by, via, comment) records an abort asked from elsewhere (drx abort, the web page)."""
        if self.stopping.is_set():
            if not self.cancel.is_set():
                self.journal.write(CancelRunning())
                self.cancel.set()
            return
        self.journal.write(Interrupt(**who))
        self.stopping.set()
        self.halt()

    # -- answers from elsewhere (docs/reference.md, "Control from another terminal") -----------
    def answer_gate(self, step_id: str, answer: Answer) -> str | None:
        """Answer a gate that is asking now; why not (None: taken). The first answer wins."""
        with self._gate_lock_answers:
            if step_id not in self._asking:
                return f"gate '{step_id}' is not waiting"
            if step_id in self._answers:
                return f"gate '{step_id}' was already answered"
            self._answers[step_id] = answer
        withdraw = getattr(self.gate, "withdraw", None)
        if withdraw is not None:  # the terminal stops asking
            withdraw(step_id)
        return None

    def waiting_gates(self) -> list[str]:
        """The gates asking now."""
        with self._gate_lock_answers:
            return sorted(self._asking - set(self._answers))

    def done_by_hand(self, step_id: str, answer: Answer) -> str | None:
        """Mark a step that has not started as done by hand: its dependents proceed. Why not
        (None: done)."""
        if step_id not in self.plan.steps:
            return f"no step '{step_id}' in this run"
        with self._idle:
            if step_id in self.outcomes:
                return f"step '{step_id}' already ended ({self.outcomes[step_id].status.value})"
            if step_id not in self._todo:
                return f"step '{step_id}' has already started"
            self._waiting.pop(step_id, None)
            self._ready = [r for r in self._ready if r[1] != step_id]
            heapq.heapify(self._ready)
            self._todo.discard(step_id)
            outcome = StepOutcome(step_id, Status.DONE_BY_HAND, message=answer.sentence("done"))
            self.journal.write(
                StepFinished(
                    step=step_id,
                    status=outcome.status.value,
                    by=answer.by,
                    via=answer.via,
                    comment=answer.comment,
                    message=outcome.message,
                )
            )
            nxt = self._complete(step_id, outcome)
            if nxt is not None:
                self._running += 1
                self._steps_pool.submit(self._step_thread, nxt)
        return None

    def _need_ok(self, need: str) -> bool | None:
        """True: the need lets dependents run; False: it never will; None: not finished yet."""
        outcome = self.outcomes.get(need)
        if outcome is None:
            return None
        if outcome.status in (Status.SUCCEEDED, Status.SKIPPED, Status.DONE_BY_HAND):
            return True
        if outcome.status is Status.FAILED:
            return self.tolerated(self.plan.steps[need]) if need in self.plan.steps else False
        return False

    def tolerated(self, ps: PlanStep) -> bool:
        """A failure of this step lets its dependents run (continue, or emergency at source)."""
        if ps.step.on_failure is OnFailure.CONTINUE:
            return True
        return self.plan.emergency and self._all_at_source(ps)

    def _all_at_source(self, ps: PlanStep) -> bool:
        return bool(ps.hosts) and all(h.site == self.plan.source for h in ps.hosts)

    def run(self) -> dict[str, StepOutcome]:
        """Run every step; returns the outcome of each (carried ones included).

        Each step keeps a count of needs not yet met; ready steps wait in a heap keyed by
        declaration order (deterministic start order, O(log n) per start). A worker that
        finishes a step does the bookkeeping itself and, if a step became ready, runs it
        straight away on the same thread — a chain of quick steps costs no thread hand-offs.
        The calling (main) thread only waits, so Ctrl-C is handled at once.
        """
        plan = self.plan
        self._todo = {sid for sid in plan.steps if sid not in self.outcomes}
        self._waiting = {}
        self._ready = []
        self._running = 0
        doomed: list[str] = []
        for sid in plan.steps:
            if sid not in self._todo:
                continue
            states = [self._need_ok(n) for n in plan.steps[sid].needs]
            if plan.steps[sid].step.always:  # cleanup: any finished need will do
                states = [None if s is None else True for s in states]
            if any(state is False for state in states):
                doomed.append(sid)
            self._waiting[sid] = sum(1 for state in states if state is None)
            if self._waiting[sid] == 0 and sid not in doomed:
                heapq.heappush(self._ready, (plan.steps[sid].index, sid))
        with self._idle:
            for sid in doomed:
                self._doom(sid)
            guard = self.rpo_guard
            if guard is not None and guard.step in self.outcomes:  # resumed: measured before
                self._judge_rpo(self.outcomes[guard.step])
        self._steps_pool = ThreadPoolExecutor(
            max_workers=self.max_parallel, thread_name_prefix="step"
        )
        try:
            with self._idle:
                for ps in self._take(self.max_parallel):
                    self._running += 1
                    self._steps_pool.submit(self._step_thread, ps)
                while True:
                    while self._running:
                        # a timeout keeps the main thread responsive to signals
                        self._idle.wait(0.25)
                    if not self._release_cleanup():
                        break
        finally:
            self._steps_pool.shutdown(wait=True)
        # stopped by the operator or a guard: what never started is cancelled, with the reason
        guarded = any(guard() is not None for guard in self.start_guards)
        final = Status.CANCELLED if self.stopping.is_set() or guarded else Status.NOT_RUN
        why = self.why_stopped() if final is Status.CANCELLED else None
        for sid in plan.steps:  # declaration order
            if sid in self._todo:
                self._finish(sid, StepOutcome(sid, final, message=why))
        return self.outcomes

    def _take(self, slots: int) -> list[PlanStep]:
        """Pop up to ``slots`` ready steps (caller holds ``_idle``), unless the run stops;
        once it stops, only ``always`` steps (cleanup) may still start."""
        taken: list[PlanStep] = []
        if not self.may_start():
            if not self._cleanup_may_start():
                return taken
            keep = []
            while self._ready:
                item = heapq.heappop(self._ready)
                ps = self.plan.steps[item[1]]
                if ps.step.always and len(taken) < slots:
                    self._todo.discard(ps.id)
                    taken.append(ps)
                else:
                    keep.append(item)
            for item in keep:
                heapq.heappush(self._ready, item)
            return taken
        while self._ready and len(taken) < slots and self.may_start():
            _, sid = heapq.heappop(self._ready)
            self._todo.discard(sid)
            taken.append(self.plan.steps[sid])
        return taken

    def _cleanup_may_start(self) -> bool:
        """An ``always`` step may start after an abort, a refused RPO guard or a first Ctrl-C;
        not after a second Ctrl-C, nor when a start guard (the run lock) refuses."""
        return not self.cancel.is_set() and all(guard() is None for guard in self.start_guards)

    def _release_cleanup(self) -> bool:
        """Nothing runs and the run has stopped: the steps that will never start are final, so
        ``always`` steps waiting for them may start now. True if any started (caller holds
        ``_idle``)."""
        waiting = [s for s in self._todo if self.plan.steps[s].step.always]
        if not waiting or self.may_start() or not self._cleanup_may_start():
            return False
        final = Status.CANCELLED if self.stopping.is_set() else Status.NOT_RUN
        why = self.why_stopped()
        for sid in list(self.plan.steps):  # declaration order
            if sid in self._todo and not self.plan.steps[sid].step.always:
                self._todo.discard(sid)
                self._waiting.pop(sid, None)
                self._finish(sid, StepOutcome(sid, final, message=why))
                self._release_always(sid)
        started = self._take(self.max_parallel)
        for ps in started:
            self._running += 1
            self._steps_pool.submit(self._step_thread, ps)
        return bool(started)

    def _release_always(self, sid: str) -> None:
        """``sid`` finished: the ``always`` steps that need it have one need less to wait for."""
        for child in self.plan.graph.successors(sid):
            if child in self._waiting and self.plan.steps[child].step.always:
                self._waiting[child] -= 1
                if self._waiting[child] == 0:
                    heapq.heappush(self._ready, (self.plan.steps[child].index, child))

    def _complete(self, sid: str, outcome: StepOutcome) -> PlanStep | None:
        """Record a finished step, release its dependents; return the next step for this
        worker to run (its slot is reused), submitting any others that fit (caller holds
        ``_idle``)."""
        self._finish(sid, outcome)
        if self.rpo_guard is not None and sid == self.rpo_guard.step:
            self._judge_rpo(outcome)
        ok = self._need_ok(sid)
        for child in self.plan.graph.successors(sid):
            if child not in self._todo or child not in self._waiting:
                continue
            if ok or self.plan.steps[child].step.always:
                self._waiting[child] -= 1
                if self._waiting[child] == 0:
                    heapq.heappush(self._ready, (self.plan.steps[child].index, child))
            else:
                self._doom(child)
        failed = outcome.status is Status.FAILED
        if failed and not self.tolerated(self.plan.steps[sid]) and self.aborted_by is None:
            self.aborted_by = sid
            self.journal.write(RunAborting(step=sid))
            self.halt()
        free = self.max_parallel - self._running  # slots free besides this worker's own
        nxt = self._take(1 + free)
        for ps in nxt[1:]:
            self._running += 1
            self._steps_pool.submit(self._step_thread, ps)
        return nxt[0] if nxt else None

    @property
    def guard_refuses(self) -> bool:
        """The RPO guard tripped and the data loss was not accepted: the run fails."""
        return self.guard_verdict is not None and self.guard_verdict.refuses

    def _judge_rpo(self, outcome: StepOutcome) -> None:
        """Apply the RPO guard to the rpo_step's outcome (caller holds ``_idle``): journal a
        trip, and when it refuses, mark every step that needs the rpo_step as never started."""
        assert self.rpo_guard is not None
        verdict = judge(
            self.rpo_guard, outcome, self.plan, dependents_run=bool(self._need_ok(outcome.id))
        )
        if verdict is None or not verdict.tripped:
            return
        self.guard_verdict = verdict
        guard = self.rpo_guard
        self.journal.write(
            RpoGuardTripped(
                step=guard.step,
                measured=verdict.measured,
                target=guard.target,
                unit="bytes" if guard.is_bytes else "s",
                accepted=verdict.accepted,
                blocked=list(verdict.blocked),
                message=verdict.message,
            )
        )
        if verdict.refuses:
            for sid in verdict.blocked:
                if not self.plan.steps[sid].step.always:  # cleanup still runs
                    self._doom(sid, message=verdict.message)
            self.halt()

    def _doom(self, sid: str, message: str = "a step it needs did not succeed") -> None:
        """A need of ``sid`` will never succeed: it, and what needs it, will not run."""
        stack = [sid]
        while stack:
            node = stack.pop()
            if node not in self._todo:
                continue
            self._todo.discard(node)
            self._waiting.pop(node, None)
            if self.stopping.is_set():  # Ctrl-C: what never started is cancelled
                self._finish(node, StepOutcome(node, Status.CANCELLED))
            else:
                self._finish(node, StepOutcome(node, Status.NOT_RUN, message=message))
            self._release_always(node)
            stack.extend(
                c for c in self.plan.graph.successors(node) if not self.plan.steps[c].step.always
            )

    def _host_pool(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                widest = max((len(ps.hosts) for ps in self.plan.steps.values()), default=1)
                health = sum(len(hp.hosts_after) for hp in self.plan.health)
                size = min(1024, max(8, self.max_parallel * widest, health))
                self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="host")
            return self._pool

    def close(self) -> None:
        """Stop the host threads (after the run and its health polls), then start removing the
        spools nothing needs any more — their outcomes handed to the journal's sink first —
        while the run's end is recorded; ``finish`` waits for that."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self.journal.flush()
        self._cleaning = threading.Thread(target=self.clean_spools, name="spool-clean")
        self._cleaning.start()

    def finish(self) -> None:
        """Wait for ``close``'s removal of spent spools (before the connections close)."""
        if self._cleaning is not None:
            self._cleaning.join()
            self._cleaning = None

    def _spent_key(self, host: Host, key: SpoolKey | None, res: CommandResult) -> None:
        """Remember a spooled attempt to remove at the end: a success (journaled before the
        removal), or any answered poll of a check."""
        if key is not None and res.rc is not None and (res.rc == 0 or not key.keep_failed):
            with self._recovered_lock:
                self._spent.setdefault(host.name, []).append(key)

    def keep_spools(self) -> None:
        """Remove nothing at the end: the outcomes of these attempts may be known only to
        their spools (the run lock was lost before they were journaled)."""
        with self._recovered_lock:
            self._spent = {}

    def clean_spools(self) -> None:
        """Remove the spent spool directories, one request per host (best effort: what stays
        is only disk). Over SSH nothing waits for the removal itself (``discard_spools``)."""
        with self._recovered_lock:
            spent, self._spent = self._spent, {}

        def clean(name: str) -> None:
            conn = self.connections.get(name)
            if conn is None or not hasattr(conn, "attach"):
                return
            discard = getattr(conn, "discard_spools", None)
            if discard is not None:
                discard(spent[name])
                return
            dirs = [words(k, conn.host) for k in spent[name]]
            with contextlib.suppress(TransportError, OSError):
                conn.run(cleanup_program(dirs), timeout=SPOOL_CLEAN_TIMEOUT_S)

        if spent:
            with ThreadPoolExecutor(max_workers=min(16, len(spent))) as pool:
                list(pool.map(clean, list(spent)))

    def _finish(self, sid: str, outcome: StepOutcome) -> None:
        self.outcomes[sid] = outcome
        if outcome.status in (Status.NOT_RUN, Status.CANCELLED) and not outcome.hosts:
            self.journal.write(
                StepFinished(step=sid, status=outcome.status.value, message=outcome.message)
            )
        self._results.put(sid, outcome)

    def _step_thread(self, ps: PlanStep) -> None:
        current: PlanStep | None = ps
        while current is not None:
            try:
                outcome = self.run_step(current)
            except Exception as exc:  # a bug must fail the step, not hang the run
                self.journal.write(
                    StepFinished(
                        step=current.id, status=Status.FAILED, error="internal", message=repr(exc)
                    )
                )
                outcome = StepOutcome(
                    current.id, Status.FAILED, error="internal", message=repr(exc)
                )
            with self._idle:
                current = self._complete(current.id, outcome)
                if current is None:
                    self._running -= 1
                    self._idle.notify_all()

    # -- one step ---------------------------------------------------------------------------
    def _steps_view(self, ps: PlanStep) -> StepsView:
        return StepsView(ps.readable, self._results, for_step=ps.undo_of or ps.id)

    def decide_hosts(self, ps: PlanStep) -> tuple[list[Host], str | None]:
        """The hosts of a step whose ``hosts`` template is rendered now, from the results of
        the steps it needs: host names or selectors, as a list or separated by commas/spaces,
        each within the step's candidates (its plan hosts, all pre-flighted). ([], why) when
        it renders to nothing, or to a host that is unknown or not a candidate."""
        candidates = {h.name: h for h in ps.hosts}
        try:
            rendered = [
                render(text, self.plan.context(steps=self._steps_view(ps)))
                for text in ps.step.hosts
            ]
        except (jinja2.TemplateError, TypeError, ValueError) as exc:
            return [], f"hosts: {exc}"
        names = [n for text in rendered for n in re.split(r"[,\s]+", text.strip()) if n]
        if not names:
            return [], f"hosts: the template rendered to no host ({' '.join(rendered)!r})"
        chosen: dict[str, Host] = {}
        for name in names:
            try:
                matched = select(self.plan.inventory, name, self.plan.aliases())
            except SelectorError as exc:
                return [], f"hosts: {name!r}: {exc}"
            for h in matched:
                if h.name not in candidates:
                    return [], (
                        f"hosts: {h.name} is not among the candidates of step '{ps.id}' "
                        f"({', '.join(candidates)})"
                    )
                chosen.setdefault(h.name, candidates[h.name])
        order = self.plan.inventory.order
        return sorted(chosen.values(), key=lambda h: order.get(h.name, 10**9)), None

    def run_step(self, ps: PlanStep) -> StepOutcome:
        step = ps.step
        j = self.journal
        hosts_problem: str | None = None
        if ps.decided_by is not None:
            decided, hosts_problem = self.decide_hosts(ps)
            if hosts_problem is None:
                # from now on the step is what it runs on: its per-host status, serial,
                # emergency rules and a failback's undo all see these hosts
                ps.hosts = decided
        if step.duration_templates and hosts_problem is None:
            # durations that read earlier steps' results: rendered now, for this run
            ctx = self.plan.context(steps=self._steps_view(ps))
            resolved, bad = resolve_durations(step, ctx, run_time=True)
            if bad:
                hosts_problem = "; ".join(message for _, message in bad)
            else:
                ps.step = step = resolved
        t0 = j.now()
        j.write(
            StepStarted(
                step=ps.id,
                kind=str(step.kind),
                hosts=[h.name for h in ps.hosts],
                wave=ps.wave,
                undo_of=ps.undo_of,
            ),
            t0,
        )
        if ps.skipped is not None:  # ``only`` names the other mode: skipped, dependents proceed
            return self._end(ps, StepOutcome(ps.id, Status.SKIPPED, message=ps.skipped))
        if step.when:
            try:
                go = bool(evaluate(step.when, self.plan.context(steps=self._steps_view(ps))))
            except (jinja2.TemplateError, TypeError, ValueError) as exc:
                return self._end(
                    ps, StepOutcome(ps.id, Status.FAILED, error="template", message=f"when: {exc}")
                )
            if not go:
                return self._end(
                    ps, StepOutcome(ps.id, Status.SKIPPED, message=f"when is false: {step.when}")
                )
        if hosts_problem is not None:
            error = "hosts" if hosts_problem.startswith("hosts:") else "template"
            return self._end(
                ps, StepOutcome(ps.id, Status.FAILED, error=error, message=hosts_problem)
            )
        return self._end(ps, kind_of(step.kind).execute(self, ps))  # orchestrator/kinds/

    def _end(self, ps: PlanStep, outcome: StepOutcome) -> StepOutcome:
        self.journal.write(
            StepFinished(
                step=ps.id,
                status=outcome.status.value,
                error=outcome.error,
                attempts=outcome.attempts,
                value=outcome.value,
                outcome_unknown=outcome.outcome_unknown or None,
                message=outcome.message,
            )
        )
        return outcome

    def _manual(self, ps: PlanStep) -> StepOutcome:
        prompt = render(
            ps.step.prompt or ps.step.name, self.plan.context(steps=self._steps_view(ps))
        )
        with self._gate_lock:  # one question on the terminal at a time
            t0 = self.journal.now()
            self.journal.write(GateWaiting(step=ps.id, prompt=prompt), t0)
            approved, problem, error, who = self._ask(ps.id, prompt)
            t1 = self.journal.now()
            self.manual_wait_s += t1 - t0
            # someone answered (approved or declined): who, how and what they said is recorded
            answered = approved is True or error == "declined"
            if who is None and answered:
                who = Answer(
                    approved is True,
                    getattr(self.gate, "by", "operator"),
                    getattr(self.gate, "via", None),
                    getattr(self.gate, "comments", {}).get(ps.id),
                )
            self.journal.write(
                GateAnswered(
                    step=ps.id,
                    approved=approved,
                    by=who.by if who else None,
                    via=who.via if who else None,
                    comment=who.comment if who else None,
                    waited_s=round(t1 - t0, 6),
                    message=problem,
                ),
                t1,
            )
        if approved:
            return StepOutcome(ps.id, Status.SUCCEEDED)
        if approved is None:
            return StepOutcome(ps.id, Status.CANCELLED, message=problem)
        return StepOutcome(
            ps.id,
            Status.FAILED,
            error=error,
            message=problem,
        )

    def _ask(
        self, step_id: str, prompt: str
    ) -> tuple[bool | None, str | None, str | None, Answer | None]:
        """Ask the gate on a thread of its own, so that Ctrl-C while an operator is being
        asked cancels the gate instead of waiting on the terminal, and an answer from
        elsewhere (:meth:`answer_gate`) is taken at once: (approved, why not, the step's error
        code, who answered from elsewhere), with approved None when the run was interrupted."""
        answer: dict[str, Any] = {}
        answered = threading.Event()

        def ask() -> None:
            try:
                answer["approved"] = bool(self.gate(step_id, prompt))
            except GateTimeout as exc:
                answer["problem"], answer["error"] = str(exc), "timeout"
            except GateUnavailable as exc:
                answer["problem"] = str(exc)
            except Exception as exc:  # a broken terminal: no approval
                answer["problem"] = f"the gate could not ask: {exc!r}"
            answered.set()

        with self._gate_lock_answers:
            self._asking.add(step_id)
        try:
            threading.Thread(target=ask, name=f"gate-{step_id}", daemon=True).start()
            while not answered.wait(0.05):
                if self.stopping.is_set():
                    return None, "cancelled while waiting for the operator", Status.CANCELLED, None
                if step_id in self._answers:
                    break
        finally:
            with self._gate_lock_answers:
                self._asking.discard(step_id)
                other = self._answers.get(step_id)
        if other is not None:
            if other.approved:
                return True, None, None, other
            return False, other.sentence("declined"), "declined", other
        if "approved" in answer:
            if answer["approved"]:
                return True, None, None, None
            return False, "the operator declined", "declined", None
        return False, answer.get("problem"), answer.get("error", "no_terminal"), None

    def _on_hosts(self, ps: PlanStep) -> StepOutcome:
        """Run a command/check step on all its hosts. Each host retries on its own: its next
        attempt starts ``retry_delay`` after its own failure, never waiting for the others.
        ``serial`` bounds how many hosts run at once, and once one of them has failed for good
        no further host starts (rolling, fail fast)."""
        step = ps.step
        hosts = list(ps.hosts)
        results: dict[str, HostOutcome] = {}
        held_back: list[str] = []  # hosts never started: the run stopped, or serial failed fast
        roll = _Rolling(step.serial) if step.serial and len(hosts) > step.serial else None
        if len(hosts) == 1:
            outs = [self._host_tries(ps, hosts[0], roll)]
        else:
            # hosts run on one pool shared by every step (a pool per step costs ~1 ms of CPU to
            # build); ``serial`` bounds how many of this step's hosts run at once
            futures = [self._host_pool().submit(self._host_tries, ps, h, roll) for h in hosts]
            outs = [f.result() for f in futures]
        for host, out in zip(hosts, outs, strict=True):
            if out is None:
                held_back.append(host.name)
            else:
                results[out.host] = out
        statuses = {o.status for o in results.values()}
        message = None
        if Status.CANCELLED in statuses:
            status = Status.CANCELLED
        elif Status.FAILED in statuses:
            status = Status.FAILED
        elif held_back:
            status = Status.CANCELLED
        else:
            status = Status.SUCCEEDED
        if held_back:
            why = (
                f"serial: stopped after {roll.failed} failed"
                if roll is not None and roll.failed
                else (self.why_stopped() or "the run stopped")
            )
            message = f"{why}; not started on {', '.join(held_back)}"
        # only a command closed while it ran leaves its effect unknown
        unknown = any(o.error == "cancelled" for o in results.values())
        errors = [o.error for o in results.values() if o.error]
        order = self.plan.inventory.order
        first = min(results.values(), key=lambda o: order.get(o.host, 0), default=None)
        return StepOutcome(
            ps.id,
            status,
            error=errors[0] if errors and status is not Status.SUCCEEDED else None,
            hosts=results,
            attempts=max((o.attempts for o in results.values()), default=0),
            value=first.value if first else None,
            outcome_unknown=unknown,
            message=message,
        )

    def _host_tries(self, ps: PlanStep, host: Host, roll: _Rolling | None) -> HostOutcome | None:
        """Every attempt of one host, retrying after its own failures; None when it never
        started (the run stopped first, or a ``serial`` step already failed on another host).
        Under ``serial`` the host keeps its slot through its retries."""
        if roll is not None:
            with roll.slot:
                if roll.failed:
                    return None
                final = self._host_tries(ps, host, None)
                if final is not None and final.status is Status.FAILED and not roll.failed:
                    roll.failed = host.name
                return final
        step = ps.step
        out: HostOutcome | None = None
        for attempt in range(1, step.retries + 2):
            if not self._may_go(ps):
                return out
            out = self._host_attempt(ps, host, attempt)
            if out.status is not Status.FAILED or out.error in (
                "unreachable",
                "template",
            ):
                return out
            if attempt > step.retries or self.cancel.is_set():
                return out
            if not self._pause(step.retry_delay, ps):
                return out
        return out

    def _spool(
        self, ps: PlanStep, host: Host, attempt: str, *, keep_failed: bool = True
    ) -> SpoolKey | None:
        """Where one attempt is spooled on its host (a check's poll is answered at once, so
        a failed poll keeps nothing)."""
        if not self.run_id:
            return None
        return SpoolKey(self.run_id, ps.id, host.name, attempt, self.spool_root, keep_failed)

    def _log_path(self, ps: PlanStep, host: Host) -> OutputLog:
        """The output log of one attempt on one host, with the runbook's limit."""
        path = inside(self.output_dir, *ps.id.split("/"), f"{host.name}.log")
        return OutputLog(path, self.plan.runbook.output_limit)

    def _host_attempt(self, ps: PlanStep, host: Host, attempt: int) -> HostOutcome:
        j = self.journal
        t0 = j.now()
        j.write(HostStarted(step=ps.id, host=host.name, attempt=attempt), t0)
        outcome = self._host_body(ps, host, attempt)
        outcome.attempts = attempt
        return outcome

    def _host_body(self, ps: PlanStep, host: Host, attempt: int) -> HostOutcome:
        step = ps.step
        j = self.journal
        t0 = j.now()
        rendered: str | None = None  # the command as run on this host (journaled, redacted)
        log = self._log_path(ps, host)  # one per attempt: a check's polls share its limit

        def done(
            status: Status,
            rc: int | None,
            error: str | None,
            tail: str = "",
            stdout: str = "",
            value: Any = None,
            **extra: Any,
        ) -> HostOutcome:
            t1 = j.now()
            if log.dropped:
                extra["output_cut"] = log.dropped
            j.write(
                HostFinished(
                    step=ps.id,
                    host=host.name,
                    attempt=attempt,
                    status=status.value,
                    rc=rc,
                    error=error,
                    duration_s=round(t1 - t0, 6),
                    output_tail=tail[-TAIL_BYTES:],
                    stdout=stdout[-JOURNAL_STDOUT_BYTES:],
                    value=value,
                    command=rendered,
                    **extra,
                ),
                t1,
            )
            return HostOutcome(host.name, status, rc, error, stdout, value, t_end=t1)

        if host.name in self.unreachable:
            return done(Status.FAILED, None, "unreachable", self.unreachable[host.name])
        conn = self.connections.get(host.name)
        if conn is None:
            return done(Status.FAILED, None, "unreachable", "no connection to this host")
        ctx = self.plan.context(host=host, steps=self._steps_view(ps), active=ps.active)
        try:
            command = render(step.run or "", ctx)
            env = render_env(step.env, ctx)
        except jinja2.TemplateError as exc:
            return done(Status.FAILED, None, "template", f"template error: {exc}")
        rendered = command
        if kind_of(step.kind).polls:
            return self._poll(ps, host, attempt, conn, command, env, ctx, done, log)
        with self._recovered_lock:
            rec = self.recovered.pop((ps.id, host.name), None)
        extra: dict[str, Any] = {}
        if rec is not None and rec.found is Found.JOURNAL and rec.finished is not None:
            e = rec.finished
            if e.status == Status.SUCCEEDED.value:
                with self._recovered_lock:
                    self._spent.setdefault(host.name, []).append(rec.key)
            return done(
                Status(e.status or Status.FAILED),
                e.rc,
                e.error,
                e.output_tail,
                e.stdout,
                e.value,
                from_run=rec.key.run_id,
            )
        attach = getattr(conn, "attach", None)
        if rec is not None and rec.found in (Found.ENDED, Found.LIVE) and attach is not None:
            # the command outlived its controller: follow it, never run it again
            left = max(rec.left_s(step.timeout, time.time()), 1.0)
            res = attach(
                rec.key,
                sudo=step.sudo,
                timeout=left,
                log_path=log,
                redact=self.plan.redactor,
                cancel=self.cancel,
            )
            extra = {"reattached": True, "from_run": rec.key.run_id}
            key: SpoolKey | None = rec.key
        else:
            key = self._spool(ps, host, str(attempt))
            res = run_command(
                conn,
                step,
                command,
                env=env,
                timeout=step.timeout,
                redact=self.plan.redactor,
                log_path=log,
                cancel=self.cancel,
                spool=key,
            )
        self._spent_key(host, key, res)
        if res.error == "cancelled":
            return done(Status.CANCELLED, None, "cancelled", res.output_tail, res.stdout, **extra)
        if not res.ok:
            return done(Status.FAILED, res.rc, res.error, res.output_tail, res.stdout, **extra)
        value = capture_value(step.capture, res.stdout)
        if step.capture and value is None:
            return done(
                Status.FAILED,
                res.rc,
                "capture",
                res.output_tail,
                res.stdout,
                message=f"capture {step.capture}: nothing found",
                **extra,
            )
        return done(Status.SUCCEEDED, res.rc, None, res.output_tail, res.stdout, value, **extra)

    def _poll(
        self,
        ps: PlanStep,
        host: Host,
        attempt: int,
        conn: Connection,
        command: str,
        env: Mapping[str, str],
        ctx: dict[str, Any],
        done: Callable[..., HostOutcome],
        log: OutputLog,
    ) -> HostOutcome:
        """Poll a check on one host until ``until`` holds or the window (``timeout``) closes."""
        step = ps.step
        j = self.journal
        deadline = time.monotonic() + step.timeout
        polls = 0
        last: CommandResult | None = None
        value: Any = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                tail = last.output_tail if last else ""
                return done(
                    Status.FAILED,
                    last.rc if last else None,
                    "timeout",
                    tail,
                    last.stdout if last else "",
                    value,
                    polls=polls,
                )
            polls += 1
            p0 = j.now()
            key = self._spool(ps, host, f"{attempt}.{polls}", keep_failed=False)
            res = run_command(
                conn,
                step,
                command,
                env=env,
                timeout=remaining,
                redact=self.plan.redactor,
                log_path=log,
                cancel=self.cancel,
                spool=key,
            )
            self._spent_key(host, key, res)
            if res.connection_failed:
                return done(Status.FAILED, None, res.error, res.output_tail, polls=polls)
            if res.rc is not None or last is None:
                # on timeout, report the last poll that ended with an exit code, not the one
                # the deadline cut short
                last = res
            if res.error == "cancelled":
                return done(
                    Status.CANCELLED, None, "cancelled", res.output_tail, res.stdout, polls=polls
                )
            ok, value = check_holds(step, ctx, res)
            if polls <= POLL_JOURNAL_FULL or ok or polls % 10 == 0:
                j.write(
                    Poll(
                        step=ps.id,
                        host=host.name,
                        attempt=attempt,
                        poll=polls,
                        rc=res.rc,
                        ok=ok,
                        value=value,
                        duration_s=round(res.duration_s, 6),
                    ),
                    p0,
                )
            if ok:
                return done(
                    Status.SUCCEEDED, res.rc, None, res.output_tail, res.stdout, value, polls=polls
                )
            wait = min(step.interval, max(0.0, deadline - time.monotonic()))
            if not self._pause(wait, ps):  # no further poll once the run stops scheduling
                return done(
                    Status.CANCELLED,
                    None,
                    "stopped",
                    res.output_tail,
                    res.stdout,
                    value,
                    polls=polls,
                    message=self.why_stopped(),
                )

    # -- health ---------------------------------------------------------------------------------
    def run_health(self, ps: PlanStep) -> tuple[bool, float]:
        """Poll a health entry on all its hosts until it holds; (held, when it first held)."""
        outcome = self._on_hosts(ps)
        held = outcome.status is Status.SUCCEEDED
        return held, max((h.t_end for h in outcome.hosts.values()), default=self.journal.now())

    # what a step kind's execution asks of the executor (orchestrator/kinds/base.py, StepRunner)
    on_hosts = _on_hosts
    ask_operator = _manual
    pause = _pause


def run_command(
    conn: Connection,
    step: Step,
    command: str,
    *,
    env: Mapping[str, str],
    timeout: float,
    redact: Redactor,
    log_path: LogTarget | None = None,
    cancel: CancelToken | None = None,
    spool: SpoolKey | None = None,
) -> CommandResult:
    """Run a step's rendered command (with its rendered ``env``) on one connection. A failure of the connection itself is
    a result too: no exit code, ``error`` naming it ("unreachable", "auth", "disconnected"...),
    the reason in ``output_tail`` and ``connection_failed`` set."""
    try:
        return conn.run(
            command,
            timeout=timeout,
            env=env,
            sudo=step.sudo,
            log_path=log_path,
            redact=redact,
            cancel=cancel,
            spool=spool,
        )
    except TransportError as exc:
        now = time.monotonic()
        return CommandResult(
            rc=None,
            stdout="",
            output_tail=str(exc),
            duration_s=0.0,
            started_mono=now,
            ended_mono=now,
            error=exc.error if exc.error != "transport" else "disconnected",
            connection_failed=True,
        )


def poll_once(
    plan: Plan, connections: Mapping[str, Connection], ps: PlanStep, host: Host
) -> tuple[bool, str]:
    """One poll of a check on one host, outside any run (the health check before a failover):
    whether it held, and if not, why (the exit code or error and the last lines of output)."""
    conn = connections.get(host.name)
    if conn is None:
        return False, "not connected"
    step = ps.step
    # a site plan's child health reads the child's vars (the view names the child's step)
    ctx = plan.context(host=host, steps=StepsView((), for_step=ps.id), active=ps.active)
    try:
        command, env = render(step.run or "", ctx), render_env(step.env, ctx)
    except jinja2.TemplateError as exc:
        return False, f"template error: {exc}"
    res = run_command(conn, step, command, env=env, timeout=step.timeout, redact=plan.redactor)
    if res.connection_failed:
        return False, res.output_tail
    held, value = check_holds(step, ctx, res)
    return held, "" if held else poll_failure(step, res, value)


def poll_failure(step: Step, res: CommandResult, value: Any) -> str:
    """Why a poll did not hold, for the operator: the exit code (or error), what ``until`` or
    ``capture`` made of it, and the last lines of output."""
    if res.error is not None:
        why = f"{res.error} after {format_duration(res.duration_s)}"
    elif step.capture and value is None:
        why = f"exit {res.rc}, capture {step.capture} found nothing"
    elif step.until:
        why = f"exit {res.rc}, until '{step.until}' was false (value {value!r})"
    else:
        why = f"exit {res.rc}"
    lines = [line for line in res.output_tail.strip().splitlines() if line.strip()][-3:]
    return why + (": " + " | ".join(lines) if lines else ", no output")


@dataclass(frozen=True)
class Answer:
    """An answer given from elsewhere than the run's terminal: approved or not, who
    (``user@host`` or a token's NAME), how (``drx approve``, ``web``...), and a comment."""

    approved: bool
    by: str
    via: str | None
    comment: str | None

    def sentence(self, what: str) -> str:
        """``declined by X via Y: "comment"``, for the step's message."""
        text = f"{what} by {self.by}" + (f" via {self.via}" if self.via else "")
        return text + (f': "{self.comment}"' if self.comment else "")


@dataclass
class _Rolling:
    """The hosts of one ``serial`` step: a slot per host running, and the first that failed."""

    size: int
    failed: str | None = None
    slot: threading.BoundedSemaphore = field(init=False)

    def __post_init__(self) -> None:
        self.slot = threading.BoundedSemaphore(self.size)
