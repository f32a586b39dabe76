"""``drx failback``: derive the reverse plan of a failover and run it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from orchestrator.cli import say
from orchestrator.cli.app import (
    AcceptDataLossOpt,
    CommentOpt,
    FormatOpt,
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
    check_format,
    options,
)
from orchestrator.cli.options import (
    Options,
    check_site,
    closing_line,
    command_options,
    run_options,
    secret_inputs,
    shown_location,
    warn_unknown_vars,
)
from orchestrator.errors import RefusedError, UsageError

if TYPE_CHECKING:
    from orchestrator.model.inventory import Inventory
    from orchestrator.model.runbook import Runbook
    from orchestrator.record.events import StepCarried
    from orchestrator.record.summary import RunSummary


@app.command()
def failback(
    run_arg: Annotated[
        str | None,
        typer.Argument(
            metavar="RUN", help="The failover run to reverse (as `drx resume RUN` takes it)."
        ),
    ] = None,
    run: Annotated[str | None, typer.Option("--run", help="Same as RUN.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show the reverse plan.")] = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Approve gates and outcome-unknown steps.")
    ] = False,
    max_parallel: Annotated[int, typer.Option("--max-parallel", min=1)] = 32,
    accept_data_loss: AcceptDataLossOpt = False,
    fmt: FormatOpt = "text",
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
    """Reverse a failover: undo what it did, in reverse dependency order (a succeeded failover
    of a 'failback: mirror' runbook: run its reprotect and its steps the other way), then poll
    health at the original source. Default: the latest failover not yet failed back.

    Example: drx failback --dry-run; drx failback --yes
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
    if dry_run:
        check_format(fmt, ("text", "json", "dot", "mermaid"))
    if run is not None and run_arg is not None and run != run_arg:
        raise UsageError(f"two runs given: {run_arg} and --run {run} (give one)")
    code = run_failback(
        opts,
        run or run_arg,
        dry_run=dry_run,
        fmt=fmt,
        yes=yes,
        max_parallel=max_parallel,
        accept_data_loss=accept_data_loss,
        cli_vars=var or [],
        secret_vars=secret_var or [],
    )
    raise typer.Exit(code)


def _confirm_unknown(yes: bool, interactive: bool) -> Any:
    """Before a failback runs: undo steps whose outcome is unknown need --yes or a 'yes'."""

    def check(plan: Any) -> None:
        unknown = [ps.undo_of for ps in plan.steps.values() if ps.outcome_unknown]
        if not unknown or yes:
            return
        names = ", ".join(unknown)
        if interactive:
            from rich.prompt import Confirm

            if Confirm.ask(
                f"The outcome of {names} is unknown (the controller stopped while it ran). "
                "Undo it anyway?",
                default=False,
            ):
                return
        raise RefusedError(
            f"the outcome of {names} is unknown (the run stopped while it ran); confirm at a "
            "terminal or pass --yes to undo it anyway"
        )

    return check


def reverse_plan(
    opts: Options,
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
) -> tuple[Any, dict[str, Any]]:
    """The failback plan of the failover ``failover_run`` (``source`` → ``target``), with its
    predictions; and what the failover's steps did (their values feed undo templates). In
    ``failback_mode`` mirror: the runbook's steps from ``target`` back to ``source``, predicted
    from every run that moved the service to ``source``. ``mode`` is drill or real (templates'
    ``mode``); ``rollback``: it rolls back a failover that did not succeed (always undo)."""
    from orchestrator.plan.build import build_reverse_plan
    from orchestrator.plan.failback import build_mirror_plan
    from orchestrator.plan.predictions import predictions_for
    from orchestrator.plan.site import predictions
    from orchestrator.record.runs import outcomes_from_events

    if failback_mode == "mirror" and not rollback:
        steps, health = predictions_for(opts.store, runbook.name, "failback", source, mirror=True)
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
        return mirrored, {}
    outcomes = outcomes_from_events(opts.store.read_events(failover_run))
    steps, health = predictions(opts.store, runbook, "failback", target)
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
    return plan, outcomes


def return_plan(
    opts: Options,
    runbook: Runbook,
    inventory: Inventory,
    failover: RunSummary,
    variables: dict[str, str],
    secrets: list[str],
    *,
    mode: str,
    rollback: bool,
) -> tuple[Any, dict[str, Any]]:
    """The plan that brings the service back from ``failover``: the one place a drill's way
    home and every rollback are planned. A rollback (of a failover that did not succeed) is
    always the undo plan; the way home of a succeeded failover follows the runbook's failback
    mode."""
    from orchestrator.plan.failback import failback_mode_for

    failback_mode = failback_mode_for(runbook.failback, failover.status)
    return reverse_plan(
        opts,
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
    )


def run_return(
    opts: Options,
    failover_id: str,
    *,
    rollback: bool,
    yes: bool,
    max_parallel: int,
    cli_vars: Iterable[str],
    secret_vars: Iterable[str],
    drill_id: str | None = None,
    before: Callable[[], None] | None = None,
) -> tuple[int, RunSummary | None]:
    """Bring the service back from failover run ``failover_id`` at once: a drill's failback
    leg, or (``rollback``) the rollback of a failover that failed or was cancelled. The first
    Ctrl-C during it is refused with a warning. Returns the exit code and the run's summary;
    (0, None) when the failover changed nothing that has an undo (nothing to bring back)."""
    from orchestrator.record.runs import load_summary, note_rolled_back
    from orchestrator.run.runner import execute

    runbook, inventory = opts.load()
    failover = load_summary(opts.store, failover_id)
    variables, secrets = secret_inputs(cli_vars, secret_vars)
    mode = "drill" if drill_id is not None else failover.mode
    plan, outcomes = return_plan(
        opts, runbook, inventory, failover, variables, secrets, mode=mode, rollback=rollback
    )
    if not plan.steps:
        say.info(
            f"nothing to roll back: run {failover_id} changed nothing that has an undo; "
            f"the service is still at {failover.source}",
            run_id=failover_id,
        )
        return 0, None
    plan.drill_id = drill_id
    if before is not None:
        before()
    run_opts = run_options(
        opts,
        yes=yes,
        max_parallel=max_parallel,
        extra_results=outcomes,
        refuse_first_interrupt=True,
    )
    run_opts.before_run = _confirm_unknown(yes, run_opts.interactive)
    try:
        code, summary = execute(plan, opts.store, run_opts)
    except RefusedError as exc:
        what = "rollback" if rollback else "failback"
        say.error(
            f"the {what} of {failover_id} did not start: {exc}; the service is between "
            f"{failover.source} and {failover.target}: drx failback --run {failover_id}"
            + command_options(opts),
            int(exc.exit_code),
        )
        return int(exc.exit_code), None
    if rollback:
        note_rolled_back(opts.store, failover_id, summary.run_id)
    closing_line(summary, opts.store)
    return code, summary


def failback_plan(
    opts: Options,
    run: str | None,
    *,
    cli_vars: Iterable[str],
    secret_vars: Iterable[str],
) -> Any:
    """The failback plan of a failover run (default: the latest not yet failed back): the
    mirror of a succeeded failover of a ``failback: mirror`` runbook, else the reverse plan."""
    from orchestrator.plan.failback import failback_mode_for

    runbook, inventory = opts.load()
    summary = chosen_failover(opts, run, runbook)
    run_id = summary.run_id
    for site in (summary.source, summary.target):
        check_site(inventory, site)
    warn_unknown_vars(runbook, inventory, cli_vars, secret_vars)
    variables, secrets = secret_inputs(cli_vars, secret_vars)
    mode = failback_mode_for(runbook.failback, summary.status)
    plan, outcomes = reverse_plan(
        opts,
        runbook,
        inventory,
        summary.source,
        summary.target,
        run_id,
        variables,
        secrets,
        failback_mode=mode.value,
    )
    if not plan.steps:
        raise RefusedError(
            f"nothing to fail back: run {run_id} changed nothing that has an undo"
            + (
                " (" + "; ".join(f"{i['id']}: {i['reason']}" for i in plan.left_out) + ")"
                if plan.left_out
                else ""
            )
        )
    return plan, outcomes


def chosen_failover(
    opts: Options, run: str | None, runbook: Runbook, *, what: str = "fail back"
) -> RunSummary:
    """The failover run to fail back (or reprotect): ``run``, refused unless it is the true
    state of the world; by default the latest failover of the runbook not yet failed back."""
    from orchestrator.record.runs import Lineage, load_summaries, resolve_run

    summaries = load_summaries(opts.store)
    lineage = Lineage.of(summaries)
    if run is not None:
        run_id = resolve_run(opts.store, run)
        summary = lineage.by_id[run_id]
        refuse_failback(lineage, run_id)
    else:
        candidates = [
            s
            for s in summaries
            if s.direction == "failover"
            and s.runbook == runbook.name  # each runbook has its own history
            and lineage.failback_of(s.run_id) is None
            and lineage.resumed_by(s.run_id) is None
        ]
        if not candidates:
            raise RefusedError(
                f"nothing to {what}: no failover run of runbook '{runbook.name}' in "
                f"{shown_location(opts.store)} "
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


def unfinished_rollback(opts: Options) -> str | None:
    """The latest run of a rollback that was abandoned (a second Ctrl-C), failed or crashed
    before it was done, when it reverses the runbook's latest failover: ``drx failback``
    continues it."""
    from orchestrator.record.runs import Lineage, load_summaries

    summaries = load_summaries(opts.store)
    lineage = Lineage.of(summaries)
    runbook, _ = opts.load()
    failovers = [
        s
        for s in summaries
        if s.direction == "failover"
        and s.runbook == runbook.name
        and lineage.resumed_by(s.run_id) is None
    ]
    if not failovers:
        return None
    back = lineage.failback_of(failovers[-1].run_id)
    if back is None:
        return None
    latest = lineage.by_id[back]
    if latest.rollback and latest.status in ("failed", "cancelled", "crashed"):
        return back
    return None


def refuse_failback(lineage: Any, run_id: str) -> None:
    """Refuse (exit 2, naming the run to use instead) to fail back a run that is not the true
    state of the world: a failback, a run that was continued, or one already reversed."""
    summary = lineage.by_id[run_id]
    if summary.direction == "reprotect":
        raise RefusedError(
            f"run {run_id} is a reprotect; fail back the failover it prepared: "
            f"drx failback --run {summary.reverses}"
        )
    if summary.direction == "failback":
        hint = (
            f"to finish it, drx resume {lineage.latest(run_id)}"
            if lineage.by_id[lineage.latest(run_id)].status in ("failed", "cancelled", "crashed")
            else "to move the service again, run a failover"
        )
        raise RefusedError(f"run {run_id} is a failback; {hint}")
    back = lineage.failback_of(run_id)
    if back is not None:
        status = lineage.by_id[back].status
        hint = (
            f"; it {status}: drx resume {back} to finish it"
            if status in ("failed", "cancelled", "crashed")
            else ""
        )
        raise RefusedError(f"run {run_id} has already been failed back by {back}{hint}")
    after = lineage.resumed_by(run_id)
    if after is not None:
        latest = lineage.latest(run_id)
        raise RefusedError(
            f"run {run_id} was resumed by {after}: fail back {latest} instead "
            f"(it carries what {run_id} did)"
        )


def reprotect_carried(opts: Options, plan: Any) -> tuple[dict[str, Any], list[StepCarried]]:
    """A mirrored failback's reprotect steps that a succeeded ``drx reprotect`` of the same
    failover already ran: carried, not run again."""
    from orchestrator.plan.failback import reprotect_to_carry
    from orchestrator.record.runs import load_summaries
    from orchestrator.run.carry import carried_steps

    phase = [sid for sid, ps in plan.steps.items() if ps.phase == "reprotect"]
    if not phase or plan.reverses is None:
        return {}, []
    done = reprotect_to_carry(load_summaries(opts.store), plan.reverses)
    if done is None:
        return {}, []
    return carried_steps(opts.store.read_events(done), phase, done)


def run_failback(
    opts: Options,
    run: str | None,
    *,
    dry_run: bool,
    fmt: str,
    yes: bool,
    max_parallel: int,
    cli_vars: Iterable[str],
    secret_vars: Iterable[str],
    accept_data_loss: bool = False,
) -> int:
    import sys

    from orchestrator.plan.preview import render_plan
    from orchestrator.run.runner import execute

    if run is None:
        pending = unfinished_rollback(opts)
        if pending is not None:
            from orchestrator.cli.resume import run_resume

            if dry_run:
                raise RefusedError(
                    f"rollback {pending} stopped before it was done: drx failback (without "
                    f"--dry-run) continues it, carrying what it already undid"
                )
            say.info(f"continuing rollback {pending}, which stopped before it was done")
            return run_resume(
                opts,
                pending,
                rerun_inflight=False,
                yes=yes,
                max_parallel=max_parallel,
                cli_vars=cli_vars,
                secret_vars=secret_vars,
                accept_data_loss=accept_data_loss,
            )
    plan, outcomes = failback_plan(opts, run, cli_vars=cli_vars, secret_vars=secret_vars)
    carried, carried_events = reprotect_carried(opts, plan)
    for event in carried_events:
        plan.steps[event.step].carried_from = event.from_run
    if dry_run:
        sys.stdout.write(render_plan(plan, fmt))
        return 0
    run_opts = run_options(
        opts,
        yes=yes,
        max_parallel=max_parallel,
        extra_results=outcomes,
        accept_data_loss=accept_data_loss,
        carried=carried,
        carried_events=carried_events,
    )
    run_opts.before_run = _confirm_unknown(yes, run_opts.interactive)
    code, summary = execute(plan, opts.store, run_opts)
    closing_line(summary, opts.store)
    return code
