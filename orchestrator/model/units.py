"""Durations (``500ms``, ``30s``, ``5m``, ``1h30m``, plain seconds) and sizes (``512KB``)."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB)\s*$", re.IGNORECASE)
_SIZE_UNIT = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4}


def parse_duration(value: object) -> float:
    """Return seconds for a duration; raise ValueError with a readable reason otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"negative duration: {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"not a duration: {value!r}")
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"bad duration {value!r} (use e.g. 500ms, 30s, 5m, 1h30m)")
        return seconds
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_S[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"bad duration {value!r} (use e.g. 500ms, 30s, 5m, 1h30m)")
    return total


def is_size(value: object) -> bool:
    """True for a byte size such as ``0B`` or ``16MB``."""
    return isinstance(value, str) and _SIZE.match(value) is not None


def parse_size(value: str) -> int:
    """Return bytes for ``0B``, ``512KB``, ``16MB`` (1 KB = 1024 B)."""
    match = _SIZE.match(value)
    if not match:
        raise ValueError(f"bad size {value!r} (use e.g. 0B, 512KB, 16MB)")
    return int(float(match.group(1)) * _SIZE_UNIT[match.group(2).lower()])


def clock(seconds: float) -> str:
    """Whole seconds as '45s', '15m', '22m 20s', '1h 02m 05s' — the unit an operator thinks in."""
    total = round(abs(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs_ = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m" + (f" {secs_:02d}s" if secs_ else "")
    if minutes:
        return f"{minutes}m" + (f" {secs_:02d}s" if secs_ else "")
    return f"{secs_}s"


def format_duration(value: float | None, *, human: bool = True) -> str:
    """A duration, the one way drx prints durations everywhere (terminal, live view, plans,
    reports): '0.04 s', '61.2 s', '900 s (15m)'; '—' when unknown.

    Sub-second values keep two decimals so a 40 ms step does not read as '0 s'; from two minutes
    on, the clock form is added because '1,340.2 s' alone is hard to picture.
    """
    if value is None:
        return "—"
    magnitude = abs(value)
    if magnitude < 0.005:
        text = "0 s"
    elif magnitude < 1:
        text = f"{value:.2f} s"
    else:
        rounded = round(value, 1)
        text = f"{rounded:,.0f} s" if rounded == int(rounded) else f"{rounded:,.1f} s"
    if human and magnitude >= 120:
        text += f" ({clock(magnitude)})"
    return text


def parse_when(text: str | None) -> datetime | None:
    """An ISO-8601 timestamp (with 'Z' or an offset; naive means UTC) as an aware datetime."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
