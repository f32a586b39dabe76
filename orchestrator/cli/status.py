"""``drx status``: the active site, the latest run, the lock."""

from __future__ import annotations

from pathlib import Path

import typer

from orchestrator.cli.app import (
    StateDirOpt,
    app,
    state_dir_path,
)


@app.command()
def status(state_dir: StateDirOpt = None) -> None:
    """Show the active site, the latest run, and whether a run holds the lock.

    Example: drx status --state-dir /var/lib/drx
    """
    typer.echo(describe(state_dir_path(state_dir)), nl=False)


def describe(state_dir: Path) -> str:
    from orchestrator.record.runs import load_summary, run_ids
    from orchestrator.record.store import lock_holder, read_state

    state = read_state(state_dir)
    lines = [f"state dir: {state_dir}"]
    lines.append(
        f"active site: {state.get('active') or '(inventory default: no run has changed it)'}"
    )
    ids = run_ids(state_dir)
    if ids:
        s = load_summary(state_dir, ids[-1])
        rto = (s.get("rto") or {}).get("measured_s")
        e2e = (s.get("rto") or {}).get("end_to_end_s")
        extra = f", RTO {rto:.1f}s" if rto is not None else ""
        if e2e is not None:
            extra += f" ({e2e:.1f}s end to end)"
        lines.append(f"latest run: {s['run_id']} ({s['direction']}, {s['status']}{extra})")
    else:
        lines.append("latest run: none")
    holder = lock_holder(state_dir)
    lines.append(f"lock: held by {holder}" if holder else "lock: free")
    return "\n".join(lines) + "\n"
