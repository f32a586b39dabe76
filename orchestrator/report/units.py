"""Human-readable figures for reports: seconds, bytes, shares, timestamps and command output.

Every renderer formats numbers through these helpers so that a figure reads the same in the
terminal, in Markdown, in HTML and in JUnit messages.
"""

from __future__ import annotations

import re

from orchestrator.model.units import clock as clock
from orchestrator.model.units import format_duration
from orchestrator.model.units import parse_when as parse_when

DASH = "—"

# 1 KB = 1024 B, as in the runbook's size syntax (SPEC §5, RPO).
_BYTE_UNITS = ("B", "KB", "MB", "GB", "TB", "PB")

# CSI sequences (colours, cursor moves) and OSC sequences (titles, hyperlinks) that commands print.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]")
# What is left after ANSI removal that no report format can carry: C0/C1 controls except TAB and LF.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


#: durations read the same in reports as everywhere else drx prints one
secs = format_duration


def span(value: float | None) -> str:
    """A duration for parentheses: '62.3 s' under two minutes, else '3m 10s'."""
    if value is None:
        return DASH
    return clock(value) if abs(value) >= 120 else secs(value)


def delta(value: float | None) -> str:
    """A signed difference of durations: '+3.2 s', '-1 s', '±0 s'."""
    if value is None:
        return DASH
    if abs(value) < 0.05:
        return "±0 s"
    sign = "+" if value > 0 else "-"
    return sign + secs(abs(value))


def offset(value: float | None) -> str:
    """A moment relative to the RTO start: '+12.3 s' (or '-2 s' before it); '—' if it never began."""
    if value is None:
        return DASH
    if abs(value) < 0.005:
        return "+0 s"
    return ("+" if value > 0 else "-") + secs(abs(value), human=False)


def nbytes(value: float | None) -> str:
    """A size in binary units: '0 B', '512 KB', '1.5 MB'; '—' when unknown."""
    if value is None:
        return DASH
    size = float(value)
    unit = 0
    while abs(size) >= 1024 and unit < len(_BYTE_UNITS) - 1:
        size /= 1024
        unit += 1
    if unit == 0:
        return f"{int(size)} B"
    text = f"{size:.1f}".removesuffix(".0")
    return f"{text} {_BYTE_UNITS[unit]}"


def nbytes_exact(value: float | None) -> str:
    """A size with its exact byte count when the human form rounds: '1.5 MB (1,572,864 B)'."""
    if value is None:
        return DASH
    human = nbytes(value)
    if abs(value) < 1024:
        return human
    return f"{human} ({int(value):,} B)"


def pct(value: float | None) -> str:
    """A share in percent with one decimal: '19.6%'."""
    if value is None:
        return DASH
    return f"{value:.1f}%"


def when(text: str | None) -> str:
    """A timestamp for people: '2026-11-26 17:45:00.123 UTC'; unparseable text is shown as given."""
    moment = parse_when(text)
    if moment is None:
        return text or DASH
    millis = moment.microsecond // 1000
    return moment.strftime("%Y-%m-%d %H:%M:%S") + f".{millis:03d} UTC"


def clean_output(text: str | None) -> str:
    """Command output made safe for every report format.

    Drops ANSI colour/cursor sequences and control characters, keeps only what follows the last
    carriage return of a line (progress bars redraw with CR), and replaces lone surrogates, which
    cannot be encoded to UTF-8 when the report is written.
    """
    if not text:
        return ""
    text = text.encode("utf-8", "replace").decode("utf-8")
    text = _ANSI.sub("", text)
    lines = [line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n")]
    return _CONTROL.sub("", "\n".join(lines))


def tail(text: str | None, lines: int = 20) -> tuple[str, int]:
    """The last ``lines`` lines of cleaned output, and how many lines the (stored) tail had."""
    cleaned = clean_output(text).rstrip("\n")
    if not cleaned:
        return "", 0
    all_lines = cleaned.split("\n")
    return "\n".join(all_lines[-lines:]), len(all_lines)
