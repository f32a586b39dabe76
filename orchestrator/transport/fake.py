"""A transport without sockets or processes, for fast tests of the scheduler.

A handler decides what each command "does"::

    def handler(host: HostSpec, command: str) -> FakeReply | int: ...

    t = FakeTransport(handler, unreachable={"db-b"})
    t.connect(spec)            # HostUnreachable for db-b
    ...
    t.calls                    # every run: host, command, env, sudo, start/end monotonic times

Delays honour ``timeout`` (error "timeout") and ``cancel`` (error "cancelled"); output goes
through the same ``OutputCollector`` as the real transports (log file, redaction, tails).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.transport.spool import SpoolKey

from orchestrator.errors import AuthenticationFailed, HostKeyError, HostUnreachable, TransportError
from orchestrator.transport.base import (
    CancelToken,
    CommandResult,
    HostSpec,
    LogTarget,
    OutputCollector,
    Redactor,
    Sudo,
)


@dataclass(frozen=True)
class FakeReply:
    """What a fake command does: wait ``delay_s``, then print and exit with ``rc``.

    ``disconnect=True`` makes the connection drop at the end of the delay (error
    "disconnected", no rc). Output is only produced if the command gets to its end.
    """

    rc: int = 0
    stdout: str = ""
    stderr: str = ""
    delay_s: float = 0.0
    disconnect: bool = False


FakeHandler = Callable[[HostSpec, str], "FakeReply | int"]


@dataclass(frozen=True)
class FakeCall:
    """One recorded ``run``: what was asked, when it ran (monotonic), how it ended."""

    host: str
    command: str
    env: Mapping[str, str]
    sudo: Sudo
    timeout: float | None
    started: float
    ended: float
    result: CommandResult


def _succeed(host: HostSpec, command: str) -> FakeReply | int:
    return 0


class FakeTransport:
    """A ``Transport`` whose commands are answered by ``handler`` (default: everything exits 0).

    ``unreachable``, ``auth_failing`` and ``bad_host_key`` are sets of host names whose
    ``connect`` fails with the matching error; they may be changed while a test runs.
    ``connect_delay_s`` makes every connect take that long.
    """

    def __init__(
        self,
        handler: FakeHandler | None = None,
        *,
        unreachable: Iterable[str] = (),
        auth_failing: Iterable[str] = (),
        bad_host_key: Iterable[str] = (),
        connect_delay_s: float = 0.0,
    ) -> None:
        self.handler: FakeHandler = handler or _succeed
        self.unreachable = set(unreachable)
        self.auth_failing = set(auth_failing)
        self.bad_host_key = set(bad_host_key)
        self.connect_delay_s = connect_delay_s
        self._lock = threading.Lock()
        self._calls: list[FakeCall] = []
        self._connects: list[str] = []

    def connect(self, host: HostSpec) -> FakeConnection:
        """Return a connection to ``host``, or raise as configured for it."""
        if self.connect_delay_s:
            time.sleep(self.connect_delay_s)
        with self._lock:
            self._connects.append(host.name)
        if host.name in self.unreachable:
            raise HostUnreachable(host.name, f"{host.address}:{host.port}: connection refused")
        if host.name in self.auth_failing:
            raise AuthenticationFailed(host.name, "authentication failed")
        if host.name in self.bad_host_key:
            raise HostKeyError(host.name, "host key changed")
        return FakeConnection(host, self)

    def _record(self, call: FakeCall) -> None:
        with self._lock:
            self._calls.append(call)

    @property
    def calls(self) -> list[FakeCall]:
        """Every finished ``run`` so far, in order of completion (a copy)."""
        with self._lock:
            return list(self._calls)

    @property
    def connects(self) -> list[str]:
        """Host names ``connect`` was called for, in order (failed attempts included)."""
        with self._lock:
            return list(self._connects)

    def calls_for(self, host: str) -> list[FakeCall]:
        """The recorded runs on ``host``, in order of start."""
        return sorted((c for c in self.calls if c.host == host), key=lambda c: c.started)

    def commands(self, host: str | None = None) -> list[str]:
        """The commands run (on ``host``, or everywhere), in order of start."""
        calls = self.calls if host is None else self.calls_for(host)
        return [c.command for c in sorted(calls, key=lambda c: c.started)]


@dataclass
class FakeConnection:
    """A fake open connection: ``run`` asks the transport's handler."""

    host: HostSpec
    transport: FakeTransport
    closed: bool = field(default=False)

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
        """Answer ``command`` through the handler; see ``Connection.run`` for the contract
        (``spool`` is accepted and has no effect: nothing runs)."""
        if self.closed:
            raise TransportError(self.host.name, "connection closed")
        started = time.monotonic()
        reply = self.transport.handler(self.host, command)
        if isinstance(reply, int):
            reply = FakeReply(rc=reply)
        out = OutputCollector(log_path, redact)
        rc: int | None = None
        error: str | None = None
        try:
            error = self._delay(reply.delay_s, timeout, cancel)
            if error is None and reply.disconnect:
                error = "disconnected"
            if error is None:
                out.feed("stdout", reply.stdout.encode())
                out.feed("stderr", reply.stderr.encode())
                rc = reply.rc
        finally:
            out.close()
        ended = time.monotonic()
        result = CommandResult(
            rc=rc,
            stdout=out.stdout,
            output_tail=out.tail,
            stderr=out.stderr,
            duration_s=ended - started,
            started_mono=started,
            ended_mono=ended,
            error=error,
        )
        self.transport._record(
            FakeCall(
                host=self.host.name,
                command=command,
                env={**self.host.env, **(env or {})},
                sudo=sudo,
                timeout=timeout,
                started=started,
                ended=ended,
                result=result,
            )
        )
        return result

    @staticmethod
    def _delay(delay_s: float, timeout: float | None, cancel: CancelToken | None) -> str | None:
        """Sleep ``delay_s`` unless the timeout or a cancel comes first; return which did."""
        if cancel is not None and cancel.is_set():
            return "cancelled"
        limit = delay_s if timeout is None else min(delay_s, timeout)
        if limit > 0:
            if cancel is not None:
                if cancel.event.wait(limit):
                    return "cancelled"
            else:
                time.sleep(limit)
        if timeout is not None and delay_s > timeout:
            return "timeout"
        return None

    def close(self) -> None:
        """Mark the connection closed (later ``run`` calls raise ``TransportError``)."""
        self.closed = True
