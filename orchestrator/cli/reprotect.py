"""``drx reprotect``: run a mirror runbook's reprotect phase alone."""

from __future__ import annotations

from typing import Annotated

import typer

from orchestrator.cli.app import (
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
from orchestrator.cli.failback import chosen_failover
from orchestrator.cli.options import (
    Options,
    check_site,
    closing_line,
    run_options,
    secret_inputs,
    warn_unknown_vars,
)
from orchestrator.errors import RefusedError
from orchestrator.vocab import Direction


@app.command()
def reprotect(
    run: Annotated[str | None, typer.Option("--run", help="The failover run to reprotect.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show the plan.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Approve gates.")] = False,
    max_parallel: Annotated[int, typer.Option("--max-parallel", min=1)] = 32,
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
    """Make the old site a replica of the new one again (the runbook's reprotect steps), while
    the service stays where the failover put it; a later failback carries what succeeded.
    Default: the latest failover not yet failed back.

    Example: drx reprotect --dry-run; drx reprotect --yes
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
    code = run_reprotect(
        opts,
        run,
        dry_run=dry_run,
        fmt=fmt,
        yes=yes,
        max_parallel=max_parallel,
        cli_vars=var or [],
        secret_vars=secret_var or [],
    )
    raise typer.Exit(code)


def run_reprotect(
    opts: Options,
    run: str | None,
    *,
    dry_run: bool,
    fmt: str,
    yes: bool,
    max_parallel: int,
    cli_vars: list[str],
    secret_vars: list[str],
) -> int:
    import sys

    from orchestrator.plan.failback import build_reprotect_plan, reprotect_refusal
    from orchestrator.plan.predictions import predictions_for
    from orchestrator.plan.preview import render_plan
    from orchestrator.run.runner import execute

    rb, inv = opts.load()
    summary = chosen_failover(opts, run, rb, what="reprotect")
    refusal = reprotect_refusal(rb, summary.status)
    if refusal is not None:
        raise RefusedError(f"nothing to reprotect for run {summary.run_id}: {refusal}")
    for site in (summary.source, summary.target):
        check_site(inv, site)
    warn_unknown_vars(rb, inv, cli_vars, secret_vars)
    variables, secrets = secret_inputs(cli_vars, secret_vars)
    steps, _ = predictions_for(opts.store, rb.name, Direction.FAILBACK, summary.source, mirror=True)
    plan = build_reprotect_plan(
        rb,
        inv,
        failover_source=summary.source,
        failover_target=summary.target,
        reverses=summary.run_id,
        cli_vars=variables,
        secrets=secrets,
        predictions=steps,
    )
    if dry_run:
        sys.stdout.write(render_plan(plan, fmt))
        return 0
    run_opts = run_options(opts, yes=yes, max_parallel=max_parallel)
    code, result = execute(plan, opts.store, run_opts)
    closing_line(result, opts.store)
    return code
