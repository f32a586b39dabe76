"""``drx resume``: continue a failed, cancelled or crashed run."""

from __future__ import annotations

from typing import Annotated

import typer

from orchestrator.cli import say
from orchestrator.cli.app import (
    AcceptDataLossOpt,
    app,
)
from orchestrator.cli.options import (
    closing_line,
    half_done,
    run_options,
    shown_location,
)
from orchestrator.cli.runcommand import (
    MaxParallelPlainOpt,
    RunInputs,
    YesOpt,
    run_command,
)


@app.command()
@run_command
def resume(
    run: Annotated[str | None, typer.Argument(help="The run to continue.")] = None,
    rerun_inflight: Annotated[
        bool,
        typer.Option("--rerun-inflight", help="Re-run steps that were running when it stopped."),
    ] = False,
    yes: YesOpt = False,
    emergency: Annotated[
        bool,
        typer.Option(
            "--emergency",
            help="The source site was lost mid-run: its hosts may be unreachable, and steps "
            "on them fail without aborting the run.",
        ),
    ] = False,
    max_parallel: MaxParallelPlainOpt = 32,
    accept_data_loss: AcceptDataLossOpt = False,
    *,
    inputs: RunInputs,
) -> int:
    """Continue a failed, cancelled or crashed run in a new run; succeeded steps are not re-run.

    Example: drx resume --yes
    """
    return run_resume(
        inputs,
        run,
        rerun_inflight=rerun_inflight,
        yes=yes,
        emergency=emergency,
        max_parallel=max_parallel,
        accept_data_loss=accept_data_loss,
    )


def run_resume(
    inputs: RunInputs,
    run: str | None,
    *,
    rerun_inflight: bool,
    yes: bool,
    emergency: bool = False,
    max_parallel: int,
    accept_data_loss: bool = False,
) -> int:
    """Continue a failed, cancelled or crashed run; succeeded steps are carried over."""
    from orchestrator.model.loading import resolve_paths
    from orchestrator.run.resume import ResumeRequest, plan_resume, resume_target
    from orchestrator.run.runner import execute

    opts = inputs.opts
    store = opts.store
    runbook, inventory = opts.load()
    target = resume_target(
        store,
        runbook,
        run,
        files=resolve_paths(opts.runbook_path, opts.inventory_path),
        yes=yes,
        where=shown_location(store),
        notes=say,
    )
    variables, secrets = inputs.checked_variables(runbook, inventory)
    request = ResumeRequest(rerun_inflight, emergency, variables, secrets)
    resumed = plan_resume(store, runbook, inventory, target, request, notes=say)
    plan = resumed.plan
    run_opts = run_options(
        opts,
        yes=yes,
        max_parallel=max_parallel,
        carried=resumed.carried,
        carried_events=resumed.carried_events,
        extra_results=resumed.extra_results,
        parent_start_wall=resumed.parent_start_wall,
        check_source_health=False,
        accept_data_loss=accept_data_loss,
        refuse_first_interrupt=plan.rollback,
        recovered=resumed.recovered,
        rerun_inflight=rerun_inflight,
    )
    code, result = execute(plan, store, run_opts)
    closing_line(result, store, half_done(plan, result, opts))
    return code
