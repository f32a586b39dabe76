"""``drx runs``: the history of the state directory."""

from __future__ import annotations

from typing import Annotated

import typer

from orchestrator.cli.app import (
    StateDirOpt,
    app,
    check_format,
    store_for,
)
from orchestrator.record.store import Store


@app.command()
def runs(
    fmt: Annotated[str, typer.Option("--format", "-f", help="table or json.")] = "table",
    state_dir: StateDirOpt = None,
) -> None:
    """List past runs: id, runbook, direction, site, status, measured RTO vs target, RPO.

    Example: drx runs --format json
    """
    check_format(fmt, ("table", "json"))
    typer.echo(list_runs(store_for(state_dir), fmt), nl=False)


def list_runs(store: Store, fmt: str) -> str:
    import json

    from orchestrator.model.units import format_duration
    from orchestrator.record.runs import load_summaries

    summaries = load_summaries(store)
    if fmt == "json":
        return json.dumps(summaries, indent=2) + "\n"
    if not summaries:
        return f"no runs in {store.location}\n"
    rows = [("RUN", "RUNBOOK", "DIRECTION", "SITE", "STATUS", "RTO", "TARGET", "RPO", "NOTE")]
    for s in summaries:
        rto = s.get("rto") or {}
        rpo = s.get("rpo") or {}
        if rpo.get("measured_bytes") is not None:
            rpo_text = f"{int(rpo['measured_bytes'])}B"
        else:
            rpo_text = format_duration(rpo.get("measured_s")) if rpo else "—"
        met = rto.get("met")
        rto_text = format_duration(rto.get("measured_s"))
        if rto.get("end_to_end_s") is not None:  # a resumed run: the drill's own figure too
            rto_text += f" (e2e {format_duration(rto['end_to_end_s'])})"
        if met is not None:
            rto_text += " ✔" if met else " ✘"
        note = []
        if s.get("failed_back_by"):
            note.append(f"failed back by {s['failed_back_by'][-1]}")
        if s.get("resumed_by_runs"):
            note.append(f"resumed by {s['resumed_by_runs'][-1]}")
        if s.get("parent_run"):
            verb = "reverses" if s["direction"] == "failback" else "resumes"
            note.append(f"{verb} {s['parent_run']}")
        rows.append(
            (
                s["run_id"],
                s.get("runbook", ""),
                s["direction"],
                s.get("moves_to") or (s["target"] if s["direction"] == "failover" else s["source"]),
                s["status"],
                rto_text,
                format_duration(rto.get("target_s")),
                rpo_text,
                "; ".join(note),
            )
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "".join(
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n"
        for r in rows
    )
