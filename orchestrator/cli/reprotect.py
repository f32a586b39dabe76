"""``drx reprotect``: run a mirror runbook's reprotect phase alone."""

from __future__ import annotations

from typing import Annotated

import typer

from orchestrator.cli.app import (
    FormatOpt,
    app,
    check_format,
)
from orchestrator.cli.options import (
    check_site,
    closing_line,
    run_options,
    shown_location,
)
from orchestrator.cli.runcommand import (
    DryRunOpt,
    MaxParallelPlainOpt,
    RunInputs,
    run_command,
)
from orchestrator.errors import RefusedError
from orchestrator.vocab import Direction


@app.command()
@run_command
def reprotect(
    run: Annotated[str | None, typer.Option("--run", help="The failover run to reprotect.")] = None,
    dry_run: DryRunOpt = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Approve gates.")] = False,
    max_parallel: MaxParallelPlainOpt = 32,
    fmt: FormatOpt = "text",
    *,
    inputs: RunInputs,
) -> int:
    """Make the old site a replica of the new one again (the runbook's reprotect steps), while
    the service stays where the failover put it; a later failback carries what succeeded.
    Default: the latest failover not yet failed back.

    Example: drx reprotect --dry-run; drx reprotect --yes
    """
    if dry_run:
        check_format(fmt, ("text", "json", "dot", "mermaid"))
    return run_reprotect(inputs, run, dry_run=dry_run, fmt=fmt, yes=yes, max_parallel=max_parallel)


def run_reprotect(
    inputs: RunInputs, run: str | None, *, dry_run: bool, fmt: str, yes: bool, max_parallel: int
) -> int:
    import sys

    from orchestrator.plan.failback import build_reprotect_plan, reprotect_refusal
    from orchestrator.plan.predictions import predictions_for
    from orchestrator.plan.preview import render_plan
    from orchestrator.run.failback import chosen_failover
    from orchestrator.run.runner import execute

    opts = inputs.opts
    rb, inv = opts.load()
    summary = chosen_failover(
        opts.store, run, rb, where=shown_location(opts.store), what="reprotect"
    )
    refusal = reprotect_refusal(rb, summary.status)
    if refusal is not None:
        raise RefusedError(f"nothing to reprotect for run {summary.run_id}: {refusal}")
    for site in (summary.source, summary.target):
        check_site(inv, site)
    variables, secrets = inputs.checked_variables(rb, inv)
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
