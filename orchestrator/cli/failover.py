"""``drx plan SITE`` and ``drx failover SITE``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from orchestrator.cli.app import (
    AcceptDataLossOpt,
    FormatOpt,
    InventoryOpt,
    LogFormatOpt,
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
    active_site,
    check_site,
    closing_line,
    command_options,
    half_done,
    other_sites,
    run_options,
    state_note,
)
from orchestrator.cli.runcommand import (
    DryRunOpt,
    ForceOpt,
    MaxParallelOpt,
    RunInputs,
    YesOpt,
    run_command,
)
from orchestrator.errors import RefusedError
from orchestrator.vocab import Direction


@app.command()
def plan(
    site: Annotated[str, typer.Argument(help="The site to fail over to.")],
    fmt: FormatOpt = "text",
    force: Annotated[bool, typer.Option("--force", help="Plan even if SITE is active.")] = False,
    emergency: Annotated[bool, typer.Option("--emergency", help="Plan an emergency run.")] = False,
    var: VarOpt = None,
    secret_var: SecretVarOpt = None,
    runbook: RunbookOpt = None,
    inventory: InventoryOpt = None,
    state_dir: StateDirOpt = None,
    state_url: StateUrlOpt = None,
    log_format: LogFormatOpt = "console",
    verbose: VerboseOpt = 0,
) -> None:
    """Preview a failover to SITE without running it: waves, hosts, rendered commands, predicted
    durations (history median, else expect) and the predicted RTO with its critical path.

    Example: drx plan site-b --format mermaid
    """
    check_format(fmt, ("text", "json", "dot", "mermaid"))
    opts = options(runbook, inventory, state_dir, log_format, verbose, state_url)
    inputs = RunInputs(opts, var or [], secret_var or [])
    typer.echo(preview_failover(inputs, site, fmt, force, emergency), nl=False)


@app.command()
@run_command
def failover(
    site: Annotated[str, typer.Argument(help="The site to fail over to.")],
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    emergency: Annotated[
        bool,
        typer.Option("--emergency", help="Real disaster: the source may be gone."),
    ] = False,
    force: ForceOpt = False,
    accept_data_loss: AcceptDataLossOpt = False,
    max_parallel: MaxParallelOpt = 32,
    fmt: FormatOpt = "text",
    rollback: Annotated[
        bool | None,
        typer.Option(
            "--rollback/--no-rollback",
            help="Roll back at once if the failover fails or is cancelled (default: the "
            "runbook's on_failure; never under --emergency unless --rollback).",
        ),
    ] = None,
    *,
    inputs: RunInputs,
) -> int | None:
    """Fail the service over to SITE: run the runbook's DAG, poll health at SITE, measure the RTO.

    Example: drx failover site-b --yes
    """
    if dry_run:
        check_format(fmt, ("text", "json", "dot", "mermaid"))
        typer.echo(preview_failover(inputs, site, fmt, force, emergency), nl=False)
        return None
    return run_failover(
        inputs,
        site,
        yes=yes,
        emergency=emergency,
        force=force,
        max_parallel=max_parallel,
        accept_data_loss=accept_data_loss,
        rollback=rollback,
    )


def failover_plan(
    inputs: RunInputs, site: str, *, force: bool, emergency: bool, mode: str = "real"
) -> Any:
    """Load, check the site, and build the failover plan (with history predictions)."""
    from orchestrator.plan.build import build_plan
    from orchestrator.plan.site import predictions

    opts = inputs.opts
    runbook, inventory = opts.load_checked(
        lambda inv: [site] if site in inv.sites and site != inv.active else other_sites(inv)
    )
    check_site(inventory, site)
    inputs.warn_unknown(runbook, inventory)
    source = active_site(opts.store, inventory, runbook.name)
    if site == source and not force:
        raise RefusedError(f"site '{site}' is already active (use --force to run anyway)")
    if site == source:
        others = [s for s in inventory.sites if s != site]
        source = others[0]
    variables, secrets = inputs.variables()
    steps, health = predictions(opts.store, runbook, Direction.FAILOVER, site)
    return build_plan(
        runbook,
        inventory,
        site,
        source=source,
        cli_vars=variables,
        secrets=secrets,
        emergency=emergency,
        predictions=steps,
        predicted_health_s=health,
        mode=mode,
    )


def preview_failover(
    inputs: RunInputs, site: str, fmt: str, force: bool, emergency: bool, mode: str = "real"
) -> str:
    from orchestrator.plan.preview import render_plan

    plan = failover_plan(inputs, site, force=force, emergency=emergency, mode=mode)
    return render_plan(plan, fmt)


def run_failover(
    inputs: RunInputs,
    site: str,
    *,
    yes: bool,
    emergency: bool,
    force: bool,
    max_parallel: int,
    accept_data_loss: bool = False,
    rollback: bool | None = None,
) -> int:
    from orchestrator.cli.failback import run_return
    from orchestrator.run.rollback import rollback_due
    from orchestrator.run.runner import execute

    opts = inputs.opts
    plan = failover_plan(inputs, site, force=force, emergency=emergency)
    refuse_out_of_turn(opts, plan, force=force)
    note = state_note(opts.store, plan.inventory, plan.runbook.name)
    if note:
        typer.echo(note, err=True)
    # (Starting the pre-flight while the engine's modules import was tried: on two cores the
    # import and the key exchanges fight over the GIL and the run starts later, not sooner.)
    run_opts = run_options(
        opts, yes=yes, max_parallel=max_parallel, accept_data_loss=accept_data_loss
    )
    code, summary = execute(plan, opts.store, run_opts)
    due = rollback_due(summary.status, plan.runbook.on_failure, emergency=emergency, asked=rollback)
    closing_line(summary, opts.store, None if due else half_done(plan, summary, opts))
    if due:
        run_return(inputs, summary.run_id, rollback=True, yes=yes, max_parallel=max_parallel)
    return code


def refuse_out_of_turn(opts: Options, plan: Any, *, force: bool) -> None:
    """Refuse (exit 2, nothing run) a failover that would start from a state it does not know
    (the last failover stopped half-way: resume or fail it back) or that reverses the last
    failover (that is a failback; ``--force`` runs it anyway)."""
    from orchestrator.record.runs import load_summaries
    from orchestrator.run import standing

    summaries = load_summaries(opts.store)
    name = plan.runbook.name
    tail = command_options(opts)
    stopped = standing.half_done_failover(summaries, name)
    if stopped is not None:
        lost = standing.unreachable(plan.inventory.sites[stopped.run.source].hosts)
        ways = stopped.ways_on(tail, source_unreachable=lost)
        raise RefusedError(
            f"{stopped.describe()}; a new failover would start from a state it does not "
            "know, so nothing was run. Go on with one of:\n  " + "\n  ".join(ways)
        )
    back = standing.wrong_way(summaries, name, plan.to_site, plan.source)
    if back is not None and not force:
        raise RefusedError(back.message(plan.to_site, tail))
