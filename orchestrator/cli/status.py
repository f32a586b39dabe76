"""``drx status``: the active site, the latest run, the lock."""

from __future__ import annotations

from typing import TYPE_CHECKING

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
from orchestrator.cli.options import shown_location

if TYPE_CHECKING:
    from orchestrator.record.store import Store
    from orchestrator.record.summary import RunSummary


@app.command()
def status(
    runbook: RunbookOpt = None,
    inventory: InventoryOpt = None,
    state_dir: StateDirOpt = None,
    state_url: StateUrlOpt = None,
    log_format: LogFormatOpt = "console",
    verbose: VerboseOpt = 0,
) -> None:
    """Show the active site of each runbook (with -r, of that runbook), the latest run, and
    whether a run holds the lock.

    Example: drx status --state-dir /var/lib/drx
    """
    typer.echo(describe(store_for(state_dir, state_url), runbook_name(runbook)), nl=False)


def describe(store: Store, runbook: str | None = None) -> str:
    from orchestrator.model.units import format_duration
    from orchestrator.record.runs import load_summaries, load_summary

    state = store.read_state()
    shared = "://" in store.location
    lines = [f"state store: {store.location}" if shared else f"state dir: {store.location}"]
    books = state.runbooks
    names = [runbook] if runbook else sorted(books) if books is not None else []
    actives = [(n, state.runbook(n).active) for n in names]
    if not names and state.active:  # a state written before runbooks were kept apart
        actives = [("", state.active)]
    for name, active in actives:
        of = f" (runbook {name})" if name else ""
        if active:
            lines.append(f"active site: {active}{of}")
        else:
            lines.append(
                f"active site: none recorded{of} in {shown_location(store)}, so drx trusts "
                "the inventory's 'active' (if drills ran from another directory, pass "
                "--state-dir)"
            )
    if not actives:
        lines.append(
            f"active site: none recorded in {shown_location(store)}, so drx trusts the "
            "inventory's 'active' (if drills ran from another directory, pass --state-dir)"
        )
    ids = store.run_ids()
    if runbook is not None:
        ids = [s.run_id for s in load_summaries(store) if s.runbook == runbook]
    if ids:
        s = load_summary(store, ids[-1])
        rto, e2e = s.rto.measured_s, s.rto.end_to_end_s
        extra = f", RTO {format_duration(rto)}" if rto is not None else ""
        if e2e is not None:
            extra = f", RTO {format_duration(e2e)} end to end (resumed part {format_duration(rto)})"
        lines.append(f"latest run: {s.run_id} ({s.direction}, {s.status}{extra})")
        lines += next_steps(store, s)
    else:
        lines.append("latest run: none")
    holder = store.lock_holder()
    lines.append(f"lock: held by {holder}" if holder else "lock: free")
    return "\n".join(lines) + "\n"


def next_steps(store: Store, latest: RunSummary) -> list[str]:
    """When the latest run is a failover left half-way: what it did, and the two commands that
    go on from it (the ones ``drx failover`` names when it refuses). Nothing can have resumed
    or failed back the latest run, so it alone decides."""
    from orchestrator.run.standing import half_done_failover

    stopped = half_done_failover([latest], latest.runbook)
    if stopped is None:
        return []
    tail = "" if store.location == ".drx" else f" --state-dir {store.location}"
    return [f"  {stopped.describe()}", "  next, one of:"] + [
        f"    {way}" for way in stopped.ways_on(tail)
    ]
