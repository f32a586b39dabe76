"""The transport interface: connect once per host, run many commands on that connection."""

from __future__ import annotations

import os
import re
import shlex
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from orchestrator.transport.spool import SpoolKey

#: How much of a command's output is kept in memory (and in the journal/reports): the rest is only
#: in the per-attempt log file.
TAIL_BYTES = 4096
#: How much of stdout is kept in memory for ``capture`` and for ``steps[...].stdout``.
STDOUT_KEEP_BYTES = 64 * 1024

Redactor = Callable[[str], str]
#: How a command is elevated: not at all (False), as root (True), or as the named user.
Sudo = bool | str


@dataclass(frozen=True)
class HostSpec:
    """Everything a transport needs to reach one host (inventory settings already merged)."""

    name: str
    address: str
    transport: str = "ssh"  # "ssh" | "local"
    port: int = 22
    user: str = "root"
    identity_file: str | None = None
    known_hosts: str | None = "~/.ssh/known_hosts"
    host_key_policy: str = "strict"  # strict | accept-new | ignore
    connect_timeout: float = 10.0
    proxy_jump: str | None = None  # "user@host:port"
    env: Mapping[str, str] = field(default_factory=dict)
    #: where step commands are spooled on the host (relative to the login user's home unless
    #: absolute); see orchestrator.transport.spool
    spool_dir: str = "~/.drx/spool"


@dataclass
class CommandResult:
    """What one command on one host did.

    ``rc`` is None when the command never produced an exit status (timeout, cancel, lost link);
    ``error`` then says why: "timeout", "cancelled", "unreachable", "disconnected", ...
    (the SSH transport also uses "signal": the remote shell died of a signal, which sshd
    reports without an exit code; the local transport reports that as rc 128+N instead).
    """

    rc: int | None
    stdout: str  # at most STDOUT_KEEP_BYTES (the last part), redacted
    output_tail: str  # last TAIL_BYTES of stdout+stderr interleaved, redacted
    duration_s: float
    started_mono: float
    ended_mono: float
    error: str | None = None
    stderr: str = ""  # the last TAIL_BYTES of stderr, redacted (for ``until``)
    #: the connection itself failed (the command may never have started): polling stops
    connection_failed: bool = False

    @property
    def ok(self) -> bool:
        return self.rc == 0 and self.error is None


class Connection(Protocol):
    """An open connection to one host, reused for every command of a run; thread-safe for
    concurrent ``run`` calls (one channel/process each)."""

    host: HostSpec

    def run(
        self,
        command: str,
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        sudo: Sudo = False,
        log_path: LogTarget | None = None,
        redact: Redactor | None = None,
        cancel: CancelToken | None = None,
        spool: SpoolKey | None = None,
    ) -> CommandResult:
        """Run ``command`` (a POSIX shell string) and wait for it.

        - ``env`` (merged over ``host.env``) is exported to the command.
        - ``sudo`` runs it through ``sudo -n`` (as root), or as the user it names.
        - full stdout+stderr are streamed (redacted, line by line) to ``log_path`` if given; only
          bounded tails stay in memory.
        - on ``timeout`` the command *and its children* are killed on the host, and the result has
          ``error="timeout"``, ``rc=None``.
        - when ``cancel`` fires (second Ctrl-C) the command is killed likewise, ``error="cancelled"``.
        - with ``spool``, the command runs detached under that spool directory on the host and
          outlives the connection (orchestrator.transport.spool); neither the command nor its
          ``env`` is ever in an argv, spooled or not.
        Never raises for a failing command; raises ``TransportError`` only if the connection is lost.
        (A connection found lost or closed when the command is to start raises; one lost while
        the command runs gives ``error="disconnected"``, ``rc=None``.)
        """
        ...

    def close(self) -> None: ...


class CancelToken:
    """Set once to ask running commands to stop; commands poll ``is_set`` or wait on ``event``."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def set(self) -> None:
        self.event.set()

    def is_set(self) -> bool:
        return self.event.is_set()


class Transport(Protocol):
    """Opens connections of one kind."""

    def connect(self, host: HostSpec) -> Connection:
        """Open (and authenticate) a connection; raise ``HostUnreachable``,
        ``AuthenticationFailed`` or ``HostKeyError`` on failure."""
        ...


# --- helpers shared by the transports -------------------------------------------------------

#: How often a wait with a cancel token looks at the token.
CANCEL_POLL_S = 0.05


@dataclass(frozen=True)
class Limit:
    """When a command must stop: its deadline (monotonic) and its cancel token, either optional.
    Every wait of a transport goes through ``reason``/``wait_s``, so none can overrun either."""

    deadline: float | None
    cancel: CancelToken | None

    def reason(self) -> str | None:
        """Why to stop now: "cancelled", "timeout", or None to go on."""
        if self.cancel is not None and self.cancel.is_set():
            return "cancelled"
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return "timeout"
        return None

    def wait_s(self) -> float | None:
        """How long the next blocking wait may last before ``reason`` must be asked again."""
        wait = None if self.deadline is None else max(0.0, self.deadline - time.monotonic())
        if self.cancel is not None:
            wait = CANCEL_POLL_S if wait is None else min(wait, CANCEL_POLL_S)
        return wait


#: the most one attempt of a step on one host writes to its output log, unless the runbook's
#: ``output_limit`` says otherwise: a check polling a command that prints 200 MB wrote 10 GB
DEFAULT_OUTPUT_LIMIT = 64 * 1024 * 1024


@dataclass
class OutputLog:
    """The output log of one attempt of a step on one host, with what it may still take. The
    polls of a check's attempt share one, so the limit holds per attempt, not per poll."""

    path: Path
    limit: int = DEFAULT_OUTPUT_LIMIT
    written: int = 0
    dropped: int = 0  # bytes of output not kept past the limit

    def admit(self, text: str) -> str:
        """The part of ``text`` the log still takes, with the cut said once where it falls."""
        if self.dropped:
            self.dropped += len(text.encode("utf-8", "replace"))
            return ""
        size = len(text.encode("utf-8", "replace"))
        if self.written + size <= self.limit:
            self.written += size
            return text
        room = self.limit - self.written
        kept = text.encode("utf-8", "replace")[:room].decode("utf-8", "ignore")
        self.written = self.limit
        self.dropped = size - len(kept.encode("utf-8"))
        return kept + f"\n[drx: output cut here: {self.cut_note()}]\n"

    def cut_note(self) -> str:
        """What the cut was, for the log and the report."""
        return (
            f"this attempt's log reached its limit of {self.limit:,} bytes (output_limit); "
            "what followed is not kept"
        )


#: where ``Connection.run`` writes full output: a file, or a file with a limit
LogTarget = Path | OutputLog


def timed_run(
    body: Callable[[OutputCollector, Limit], tuple[int | None, str | None]],
    *,
    timeout: float | None,
    log_path: LogTarget | None,
    redact: Redactor | None,
    cancel: CancelToken | None,
) -> CommandResult:
    """The frame of every ``Connection.run``: time it, collect its output, and turn what
    ``body`` returns — (exit code, error) — into a ``CommandResult``."""
    started = time.monotonic()
    limit = Limit(None if timeout is None else started + timeout, cancel)
    out = OutputCollector(log_path, redact)
    rc: int | None = None
    error: str | None = None
    try:
        if cancel is not None and cancel.is_set():
            error = "cancelled"
        else:
            rc, error = body(out, limit)
    finally:
        out.close()
    ended = time.monotonic()
    return CommandResult(
        rc=rc,
        stdout=out.stdout,
        output_tail=out.tail,
        stderr=out.stderr,
        duration_s=ended - started,
        started_mono=started,
        ended_mono=ended,
        error=error,
    )


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
#: A partial line longer than this is written out in pieces so that a command printing a huge
#: line without newlines cannot grow memory; a secret straddling such a forced cut may then
#: escape redaction (lines this long are not expected to carry secrets).
MAX_PARTIAL_LINE = 1024 * 1024


def sudo_argv(sudo: Sudo) -> list[str]:
    """The ``sudo`` words that run a command as ``sudo`` asks (root for ``True``)."""
    return ["sudo", "-n", *(["-u", sudo] if isinstance(sudo, str) else [])]


def shell_command(command: str, env: Mapping[str, str], sudo: Sudo) -> str:
    """Build the POSIX shell text that runs ``command`` with ``env`` exported, under ``sudo -n``
    if asked (``sudo -n -u USER`` when ``sudo`` names a user).

    The exports are part of the command text (not protocol-level env, which sshd only passes
    through ``AcceptEnv``), and they go *inside* the ``sudo`` shell, because sudo resets the
    environment. Raises ``ValueError`` for a variable name the shell cannot export.
    """
    lines = []
    for key, value in env.items():
        if not _ENV_NAME.match(key):
            raise ValueError(f"invalid environment variable name {key!r}")
        lines.append(f"export {key}={shlex.quote(str(value))}\n")
    body = "".join(lines) + command
    if sudo:
        return f"exec {shlex.join(sudo_argv(sudo))} sh -c {shlex.quote(body)}"
    return body


class _BoundedText:
    """The last ``limit`` bytes of a stream of text, kept in amortised O(1) per append."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._parts: deque[str] = deque()
        self._chars = 0

    def add(self, text: str) -> None:
        if not text:
            return
        # A character is at least one byte, so keeping ``limit`` characters always
        # keeps at least ``limit`` bytes; the exact byte cut happens in ``value``.
        if len(text) >= self.limit:
            self._parts.clear()
            text = text[-self.limit :]
            self._chars = 0
        self._parts.append(text)
        self._chars += len(text)
        while self._parts and self._chars - len(self._parts[0]) >= self.limit:
            self._chars -= len(self._parts.popleft())

    def value(self) -> str:
        data = "".join(self._parts).encode("utf-8")
        if len(data) > self.limit:
            # Cutting may split a multi-byte character: drop the fragment rather than show junk.
            return data[-self.limit :].decode("utf-8", "ignore")
        return data.decode("utf-8")


class OutputCollector:
    """Where a running command's output goes: the full text, redacted, to an optional log file;
    bounded tails (``TAIL_BYTES`` interleaved, ``STDOUT_KEEP_BYTES`` of stdout) in memory.

    Output is cut at line ends before redaction, per stream, so a secret split across two reads
    is still redacted; the tails are built from the redacted text, so they never hold a secret.
    Memory stays bounded whatever the command prints.
    """

    def __init__(self, log_path: LogTarget | None = None, redact: Redactor | None = None) -> None:
        self._redact = redact
        self._log: IO[str] | None = None
        # opened on the first output: a silent command costs no mkdir/open (a 10,000-step run
        # of quiet steps would otherwise spend most of its time creating empty files)
        self._budget = log_path if isinstance(log_path, OutputLog) else None
        self._log_path = log_path.path if isinstance(log_path, OutputLog) else log_path
        self._pending = {"stdout": bytearray(), "stderr": bytearray()}
        self._tail = _BoundedText(TAIL_BYTES)
        self._stdout = _BoundedText(STDOUT_KEEP_BYTES)
        self._stderr = _BoundedText(TAIL_BYTES)

    def feed(self, stream: str, data: bytes) -> None:
        """Take raw bytes read from ``stream`` ("stdout" or "stderr")."""
        buf = self._pending[stream]
        buf += data
        cut = buf.rfind(b"\n")
        if cut >= 0:
            self._emit(stream, bytes(buf[: cut + 1]))
            del buf[: cut + 1]
        elif len(buf) > MAX_PARTIAL_LINE:
            self._emit(stream, bytes(buf))
            buf.clear()

    def _emit(self, stream: str, block: bytes) -> None:
        # A block holds whole lines (a newline byte never occurs inside a UTF-8 sequence).
        text = block.decode("utf-8", "replace")
        if self._redact is not None:
            text = self._redact(text)
        if self._log is None and self._log_path is not None:
            # output may hold what nobody declared secret: owner-only, like the state dir
            self._log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(
                self._log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600
            )
            self._log = os.fdopen(fd, "a", encoding="utf-8")
        if self._log is not None:
            self._log.write(text if self._budget is None else self._budget.admit(text))
            self._log.flush()  # the log is what people watch while a step runs
        self._tail.add(text)
        if stream == "stdout":
            self._stdout.add(text)
        else:
            self._stderr.add(text)

    def close(self) -> None:
        """Flush unterminated last lines and close the log file; idempotent."""
        for stream, buf in self._pending.items():
            if buf:
                self._emit(stream, bytes(buf))
                buf.clear()
        if self._log is not None:
            self._log.close()
            self._log = None

    @property
    def stdout(self) -> str:
        """The last ``STDOUT_KEEP_BYTES`` of stdout, redacted."""
        return self._stdout.value()

    @property
    def stderr(self) -> str:
        """The last ``TAIL_BYTES`` of stderr, redacted."""
        return self._stderr.value()

    @property
    def tail(self) -> str:
        """The last ``TAIL_BYTES`` of stdout and stderr as they interleaved, redacted."""
        return self._tail.value()
