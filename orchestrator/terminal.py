"""Text that reaches an operator's terminal: host output, names and prompts are printed only
once the terminal's own control sequences are out of them.

A compromised host's output interpolated into a gate's prompt (``ESC]0;…``, ``ESC[2K FAKE: all
checks passed, type y``) could otherwise retitle the window, erase the real question and write
its own. drx's own colours are added after this, around text already made safe.
"""

from __future__ import annotations

import re

#: CSI (``ESC[…m``, also the 8-bit ``\x9b``), OSC (``ESC]…BEL`` or ``ESC]…ESC\``), and the other
#: two-character escapes
_ESCAPES = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
    r"|(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]?"
)
#: what is left that a terminal acts on: C0 controls but TAB and LF, DEL, C1 controls, and the
#: Unicode bidirectional overrides (which reorder what the operator reads)
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` without terminal escape sequences and control characters (TAB and LF kept)."""
    if text.isprintable():
        return text
    return _CONTROL.sub("", _ESCAPES.sub("", text))
