"""``drx failback``: derive the reverse plan of a failover and run it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from orchestrator.cli import say
from orchestrator.cli.app import (
    AcceptDataLossOpt,
    FormatOpt,
    app,
    check_format,
)
from orchestrator.cli.options import (
    Options,
    check_site,
    closing_line,
    command_options,
    run_options,
    shown_location,
)
from orchestrator.cli.runcommand import (
    MaxParallelPlainOpt,
    RunInputs,
    run_command,
)
from orchestrator.errors import RefusedError, UsageError

if TYPE_CHECKING:
    from orchestrator.plan.build import Plan
    from orchestrator.record.summary import RunSummary
    from orchestrator.run.failback import ReturnPlan
    from orchestrator.run.runner import RunOptions


@app.command()
@run_command
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
    max_parallel: MaxParallelPlainOpt = 32,
    accept_data_loss: AcceptDataLossOpt = False,
    fmt: FormatOpt = "text",
    *,
    inputs: RunInputs,
) -> int:
    """Reverse a failover: undo what it did, in reverse dependency order (a succeeded failover
    of a 'failback: mirror' runbook: run its reprotect and its steps the other way), then poll
    health at the original source. Default: the latest failover not yet failed back.

    Example: drx failback --dry-run; drx failback --yes
    """
    if dry_run:
        check_format(fmt, ("text", "json", "dot", "mermaid"))
    if run is not None and run_arg is not None and run != run_arg:
        raise UsageError(f"two runs given: {run_arg} and --run {run} (give one)")
    return run_failback(
        inputs,
        run or run_arg,
        dry_run=dry_run,
        fmt=fmt,
        yes=yes,
        max_parallel=max_parallel,
        accept_data_loss=accept_data_loss,
    )


def _confirm_unknown(yes: bool, interactive: bool) -> Callable[[Plan], None]:
    """Before a failback runs: undo steps whose outcome is unknown need --yes or a 'yes'."""
    from orchestrator.run.failback import unknown_undos

    def check(plan: Plan) -> None:
        unknown = unknown_undos(plan)
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


def _return_options(
    opts: Options, back: ReturnPlan, *, yes: bool, max_parallel: int, **more: Any
) -> RunOptions:
    """How a failback or rollback runs: with what the failover's steps did (undo templates
    read their values), asking before it undoes a step whose outcome is unknown."""
    run_opts: RunOptions = run_options(
        opts, yes=yes, max_parallel=max_parallel, extra_results=back.outcomes, **more
    )
    run_opts.before_run = _confirm_unknown(yes, run_opts.interactive)
    return run_opts


def run_return(
    inputs: RunInputs,
    failover_id: str,
    *,
    rollback: bool,
    yes: bool,
    max_parallel: int,
    drill_id: str | None = None,
    before: Callable[[], None] | None = None,
) -> tuple[int, RunSummary | None]:
    """Bring the service back from failover run ``failover_id`` at once: a drill's failback
    leg, or (``rollback``) the rollback of a failover that failed or was cancelled. The first
    Ctrl-C during it is refused with a warning. Returns the exit code and the run's summary;
    (0, None) when the failover changed nothing that has an undo (nothing to bring back)."""
    from orchestrator.record.runs import load_summary, note_rolled_back
    from orchestrator.run.failback import return_plan
    from orchestrator.run.runner import execute

    opts = inputs.opts
    runbook, inventory = opts.load()
    failover = load_summary(opts.store, failover_id)
    variables, secrets = inputs.variables()
    mode = "drill" if drill_id is not None else failover.mode
    back = return_plan(
        opts.store, runbook, inventory, failover, variables, secrets, mode=mode, rollback=rollback
    )
    plan = back.plan
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
    run_opts = _return_options(
        opts, back, yes=yes, max_parallel=max_parallel, refuse_first_interrupt=True
    )
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


def run_failback(
    inputs: RunInputs,
    run: str | None,
    *,
    dry_run: bool,
    fmt: str,
    yes: bool,
    max_parallel: int,
    accept_data_loss: bool = False,
) -> int:
    import sys

    from orchestrator.plan.preview import render_plan
    from orchestrator.run.carry import reprotect_carried
    from orchestrator.run.failback import chosen_failover, failback_plan, unfinished_rollback
    from orchestrator.run.runner import execute

    opts = inputs.opts
    store = opts.store
    runbook, inventory = opts.load()
    if run is None:
        pending = unfinished_rollback(store, runbook.name)
        if pending is not None:
            from orchestrator.cli.resume import run_resume

            if dry_run:
                raise RefusedError(
                    f"rollback {pending} stopped before it was done: drx failback (without "
                    f"--dry-run) continues it, carrying what it already undid"
                )
            say.info(f"continuing rollback {pending}, which stopped before it was done")
            return run_resume(
                inputs,
                pending,
                rerun_inflight=False,
                yes=yes,
                max_parallel=max_parallel,
                accept_data_loss=accept_data_loss,
            )
    failover = chosen_failover(store, run, runbook, where=shown_location(store))
    for site in (failover.source, failover.target):
        check_site(inventory, site)
    variables, secrets = inputs.checked_variables(runbook, inventory)
    back = failback_plan(store, runbook, inventory, failover, variables, secrets, fence=not dry_run)
    for name, why in back.unfenced.items():
        say.warning(
            f"{name}: could not look there for steps run {failover.run_id} started in its last "
            f"moments ({why}); what it shows as not run there may have started"
        )
    plan = back.plan
    carried, carried_events = reprotect_carried(store, plan)
    for event in carried_events:
        plan.steps[event.step].carried_from = event.from_run
    if dry_run:
        sys.stdout.write(render_plan(plan, fmt))
        return 0
    run_opts = _return_options(
        opts,
        back,
        yes=yes,
        max_parallel=max_parallel,
        accept_data_loss=accept_data_loss,
        carried=carried,
        carried_events=carried_events,
    )
    code, summary = execute(plan, store, run_opts)
    closing_line(summary, store)
    return code
