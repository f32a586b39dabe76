"""The local transport: commands run on the control machine itself, through ``/bin/sh -c``.

Same contract as the SSH transport (env exports, ``sudo -n``, streamed redacted log, bounded
tails, timeout and cancel that kill the whole process tree). Each command runs in a session of
its own (``start_new_session``): a Ctrl-C sent to drx's process group is drx's to handle and
must not reach the commands directly; and the session's process group is what a timeout kills.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shlex
import signal
import subprocess
import time
from collections.abc import Mapping
from typing import IO

from orchestrator.transport.base import (
    CancelToken,
    CommandResult,
    HostSpec,
    Limit,
    LogTarget,
    OutputCollector,
    Redactor,
    Sudo,
    shell_command,
    sudo_argv,
    timed_run,
)
from orchestrator.transport.spool import (
    Nudger,
    SpoolKey,
    attach_program,
    execed,
    fence_words,
    program,
)

READ_SIZE = 1024 * 1024


class LocalConnection:
    """Runs commands for one inventory host on the control machine (``address`` is ignored)."""

    def __init__(self, host: HostSpec, *, kill_grace_s: float = 2.0) -> None:
        self.host = host
        self.kill_grace_s = kill_grace_s

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
        """Run ``command``; see ``orchestrator.transport.base.Connection.run``."""
        # spooled, a plain program call replaces the runner subshell instead of forking
        text = command if spool is None else execed(command)
        body = shell_command(text, {**self.host.env, **(env or {})}, False)
        where = fence = None
        if spool is not None and spool.root is not None:
            where = shlex.quote(str(spool.local_dir()))
            fence = fence_words(spool, self.host)
        # No marker: the shell leads its own session, so its pid is the group to kill.
        script = program(body, "", sudo, where, fence)
        return self._timed(script, sudo, timeout, log_path, redact, cancel, nudge=where is not None)

    def attach(
        self,
        spool: SpoolKey,
        *,
        sudo: Sudo = False,
        timeout: float | None = None,
        log_path: LogTarget | None = None,
        redact: Redactor | None = None,
        cancel: CancelToken | None = None,
    ) -> CommandResult:
        """Follow a spooled command another drx started, as ``run`` follows its own."""
        script = attach_program(shlex.quote(str(spool.local_dir())), "")
        group = _spool_group(spool)
        return self._timed(script, sudo, timeout, log_path, redact, cancel, group=group)

    def _timed(
        self,
        script: str,
        sudo: Sudo,
        timeout: float | None,
        log_path: LogTarget | None,
        redact: Redactor | None,
        cancel: CancelToken | None,
        group: int | None = None,
        *,
        nudge: bool = False,
    ) -> CommandResult:
        return timed_run(
            lambda out, limit: self._run(script, sudo, out, limit, group, nudge),
            timeout=timeout,
            log_path=log_path,
            redact=redact,
            cancel=cancel,
        )

    def close(self) -> None:
        """Nothing to close: every command's process ends with its ``run``."""

    def _run(
        self,
        script: str,
        sudo: Sudo,
        out: OutputCollector,
        limit: Limit,
        group: int | None = None,
        nudge: bool = False,
    ) -> tuple[int | None, str | None]:
        # The program on stdin, never in an argv (``ps`` shows every user the argv).
        proc = subprocess.Popen(
            ["/bin/sh", "-s"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        try:
            proc.stdin.write(script.encode("utf-8"))
            proc.stdin.flush()
            if not nudge:
                proc.stdin.close()
        except BrokenPipeError:
            pass  # the shell is gone already: its exit status says why
        # A spooled command's wrapper copies new output when nudged (see spool.program).
        nudger = Nudger(lambda: _nudge(proc.stdin)) if nudge else None
        streams = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr"}
        reason: str | None = None
        with selectors.DefaultSelector() as sel:
            for fd in streams:
                sel.register(fd, selectors.EVENT_READ)
            try:
                reason = self._pump(sel, streams, out, limit, nudger)
                if reason is None:
                    reason = self._wait(proc, limit)
                if reason is None:
                    # A negative returncode means "killed by signal N": report it the way a
                    # shell would (128 + N), so rc is a plain exit code as over SSH.
                    rc = proc.returncode
                    return (128 - rc if rc < 0 else rc), None
                self._kill_group(proc, sudo, group)
                # Keep what the command printed before it died, without waiting for more.
                self._pump(sel, streams, out, Limit(time.monotonic(), None))
                return None, reason
            finally:
                proc.stdout.close()
                proc.stderr.close()
                with contextlib.suppress(OSError):
                    proc.stdin.close()
                if proc.poll() is None:
                    # Only reached on an unexpected error (or KeyboardInterrupt) above.
                    self._kill_group(proc, sudo)

    @staticmethod
    def _pump(
        sel: selectors.BaseSelector,
        streams: dict[int, str],
        out: OutputCollector,
        limit: Limit,
        nudger: Nudger | None = None,
    ) -> str | None:
        """Move output to ``out`` until both pipes end; "timeout"/"cancelled" if that comes
        first, else None."""
        while sel.get_map():
            # Checked on every round, not only when idle: a command flooding its output must
            # time out too.
            reason = limit.reason()
            if reason is not None:
                return reason
            events = sel.select(limit.wait_s() if nudger is None else nudger.wait_s(limit.wait_s()))
            for key, _ in events:
                fd = int(key.fd)
                data = os.read(fd, READ_SIZE)
                if data:
                    out.feed(streams[fd], data)
                else:
                    sel.unregister(fd)
        return None

    @staticmethod
    def _wait(proc: subprocess.Popen[bytes], limit: Limit) -> str | None:
        """Output has ended; wait for the process itself."""
        while True:
            reason = limit.reason()
            if reason is not None:
                return reason
            try:
                proc.wait(limit.wait_s())
                return None
            except subprocess.TimeoutExpired:
                continue

    def _kill_group(
        self, proc: subprocess.Popen[bytes], sudo: Sudo, group: int | None = None
    ) -> None:
        """TERM the command's process group, KILL it after the grace period (``group``: a
        followed command's, as well as the follower's own)."""
        pgid = proc.pid  # start_new_session: the shell leads its own group
        if group is not None:
            self._signal_group(group, signal.SIGTERM, sudo)
        self._signal_group(pgid, signal.SIGTERM, sudo)
        give_up = time.monotonic() + self.kill_grace_s
        while time.monotonic() < give_up:
            proc.poll()  # reap our own child, else it stays in the group as a zombie
            if not _group_alive(pgid):
                break
            time.sleep(0.02)
        else:
            self._signal_group(pgid, signal.SIGKILL, sudo)
        if group is not None and _group_alive(group):
            self._signal_group(group, signal.SIGKILL, sudo)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(self.kill_grace_s)

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals, sudo: Sudo) -> None:
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            # Members running as another user under sudo: ask sudo to deliver it.
            if sudo:
                subprocess.run(
                    [*sudo_argv(sudo), "kill", f"-{sig.name[3:]}", "--", f"-{pgid}"],
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    check=False,
                )


def _nudge(stdin: IO[bytes] | None) -> None:
    """One nudge on a spooled command's stdin (a wrapper gone already is no error)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        stdin.write(b"\n")  # type: ignore[union-attr]
        stdin.flush()  # type: ignore[union-attr]


def _spool_group(spool: SpoolKey) -> int | None:
    """The process group of a spooled command (from its ``pid`` file), None if unreadable."""
    try:
        return int((spool.local_dir() / "pid").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _group_alive(pgid: int) -> bool:
    """Whether process group ``pgid`` still has a member that is not a zombie (zombies are
    dead, but ``killpg(pgid, 0)`` would still count them until they are reaped)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True  # no procfs: trust killpg
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # Fields after the command name (which may contain ") "): state, ppid, pgrp, ...
        fields = stat[stat.rfind(b")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


class LocalTransport:
    """Opens ``LocalConnection``s; nothing to connect, so it never fails."""

    def __init__(self, *, kill_grace_s: float = 2.0) -> None:
        self.kill_grace_s = kill_grace_s

    def connect(self, host: HostSpec) -> LocalConnection:
        """Return a connection that runs ``host``'s commands on this machine."""
        return LocalConnection(host, kill_grace_s=self.kill_grace_s)
