"""The terminal report: plain aligned text, with ANSI colours only when asked for.

Built in Python rather than a template because its tables align on the *visible* width of cells,
which colour codes would otherwise throw off.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence

from orchestrator.kinds import kind_of
from orchestrator.report.facts import TAIL_LINES, Report
from orchestrator.report.units import DASH, delta, pct, secs, span, when
from orchestrator.vocab import RunStatus, StepStatus

WIDTH = 100

_CODES = {
    "bold": "1",
    "dim": "2",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "magenta": "35",
    "cyan": "36",
}

STATUS_STYLE = {
    StepStatus.SUCCEEDED: "green",
    StepStatus.FAILED: "red",
    StepStatus.UNKNOWN: "magenta",
    StepStatus.CANCELLED: "yellow",
    RunStatus.CRASHED: "magenta",
    "warning": "yellow",
    StepStatus.NOT_RUN: "dim",
    StepStatus.SKIPPED: "dim",
    "met": "green",
    "missed": "red",
    "unmeasured": "red",
    "no-target": "yellow",
}


class _Painter:
    """Wraps text in ANSI codes when colour is on; a no-op otherwise."""

    def __init__(self, color: bool) -> None:
        self.color = color

    def __call__(self, text: str, *styles: str) -> str:
        codes = [_CODES[s] for s in styles if s in _CODES]
        if not self.color or not codes or not text:
            return text
        return f"\x1b[{';'.join(codes)}m{text}\x1b[0m"


# A number and its unit stay on one line: "900 s", "16 MB".
_UNIT_SPACE = re.compile(r"(\d) (s|B|KB|MB|GB|TB|PB)\b")


def _wrap(text: str, indent: str = "  ", first: str | None = None) -> list[str]:
    lines = textwrap.wrap(
        _UNIT_SPACE.sub("\\1\u00a0\\2", text),
        WIDTH,
        initial_indent=first if first is not None else indent,
        subsequent_indent=indent,
        break_on_hyphens=False,
        break_long_words=False,
    ) or [indent.rstrip()]
    return [line.replace("\u00a0", " ") for line in lines]


def _table(
    paint: _Painter,
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    right: Sequence[int] = (),
    styles: Sequence[Sequence[str | None]] | None = None,
) -> list[str]:
    """Aligned columns; ``right`` lists right-aligned column numbers; styles colour cells."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str], cell_styles: Sequence[str | None]) -> str:
        parts = []
        for i, cell in enumerate(cells):
            style = cell_styles[i] if i < len(cell_styles) else None
            # Pad outside the colour codes so they never count towards the width.
            shown = paint(cell, style) if style else cell
            pad = " " * (widths[i] - len(cell))
            parts.append(pad + shown if i in right else shown + pad)
        return ("  " + "  ".join(parts)).rstrip()

    out = [paint(line(headers, [None] * len(headers)), "bold")]
    for n, row in enumerate(rows):
        out.append(line(row, styles[n] if styles else []))
    return out


def render_text(report: Report, *, color: bool = False) -> str:
    """The report as terminal text: one function per section, in reading order."""
    paint = _Painter(color)
    out: list[str] = []
    for part in (
        _header,
        _outcome,
        _objectives,
        _children,
        _critical_path,
        _steps,
        _failures,
        _comparison,
        _history,
    ):
        out += part(report, paint)
    return "\n".join(out) + "\n"


def _section(paint: _Painter, title: str) -> list[str]:
    return ["", paint(title, "bold", "cyan")]


def _header(report: Report, paint: _Painter) -> list[str]:
    """Title, status with its exit code, route, times and files."""
    run = report.run
    out: list[str] = []
    out.append(paint(report.title, "bold"))
    out.append("═" * min(len(report.title), WIDTH))
    status = paint(run.status.upper(), "bold", STATUS_STYLE.get(run.status, "yellow"))
    exit_text = ""
    if run.exit_code is not None:
        meaning = f": {report.exit_meaning}" if report.exit_meaning else ""
        exit_text = f"  (exit {run.exit_code}{meaning})"
    elapsed = f"  (took {span(run.elapsed_s)})" if run.elapsed_s is not None else ""
    meta = [
        ("Run", run.run_id),
        ("Status", status + exit_text),
        ("Direction", f"{run.direction}  {report.route}"),
        ("Started", when(run.started_at)),
        ("Finished", when(run.finished_at) + elapsed),
    ]
    if run.is_running:  # not finished: how long so far
        meta[-1] = ("Running", f"{span(run.elapsed_s)} so far")
    if run.is_failback and run.parent_run:
        mode = f" (failback mode {run.failback_mode})" if run.failback_mode else ""
        meta.append(("Reverses", f"failover run {run.parent_run}{mode}"))
    elif run.parent_run:
        meta.append(("Continues", f"run {run.parent_run}"))
    if run.runbook_file:
        meta.append(("Runbook", run.runbook_file))
    if run.runbook_description:
        meta.append(("About", run.runbook_description))
    if run.inventory_file:
        meta.append(("Inventory", run.inventory_file))
    for key, value in meta:
        out.append(f"  {key:<10} {value}")
    return out


def _outcome(report: Report, paint: _Painter) -> list[str]:
    """What happened, in a sentence, and the notes that qualify it."""
    out: list[str] = []
    out += _section(paint, "Outcome")
    for line in _wrap(report.outcome.text):
        out.append(paint(line, STATUS_STYLE.get(report.outcome.state, "")))
    for note in report.notes:
        out.extend(_wrap(note, "    ", "  • "))
    return out


def _objectives(report: Report, paint: _Painter) -> list[str]:
    """RTO (and end to end), RPO, manual gates, health: each against its target."""
    run = report.run
    out: list[str] = []
    out += _section(paint, "Objectives")

    def objective(label: str, state: str, text: str, basis: str | None) -> None:
        # Wrap before painting: textwrap would count the colour codes as text.
        style = STATUS_STYLE.get(state)
        for line in _wrap(text, " " * 15, f"  {label:<12} "):
            head, body = line[:15], line[15:]
            out.append(head + (paint(body, style) if style else body))
        if basis:
            out.extend(paint(line, "dim") for line in _wrap(basis, " " * 15))

    rto = report.rto
    if rto.end_to_end is not None:  # a resumed run: the outage end to end is the headline
        objective("RTO (e2e)", rto.end_to_end.state, rto.end_to_end.text, rto.end_to_end_basis)
    objective(
        rto.label if not run.is_resumed else "RTO (run)",
        rto.verdict.state,
        rto.verdict.text,
        rto.basis,
    )
    if rto.prediction:
        out.extend(paint(line, "dim") for line in _wrap(rto.prediction, " " * 15))
    for probe in report.probes:
        objective("Downtime", probe.state, f"{probe.name}: {probe.text}", probe.basis)
    if report.rpo is not None:
        objective("RPO", report.rpo.verdict.state, report.rpo.verdict.text, report.rpo.basis)
        if report.rpo.guard:
            style = {"held": "dim", "accepted": "yellow", "refused": "red"}[
                report.rpo.guard_state or "held"
            ]
            out.extend(paint(line, style) for line in _wrap(report.rpo.guard, " " * 15))
    else:
        objective("RPO", "", f"not measured ({report.rpo_absent})", None)
    objective("Manual gates", "", report.manual.text, None)
    for gate in report.manual.gates:
        waited = f"waited {secs(gate.wait_s)}, " if gate.wait_s is not None else ""
        out.append(
            paint(
                f"{'':15}{gate.step_id}: {waited}{gate.approval}"
                + (" (on the critical path)" if gate.critical else ""),
                "dim",
            )
        )
    objective("Health", "", report.health, None)
    return out


def _children(report: Report, paint: _Painter) -> list[str]:
    """A site plan's children: each one's status, RTO and RPO against its own targets."""
    if not report.children:
        return []
    out = _section(paint, f"Children — {len(report.children)}")
    for child in report.children:
        style = STATUS_STYLE.get(child.status)
        head = f"  {child.id:<12} "
        for line in _wrap(f"{child.runbook}: {child.status}", " " * 15, head):
            out.append(paint(line, style) if style else line)
        state = STATUS_STYLE.get(child.rto.state)
        out.append(f"{'':15}RTO " + (paint(child.rto.text, state) if state else child.rto.text))
        if child.rpo is not None:
            out.append(f"{'':15}RPO {child.rpo.text}")
    return out


def _critical_path(report: Report, paint: _Painter) -> list[str]:
    """The chain of steps that decided when the run ended, with each one's share."""
    out: list[str] = []
    path = report.path
    out += _section(paint, f"Critical path — {path.text}")
    if path.rows:
        rows, styles = [], []
        for link in path.rows:
            bar = "█" * max(round((link.share or 0) / 5), 1 if link.share else 0)
            rows.append([link.label, secs(link.duration_s), pct(link.share), bar, link.note])
            styles.append(
                [
                    "bold" if link.step_id else "dim",
                    None,
                    None,
                    "yellow" if kind_of(link.kind).gate else "blue",
                    "dim",
                ]
            )
        out += _table(
            paint,
            ["step", "duration", "share", "", "note"],
            rows,
            right=(1, 2),
            styles=styles,
        )
        out.extend(paint(line, "dim") for line in _wrap(path.basis_text))
    return out


def _steps(report: Report, paint: _Painter) -> list[str]:
    """Every step: kind, status, hosts, attempts, start and duration."""
    out: list[str] = []
    out += _section(paint, f"Steps — {report.step_counts.rstrip('.')}")
    rows, styles = [], []
    for n, row in enumerate(report.steps, 1):
        rows.append(
            [
                str(n),
                ("* " if row.critical else "  ") + row.step.id,
                row.step.kind,
                row.status,
                row.hosts,
                row.attempts,
                row.offset,
                row.duration,
                "; ".join(
                    part
                    for part in (row.step.undo_of and f"undoes {row.step.undo_of}", row.note)
                    if part
                ),
            ]
        )
        styles.append(
            [
                "dim",
                "bold" if row.critical else None,
                None,
                STATUS_STYLE.get(row.step.status),
                None,
                None,
                None,
                None,
                "dim",
            ]
        )
    out += _table(
        paint,
        ["#", "step", "kind", "status", "hosts", "att", "start", "duration", "note"],
        rows,
        right=(0, 5, 6, 7),
        styles=styles,
    )
    if any(r.critical for r in report.steps):
        out.append(paint("  * on the critical path", "dim"))
    return out


def _failures(report: Report, paint: _Painter) -> list[str]:
    """Each failed step with each failed host's exit code and the tail of its output."""
    out: list[str] = []
    if report.failures:
        out += _section(paint, "Failures")
        for failure in report.failures:
            out.extend(paint(line, "red", "bold") for line in _wrap(failure.phrase, "    ", "  ✗ "))
            if not failure.hosts and failure.error:
                out.append(f"    {failure.error}")
            for host in failure.hosts:
                facts = [host.host, f"rc {host.rc if host.rc is not None else DASH}"]
                if host.error:
                    facts.append(host.error)
                facts.append(f"{host.attempts} attempt{'s' if host.attempts != 1 else ''}")
                out.append("    " + " · ".join(facts))
                out.append(paint(f"    full output: {host.log_command}{host.log_note}", "dim"))
                if host.tail:
                    if host.tail_lines > TAIL_LINES:
                        out.append(
                            paint(
                                f"    last {TAIL_LINES} of {host.tail_lines} recorded lines:", "dim"
                            )
                        )
                    out.extend(paint("    │ ", "dim") + line for line in host.tail.split("\n"))
                else:
                    out.append(paint("    (no output)", "dim"))
    return out


def _comparison(report: Report, paint: _Painter) -> list[str]:
    """Step and RTO deltas against another run (``--compare``)."""
    out: list[str] = []
    comparison = report.comparison
    if comparison is not None:
        out += _section(
            paint, f"Compared with {comparison.other_run_id} ({comparison.other_status})"
        )
        out.extend(_wrap(comparison.rto_text))
        out.extend(_wrap(comparison.path_text))
        out.extend(_wrap(comparison.largest_text))
        rows, styles = [], []
        for d in comparison.rows:
            rows.append([d.step_id, secs(d.other_s), secs(d.this_s), delta(d.delta_s), d.note])
            grew = d.delta_s is not None and d.delta_s >= 0.05
            shrank = d.delta_s is not None and d.delta_s <= -0.05
            styles.append(
                [None, None, None, "red" if grew else ("green" if shrank else None), "dim"]
            )
        out += _table(
            paint, ["step", "before", "now", "Δ", "note"], rows, right=(1, 2, 3), styles=styles
        )
    return out


def _history(report: Report, paint: _Painter) -> list[str]:
    """The RTO of earlier runs of the same runbook and direction."""
    out: list[str] = []
    if report.history:
        out += _section(paint, "RTO history")
        if report.history_text:
            out.extend(_wrap(report.history_text))
        rows, styles = [], []
        for point in report.history:
            verdict = "met" if point.met else ("missed" if point.target_s is not None else DASH)
            if point.measured_s is None:
                verdict = "not measured"
            rows.append(
                [
                    ("▶ " if point.current else "  ") + point.run_id,
                    point.status,
                    secs(point.measured_s),
                    secs(point.target_s),
                    verdict,
                ]
            )
            styles.append(
                [
                    "bold" if point.current else None,
                    STATUS_STYLE.get(point.status),
                    None,
                    None,
                    "green" if verdict == "met" else "red",
                ]
            )
        out += _table(
            paint, ["run", "status", "RTO", "target", ""], rows, right=(2, 3), styles=styles
        )
    return out
