"""``drx plan SITE`` and ``drx failover SITE``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

import typer

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
    active_site,
    check_site,
    closing_line,
    half_done,
    other_sites,
    run_options,
    secret_inputs,
    state_note,
    warn_unknown_vars,
)
from orchestrator.errors import RefusedError


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
    typer.echo(
        preview_failover(opts, site, fmt, force, emergency, var or [], secret_var or []),
        nl=False,
    )


@app.command()
def failover(
    site: Annotated[str, typer.Argument(help="The site to fail over to.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show the plan.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Approve every manual gate.")] = False,
    emergency: Annotated[
        bool,
        typer.Option("--emergency", help="Real disaster: the source may be gone."),
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Run even if SITE is active.")] = False,
    accept_data_loss: AcceptDataLossOpt = False,
    max_parallel: Annotated[
        int, typer.Option("--max-parallel", min=1, help="Steps running at once.")
    ] = 32,
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
    """Fail the service over to SITE: run the runbook's DAG, poll health at SITE, measure the RTO.

    Example: drx failover site-b --yes
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
        typer.echo(
            preview_failover(opts, site, fmt, force, emergency, var or [], secret_var or []),
            nl=False,
        )
        return
    code = run_failover(
        opts,
        site,
        yes=yes,
        emergency=emergency,
        force=force,
        max_parallel=max_parallel,
        accept_data_loss=accept_data_loss,
        cli_vars=var or [],
        secret_vars=secret_var or [],
    )
    raise typer.Exit(code)


def failover_plan(
    opts: Options,
    site: str,
    *,
    force: bool,
    emergency: bool,
    cli_vars: Iterable[str],
    secret_vars: Iterable[str],
) -> Any:
    """Load, check the site, and build the failover plan (with history predictions)."""
    from orchestrator.plan.build import build_plan
    from orchestrator.plan.site import predictions

    runbook, inventory = opts.load_checked(
        lambda inv: [site] if site in inv.sites and site != inv.active else other_sites(inv)
    )
    check_site(inventory, site)
    warn_unknown_vars(runbook, inventory, cli_vars, secret_vars)
    source = active_site(opts.store, inventory, runbook.name)
    if site == source and not force:
        raise RefusedError(f"site '{site}' is already active (use --force to run anyway)")
    if site == source:
        others = [s for s in inventory.sites if s != site]
        source = others[0]
    variables, secrets = secret_inputs(cli_vars, secret_vars)
    steps, health = predictions(opts.store, runbook, "failover", site)
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
    )


def preview_failover(
    opts: Options,
    site: str,
    fmt: str,
    force: bool,
    emergency: bool,
    cli_vars: Iterable[str],
    secret_vars: Iterable[str],
) -> str:
    from orchestrator.plan.preview import render_plan

    plan = failover_plan(
        opts, site, force=force, emergency=emergency, cli_vars=cli_vars, secret_vars=secret_vars
    )
    return render_plan(plan, fmt)


def run_failover(
    opts: Options,
    site: str,
    *,
    yes: bool,
    emergency: bool,
    force: bool,
    max_parallel: int,
    cli_vars: Iterable[str],
    secret_vars: Iterable[str],
    accept_data_loss: bool = False,
) -> int:
    from orchestrator.run.runner import execute

    plan = failover_plan(
        opts, site, force=force, emergency=emergency, cli_vars=cli_vars, secret_vars=secret_vars
    )
    note = state_note(opts.store, plan.inventory, plan.runbook.name)
    if note:
        typer.echo(note, err=True)
    # (Starting the pre-flight while the engine's modules import was tried: on two cores the
    # import and the key exchanges fight over the GIL and the run starts later, not sooner.)
    run_opts = run_options(
        opts, yes=yes, max_parallel=max_parallel, accept_data_loss=accept_data_loss
    )
    code, summary = execute(plan, opts.store, run_opts)
    closing_line(summary, opts.store, half_done(plan, summary, opts))
    return code
