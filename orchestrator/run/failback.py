"""The rules of bringing a service back from a failover: which failover a failback (or a
reprotect) may reverse and why another is refused, the plan that brings it back (undo or
mirror, with its predictions), a rollback left unfinished, and the reprotect steps a mirrored
failback carries. The command line chooses the options and prints; these decide."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from orchestrator.errors import RefusedError
from orchestrator.record.outcomes import HostOutcome, StepOutcome
from orchestrator.vocab import Direction, RunStatus, StepStatus

if TYPE_CHECKING:
    from orchestrator.model.inventory import Inventory
    from orchestrator.model.runbook import Runbook
    from orchestrator.plan.build import Plan
    from orchestrator.record.runs import Lineage
    from orchestrator.record.store import Store
    from orchestrator.record.summary import RunSummary

#: how a run ends when it stopped before it finished its work
_STOPPED = (RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.CRASHED)


@dataclass(frozen=True)
class ReturnPlan:
    """The plan that brings the service back, and what the failover's steps did (their
    outcomes, whose values feed undo templates; empty for a mirrored failback)."""

    plan: Plan
    outcomes: dict[str, StepOutcome] = field(default_factory=dict)
    #: hosts where a crashed failover could not be fenced off (name: why)
    unfenced: dict[str, str] = field(default_factory=dict)


def reverse_plan(
    store: Store,
    runbook: Runbook,
    inventory: Inventory,
    source: str,
    target: str,
    failover_run: str,
    variables: dict[str, str],
    secrets: list[str],
    *,
    mode: str = "real",
    rollback: bool = False,
    failback_mode: str = "undo",
    fence: bool = False,
) -> ReturnPlan:
    """The failback plan of the failover ``failover_run`` (``source`` → ``target``), with its
    predictions. In ``failback_mode`` mirror: the runbook's steps from ``target`` back to
    ``source``, predicted from every run that moved the service to ``source``. ``mode`` is
    drill or real (templates' ``mode``); ``rollback``: it rolls back a failover that did not
    succeed (always undo). ``fence``: the failover crashed, so its last moments may be missing
    from its journal: fence it off on every host and take the steps it had started there,
    unjournaled, as in flight (``recover.unrecorded_starts``)."""
    from orchestrator.plan.build import build_reverse_plan
    from orchestrator.plan.failback import build_mirror_plan
    from orchestrator.plan.predictions import predictions_for
    from orchestrator.plan.site import predictions
    from orchestrator.record.runs import outcomes_from_events

    if failback_mode == "mirror" and not rollback:
        steps, health = predictions_for(
            store, runbook.name, Direction.FAILBACK, source, mirror=True
        )
        mirrored = build_mirror_plan(
            runbook,
            inventory,
            failover_source=source,
            failover_target=target,
            reverses=failover_run,
            cli_vars=variables,
            secrets=secrets,
            predictions=steps,
            predicted_health_s=health,
            mode=mode,
        )
        return ReturnPlan(mirrored)
    events = store.read_events(failover_run)
    outcomes = outcomes_from_events(events)
    unfenced: dict[str, str] = {}
    if fence:
        from orchestrator.run.recover import unrecorded_starts

        started, unfenced = unrecorded_starts(
            failover_run, inventory, inventory.hosts, store.local_dir / "spool", events
        )
        for sid, recs in started.items():
            if sid not in outcomes or outcomes[sid].status is StepStatus.NOT_RUN:
                outcomes[sid] = StepOutcome(sid, StepStatus.UNKNOWN, outcome_unknown=True)
            hosts = outcomes[sid].hosts
            for rec in recs:  # its hosts: where it ended well, or may have done something
                ok = rec.rc == 0
                status = StepStatus.SUCCEEDED if ok else StepStatus.UNKNOWN
                hosts[rec.host] = HostOutcome(rec.host, status, rec.rc, None)
    steps, health = predictions(store, runbook, Direction.FAILBACK, target)
    plan = build_reverse_plan(
        runbook,
        inventory,
        source=source,
        target=target,
        parent_run=failover_run,
        outcomes=outcomes,
        cli_vars=variables,
        secrets=secrets,
        predictions=steps,
        predicted_health_s=health,
        mode=mode,
        rollback=rollback,
    )
    return ReturnPlan(plan, outcomes, unfenced)


def return_plan(
    store: Store,
    runbook: Runbook,
    inventory: Inventory,
    failover: RunSummary,
    variables: dict[str, str],
    secrets: list[str],
    *,
    mode: str,
    rollback: bool,
    fence: bool = True,
) -> ReturnPlan:
    """The plan that brings the service back from ``failover``: the one place a drill's way
    home and every rollback are planned. A rollback (of a failover that did not succeed) is
    always the undo plan; the way home of a succeeded failover follows the runbook's failback
    mode. A crashed failover is fenced off on its hosts first (unless not ``fence``: a
    preview changes nothing), so that the steps it started in its last moments are undone."""
    from orchestrator.plan.failback import failback_mode_for

    failback_mode = failback_mode_for(runbook.failback, failover.status)
    return reverse_plan(
        store,
        runbook,
        inventory,
        failover.source,
        failover.target,
        failover.run_id,
        variables,
        secrets,
        mode=mode,
        rollback=rollback,
        failback_mode="undo" if rollback else failback_mode.value,
        fence=fence and failover.status == RunStatus.CRASHED,
    )


def failback_plan(
    store: Store,
    runbook: Runbook,
    inventory: Inventory,
    failover: RunSummary,
    variables: dict[str, str],
    secrets: list[str],
    *,
    fence: bool = True,
) -> ReturnPlan:
    """The failback plan of ``failover``: the mirror of a succeeded failover of a ``failback:
    mirror`` runbook, else the reverse plan; refused when it has nothing to undo."""
    back = return_plan(
        store,
        runbook,
        inventory,
        failover,
        variables,
        secrets,
        mode="real",
        rollback=False,
        fence=fence,
    )
    left_out = back.plan.left_out
    if not back.plan.steps:
        raise RefusedError(
            f"nothing to fail back: run {failover.run_id} changed nothing that has an undo"
            + (
                " (" + "; ".join(f"{i['id']}: {i['reason']}" for i in left_out) + ")"
                if left_out
                else ""
            )
        )
    return back


def chosen_failover(
    store: Store, run: str | None, runbook: Runbook, *, where: str, what: str = "fail back"
) -> RunSummary:
    """The failover run to fail back (or reprotect): ``run``, refused unless it is the true
    state of the world; by default the latest failover of the runbook not yet failed back
    (``where``: the store, as a refusal names it)."""
    from orchestrator.record.runs import Lineage, load_summaries, resolve_run

    summaries = load_summaries(store)
    lineage = Lineage.of(summaries)
    if run is not None:
        run_id = resolve_run(store, run)
        summary = lineage.by_id[run_id]
        refuse_failback(lineage, run_id)
    else:
        candidates = [
            s
            for s in summaries
            if s.direction == Direction.FAILOVER
            and s.runbook == runbook.name  # each runbook has its own history
            and lineage.failback_of(s.run_id) is None
            and lineage.resumed_by(s.run_id) is None
        ]
        if not candidates:
            raise RefusedError(
                f"nothing to {what}: no failover run of runbook '{runbook.name}' in "
                f"{where} "
                "that has not been failed back (if the drill ran from another directory, "
                "pass --state-dir)"
            )
        summary = candidates[-1]
        run_id = summary.run_id
    if summary.runbook != runbook.name:
        raise RefusedError(
            f"run {run_id} used runbook '{summary.runbook}', not '{runbook.name}'; "
            "pass --runbook with the runbook of that run"
        )
    return summary


def unfinished_rollback(store: Store, runbook: str) -> str | None:
    """The latest run of a rollback that was abandoned (a second Ctrl-C), failed or crashed
    before it was done, when it reverses ``runbook``'s latest failover: ``drx failback``
    continues it."""
    from orchestrator.record.runs import Lineage, load_summaries

    summaries = load_summaries(store)
    lineage = Lineage.of(summaries)
    failovers = [
        s
        for s in summaries
        if s.direction == Direction.FAILOVER
        and s.runbook == runbook
        and lineage.resumed_by(s.run_id) is None
    ]
    if not failovers:
        return None
    back = lineage.failback_of(failovers[-1].run_id)
    if back is None:
        return None
    latest = lineage.by_id[back]
    if latest.rollback and latest.status in _STOPPED:
        return back
    return None


def refuse_failback(lineage: Lineage, run_id: str) -> None:
    """Refuse (exit 2, naming the run to use instead) to fail back a run that is not the true
    state of the world: a failback, a run that was continued, or one already reversed."""
    summary = lineage.by_id[run_id]
    if summary.direction == Direction.REPROTECT:
        raise RefusedError(
            f"run {run_id} is a reprotect; fail back the failover it prepared: "
            f"drx failback --run {summary.reverses}"
        )
    if summary.direction == Direction.FAILBACK:
        hint = (
            f"to finish it, drx resume {lineage.latest(run_id)}"
            if lineage.by_id[lineage.latest(run_id)].status in _STOPPED
            else "to move the service again, run a failover"
        )
        raise RefusedError(f"run {run_id} is a failback; {hint}")
    back = lineage.failback_of(run_id)
    if back is not None:
        status = lineage.by_id[back].status
        hint = f"; it {status}: drx resume {back} to finish it" if status in _STOPPED else ""
        raise RefusedError(f"run {run_id} has already been failed back by {back}{hint}")
    after = lineage.resumed_by(run_id)
    if after is not None:
        latest = lineage.latest(run_id)
        raise RefusedError(
            f"run {run_id} was resumed by {after}: fail back {latest} instead "
            f"(it carries what {run_id} did)"
        )


def unknown_undos(plan: Plan) -> list[str]:
    """The steps whose undo the plan runs although their outcome is unknown (the run stopped
    while they ran): a failback runs them only when the operator confirms."""
    return [ps.undo_of for ps in plan.steps.values() if ps.outcome_unknown and ps.undo_of]
