"""``drx runs``: the history of the state directory."""

from __future__ import annotations

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
    check_format,
    runbook_name,
    store_for,
)

if TYPE_CHECKING:
    from orchestrator.record.store import Store


@app.command()
def runs(
    fmt: Annotated[str, typer.Option("--format", "-f", help="table or json.")] = "table",
    runbook: RunbookOpt = None,
    inventory: InventoryOpt = None,
    state_dir: StateDirOpt = None,
    state_url: StateUrlOpt = None,
    log_format: LogFormatOpt = "console",
    verbose: VerboseOpt = 0,
) -> None:
    """List past runs: id, runbook, direction, site, status, measured RTO vs target, RPO.
    With -r, only the runs of that runbook.

    Example: drx runs --format json
    """
    check_format(fmt, ("table", "json"))
    name = runbook_name(runbook)
    typer.echo(list_runs(store_for(state_dir, state_url), fmt, name), nl=False)


def list_runs(store: Store, fmt: str, runbook: str | None = None) -> str:
    import json

    from orchestrator.model.units import format_duration
    from orchestrator.record.children import child_rows
    from orchestrator.record.runs import continued, load_summaries, reversed_run

    every = load_summaries(store)
    by_id = {s.run_id: s for s in every}  # links may cross runbooks: look them up in all
    summaries = [s for s in every if runbook is None or s.runbook == runbook]
    if fmt == "json":
        return json.dumps([s.to_dict() for s in summaries], indent=2) + "\n"
    if not summaries:
        which = f" of runbook '{runbook}'" if runbook else ""
        return f"no runs{which} in {store.location}\n"
    rows = [("RUN", "RUNBOOK", "DIRECTION", "SITE", "STATUS", "RTO", "TARGET", "RPO", "NOTE")]
    for s in summaries:
        rto, rpo = s.rto, s.rpo
        if rpo is not None and rpo.in_bytes and rpo.measured is not None:
            rpo_text = f"{int(rpo.measured)}B"
        else:
            rpo_text = format_duration(rpo.measured) if rpo else "—"
        met = rto.met
        rto_text = format_duration(rto.measured_s)
        if rto.end_to_end_s is not None:  # a resumed run: the outage end to end comes first
            rto_text = f"{format_duration(rto.end_to_end_s)} e2e (resumed part {rto_text})"
        if met is not None:
            rto_text += " ✔" if met else " ✘"
        note = []
        if s.drill_id is not None:
            note.append("drill" if s.drill_id == s.run_id else f"drill {s.drill_id}")
        if s.rollback:
            note.append("rollback")
        if s.failed_back_by:
            note.append(f"failed back by {s.failed_back_by[-1]}")
        if s.resumed_by:
            note.append(f"resumed by {s.resumed_by[-1]}")
        resumes, reverses = continued(s, by_id), reversed_run(s, by_id)
        if resumes:
            note.append(f"resumes {resumes}")
        elif reverses:
            note.append(f"reverses {reverses}")
        if s.failback_mode:
            note.append(f"mode {s.failback_mode}")
        rows.append(
            (
                s.run_id,
                s.runbook,
                s.direction,
                s.site,
                s.status,
                rto_text,
                format_duration(rto.target_s),
                rpo_text,
                "; ".join(note),
            )
        )
        rows.extend(child_rows(s.children))  # a site plan: its children beneath it
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "".join(
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n"
        for r in rows
    )
