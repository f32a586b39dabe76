"""One summary.json document → a report in text, Markdown, HTML, JSON or JUnit XML.

``render`` is the only entry point: it takes the run's summary (a summary.json document is read
by ``RunSummary.from_dict``), fills in what an older one lacks for drawing (``model``), computes the
findings once (``facts``), and hands them to the format's renderer — a Jinja2 template for Markdown
and HTML (autoescaped for HTML, StrictUndefined for both), plain Python for the aligned terminal
text, ElementTree for JUnit.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jinja2

from orchestrator import __version__
from orchestrator.record.summary import RunSummary
from orchestrator.report.charts import timeline, trend
from orchestrator.report.children import gantt_groups
from orchestrator.report.facts import TAIL_LINES, build
from orchestrator.report.junit import render_junit
from orchestrator.report.model import for_report
from orchestrator.report.text import render_text
from orchestrator.report.units import (
    clean_output,
    delta,
    nbytes,
    nbytes_exact,
    offset,
    pct,
    secs,
    span,
    when,
)

FORMATS = ("text", "md", "html", "json", "junit")

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~#!])")
_BACKTICKS = re.compile(r"`+")


def md_text(value: object) -> str:
    """Inline Markdown text: markup characters escaped, HTML neutralised, one line.

    GitHub renders raw HTML inside Markdown, so '<', '>' and '&' become entities, and characters
    that start emphasis, links or table cells are backslash-escaped.
    """
    text = clean_output(str(value)).replace("\n", " ")
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", text)


def md_code(value: object) -> str:
    """An inline code span that survives any backticks in the text and any table it sits in."""
    text = clean_output(str(value)).replace("\n", " ").replace("|", "\\|")
    ticks = "`" * (max((len(m) for m in _BACKTICKS.findall(text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def md_fence(value: object) -> str:
    """A code fence longer than any backtick run in the block, so output cannot close it early."""
    longest = max((len(m) for m in _BACKTICKS.findall(str(value))), default=0)
    return "`" * max(3, longest + 1)


def svg_number(value: float) -> str:
    """A coordinate with at most two decimals and no trailing zeros, to keep the SVG small."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("orchestrator.report", "templates"),
        # Every name, command and output in an HTML report comes from runbooks and hosts: escape all.
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        secs=secs,
        span=span,
        delta=delta,
        offset=offset,
        pct=pct,
        when=when,
        nbytes=nbytes,
        nbytes_exact=nbytes_exact,
        md=md_text,
        code=md_code,
        fence=md_fence,
        n=svg_number,
    )
    env.globals.update(version=__version__, tail_lines=TAIL_LINES)
    return env


Summary = RunSummary | Mapping[str, Any]


def _doc(summary: Summary) -> Mapping[str, Any]:
    return summary.to_dict() if isinstance(summary, RunSummary) else summary


def _run(summary: Summary) -> RunSummary:
    if not isinstance(summary, RunSummary):
        if not isinstance(summary, Mapping):
            raise TypeError(f"a run summary must be a JSON object, not {type(summary).__name__}")
        summary = RunSummary.from_dict(summary)
    return for_report(summary)


def render(
    summary: Summary,
    fmt: str,
    *,
    compare: Summary | None = None,
    history: Sequence[Summary] | None = None,
    color: bool = False,
) -> str:
    """Render a run's summary (or a summary.json document read as is) as a report.

    ``fmt`` is one of FORMATS. ``compare`` is another run's summary to compare with (a section of
    per-step and RTO deltas); ``history`` is the earlier summaries of the same runbook, oldest
    first (an RTO trend). ``color`` adds ANSI colours to the text format. Raises ValueError for an
    unknown format; missing or null fields in the summaries never raise.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if fmt == "json":
        return json.dumps(_doc(summary), indent=2)
    run = _run(summary)
    if fmt == "junit":
        return render_junit(run)
    report = build(
        run,
        compare=_run(compare) if compare is not None else None,
        history=[_run(item) for item in history or ()],
    )
    if fmt == "text":
        return render_text(report, color=color)
    context: dict[str, Any] = {"r": report, "run": run}
    if fmt == "html":
        chart = timeline(report)
        groups = gantt_groups(report.children, chart.lanes)
        context.update(chart=chart, trend=trend(report.history), groups=groups)
    return _environment().get_template(f"report.{fmt}.j2").render(context)
