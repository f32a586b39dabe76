"""``drx resume``: continue a failed, cancelled or crashed run."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from orchestrator.cli.app import (
    AcceptDataLossOpt,
    CommentOpt,
    InventoryOpt,
    LogFormatOpt,
    NotifyOpt,
    RunbookOpt,
    SecretVarOpt,
    StateDirOpt,
    StateUrlOpt,
    VarOpt,
    VerboseOpt,
    app,
    options,
)
from orchestrator.cli.failback import reverse_plan
from orchestrator.cli.options import (
    Options,
    closing_line,
    half_done,
    run_options,
    secret_inputs,
    warn_unknown_vars,
)
from orchestrator.errors import RefusedError, UsageError

if TYPE_CHECKING:
    from orchestrator.record.events import JournalEvent, RunStarted


@app.command()
def resume(
    run: Annotated[str | None, typer.Argument(help="The run to continue.")] = None,
    rerun_inflight: Annotated[
        bool,
        typer.Option("--rerun-inflight", help="Re-run steps that were running when it stopped."),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Approve every manual gate.")] = False,
    emergency: Annotated[
        bool,
        typer.Option(
            "--emergency",
            help="The source site was lost mid-run: its hosts may be unreachable, and steps "
            "on them fail without aborting the run.",
        ),
    ] = False,
    max_parallel: Annotated[int, typer.Option("--max-parallel", min=1)] = 32,
    accept_data_loss: AcceptDataLossOpt = False,
    var: VarOpt = None,
    secret_var: SecretVarOpt = None,
    notify: NotifyOpt = None,
    comment: CommentOpt = None,
    runbook: RunbookOpt = None,
    inventory: InventoryOpt = None,
    state_dir: StateDirOpt = None,
    state_url: StateUrlOpt = None,
    log_format: LogFormatOpt = "console",
    verbose: VerboseOpt = 0,
) -> None:
    """Continue a failed, cancelled or crashed run in a new run; succeeded steps are not re-run.

    Example: drx resume --yes
    """
    opts = options(
        runbook,
        inventory,
        state_dir,
        log_format,
        verbose,
        state_url,
        notify=notify,
        comment=comment,
    )
    code = run_resume(
        opts,
        run,
        rerun_inflight=rerun_inflight,
        yes=yes,
        emergency=emergency,
        max_parallel=max_parallel,
        accept_data_loss=accept_data_loss,
        cli_vars=var or [],
        secret_vars=secret_var or [],
    )
    raise typer.Exit(code)


def run_resume(
    opts: Options,
    run: str | None,
    *,
    rerun_inflight: bool,
    yes: bool,
    emergency: bool = False,
    max_parallel: int,
    cli_vars: Iterable[str],
    secret_vars: Iterable[str],
    accept_data_loss: bool = False,
) -> int:
    """Continue a failed, cancelled or crashed run; succeeded steps are carried over."""
    from orchestrator.plan.build import build_plan
    from orchestrator.plan.site import predictions
    from orchestrator.record.events import StepCarried
    from orchestrator.record.outcomes import Status
    from orchestrator.record.runs import (
        Lineage,
        approvals_from_events,
        load_summaries,
        outcomes_from_events,
        resolve_run,
        run_start,
    )
    from orchestrator.run.runner import execute

    summaries = load_summaries(opts.store)
    lineage = Lineage.of(summaries)
    runbook, inventory = opts.load()
    if run is not None:
        run_id = resolve_run(opts.store, run)
    else:
        candidates = [
            s.run_id
            for s in summaries
            if s.runbook == runbook.name  # each runbook has its own history
            and lineage.resumed_by(s.run_id) is None
            and lineage.failback_of(s.run_id) is None
        ]
        if not candidates:
            raise RefusedError(nothing_to_resume(opts, summaries, runbook.name))
        run_id = candidates[-1]
    refuse_resume(lineage, run_id)
    if lineage.by_id[run_id].direction == "reprotect":
        raise RefusedError(f"run {run_id} is a reprotect: run drx reprotect again")
    events = opts.store.read_events(run_id)
    start = run_start(events)
    outcomes = outcomes_from_events(events)
    if start.runbook != runbook.name:
        raise RefusedError(f"run {run_id} used runbook '{start.runbook}', not '{runbook.name}'")
    refuse_changed_files(opts, run_id, start, yes=yes)
    warn_unknown_vars(runbook, inventory, cli_vars, secret_vars)
    variables, secrets = secret_inputs(cli_vars, secret_vars)
    direction = start.direction
    extra: dict[str, Any] = {}
    if direction == "failover":
        steps_pred, health_pred = predictions(opts.store, runbook, "failover", start.target)
        plan = build_plan(
            runbook,
            inventory,
            start.target,
            source=start.source,
            cli_vars=variables,
            secrets=secrets,
            emergency=emergency or start.emergency,
            predictions=steps_pred,
            predicted_health_s=health_pred,
        )
    elif emergency:
        raise UsageError(
            f"run {run_id} is a failback: --emergency continues a failover whose source "
            "site was lost"
        )
    else:
        # a mirrored failback names its own way (source: the failover's target); an undo
        # failback keeps the failover's names
        mode = start.failback_mode or "undo"
        source, target = start.source, start.target
        plan, extra = reverse_plan(
            opts,
            runbook,
            inventory,
            target if mode == "mirror" else source,
            source if mode == "mirror" else target,
            start.reverses or start.parent_run or "",
            variables,
            secrets,
            mode=start.mode or "real",
            rollback=start.rollback,
            failback_mode=mode,
        )
    plan.parent_run = plan.resumes = run_id
    plan.drill_id = start.drill_id  # a continued leg or rollback stays in its drill
    inflight = [
        sid
        for sid, o in outcomes.items()
        if sid in plan.steps
        and (o.status is Status.UNKNOWN or (o.status is Status.CANCELLED and o.outcome_unknown))
    ]
    recovered = _recover(
        opts, inventory, events, run_id, [s for s in inflight if not _is_check(plan.steps[s])]
    )
    blocked = [
        s
        for s in inflight
        if not (rerun_inflight or plan.steps[s].step.idempotent)
        and (_is_check(plan.steps[s]) or not _known(recovered, s))
    ]
    if blocked:
        raise RefusedError(
            f"step(s) {', '.join(blocked)} were running when run {run_id} stopped and are not "
            "idempotent: check them on the hosts, then resume with --rerun-inflight"
        )
    carried = {}
    carried_events: list[StepCarried] = []
    approvals = approvals_from_events(events)
    done = _succeeded(outcomes, recovered)
    for sid, o in outcomes.items():
        # a check is read-only and its answer may be stale: it runs again while a step that
        # needs it has yet to succeed; once they all have, the world it checked has moved on
        # (a standby since promoted) and it is carried like any other succeeded step
        if (
            o.status is Status.SUCCEEDED
            and sid in plan.steps
            and (not _is_check(plan.steps[sid]) or _dependents_done(plan, sid, done))
        ):
            carried[sid] = o
            carried_events.append(
                StepCarried(
                    step=sid,
                    from_run=o.message if o.message else run_id,
                    value=o.value,
                    attempts=o.attempts,
                    hosts=[
                        {"host": h.host, "rc": h.rc, "stdout": h.stdout, "value": h.value}
                        for h in o.hosts.values()
                    ],
                    approval=approvals.get(sid),
                )
            )
    origin = start.parent_start_wall or start.wall0
    run_opts = run_options(
        opts,
        yes=yes,
        max_parallel=max_parallel,
        carried=carried,
        carried_events=carried_events,
        extra_results=extra,
        parent_start_wall=origin,
        check_source_health=False,
        accept_data_loss=accept_data_loss,
        refuse_first_interrupt=plan.rollback,
        recovered=recovered,
    )
    code, result = execute(plan, opts.store, run_opts)
    closing_line(result, opts.store, half_done(plan, result, opts))
    return code


def _recover(
    opts: Options, inventory: Any, events: list[JournalEvent], run_id: str, steps: list[str]
) -> dict[tuple[str, str], Any]:
    """What the in-flight ``steps`` left: the journal for hosts that finished, each host's
    spool for the others (said on stderr, host by host)."""
    from orchestrator.cli.say import say
    from orchestrator.run.recover import Found, in_flight, probe

    if not steps:
        return {}
    recovered = probe(in_flight(events, run_id, steps, opts.store.local_dir / "spool"), inventory)
    for rec in recovered.values():
        if rec.found is Found.ENDED:
            say(
                "info",
                f"{rec.step} on {rec.host}: ended (rc {rec.rc}) while no controller watched; its outcome is taken from the host's spool, not re-run",
            )
        elif rec.found is Found.LIVE:
            say(
                "info",
                f"{rec.step} on {rec.host}: still running on the host; drx follows it within what is left of its timeout",
            )
        elif rec.found is Found.NOTHING:
            say("info", f"{rec.step} on {rec.host}: outcome unknown ({rec.why})")
    return recovered


def _known(recovered: dict[tuple[str, str], Any], step: str) -> bool:
    """Whether every host the step had started on has a known (or followable) outcome."""
    from orchestrator.run.recover import unresolved

    hosts = [r for r in recovered.values() if r.step == step]
    return bool(hosts) and not unresolved(recovered, step)


def _succeeded(outcomes: Any, recovered: dict[tuple[str, str], Any]) -> set[str]:
    """The steps known to have succeeded: in the journal, or in flight with every host's
    command ended with rc 0 (journal or spool)."""
    from orchestrator.record.outcomes import Status
    from orchestrator.run.recover import Found

    done = {sid for sid, o in outcomes.items() if o.status is Status.SUCCEEDED}
    by_step: dict[str, list[Any]] = {}
    for rec in recovered.values():
        by_step.setdefault(rec.step, []).append(rec)
    for sid, recs in by_step.items():
        if all(
            (r.found is Found.ENDED and r.rc == 0)
            or (r.found is Found.JOURNAL and r.finished and r.finished.status == "succeeded")
            for r in recs
        ):
            done.add(sid)
    return done


def _dependents_done(plan: Any, check: str, done: set[str]) -> bool:
    """Whether every step that needs ``check`` has succeeded."""
    return all(sid in done for sid, ps in plan.steps.items() if check in ps.needs)


def _is_check(ps: Any) -> bool:
    from orchestrator.model.runbook import StepKind

    return bool(ps.step.kind is StepKind.CHECK)


def refuse_resume(lineage: Any, run_id: str) -> None:
    """Refuse (exit 2, naming the run to use instead) to resume a run whose continuation or
    reversal already exists: resuming it would act on a state of the world that is gone."""
    summary = lineage.by_id[run_id]
    after = lineage.resumed_by(run_id)
    if after is not None:
        latest = lineage.by_id[lineage.latest(run_id)]
        hint = (
            f"resume {latest.run_id} instead"
            if latest.status in ("failed", "cancelled", "crashed")
            else f"the latest continuation, {latest.run_id}, {latest.status}"
        )
        raise RefusedError(f"run {run_id} has already been resumed by {after}: {hint}")
    if summary.direction == "failover":
        back = lineage.failback_of(run_id)
        if back is not None:
            raise RefusedError(
                f"run {run_id} cannot be resumed: failback {back} reversed what it did "
                "(run a new failover to move the service again)"
            )
    if summary.status not in ("failed", "cancelled", "crashed"):
        raise RefusedError(
            f"nothing to resume: run {run_id} {summary.status} "
            "(only failed, cancelled or crashed runs can be resumed)"
        )


def refuse_changed_files(opts: Options, run_id: str, start: RunStarted, *, yes: bool) -> None:
    """A runbook or inventory changed since ``run_id`` started: say so with the sha256 change,
    and go on only with --yes (the resumed run would not be the run that was interrupted)."""
    from orchestrator.cli import say
    from orchestrator.model.loading import resolve_paths
    from orchestrator.run.standing import changed_files

    changes = changed_files(start, *resolve_paths(opts.runbook_path, opts.inventory_path))
    if not changes:
        return
    lines = "\n  ".join(str(c) for c in changes)
    if not yes:
        raise RefusedError(
            f"changed since run {run_id} started, so resuming it would run steps it never "
            f"planned:\n  {lines}\nnothing was run; resume with --yes to go on with the files "
            "as they are now"
        )
    say.warning(f"changed since run {run_id} started (going on: --yes):\n  {lines}")


def nothing_to_resume(opts: Options, summaries: list[Any], name: str) -> str:
    """Why no run can be resumed: what would make one resumable, where drx looked, and what
    it found there."""
    from orchestrator.cli.options import shown_location

    where = shown_location(opts.store)
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
