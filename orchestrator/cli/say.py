"""What drx says on stderr outside a run's own log lines: errors and refusals, validation
problems, warnings, notes and the closing line of a run.

With ``--log-format json`` every line on stderr is one JSON object (``event``, ``level``,
``timestamp`` and fields, the shape of a run's JSON log lines): these messages are written as
such, with their fields (a problem's file, line and step; a run's id, status and RTO), and
anything else that reaches stderr (a usage error from the option parser, a library's message)
is wrapped line by line by :class:`JsonLines`, so that a log shipper never meets a plain line.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import sys
from collections.abc import Iterator, Sequence
from typing import IO, Any

from orchestrator.terminal import printable

_json = False
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def json_lines() -> bool:
    """Whether stderr carries JSON lines (``--log-format json``)."""
    return _json


def wanted_format(argv: Sequence[str]) -> str:
    """The ``--log-format`` of a command line, read before the parser runs (its own errors
    must come out in that format too)."""
    for i, arg in enumerate(argv):
        if arg == "--log-format" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--log-format="):
            return arg.split("=", 1)[1]
    return "console"


def _now() -> str:
    return (
        datetime.datetime.now(datetime.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _write(text: str) -> None:
    stream = sys.stderr
    raw = stream.raw if isinstance(stream, JsonLines) else stream
    with contextlib.suppress(OSError, ValueError):  # a closed pipe: the run is recorded
        raw.write(text + "\n")
        raw.flush()


def say(
    level: str, message: str, text: str | None = None, *, prefix: str = "", **fields: Any
) -> None:
    """One message: ``text`` (default ``message``) on a console, after drx's own ``prefix``
    and with terminal control sequences taken out of it (it may quote host output or names);
    else a JSON object whose ``event`` is ``message``, with ``fields``."""
    if _json:
        record = {"event": message, "level": level, "timestamp": _now()}
        record.update({k: v for k, v in fields.items() if v is not None})
        _write(json.dumps(record, ensure_ascii=False, default=str))
    else:
        _write(prefix + printable(message if text is None else text))


def error(message: str, exit_code: int) -> None:
    """An error or refusal that ends the command with ``exit_code``."""
    color = sys.stderr.isatty() and not os.environ.get("NO_COLOR") and not _json
    prefix = "\x1b[31merror:\x1b[0m " if color else "error: "
    say("error", message, prefix=prefix, exit_code=exit_code)


def warning(message: str, **fields: Any) -> None:
    say("warning", message, f"warning: {message}", **fields)


def info(message: str, **fields: Any) -> None:
    say("info", message, **fields)


class JsonLines:
    """A stderr that passes JSON lines through and wraps any other line as a JSON object."""

    def __init__(self, raw: IO[str]):
        self.raw = raw
        self._partial = ""

    def write(self, text: str) -> int:
        self._partial += text
        while "\n" in self._partial:
            line, self._partial = self._partial.split("\n", 1)
            self._emit(line)
        return len(text)

    def _emit(self, line: str) -> None:
        plain = _ANSI.sub("", line).strip()
        if not plain:
            return
        if plain.startswith("{"):
            with contextlib.suppress(ValueError):
                json.loads(plain)
                self.raw.write(plain + "\n")
                return
        level = "error" if plain.lower().startswith(("error", "usage")) else "info"
        self.raw.write(json.dumps({"event": plain, "level": level, "timestamp": _now()}) + "\n")

    def flush(self) -> None:
        self.raw.flush()

    def finish(self) -> None:
        """Emit a last line that never got its newline."""
        if self._partial:
            line, self._partial = self._partial, ""
            self._emit(line)
        self.flush()

    def isatty(self) -> bool:
        return False  # JSON lines are for machines: no colours, no live view

    def fileno(self) -> int:
        return self.raw.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self.raw, "encoding", "utf-8")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


@contextlib.contextmanager
def log_format(fmt: str) -> Iterator[None]:
    """For one command: with ``json``, messages are JSON and stderr is wrapped."""
    global _json
    if fmt != "json":
        yield
        return
    saved, saved_json = sys.stderr, _json
    wrapped = JsonLines(saved)
    _json, sys.stderr = True, wrapped
    try:
        yield
    finally:
        wrapped.finish()
        sys.stderr, _json = saved, saved_json
