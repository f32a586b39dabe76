"""``drx drill SITE``: the whole rehearsal as one command — a failover to SITE, a hold, and the
way home — that always ends at the site that was active (docs/reference.md, "drills")."""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, Annotated

import typer

from orchestrator.cli import say
from orchestrator.cli.app import (
    AcceptDataLossOpt,
    FormatOpt,
    app,
    check_format,
)
from orchestrator.cli.options import Options, closing_line, run_options, state_note
from orchestrator.cli.runcommand import (
    DryRunOpt,
    ForceOpt,
    MaxParallelOpt,
    RunInputs,
    YesOpt,
    run_command,
)
from orchestrator.errors import ExitCode, UsageError
from orchestrator.vocab import RunStatus

if TYPE_CHECKING:
    from orchestrator.record.summary import RunSummary


@app.command()
@run_command
def drill(
    site: Annotated[str, typer.Argument(help="The site to fail over to and back from.")],
    hold: Annotated[
        str,
        typer.Option("--hold", help="How long to stay at SITE once health holds (e.g. 5m)."),
    ] = "0",
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    force: ForceOpt = False,
    accept_data_loss: AcceptDataLossOpt = False,
    max_parallel: MaxParallelOpt = 32,
    fmt: FormatOpt = "text",
    *,
    inputs: RunInputs,
) -> int | None:
    """Rehearse a failover to SITE and come back: fail over, let health hold, stay --hold, fail
    back. A failover leg that fails or is cancelled is rolled back at once. Both runs carry the
    same drill_id (the failover's run id): drx report DRILL-ID shows both legs.

    Example: drx drill site-b --hold 5m --yes
    """
    from orchestrator.model.units import parse_duration

    try:
        hold_s = parse_duration(hold)
    except ValueError as exc:
        raise UsageError(f"--hold: {exc}") from None
    if dry_run:
        from orchestrator.cli.failover import preview_failover

        check_format(fmt, ("text", "json", "dot", "mermaid"))
        typer.echo(preview_failover(inputs, site, fmt, force, False, mode="drill"), nl=False)
        return None
    return run_drill(
        inputs,
        site,
        hold_s=hold_s,
        yes=yes,
        force=force,
        max_parallel=max_parallel,
        accept_data_loss=accept_data_loss,
    )


class _BetweenLegs:
    """Ctrl-C while no run is executing (between the legs, during the hold): the first cuts
    the hold short and the drill goes home; the second abandons the drill."""

    def __init__(self) -> None:
        self.interrupted = threading.Event()

    def on_interrupt(self) -> None:
        if self.interrupted.is_set():
            raise KeyboardInterrupt
        self.interrupted.set()
        print(
            "\ndrx: the drill is going home now (Ctrl-C again to abandon it there)",
            file=sys.stderr,
        )

    def hold(self, seconds: float) -> None:
        """Stay for ``seconds``, or until a Ctrl-C."""
        if seconds > 0:
            say.info(f"holding for {seconds:g}s before going home", hold_s=seconds)
            self.interrupted.wait(seconds)


def run_drill(
    inputs: RunInputs,
    site: str,
    *,
    hold_s: float,
    yes: bool,
    force: bool,
    max_parallel: int,
    accept_data_loss: bool,
) -> int:
    """A failover leg, a hold, and the way home (or, when the leg did not succeed, its
    rollback); returns the drill's exit code (0, 3, 1 or 130)."""
    from orchestrator.cli.failback import run_return
    from orchestrator.cli.failover import failover_plan
    from orchestrator.cli.options import active_site
    from orchestrator.run.interrupts import routed
    from orchestrator.run.rollback import rollback_due
    from orchestrator.run.runner import execute

    opts = inputs.opts
    plan = failover_plan(inputs, site, force=force, emergency=False, mode="drill")
    home = plan.source
    note = state_note(opts.store, plan.inventory, plan.runbook.name)
    if note:
        typer.echo(note, err=True)
    run_opts = run_options(
        opts, yes=yes, max_parallel=max_parallel, accept_data_loss=accept_data_loss
    )
    back: RunSummary | None = None
    back_code = 0
    legs = _BetweenLegs()
    with routed(opts.interrupts, legs.on_interrupt):
        _, first = execute(plan, opts.store, run_opts)
        closing_line(first, opts.store)
        drill_id = first.run_id
        if first.status == RunStatus.SUCCEEDED:
            legs.hold(hold_s)
            back_code, back = run_return(
                inputs,
                drill_id,
                rollback=False,
                yes=yes,
                max_parallel=max_parallel,
                drill_id=drill_id,
            )
        elif rollback_due(first.status, plan.runbook.on_failure, drill=True):
            back_code, back = run_return(
                inputs,
                drill_id,
                rollback=True,
                yes=yes,
                max_parallel=max_parallel,
                drill_id=drill_id,
            )
        interrupted = legs.interrupted.is_set()
    runbook, inventory = plan.runbook, plan.inventory
    at = active_site(opts.store, inventory, runbook.name)
    code = drill_exit_code(first, back, back_code, interrupted=interrupted, home=at == home)
    _closing(first, back, home, at, code, opts)
    return code


def drill_exit_code(
    first: RunSummary,
    back: RunSummary | None,
    back_code: int,
    *,
    interrupted: bool,
    home: bool,
) -> int:
    """0 both legs succeeded and the original site is active again; 3 they did, but a leg
    missed its RTO target; 130 Ctrl-C anywhere; 1 otherwise."""
    cancelled = (
        interrupted
        or first.status == RunStatus.CANCELLED
        or (back is not None and back.status == RunStatus.CANCELLED)
    )
    if cancelled:
        return int(ExitCode.CANCELLED)
    if first.status != RunStatus.SUCCEEDED or not home:
        return int(ExitCode.FAILED)
    if back is None or back.status != RunStatus.SUCCEEDED or back_code not in (0, 3):
        return int(ExitCode.FAILED)
    if first.rto.met is False or back.rto.met is False:
        return int(ExitCode.RTO_MISSED)
    return int(ExitCode.OK)


def _closing(
    first: RunSummary,
    back: RunSummary | None,
    home: str,
    at: str,
    code: int,
    opts: Options,
) -> None:
    from orchestrator.run.runner import report_hint

    way_home = "no way home was run"
    if back is not None:
        kind = "rollback" if back.rollback else "failback"
        way_home = f"{kind} {back.run_id} {back.status}"
    where = f"{home} is active again" if at == home else f"the service is at {at}, not {home}"
    text = (
        f"drill {first.run_id}: failover {first.status}, {way_home}; {where}\n"
        f"report (both legs): {report_hint(first.run_id, opts.store)}"
    )
    say.say(
        "info" if code == 0 else "error",
        "drill_closed",
        text,
        drill_id=first.run_id,
        failover=first.status,
        back=back.run_id if back else None,
        back_status=back.status if back else None,
        active=at,
        exit_code=code,
    )
