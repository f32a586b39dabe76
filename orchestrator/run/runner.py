"""One run from start to finish: lock, pre-flight, health before, the steps, health after, the
summary and the state — each stage journaled, so that a run that dies can still be reported,
failed back and resumed."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from orchestrator.bulk import run_gc
from orchestrator.errors import ExitCode, GateTimeout, LockLost, PreflightError, RefusedError
from orchestrator.kinds import kind_of
from orchestrator.plan.build import FAILOVER, REPROTECT, Plan, PlanStep
from orchestrator.plan.preview import plan_document
from orchestrator.plan.site import journal_children, state_changes
from orchestrator.record.control import channel_for
from orchestrator.record.events import (
    Event,
    HealthHeld,
    HealthPolling,
    HealthTimeout,
    InterruptRefused,
    LockConfirmed,
    LockInDoubt,
    RunFinished,
    RunLockLost,
    RunStarted,
    StepCarried,
    StepsDone,
    stamp,
)
from orchestrator.record.journal import Journal
from orchestrator.record.outcomes import Status, StepOutcome
from orchestrator.record.store import (
    LockState,
    RunLock,
    Store,
    document_json,
    private_dir,
    runbook_changes,
)
from orchestrator.record.summary import RunSummary, build_summary
from orchestrator.run import notify, preflight
from orchestrator.run.budget import BudgetWatcher
from orchestrator.run.control import ControlDesk, cancelled_message
from orchestrator.run.executor import Executor, poll_once
from orchestrator.run.interrupts import Interrupts, routed
from orchestrator.run.probes import Probes
from orchestrator.run.rpo_guard import RpoGuard
from orchestrator.terminal import printable
from orchestrator.transport import open_transport
from orchestrator.transport.base import Connection
from orchestrator.vocab import RunStatus

#: how long a gate with no terminal waits for an answer when its step sets no timeout
DEFAULT_GATE_WAIT_S = 3600.0


@dataclass
class RunOptions:
    yes: bool = False
    max_parallel: int = 32
    interactive: bool = False  # a terminal is there to answer gates and show the live view
    log_format: str = "console"
    verbose: int = 0
    runbook_file: str | None = None
    inventory_file: str | None = None
    carried: Mapping[str, StepOutcome] = field(default_factory=dict)
    carried_events: list[StepCarried] = field(default_factory=list)
    extra_results: Mapping[str, StepOutcome] = field(default_factory=dict)
    parent_start_wall: float | None = None
    check_source_health: bool = True
    accept_data_loss: bool = False  # let the run past a tripped RPO guard
    before_run: Callable[[Plan], None] | None = None  # e.g. confirm outcome-unknown undos
    transports: preflight.TransportFactory = open_transport
    notify: list[str] = field(default_factory=list)  # --notify / DRX_NOTIFY URLs
    gate_comment: str | None = None  # --comment: recorded with every gate approval
    #: a run that must not be stopped lightly (a rollback, a drill's way home): the first
    #: Ctrl-C is refused with a warning, the next ones act as usual
    refuse_first_interrupt: bool = False
    #: what the resumed run's in-flight steps left on their hosts (orchestrator.run.recover)
    recovered: Mapping[tuple[str, str], Any] = field(default_factory=dict)
    #: run again the resumed run's commands whose outcome is lost (drx resume --rerun-inflight)
    rerun_inflight: bool = False
    #: where Ctrl-C is routed during the run (orchestrator.cli.edge installs the handler);
    #: None: the run leaves SIGINT alone
    interrupts: Interrupts | None = None


def operator_identity() -> str:
    """``user@host`` of whoever runs drx: the approver a gate records."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


class Gate:
    """Answers manual gates: ``--yes``, else the operator at the terminal (through the view,
    ``ask``), else waits for an answer from elsewhere (drx approve/deny, the web page), which
    the executor takes; the step's ``timeout`` ends that wait as denied.

    Records who approved (``by``: user@host), how (``via``: ``--yes`` or ``terminal``) and an
    optional comment per gate: ``--comment``, else one typed after the answer (``y COMMENT``).
    """

    def __init__(
        self,
        yes: bool,
        interactive: bool,
        ask: Callable[[str, str], bool] | None = None,
        comment: str | None = None,
    ):
        self.yes = yes
        self.interactive = interactive
        self.by = operator_identity()
        self.via = "--yes" if yes else "terminal"
        self.ask = ask
        self.comment = comment
        self.comments: dict[str, str | None] = {}
        self.view: Any = None  # the view that asked: it keeps the comment typed with the answer
        #: how long each gate waits for an answer from elsewhere (its step's timeout)
        self.timeouts: dict[str, float] = {}
        #: the commands that answer a gate, with ``{step}`` in them
        self.answer_hint = "drx approve latest {step}"
        self._withdrawn: set[str] = set()
        self._changed = threading.Event()

    def withdraw(self, step_id: str) -> None:
        """The gate was answered elsewhere: stop asking (the terminal too)."""
        self._withdrawn.add(step_id)
        self._changed.set()
        withdraw = getattr(self.view, "withdraw", None)
        if withdraw is not None:
            withdraw(step_id)

    def __call__(self, step_id: str, prompt: str) -> bool:
        if self.yes:
            self.comments[step_id] = self.comment
            return True
        if not self.interactive:
            return self._wait(step_id)
        prompt = printable(prompt)  # host output in a prompt must not rewrite the terminal
        if self.ask is not None:
            approved = self.ask(step_id, prompt)
        else:
            from orchestrator.run.live import ask_line

            approved = ask_line(f"{step_id}: {prompt}")
        typed = getattr(self.view, "last_comment", None)
        self.comments[step_id] = self.comment if self.comment is not None else typed
        return approved

    def _wait(self, step_id: str) -> bool:
        """No terminal: say which command answers, then wait until the gate is answered
        elsewhere (the executor takes that answer) or its timeout denies it."""
        from orchestrator.model.units import format_duration

        timeout = self.timeouts.get(step_id, DEFAULT_GATE_WAIT_S)
        hint = self.answer_hint.format(step=step_id)
        print(
            f"drx: gate '{step_id}' waits for an answer (up to {format_duration(timeout)}): "
            f"{hint} (or drx deny …)",
            file=sys.stderr,
            flush=True,
        )
        deadline = time.monotonic() + timeout
        while step_id not in self._withdrawn:
            left = deadline - time.monotonic()
            if left <= 0:
                raise GateTimeout(
                    f"no answer within {format_duration(timeout)}: gate '{step_id}' is denied"
                )
            self._changed.wait(min(left, 0.5))
            self._changed.clear()
        return False


def _health_steps(plan: Plan, phase: str) -> list[PlanStep]:
    steps = []
    for hp in plan.health:
        hosts = hp.hosts_before if phase == "before" else hp.hosts_after
        step = hp.check.as_step()
        steps.append(
            PlanStep(
                id=step.id,
                step=step,
                hosts=hosts,
                needs=[],
                active=plan.from_site if phase == "before" else plan.to_site,
            )
        )
    return steps


def check_source_health(plan: Plan, connections: Mapping[str, Connection]) -> list[str]:
    """One poll of each health entry at the active site; returns what failed (empty: healthy)."""
    failures: list[str] = []
    for ps in [*_health_steps(plan, "before"), *plan.source_health]:
        once = replace(ps, step=replace(ps.step, timeout=max(ps.step.timeout, 1.0), interval=0.0))
        for host in ps.hosts:
            held, why = poll_once(plan, connections, once, host)
            if not held:
                failures.append(f"health '{ps.step.name}' on {host.name}: {why}")
    return failures


def execute(
    plan: Plan,
    store: Store,
    opts: RunOptions,
    connecting: Future[preflight.Connected] | None = None,
) -> tuple[int, RunSummary]:
    """Run ``plan`` end to end; returns the exit code and the summary. ``connecting`` is a
    pre-flight already started (``preflight.start``), else it starts here."""
    run_id = store.new_run_id(plan.direction, plan.to_site)
    drill_id = plan.drill_id
    if drill_id is None and plan.mode == "drill" and plan.direction == FAILOVER:
        drill_id = run_id  # a drill is named after its failover leg
    plan = replace(plan, run_id=run_id, drill_id=drill_id)
    try:
        with store.acquire(run_id) as lock, run_gc():
            return _execute_locked(plan, store, lock, opts, connecting)
    except RefusedError:
        if connecting is not None:
            preflight.close_all(connecting.result()[0])
        raise


def _execute_locked(
    plan: Plan,
    store: Store,
    lock: RunLock,
    opts: RunOptions,
    connecting: Future[preflight.Connected] | None,
) -> tuple[int, RunSummary]:
    if connecting is None:
        connecting = preflight.start(plan, opts.transports)
    # imported while the pre-flight connects (structlog and rich take tens of milliseconds)
    from orchestrator.run.live import attach_output

    connections, failures = connecting.result()
    try:
        unreachable: dict[str, str] = {}
        if failures:
            tolerated = {
                n: e
                for n, e in failures.items()
                if plan.emergency and plan.inventory.host(n).site == plan.source
            }
            fatal = {n: e for n, e in failures.items() if n not in tolerated}
            if fatal:
                lines = preflight.failure_lines(fatal, plan.inventory)
                at_source = all(plan.inventory.host(n).site == plan.source for n in fatal)
                if plan.direction == FAILOVER and at_source:  # the one case --emergency is for
                    lines.append(
                        f"every host drx cannot reach is at the source, {plan.source}: if "
                        f"{plan.source} is really gone, fail over with --emergency"
                    )
                raise PreflightError(
                    "pre-flight failed, nothing was changed:\n  " + "\n  ".join(lines)
                )
            unreachable = {n: str(e) for n, e in tolerated.items()}
        if plan.direction == FAILOVER and not plan.emergency and opts.check_source_health:
            bad = check_source_health(plan, connections)
            if bad:
                raise RefusedError(
                    f"the service is not healthy at {plan.source}, so drx refuses to fail over "
                    "(nothing was changed; use --emergency if the source is really gone):\n  "
                    + "\n  ".join(bad)
                )
        if opts.before_run:
            opts.before_run(plan)
        if plan.resumes:
            opts = replace(opts, recovered=_fence(plan, store, opts, connections))
        return _run(plan, store, lock, opts, connections, unreachable, attach_output)
    finally:
        preflight.close_all(connections)


def _fence(
    plan: Plan, store: Store, opts: RunOptions, connections: Mapping[str, Connection]
) -> Mapping[tuple[str, str], Any]:
    """What the run this one continues left on its hosts, fenced off first: no command of
    it starts after this, and the ones whose start its journal lost are found
    (``recover.fence``). A host that cannot be fenced stops the run before it starts."""
    from orchestrator.errors import TransportError
    from orchestrator.run.recover import Found, fence

    assert plan.resumes is not None
    try:
        found = fence(
            plan.resumes,
            connections,
            store.local_dir / "spool",
            opts.recovered,
            store.read_events(plan.resumes),
            rerun=opts.rerun_inflight,
        )
    except TransportError as exc:
        raise PreflightError(f"pre-flight failed, nothing was changed:\n  {exc}") from exc
    lost = sorted(
        (rec.step, rec.host)
        for rec in found.values()
        if rec.found is Found.STARTED and rec.step in plan.steps
    )
    # an idempotent step runs again by contract; any other is the operator's call
    refused = [(s, h) for s, h in lost if not plan.steps[s].step.idempotent]
    if refused:
        where = ", ".join(f"{s} on {h}" for s, h in refused)
        raise RefusedError(
            f"run {plan.resumes} had started {where} in its last moments (the journal never got "
            "the start), and there it has neither ended nor is running: its outcome is unknown. "
            "Nothing was run; check the host(s), then resume with --rerun-inflight"
        )
    return {
        k: replace(rec, found=Found.NOTHING) if rec.found is Found.STARTED else rec
        for k, rec in found.items()
    }


def _run(
    plan: Plan,
    store: Store,
    lock: RunLock,
    opts: RunOptions,
    connections: Mapping[str, Connection],
    unreachable: Mapping[str, str],
    attach_output: Callable[..., Any],
) -> tuple[int, RunSummary]:
    run_id = plan.run_id
    doc = {**plan_document(plan), "run_id": run_id}
    journal = Journal(store.create_run(run_id, doc, lock), plan.redactor)
    guard = RpoGuard.of(plan, opts.accept_data_loss)
    _journal_start(plan, opts, journal, connections, unreachable, rpo_guard=guard is not None)
    gate = _gate(plan, opts, store)
    output = store.output_dir(run_id)
    private_dir(output, store.local_dir)  # command output: owner-only, wherever the store is
    ex = Executor(
        plan,
        connections,
        journal,
        output,
        max_parallel=opts.max_parallel,
        gate=gate,
        unreachable=unreachable,
        carried=opts.carried,
        extra_results=opts.extra_results,
        rpo_guard=guard,
        run_id=run_id,
        spool_root=store.local_dir / "spool",
        recovered=opts.recovered,
    )
    lock_guard = LockGuard(lock, journal, ex.stopping)
    ex.start_guards.append(lock_guard)
    # a breach stops a run, except one that brings the service back (nowhere better to go)
    probes = Probes(
        plan, connections, journal, stops_run=not opts.refuse_first_interrupt, on_breach=ex.halt
    )
    ex.start_guards.append(probes.why_stopped)
    probes.start()
    store.update_state(last_run=run_id, running=run_id)
    budget = BudgetWatcher(plan, journal)
    budget.start()
    view = attach_output(plan, journal, opts, budget)
    gate.ask = view.ask
    gate.view = view
    notifier = notify.start(
        [*plan.notify, *(u for u in opts.notify if u not in plan.notify)],
        journal,
        plan.redactor,
        report_hint(run_id, store),
    )
    desk = ControlDesk(channel_for(store), run_id, ex)
    desk.start()
    try:
        with routed(opts.interrupts, _on_interrupt(ex, opts.refuse_first_interrupt)):
            status, message = _steps_and_health(plan, ex, journal, lock_guard, probes, desk)
    finally:
        probes.stop()
        desk.stop()
        if lock.state() is not LockState.HELD:
            # fenced (or in doubt): the shared journal may lack these outcomes, and the
            # controller that takes the run over reads them from the spool — keep it
            ex.keep_spools()
        ex.close()
    try:
        exit_code = _exit_code(plan, journal, status)
        journal.write(RunFinished(status=status.value, exit_code=int(exit_code), message=message))
        summary = build_summary(journal.typed_events())
        budget.stop()  # before the journal closes: it must not journal a late "at risk"
        journal.close()
        if notifier is not None:
            notifier.close()
        view.close()
        raw = summary.to_dict()
        doc = plan.redactor.deep(raw)
        # nothing needed masking (the journal's events are masked as written): the summary is
        # already what summary.json says, without reading 10,000 steps back
        final = summary if doc == raw else RunSummary.from_dict(doc)
        _record_end(plan, store, lock_guard, doc, status, message, summary.finished_at)
        return exit_code, final
    finally:
        ex.finish()  # the spent spools' removal, started by close


def _journal_start(
    plan: Plan,
    opts: RunOptions,
    journal: Journal,
    connections: Mapping[str, Connection],
    unreachable: Mapping[str, str],
    *,
    rpo_guard: bool,
) -> None:
    """The run's first events: what it runs, from where to where, with which files and hosts
    (everything a report, a resume or a failback reads back), then the steps it carries."""
    run_id = plan.run_id
    rb = plan.runbook
    journal.write(
        RunStarted(
            run_id=run_id,
            runbook=rb.name,
            direction=plan.direction,
            source=plan.source,
            target=plan.target,
            moves_to=plan.to_site,
            parent_run=plan.parent_run,
            resumes=plan.resumes,
            reverses=plan.reverses,
            failback_mode=plan.failback_mode,
            reprotect_steps=[sid for sid, ps in plan.steps.items() if ps.phase == REPROTECT],
            emergency=plan.emergency,
            mode=plan.mode,
            drill_id=plan.drill_id,
            rollback=plan.rollback,
            yes=opts.yes,
            wall0=journal.wall0,
            parent_start_wall=opts.parent_start_wall,
            rto_target_s=rb.rto_target if plan.direction != REPROTECT else None,
            rpo_target=rb.rpo_target,
            rpo_is_bytes=rb.rpo_is_bytes,
            rpo_step=_rpo_step(plan),
            rpo_guard=rpo_guard,
            accept_data_loss=opts.accept_data_loss,
            rto_start=_rto_start(plan),
            predicted_rto_s=plan.predicted_rto_s,
            runbook_file=opts.runbook_file,
            inventory_file=opts.inventory_file,
            runbook_sha256=file_sha256(opts.runbook_file),
            inventory_sha256=file_sha256(opts.inventory_file),
            runbook_description=rb.description or None,
            host_order=[h.name for h in plan.hosts()],
            hosts=inventory_hosts(plan, connections),
            health_names=[hp.check.name for hp in plan.health],
            probes=[
                {
                    "name": pp.probe.name,
                    "hosts": [h.name for h in pp.hosts],
                    "interval_s": pp.probe.interval,
                    "max_down_s": pp.probe.max_down,
                }
                for pp in plan.probes
            ],
            children=journal_children(plan),
            unreachable=dict(unreachable),
            steps=[
                {
                    "id": ps.id,
                    "name": ps.step.name,
                    "kind": str(ps.step.kind),
                    "needs": ps.needs,
                    "undo_of": ps.undo_of,
                    "wave": ps.wave,
                    "hosts": [h.name for h in ps.hosts],
                    "idempotent": ps.step.idempotent,
                    "outcome_unknown": ps.outcome_unknown or None,
                }
                for ps in plan.steps.values()
            ],
        ),
        0.0,
    )
    for event in opts.carried_events:
        journal.write(event, 0.0)


def _gate(plan: Plan, opts: RunOptions, store: Store) -> Gate:
    """The run's answerer of manual gates: each waits at most its step's timeout elsewhere."""
    gate = Gate(opts.yes, opts.interactive, comment=opts.gate_comment)
    gate.timeouts = {
        sid: ps.step.timeout for sid, ps in plan.steps.items() if kind_of(ps.kind).gate
    }
    gate.answer_hint = control_hint("approve", plan.run_id, store, "{step}")
    return gate


def _steps_and_health(
    plan: Plan,
    ex: Executor,
    journal: Journal,
    lock_guard: LockGuard,
    probes: Probes,
    desk: ControlDesk,
) -> tuple[Status, str | None]:
    """Run the steps, then (if they succeeded) poll health at the site the run moves to: how
    the run ends, and why when it did not succeed."""
    outcomes = ex.run()
    journal.write(StepsDone())
    stopped = _stopped(ex, lock_guard, probes, desk)
    if stopped is not None:
        return stopped
    if ex.guard_refuses:
        return Status.FAILED, (
            ex.guard_verdict.message if ex.guard_verdict else "the RPO guard refused"
        )
    if ex.aborted_by is not None:
        return Status.FAILED, f"step '{ex.aborted_by}' failed; the run stopped"
    failed = [s for s, o in outcomes.items() if o.status is Status.FAILED]
    if not all(ex.tolerated(plan.steps[s]) for s in failed):
        return Status.FAILED, "a step failed"
    if not plan.health:
        return Status.SUCCEEDED, None
    held = _poll_health_after(plan, ex, journal)
    stopped = _stopped(ex, lock_guard, probes, desk)
    if stopped is not None:
        return stopped
    if not held:
        why = "; ".join(_health_failures(journal.events))
        return Status.FAILED, f"health never held at {plan.to_site}" + (f" ({why})" if why else "")
    return Status.SUCCEEDED, None


def _stopped(
    ex: Executor, lock_guard: LockGuard, probes: Probes, desk: ControlDesk
) -> tuple[Status, str | None] | None:
    """Why the run was stopped from outside its steps (the lock lost, a probe's breach, the
    operator), if it was."""
    lost = lock_guard.lost()
    if lost is not None:
        return Status.FAILED, lost
    breach = probes.why_stopped()
    if breach is not None:
        return Status.FAILED, breach
    if ex.stopping.is_set():
        return Status.CANCELLED, cancelled_message(desk)
    return None


def _exit_code(plan: Plan, journal: Journal, status: Status) -> ExitCode:
    exit_code = {
        Status.SUCCEEDED: ExitCode.OK,
        Status.FAILED: ExitCode.FAILED,
        Status.CANCELLED: ExitCode.CANCELLED,
    }[status]
    if status is Status.SUCCEEDED and plan.runbook.rto_target is not None:
        # the journal's closing line carries the code the process exits with: an RTO missed
        # is known before it is written (the measured RTO ends when health held)
        now = journal.now()
        closing = stamp(RunFinished(status=RunStatus.SUCCEEDED), now, journal.wall(now))
        if build_summary([*journal.typed_events(), closing]).rto.met is False:
            exit_code = ExitCode.RTO_MISSED
    return exit_code


def _record_end(
    plan: Plan,
    store: Store,
    lock_guard: LockGuard,
    doc: dict[str, Any],
    status: Status,
    message: str | None,
    finished_at: str | None,
) -> None:
    """Write the state the run leaves (its active site) and its summary, while it holds the
    lock."""
    run_id = plan.run_id
    lock = lock_guard.lock
    try:
        if lock_guard.lost() is not None:
            raise LockLost(message or "the run lock was lost")
        # The state first, then the summary: a controller killed between the two leaves a run
        # that reads as crashed (drx resume completes it) with the active site its steps set,
        # never a succeeded run whose active site was not recorded (nothing could repair that).
        mine: dict[str, str | None] = {"last_run": run_id}
        if status is Status.SUCCEEDED and plan.direction != REPROTECT:
            mine.update(active=plan.to_site, active_since=finished_at)
        state = store.read_state()
        changes = runbook_changes(state, plan.runbook.name, **mine)
        if status is Status.SUCCEEDED and plan.runbook.children:
            changes = state_changes(plan, changes, state, plan.to_site, finished_at)
        changes["running"] = None
        store.update_state(**changes)
        # the document already built (and masked) above: not built a second time
        store.write_summary_document(run_id, document_json(doc), lock)
    except LockLost as exc:
        raise LockLost(_lost_message(str(exc), store, run_id)) from None


class LockGuard:
    """The run lock's say in "may anything new start?" (one of the executor's start guards).

    A local lock is simply held. A shared store's lock may be *in doubt* (its lease could not
    be renewed in time): the guard then waits — nothing new starts meanwhile — until a renewal
    confirms the lock (scheduling carries on) or the lock is lost (the guard objects, and the
    run ends). Doubt, confirmation and loss are journaled."""

    def __init__(self, lock: RunLock, journal: Journal, stopping: threading.Event) -> None:
        self.lock = lock
        self.journal = journal
        self.stopping = stopping
        self._mutex = threading.Lock()
        self._in_doubt = False
        self._lost_written = False

    def lost(self) -> str | None:
        """Why the lock is lost, or None while it is not."""
        if self.lock.state() is not LockState.LOST:
            return None
        return f"the run lock was lost: {self.lock.lost_reason or 'unknown reason'}"

    def __call__(self) -> str | None:
        while True:
            state = self.lock.state()
            if state is LockState.HELD:
                if self._in_doubt:
                    self._note(LockConfirmed, in_doubt=False)
                return None
            if state is LockState.LOST:
                reason = self.lost()
                with self._mutex:
                    first, self._lost_written = not self._lost_written, True
                if first:
                    self.journal.write(RunLockLost(reason=self.lock.lost_reason))
                return reason
            if not self._in_doubt:
                self._note(LockInDoubt, in_doubt=True)
            if self.stopping.wait(0.05):
                return "cancelled by the operator while the run lock was in doubt"

    def _note(self, event: type[LockInDoubt | LockConfirmed], *, in_doubt: bool) -> None:
        with self._mutex:
            changed = self._in_doubt != in_doubt
            self._in_doubt = in_doubt
        if changed:
            self.journal.write(event())


def _lost_message(reason: str, store: Store, run_id: str) -> str:
    """Why the run ended without its record: the lock was lost, nothing more was started."""
    text = f"{reason}; run {run_id} stopped: nothing more was started after that"
    unwritten = store.local_dir / "runs" / run_id / "unwritten.jsonl"
    if unwritten.exists():
        text += f"; what could not be written to {store.location} is in {unwritten}"
    return text


def inventory_hosts(plan: Plan, connections: Mapping[str, Connection]) -> list[dict[str, Any]]:
    """Every host of the inventory with its address, and the key each host reached presented:
    what ``drx check`` compares with later (drift since the last good run)."""
    from orchestrator.run.readiness import host_key

    found = []
    for site in plan.inventory.sites.values():
        for h in site.hosts:
            conn = connections.get(h.name)
            found.append(
                {
                    "name": h.name,
                    "site": site.name,
                    "address": h.spec.address,
                    "port": h.spec.port,
                    "host_key": host_key(conn) if conn is not None else None,
                }
            )
    return found


def file_sha256(path: str | None) -> str | None:
    """The sha256 of a file drx ran from (evidence of exactly what ran), or None."""
    if not path:
        return None
    import hashlib

    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None


def control_hint(command: str, run_id: str, store: Store, *args: str) -> str:
    """``drx COMMAND RUN ARGS`` with the store's option unless the default."""
    hint = report_hint(run_id, store).replace("drx report", f"drx {command}", 1)
    return hint.replace(run_id, " ".join([run_id, *args]), 1)


def report_hint(run_id: str, store: Store) -> str:
    """The command that shows a run's report (``--state-url``/``--state-dir`` unless the
    default)."""
    if "://" in store.location:
        where = f" --state-url {store.location}"
    else:
        where = "" if store.location == ".drx" else f" --state-dir {store.location}"
    return f"drx report {run_id}{where}"


def _rpo_step(plan: Plan) -> str | None:
    """The step whose value is this run's RPO: the rpo_step of a failover (and of a mirrored
    failback); in an undo failback, the runbook's failback_rpo_step (an undo) if it runs it."""
    if not plan.runs_forward:
        back = plan.runbook.failback_rpo_step
        return back if back is not None and back in plan.steps else None
    return plan.runbook.rpo_step


def _rto_start(plan: Plan) -> str | None:
    return plan.runbook.rto_start if plan.runs_forward else None


def _on_interrupt(ex: Executor, refuse_first: bool = False) -> Callable[[], None]:
    """What Ctrl-C does during a run: the first stops new steps, the next cancels the running
    commands; a run that brings the service back refuses the very first (with a warning)."""
    refused = threading.Event()

    def handler() -> None:
        if refuse_first and not refused.is_set():
            refused.set()
            ex.journal.write(InterruptRefused())
            print(
                "\ndrx: this run brings the service back to where it was; stopping it now "
                "would leave it between sites. Ctrl-C again to abandon it (drx failback "
                "continues it later)",
                file=sys.stderr,
            )
            return
        ex.interrupt()
        if ex.cancel.is_set():
            print("\ndrx: cancelling running commands", file=sys.stderr)
        else:
            print(
                "\ndrx: stopping — no new steps start; running commands finish "
                "(Ctrl-C again to cancel them)",
                file=sys.stderr,
            )

    return handler


def _health_failures(events: list[dict[str, Any]]) -> list[str]:
    """How each health probe that never held ended: its last exit code (or error) and the
    last lines of its output."""
    last: dict[tuple[str, str], dict[str, Any]] = {}
    for e in events:
        if e["event"] == Event.HOST_FINISHED and str(e.get("step", "")).startswith("health:"):
            last[(e["step"], e["host"])] = e
    lines = []
    for (step, host), e in last.items():
        if e.get("status") == "succeeded":
            continue
        why = f"exit {e['rc']}" if e.get("rc") is not None else "no exit code"
        if e.get("error"):
            why += f", {e['error']}"
        tail = [t for t in str(e.get("output_tail") or "").strip().splitlines() if t.strip()][-3:]
        lines.append(
            f"health '{step.split(':', 1)[1]}' on {host}: {why}"
            + (": " + " | ".join(tail) if tail else "")
        )
    return lines


def _poll_health_after(plan: Plan, ex: Executor, journal: Journal) -> bool:
    """Poll every health entry at the site the run moves to; True once all hold."""
    journal.write(HealthPolling(site=plan.to_site))
    steps = _health_steps(plan, "after")
    with ThreadPoolExecutor(max_workers=max(1, len(steps))) as pool:
        results = list(pool.map(ex.run_health, steps))
    if all(ok for ok, _ in results):
        held_t = max(t for _, t in results)
        journal.write(HealthHeld(site=plan.to_site), held_t)
        return True
    journal.write(HealthTimeout(site=plan.to_site))
    return False
