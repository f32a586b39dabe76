"""``drx logs RUN STEP [HOST]``: a step's full output, as kept under the run's ``output/``."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from orchestrator.cli.app import (
    InventoryOpt,
    LogFormatOpt,
    RunbookOpt,
    StateDirOpt,
    StateUrlOpt,
    VerboseOpt,
    app,
    runbook_name,
    store_for,
)
from orchestrator.errors import UsageError

if TYPE_CHECKING:
    from orchestrator.record.store import Store


def step_logs(
    store: Store, run: str, step: str, host: str | None, runbook: str | None = None
) -> list[tuple[str, Path]]:
    """(host, log file) for each host of ``step`` in ``run`` (or the one ``host``); ``latest``
    is the latest run (of ``runbook``, if given)."""
    from orchestrator.cli.report import choose_run
    from orchestrator.model.fields import suggest
    from orchestrator.model.names import is_name
    from orchestrator.record.runs import load_summary
    from orchestrator.record.store import inside, is_real_dir

    run_id = choose_run(store, None if run in ("latest", "last") else run, runbook)
    summary = load_summary(store, run_id)
    steps = {s.id: s for s in summary.steps}
    output = store.output_dir(run_id)
    health = sorted(p.name for p in output.glob("health:*")) if output.is_dir() else []
    # STEP names a step of the run (or a health check's polls), never a path
    health_step = step.startswith("health:") and is_name(step.removeprefix("health:"))
    if step not in steps and not (health_step and is_real_dir(output / step)):
        hint = suggest(step, [*steps, *health])
        raise UsageError(
            f"run {run_id} has no step '{step}'"
            + (f"; {hint}" if hint else f" (steps: {', '.join(steps)})")
        )
    hosts = [h.host for h in steps[step].hosts] if step in steps else []
    if not hosts and health_step and is_real_dir(output / step):
        hosts = sorted(p.stem for p in (output / step).glob("*.log") if is_name(p.stem))
    if host is not None:
        if host not in hosts:
            raise UsageError(
                f"step '{step}' of run {run_id} did not run on '{host}' "
                f"(hosts: {', '.join(hosts) or 'none'})"
            )
        hosts = [host]
    # a site plan's steps are ID/STEP: a directory per level, each a plain name
    return [(h, inside(output, *step.split("/"), f"{h}.log")) for h in hosts]


@app.command()
def logs(
    run: Annotated[
        str,
        typer.Argument(help="Run id, a unique start or end of one, or 'latest'."),
    ],
    step: Annotated[str, typer.Argument(help="Step id (in a failback: undo-ID).")],
    host: Annotated[str | None, typer.Argument(help="Only this host.")] = None,
    state_dir: StateDirOpt = None,
    state_url: StateUrlOpt = None,
    runbook: RunbookOpt = None,
    inventory: InventoryOpt = None,
    log_format: LogFormatOpt = "console",
    verbose: VerboseOpt = 0,
) -> None:
    """Print a step's full output (every attempt, stdout and stderr as they came) of a run (RUN may
    be latest), which reports and the journal keep only the last lines of. With several hosts,
    each is headed by its name.

    Example: drx logs 20261126T174500.123Z-failover-site-b promote-db db-b
    """
    from orchestrator.record.store import open_regular

    found = step_logs(store_for(state_dir, state_url), run, step, host, runbook_name(runbook))
    several = len(found) > 1
    for name, path in found:
        if several:
            typer.echo(f"==> {name} <==")
        try:
            fh = open_regular(path)  # a log replaced by a symlink is not printed through
        except OSError:
            typer.echo(f"({name}: no output)", err=True)
            continue
        sys.stdout.flush()
        with fh:  # streamed: a log may be gigabytes
            shutil.copyfileobj(fh, sys.stdout.buffer)
        sys.stdout.buffer.flush()
