"""The rules of ``drx resume``: which run may be continued (and why another may not), the plan
that continues it, and what the new run takes over from it — steps that succeeded are carried,
steps that were in flight are recovered from their hosts' spools or refused unless they may run
again. The command line parses the options, calls these, runs the result and prints."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from orchestrator.errors import RefusedError, UsageError
from orchestrator.vocab import Direction, RunStatus, StepStatus

if TYPE_CHECKING:
    from orchestrator.model.inventory import Inventory
    from orchestrator.model.runbook import Runbook
    from orchestrator.plan.build import Plan, PlanStep
    from orchestrator.record.events import JournalEvent, RunStarted, StepCarried
    from orchestrator.record.outcomes import StepOutcome
    from orchestrator.record.runs import Lineage
    from orchestrator.record.store import Store
    from orchestrator.record.summary import RunSummary
    from orchestrator.run.recover import Recovery

#: how a run ends when it stopped before it finished its work
_STOPPED = (RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.CRASHED)

Recovered = Mapping[tuple[str, str], "Recovery"]


class Notes(Protocol):
    """Where the rules say what they found on the way (the command line: stderr)."""

    def info(self, message: str) -> None: ...

    def warning(self, message: str) -> None: ...


@dataclass(frozen=True)
class ResumeTarget:
    """The run to continue, read back: its id and its journal."""

    run_id: str
    events: list[JournalEvent]

    @property
    def start(self) -> RunStarted:
        """Its ``run_started`` event."""
        from orchestrator.record.runs import run_start

        return run_start(self.events)


@dataclass(frozen=True)
class ResumeRequest:
    """What the operator asked of the continuation."""

    rerun_inflight: bool = False  # run again the steps in flight that are not idempotent
    emergency: bool = False  # the source site was lost mid-run
    variables: dict[str, Any] = field(default_factory=dict)  # --var and --secret-var values
    secrets: list[str] = field(default_factory=list)  # the secret values, to mask


@dataclass(frozen=True)
class Resumption:
    """The continuation, ready to run: its plan and what it takes over from the stopped run."""

    plan: Plan
    carried: dict[str, StepOutcome]  # steps that succeeded: not run again
    carried_events: list[StepCarried]  # their step_carried events
    extra_results: dict[str, StepOutcome]  # a failback's: what the failover's steps did
    parent_start_wall: float | None  # when the first run of the chain started (the RTO's t0)
    recovered: Recovered  # what the in-flight steps left on their hosts


def resume_target(
    store: Store,
    runbook: Runbook,
    run: str | None,
    *,
    files: tuple[str | None, str | None],
    yes: bool,
    where: str,
    notes: Notes,
) -> ResumeTarget:
    """The run to continue: ``run``, else ``runbook``'s latest run that was neither resumed
    nor failed back; refused when it cannot be continued, or (without ``yes``) when the
    runbook or inventory (``files``) changed since it started. ``where``: the store, as a
    refusal names it."""
    from orchestrator.record.runs import Lineage, load_summaries, resolve_run

    summaries = load_summaries(store)
    lineage = Lineage.of(summaries)
    if run is not None:
        run_id = resolve_run(store, run)
    else:
        candidates = [
            s.run_id
            for s in summaries
            if s.runbook == runbook.name  # each runbook has its own history
            and lineage.resumed_by(s.run_id) is None
            and lineage.failback_of(s.run_id) is None
        ]
        if not candidates:
            raise RefusedError(nothing_to_resume(summaries, runbook.name, where))
        run_id = candidates[-1]
    refuse_resume(lineage, run_id)
    if lineage.by_id[run_id].direction == Direction.REPROTECT:
        raise RefusedError(f"run {run_id} is a reprotect: run drx reprotect again")
    target = ResumeTarget(run_id, store.read_events(run_id))
    start = target.start
    if start.runbook != runbook.name:
        raise RefusedError(f"run {run_id} used runbook '{start.runbook}', not '{runbook.name}'")
    refuse_changed_files(run_id, start, files, yes=yes, notes=notes)
    return target


def plan_resume(
    store: Store,
    runbook: Runbook,
    inventory: Inventory,
    target: ResumeTarget,
    request: ResumeRequest,
    notes: Notes,
) -> Resumption:
    """The plan that continues ``target`` (a failover's, or a failback's in its own mode), the
    steps it carries, and what its in-flight steps left; refused when a step was in flight,
    is not idempotent and its outcome cannot be known (unless ``rerun_inflight``)."""
    from orchestrator.record.outcomes import Status
    from orchestrator.record.runs import outcomes_from_events

    run_id, start = target.run_id, target.start
    plan, extra = _continuation(store, runbook, inventory, target, request)
    plan.parent_run = plan.resumes = run_id
    plan.drill_id = start.drill_id  # a continued leg or rollback stays in its drill
    outcomes = outcomes_from_events(target.events)
    inflight = [
        sid
        for sid, o in outcomes.items()
        if sid in plan.steps
        and (o.status is Status.UNKNOWN or (o.status is Status.CANCELLED and o.outcome_unknown))
    ]
    recovered = _recover(
        store.local_dir / "spool",
        inventory,
        target,
        [s for s in inflight if not _is_check(plan.steps[s])],
        notes,
    )
    blocked = [
        s
        for s in inflight
        if not (request.rerun_inflight or plan.steps[s].step.idempotent)
        and (_is_check(plan.steps[s]) or not _known(recovered, s))
    ]
    if blocked:
        raise RefusedError(
            f"step(s) {', '.join(blocked)} were running when run {run_id} stopped and are not "
            "idempotent: check them on the hosts, then resume with --rerun-inflight"
        )
    carried, carried_events = _carried(plan, target, outcomes, recovered)
    return Resumption(
        plan=plan,
        carried=carried,
        carried_events=carried_events,
        extra_results=extra,
        parent_start_wall=start.parent_start_wall or start.wall0,
        recovered=recovered,
    )


def _continuation(
    store: Store,
    runbook: Runbook,
    inventory: Inventory,
    target: ResumeTarget,
    request: ResumeRequest,
) -> tuple[Plan, dict[str, StepOutcome]]:
    """The stopped run's plan, built again: a failover's, or a failback's (with what the
    failover's steps did)."""
    from orchestrator.plan.build import build_plan
    from orchestrator.plan.site import predictions
    from orchestrator.run.failback import reverse_plan

    start = target.start
    if start.direction == Direction.FAILOVER:
        steps_pred, health_pred = predictions(store, runbook, Direction.FAILOVER, start.target)
        plan = build_plan(
            runbook,
            inventory,
            start.target,
            source=start.source,
            cli_vars=request.variables,
            secrets=request.secrets,
            emergency=request.emergency or start.emergency,
            predictions=steps_pred,
            predicted_health_s=health_pred,
        )
        return plan, {}
    if request.emergency:
        raise UsageError(
            f"run {target.run_id} is a failback: --emergency continues a failover whose "
            "source site was lost"
        )
    # a mirrored failback names its own way (source: the failover's target); an undo
    # failback keeps the failover's names
    mode = start.failback_mode or "undo"
    source, dest = start.source, start.target
    back = reverse_plan(
        store,
        runbook,
        inventory,
        dest if mode == "mirror" else source,
        source if mode == "mirror" else dest,
        start.reverses or start.parent_run or "",
        request.variables,
        request.secrets,
        mode=start.mode or "real",
        rollback=bool(start.rollback),
        failback_mode=mode,
    )
    return back.plan, back.outcomes


def _carried(
    plan: Plan,
    target: ResumeTarget,
    outcomes: Mapping[str, StepOutcome],
    recovered: Recovered,
) -> tuple[dict[str, StepOutcome], list[StepCarried]]:
    """The steps the continuation takes over, done, and their step_carried events."""
    from orchestrator.record.outcomes import Status
    from orchestrator.run.carry import carried_steps

    done = _succeeded(outcomes, recovered)
    # a check is read-only and its answer may be stale: it runs again while a step that
    # needs it has yet to succeed; once they all have, the world it checked has moved on
    # (a standby since promoted) and it is carried like any other succeeded step
    taken = [
        sid
        for sid, o in outcomes.items()
        if o.status is Status.SUCCEEDED
        and sid in plan.steps
        and (not _is_check(plan.steps[sid]) or _dependents_done(plan, sid, done))
    ]
    return carried_steps(target.events, taken, target.run_id)


def _recover(
    spool: Path, inventory: Inventory, target: ResumeTarget, steps: list[str], notes: Notes
) -> Recovered:
    """What the in-flight ``steps`` left: the journal for hosts that finished, each host's
    spool for the others (said host by host)."""
    from orchestrator.run.recover import Found, in_flight, probe

    if not steps:
        return {}
    recovered = probe(in_flight(target.events, target.run_id, steps, spool), inventory)
    for rec in recovered.values():
        if rec.found is Found.ENDED:
            notes.info(
                f"{rec.step} on {rec.host}: ended (rc {rec.rc}) while no controller watched; its outcome is taken from the host's spool, not re-run",
            )
        elif rec.found is Found.LIVE:
            notes.info(
                f"{rec.step} on {rec.host}: still running on the host; drx follows it within what is left of its timeout",
            )
        elif rec.found is Found.NOTHING:
            notes.info(f"{rec.step} on {rec.host}: outcome unknown ({rec.why})")
    return recovered


def _known(recovered: Recovered, step: str) -> bool:
    """Whether every host the step had started on has a known (or followable) outcome."""
    from orchestrator.run.recover import unresolved

    hosts = [r for r in recovered.values() if r.step == step]
    return bool(hosts) and not unresolved(recovered, step)


def _succeeded(outcomes: Mapping[str, StepOutcome], recovered: Recovered) -> set[str]:
    """The steps known to have succeeded: in the journal, or in flight with every host's
    command ended with rc 0 (journal or spool)."""
    from orchestrator.record.outcomes import Status
    from orchestrator.run.recover import Found

    done = {sid for sid, o in outcomes.items() if o.status is Status.SUCCEEDED}
    by_step: dict[str, list[Recovery]] = {}
    for rec in recovered.values():
        by_step.setdefault(rec.step, []).append(rec)
    for sid, recs in by_step.items():
        if all(
            (r.found is Found.ENDED and r.rc == 0)
            or (
                r.found is Found.JOURNAL
                and r.finished
                and r.finished.status == StepStatus.SUCCEEDED
            )
            for r in recs
        ):
            done.add(sid)
    return done


def _dependents_done(plan: Plan, check: str, done: set[str]) -> bool:
    """Whether every step that needs ``check`` has succeeded."""
    return all(sid in done for sid, ps in plan.steps.items() if check in ps.needs)


def _is_check(ps: PlanStep) -> bool:
    from orchestrator.kinds import kind_of

    return kind_of(ps.step.kind).polls


def refuse_resume(lineage: Lineage, run_id: str) -> None:
    """Refuse (exit 2, naming the run to use instead) to resume a run whose continuation or
    reversal already exists: resuming it would act on a state of the world that is gone."""
    summary = lineage.by_id[run_id]
    after = lineage.resumed_by(run_id)
    if after is not None:
        latest = lineage.by_id[lineage.latest(run_id)]
        hint = (
            f"resume {latest.run_id} instead"
            if latest.status in _STOPPED
            else f"the latest continuation, {latest.run_id}, {latest.status}"
        )
        raise RefusedError(f"run {run_id} has already been resumed by {after}: {hint}")
    if summary.direction == Direction.FAILOVER:
        back = lineage.failback_of(run_id)
        if back is not None:
            raise RefusedError(
                f"run {run_id} cannot be resumed: failback {back} reversed what it did "
                "(run a new failover to move the service again)"
            )
    if summary.status not in _STOPPED:
        raise RefusedError(
            f"nothing to resume: run {run_id} {summary.status} "
            "(only failed, cancelled or crashed runs can be resumed)"
        )


def refuse_changed_files(
    run_id: str,
    start: RunStarted,
    files: tuple[str | None, str | None],
    *,
    yes: bool,
    notes: Notes,
) -> None:
    """A runbook or inventory changed since ``run_id`` started: say so with the sha256 change,
    and go on only with ``yes`` (the resumed run would not be the run that was interrupted)."""
    from orchestrator.run.standing import changed_files

    changes = changed_files(start, *files)
    if not changes:
        return
    lines = "\n  ".join(str(c) for c in changes)
    if not yes:
        raise RefusedError(
            f"changed since run {run_id} started, so resuming it would run steps it never "
            f"planned:\n  {lines}\nnothing was run; resume with --yes to go on with the files "
            "as they are now"
        )
    notes.warning(f"changed since run {run_id} started (going on: --yes):\n  {lines}")


def nothing_to_resume(summaries: Sequence[RunSummary], name: str, where: str) -> str:
    """Why no run of runbook ``name`` can be resumed: what would make one resumable, where drx
    looked (``where``), and what it found there."""
    mine = [s for s in summaries if s.runbook == name]
    text = (
        f"nothing to resume for runbook '{name}' in {where}: a run can be resumed when it "
        "failed, was cancelled or crashed, and was neither resumed nor failed back since"
    )
    if mine:
        last = mine[-1]
        text += f"; the latest run of '{name}' is {last.run_id} ({last.direction}, {last.status})"
        return text
    others = sorted({s.runbook for s in summaries})
    found = f"runs of {', '.join(others)} only" if others else "no runs at all"
    return (
        f"{text}; there are {found} there (if the drills ran from another directory, pass "
        "--state-dir or set DRX_STATE_DIR)"
    )
