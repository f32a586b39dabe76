"""``drx report``: the post-drill report of a run."""

from __future__ import annotations

import html
import os
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
    check_format,
    runbook_name,
    store_for,
)

if TYPE_CHECKING:
    from orchestrator.record.store import Store
    from orchestrator.record.summary import RunSummary


@app.command()
def report(
    run: Annotated[str | None, typer.Argument(help="Run id (default: the latest).")] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-f",
            help="text, md, html, json, junit or otlp (default: from -o's extension).",
        ),
    ] = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help="Write to FILE.")] = None,
    compare: Annotated[
        str | None, typer.Option("--compare", help="Compare with another run.")
    ] = None,
    runbook: RunbookOpt = None,
    inventory: InventoryOpt = None,
    state_dir: StateDirOpt = None,
    state_url: StateUrlOpt = None,
    log_format: LogFormatOpt = "console",
    verbose: VerboseOpt = 0,
) -> None:
    """The post-drill report of a run (default: the latest; with -r, the latest of that
    runbook), as text, md, html, json or junit; with -o FILE the format follows FILE's
    extension unless --format says otherwise.
    --format otlp prints the run as an OpenTelemetry trace (OTLP/JSON), for any run, crashed
    ones included.

    Example: drx report --format html -o drill.html
    """
    fmt = fmt or format_for(output)
    check_format(fmt, ("text", "md", "html", "json", "junit", "otlp"))
    store = store_for(state_dir, state_url)
    text = render_report(
        store, run, fmt, compare, color=output is None, runbook=runbook_name(runbook)
    )
    if output:
        from orchestrator.record.store import private_open

        # it holds command output: created owner-only (an existing file keeps its mode)
        with open(
            private_open(Path(output), os.O_WRONLY | os.O_TRUNC), "w", encoding="utf-8"
        ) as fh:
            fh.write(text)
        typer.echo(f"wrote {output}", err=True)
    else:
        typer.echo(text, nl=False)


#: the format a report written to ``-o FILE`` takes from FILE's extension
EXTENSIONS = {
    ".html": "html",
    ".htm": "html",
    ".md": "md",
    ".markdown": "md",
    ".json": "json",
    ".xml": "junit",
    ".txt": "text",
}


def format_for(output: str | None) -> str:
    """The format for ``-o FILE`` when ``--format`` is not given: from the extension, else text."""
    if output is None:
        return "text"
    return EXTENSIONS.get(Path(output).suffix.lower(), "text")


def choose_run(store: Store, run: str | None, runbook: str | None) -> str:
    """The run asked for: ``run`` (id, prefix or suffix), else the latest run of ``runbook``
    (the name of the runbook given with -r), else the latest run."""
    from orchestrator.errors import RefusedError
    from orchestrator.record.runs import load_summaries, resolve_run

    if run is None and runbook is not None:
        mine = [s.run_id for s in load_summaries(store) if s.runbook == runbook]
        if not mine:
            raise RefusedError(f"no runs of runbook '{runbook}' in {store.location}")
        return mine[-1]
    return resolve_run(store, run)


def render_report(
    store: Store,
    run: str | None,
    fmt: str,
    compare: str | None,
    *,
    color: bool = False,
    runbook: str | None = None,
) -> str:
    import sys

    from orchestrator.record.runs import load_summaries, load_summary, resolve_run
    from orchestrator.report import render

    run_id = choose_run(store, run, runbook)
    summary = load_summary(store, run_id)
    if fmt == "otlp":
        from orchestrator.report.otlp import otlp_json

        return otlp_json(summary, store.read_events(run_id))
    other = load_summary(store, resolve_run(store, compare)) if compare else None
    history = None
    if fmt == "html":
        history = [
            s
            for s in load_summaries(store)
            if s.runbook == summary.runbook
            and s.direction == summary.direction
            and s.run_id <= run_id
        ][-20:]
    use_color = color and fmt == "text" and sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    text = render(summary, fmt, compare=other, history=history, color=use_color)
    if summary.drill_id == run_id and fmt in ("text", "md", "html") and compare is None:
        # a drill's id is its failover leg's: its report shows every leg, in order
        legs = [s for s in load_summaries(store) if s.drill_id == run_id and s.run_id != run_id]
        text = _with_legs(text, [(leg, render(leg, fmt, color=use_color)) for leg in legs], fmt)
    return text if text.endswith("\n") else text + "\n"


def _with_legs(first: str, legs: list[tuple[RunSummary, str]], fmt: str) -> str:
    """The report of a drill's failover leg followed by the reports of its other legs (the way
    home, or the rollback); in html, each leg's body in the one page."""
    parts = [first.rstrip("\n")]
    for leg, text in legs:
        what = "rollback" if leg.rollback else "failback"
        title = f"Drill {leg.drill_id}: the {what} leg, run {leg.run_id}"
        if fmt == "html":
            body = text.split("<body>", 1)[-1].rsplit("</body>", 1)[0]
            rule = f'<hr>\n<section class="drill-leg"><h1>{html.escape(title)}</h1>{body}</section>'
            parts[0] = parts[0].replace("</body>", rule + "\n</body>", 1)
            continue
        parts.append(f"## {title}" if fmt == "md" else "=" * 72 + "\n" + title)
        parts.append(text.rstrip("\n"))
    return "\n\n".join(parts)
