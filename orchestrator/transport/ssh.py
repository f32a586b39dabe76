"""The SSH transport: one Paramiko connection per host, one channel per command.

Connections are Paramiko ``SSHClient``s (``_Link``; a ProxyJump-style bastion's connection
carries the target's through a ``direct-tcpip`` channel), with host keys checked by drx itself
against the inventory's known_hosts file and ``host_key_policy``. The operator's
``~/.ssh/config`` has already been applied to the ``HostSpec`` when the inventory was loaded
(``orchestrator.model.ssh_config``): the spec is what happens.

Commands do not go through a runner such as Fabric's (~10 ms a command): each ``run`` opens a
session channel on the Paramiko transport, reads stdout/stderr in one select loop and streams
them through an ``OutputCollector``. TCP_NODELAY is set on the socket: without it every command
on a reused connection waits ~40 ms on Nagle's algorithm against delayed ACKs.

Killing on timeout/cancel: without a pty, closing a channel does not stop the remote command.
sshd starts every session's shell as a session and process-group leader, so the wrapped command
first prints ``$$`` (that group's id) on stderr behind a per-run random marker, which the reader
strips; on timeout or cancel a second channel runs ``kill -TERM -PGID``, then ``kill -KILL``
after a grace period, which ends the command and every child that did not leave the group.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import queue
import secrets
import select
import shlex
import socket
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
from paramiko.ssh_exception import (
    AuthenticationException,
    BadHostKeyException,
    ChannelException,
    PasswordRequiredException,
    SSHException,
)

from orchestrator.errors import (
    AuthenticationFailed,
    ConnectionDropped,
    HostKeyError,
    HostUnreachable,
    TransportError,
)
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
    timed_run,
)
from orchestrator.transport.spool import (
    SPOOL_FAILED_RC,
    Nudger,
    SpoolKey,
    attach_program,
    cleanup_program,
    execed,
    fence_path,
    fence_words,
    program,
    spool_path,
    ssh_dir,
)
from orchestrator.transport.starter import Job, Starter

#: Spooled commands a connection must be about to run for its starter to start before the
#: first (see ``SSHConnection.expect_spooled``): python3's start costs the host ~15 ms of CPU,
#: the wrapper ~1-2 ms a command more than the starter.
STARTER_MIN_COMMANDS = 8
#: How long the end of a run waits for a starter to take the list of spools to remove.
SPOOL_DISCARD_WAIT_S = 2.0
#: A removal longer than this goes on a command's stdin (and is waited for), not in its argv.
DISCARD_ARGV_MAX = 64 * 1024

#: The command sshd hands to the login shell: the program itself comes on stdin, so nothing of
#: it (a secret in ``env``, a 1 MB script) is ever in an argv on the host.
STDIN_COMMAND = ". /dev/stdin"
#: The same for a spooled command: its program forks a few times, which costs a login shell
#: such as bash ~1 ms a fork and the host's sh (dash, busybox) a tenth of that.
SPOOL_COMMAND = "exec /bin/sh -s"

#: Bytes asked for per read; Paramiko hands over whatever is buffered up to this.
READ_SIZE = 1024 * 1024
#: How long to wait for the process-group marker after a timeout if it has not arrived yet.
MARKER_WAIT_S = 2.0
#: stderr bytes to hold back while looking for the marker (login-shell noise may precede it).
MARKER_SCAN_LIMIT = 64 * 1024
#: SSH channel window: large enough that bulk output is not throttled by window updates.
WINDOW_SIZE = 8 * 1024 * 1024
#: How often an idle connection's Paramiko thread wakes up (its default 0.1 s cost ~0.1 s of
#: CPU a second at 1,000 open connections). Data and a closed link wake it at once; only
#: noticing our own close() of it waits for this, and close() does not wait for that.
IDLE_WAKE_S = 1.0

_KNOWN_HOSTS_LOCK = threading.Lock()


def parse_jump(jump: str, default_user: str) -> tuple[str, str, int]:
    """Split a proxy_jump ``[user@]host[:port]`` (``[v6addr]:port`` allowed) into its parts."""
    user, at, rest = jump.rpartition("@")
    if not at:
        user = default_user
    port = 22
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        if tail.startswith(":"):
            port = int(tail[1:])
    elif rest.count(":") == 1:
        host, _, port_text = rest.partition(":")
        port = int(port_text)
    else:
        host = rest
    if not host:
        raise ValueError(f"bad proxy_jump {jump!r}: expected user@host:port")
    return user or default_user, host, port


@dataclass(frozen=True)
class _InAgent:
    """An encrypted identity file whose key the SSH agent holds (its public key blob): each
    connection asks the agent on a connection of its own, closed once authenticated (Paramiko's
    agent client is not safe to share between threads)."""

    path: str
    blob: bytes

    @classmethod
    def find(cls, path: str) -> _InAgent | None:
        """The agent's copy of the key at ``path`` (found by the public key in ``path.pub``),
        or None when there is no agent, no ``.pub``, or the agent lacks the key."""
        if not os.environ.get("SSH_AUTH_SOCK"):
            return None
        try:
            blob = base64.b64decode(Path(path + ".pub").read_text(encoding="utf-8").split()[1])
        except (OSError, IndexError, ValueError):
            return None
        agent, key = cls(path, blob).open()
        if agent is not None:
            agent.close()
        return cls(path, blob) if key is not None else None

    def open(self) -> tuple[paramiko.Agent | None, paramiko.PKey | None]:
        """A new agent connection and its key for this blob (None, None: not there)."""
        try:
            agent = paramiko.Agent()
        except SSHException:
            return None, None
        try:
            for key in agent.get_keys():
                if key.asbytes() == self.blob:
                    return agent, key
        except SSHException:
            pass
        agent.close()
        return None, None


def _tune_socket(sock: socket.socket) -> None:
    """Set the options every drx SSH socket needs."""
    # The single largest speed lever: a command on a reused connection takes ~2.5 ms instead of
    # ~41 ms (Nagle's algorithm waiting for the peer's delayed ACK).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # A host that vanishes (power cut, partition) sends no FIN: keepalives and a user timeout
    # turn that into a closed connection ("disconnected") within about half a minute instead of
    # a command that waits forever.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (
        ("TCP_KEEPIDLE", 15),
        ("TCP_KEEPINTVL", 5),
        ("TCP_KEEPCNT", 3),
        ("TCP_USER_TIMEOUT", 30_000),
    ):
        if hasattr(socket, name):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


class _QuickAckSocket(socket.socket):
    """A socket that acknowledges received data at once instead of up to 40 ms later.

    Right after authentication OpenSSH sends two small messages (a host-keys notice and a
    debug message) and, under Nagle's algorithm, holds back the second — and everything behind
    it, such as the answer to the first channel open — until the first is acknowledged. Linux
    delays that ACK (nothing to piggyback it on), so a connection's first command would cost
    ~45 ms instead of ~3 ms. TCP_QUICKACK is not sticky in Linux, hence re-armed after each
    read (one cheap syscall per read of Paramiko's transport thread).
    """

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = super().recv(bufsize, flags)
        with contextlib.suppress(OSError):
            self.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
        return data


_TCP_QUICKACK: int = getattr(socket, "TCP_QUICKACK", 0)


class _RejectUnknown(paramiko.MissingHostKeyPolicy):
    """``strict``: a host whose key is not in known_hosts is refused."""

    def __init__(self, host: str, via: str) -> None:
        self.host, self.via = host, via

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        raise HostKeyError(
            self.host,
            f"{self.via}unknown host key for {hostname} ({key.get_name()} {key.fingerprint}); "
            "add it to known_hosts or use host_key_policy accept-new",
        )


class _RecordNew(paramiko.MissingHostKeyPolicy):
    """``accept-new``: a host not in known_hosts is trusted and its key appended to the file
    (a *changed* key is still refused: Paramiko raises BadHostKeyException before asking)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        # ``hostname`` is already in known_hosts form: "[addr]:port" unless the port is 22.
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # A thread lock for this process, flock for other drx processes appending too.
        with _KNOWN_HOSTS_LOCK, open(self.path, "a", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                f.write(line)
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        client.get_host_keys().add(hostname, key.get_name(), key)


class _Link:
    """One authenticated SSH connection (the target's or its bastion's): Paramiko's
    ``SSHClient``, opened as Fabric's ``Connection.open`` opens one, the bastion's
    ``direct-tcpip`` channel under the connect timeout (Fabric's uses Paramiko's default of
    an hour). drx used Fabric's ``Connection`` for this; building one cost ~1 ms of CPU per
    host in invoke's configuration machinery (1 s for 1,000 hosts), for nothing drx used
    beyond these few calls."""

    def __init__(
        self,
        host: str,
        port: int,
        user: str,
        connect_kwargs: dict[str, Any],
        gateway: _Link | None,
        open_timeout: float,
    ) -> None:
        self.host, self.port, self.user = host, port, user
        self.connect_kwargs = connect_kwargs
        self.gateway = gateway
        self.open_timeout = open_timeout
        self.client = paramiko.SSHClient()
        self.transport: paramiko.Transport | None = None

    def open(self) -> None:
        kwargs = dict(self.connect_kwargs, hostname=self.host, port=self.port, username=self.user)
        if self.gateway is not None:
            gateway = self.gateway.transport
            if gateway is None or not gateway.is_active():
                raise SSHException("the bastion's connection is closed")
            kwargs["sock"] = gateway.open_channel(
                kind="direct-tcpip",
                dest_addr=(self.host, int(self.port)),
                src_addr=("", 0),
                timeout=self.open_timeout,
            )
        self.client.connect(**kwargs)
        self.transport = self.client.get_transport()

    def close(self) -> None:
        self.client.close()


class _MarkerFilter:
    """Takes the process-group marker line out of the stderr stream and remembers the id."""

    def __init__(self, marker: bytes) -> None:
        self.marker = marker
        self.pgid: int | None = None
        self.done = False
        self._buf = bytearray()

    def feed(self, data: bytes) -> bytes:
        """Return the stderr bytes that may be passed on now."""
        if self.done:
            return data
        self._buf += data
        start = self._buf.find(self.marker)
        if start >= 0:
            end = self._buf.find(b"\n", start)
            if end < 0:
                return b""
            value = bytes(self._buf[start + len(self.marker) : end])
            self.pgid = int(value) if value.isdigit() else None
            rest = bytes(self._buf[:start] + self._buf[end + 1 :])
            self.done = True
            self._buf.clear()
            return rest
        if len(self._buf) > MARKER_SCAN_LIMIT:
            return self.flush()
        return b""

    def flush(self) -> bytes:
        """Give up looking (end of stream): return whatever was held back."""
        self.done = True
        rest = bytes(self._buf)
        self._buf.clear()
        return rest


def _kill_script(pgid: int, grace_s: float) -> str:
    """Shell text that ends process group ``pgid``: TERM, then KILL if still alive after
    ``grace_s``.

    ``kill -SIG -PGID`` is the form both dash and bash accept (dash rejects ``--``). Liveness is
    read from ``ps`` where it exists, ignoring zombies: ``kill -0`` also counts dead children
    that an init slow to reap has not collected yet, which would always cost the full grace.
    """
    rounds = max(1, round(grace_s / 0.05))
    return (
        "alive() {\n"
        "  if s=$(ps -A -o pgid= -o stat= 2>/dev/null); then\n"
        f"    printf '%s\\n' \"$s\" | awk '$1 == {pgid} && $2 !~ /^Z/ {{ f = 1 }} END {{ exit !f }}'\n"
        "  else\n"
        f"    kill -0 -{pgid} 2>/dev/null\n"
        "  fi\n"
        "}\n"
        f"kill -TERM -{pgid} 2>/dev/null || exit 0\n"
        "i=0\n"
        "while alive; do\n"
        f"  i=$((i+1)); if [ $i -gt {rounds} ]; then kill -KILL -{pgid} 2>/dev/null; exit 0; fi\n"
        "  sleep 0.05\n"
        "done\n"
    )


def _nudge(chan: paramiko.Channel) -> None:
    """One nudge on a spooled command's channel (a channel closing under us is no error)."""
    with contextlib.suppress(SSHException, OSError, EOFError):
        chan.send(b"\n")


class SSHConnection:
    """An open, authenticated SSH connection to one host (plus its bastion, if any).

    Thread-safe: concurrent ``run`` calls each get their own channel, at most ``max_sessions``
    at once (further calls wait for a free one).
    """

    def __init__(
        self,
        host: HostSpec,
        conn: _Link,
        bastion: _Link | None,
        *,
        max_sessions: int,
        kill_grace_s: float,
        starter: bool = True,
    ) -> None:
        self.host = host
        self._conn = conn
        self._bastion = bastion
        if conn.transport is None:
            raise TransportError(host.name, "connection not open")
        self._transport: paramiko.Transport = conn.transport
        self._transport.sock.settimeout(IDLE_WAKE_S)
        self._slots = threading.BoundedSemaphore(max_sessions)
        self._kill_grace_s = kill_grace_s
        self._closed = False
        #: the starter of this connection's spooled commands (see transport/starter.py): None
        #: until one is worth starting (``expect_spooled``, or more commands came); ``False``
        #: when the host cannot run one (no python3 >= 3.8)
        self._starter: Starter | bool | None = None if starter else False
        self._starter_lock = threading.Lock()
        #: spooled commands run so far, and how many before a starter is worth starting
        #: (``expect_spooled``: 0 until told)
        self._spooled = 0
        self._starter_from = 0

    @property
    def paramiko_transport(self) -> paramiko.Transport:
        """The underlying Paramiko transport (for diagnostics and tests)."""
        return self._transport

    @property
    def alive(self) -> bool:
        """Whether the connection is still up."""
        return not self._closed and self._transport.is_active()

    # --- running --------------------------------------------------------------------------

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
        """Run ``command`` on the host; see ``orchestrator.transport.base.Connection.run``."""
        # spooled, a plain program call replaces the runner subshell instead of forking
        text = command if spool is None else execed(command)
        exports = {**self.host.env, **(env or {})}
        body = shell_command(text, exports, False)
        starter = None
        if spool is not None:
            with self._starter_lock:
                self._spooled += 1
            starter = self._the_starter()
        if starter is not None and spool is not None:
            # the connection's starter starts it: no channel, no wrapper program, no fork of it;
            # a plain program call (not under sudo, PATH as the login gave it) not even a shell
            where = spool_path(spool, self.host.spool_dir)
            fence = fence_path(spool, self.host.spool_dir)
            argv = None
            if text != command and not sudo and "PATH" not in exports:
                argv = command.split()
            return timed_run(
                lambda out, limit: self._run_started(
                    starter, where, body, sudo, out, limit, argv, exports, fence
                ),
                timeout=timeout,
                log_path=log_path,
                redact=redact,
                cancel=cancel,
            )
        marker = f"drx-pgid-{secrets.token_hex(8)}:"
        # The marker line goes first and on a line of its own: the shell runs it before it even
        # parses the user's command, so a syntax error there cannot hide the process group.
        script = program(
            body,
            marker,
            sudo,
            None if spool is None else ssh_dir(spool, self.host.spool_dir),
            None if spool is None else fence_words(spool, self.host),
        )
        command = STDIN_COMMAND if spool is None else SPOOL_COMMAND
        return self._run_script(script, marker, sudo, timeout, log_path, redact, cancel, command)

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
        """Follow a spooled command another controller started, as ``run`` follows its own."""
        marker = f"drx-pgid-{secrets.token_hex(8)}:"
        script = attach_program(ssh_dir(spool, self.host.spool_dir), marker)
        return self._run_script(script, marker, sudo, timeout, log_path, redact, cancel)

    def start_spooling(self, wait_s: float | None = None) -> bool:
        """Start this connection's starter if it has none yet (see transport/starter.py) and,
        with ``wait_s``, wait that long for it to be ready; whether spooled commands now go
        through it. Until it is ready they go through the wrapper, so that its start-up (a
        python3 on the host) never delays a command."""
        starter = self._the_starter()
        if starter is None and wait_s is not None:
            with self._starter_lock:
                pending = self._starter
            if isinstance(pending, Starter) and pending.ready.wait(wait_s):
                starter = self._the_starter()
        return starter is not None

    @property
    def starter_state(self) -> str:
        """How spooled commands start: ``none`` (no starter: the wrapper), ``starting``,
        ``ready`` (through the starter) or ``unavailable`` (the host cannot run one)."""
        with self._starter_lock:
            starter = self._starter
        if starter is False:
            return "unavailable"
        if not isinstance(starter, Starter):
            return "none"
        if starter.dead:
            return "none" if starter.worked else "unavailable"
        return "ready" if starter.worked else "starting"

    def expect_spooled(self, commands: int, wait_s: float | None = None) -> None:
        """Say how many spooled commands this connection is about to run: with at least
        ``STARTER_MIN_COMMANDS`` its starter starts now (ready, most likely, by the first;
        with ``wait_s``, waited for that long: ``start_spooling``); with fewer, they go
        through the wrapper, and a starter starts only if more come (a python3 on the host
        costs more than the wrapper saves on a few commands)."""
        if commands >= STARTER_MIN_COMMANDS:
            self.start_spooling(wait_s)
        else:
            with self._starter_lock:
                self._starter_from = self._spooled + STARTER_MIN_COMMANDS

    def discard_spools(self, keys: Sequence[SpoolKey]) -> None:
        """Remove the spool directories of ``keys`` (spent attempts) without waiting for the
        removal: the connection's starter removes them once it has ended; without one, a
        command does, which outlives the connection. Best effort: what stays is only disk."""
        if not keys:
            return
        with self._starter_lock:
            starter = self._starter
        if isinstance(starter, Starter) and starter.worked and not starter.dead:
            paths = [spool_path(k, self.host.spool_dir) for k in keys]
            if starter.discard(paths, wait_s=SPOOL_DISCARD_WAIT_S):
                return
        text = cleanup_program([ssh_dir(k, self.host.spool_dir) for k in keys])
        with contextlib.suppress(TransportError, SSHException, OSError, EOFError):
            if len(text) > DISCARD_ARGV_MAX:  # too long for an argv: sent on stdin, waited for
                self.run(text, timeout=SPOOL_DISCARD_WAIT_S * 10)
                return
            chan = self._open_channel()
            try:
                # answered once the host has started it; it goes on after the channel closes
                chan.exec_command(f"exec /bin/sh -c {shlex.quote(text)} </dev/null >/dev/null 2>&1")
            finally:
                chan.close()

    def _the_starter(self) -> Starter | None:
        """This connection's starter when it is ready; started if there is none (None: not
        ready yet, or the host cannot run one — the wrapper runs the command instead)."""
        with self._starter_lock:
            starter = self._starter
            if isinstance(starter, Starter) and starter.dead:
                # no python3 on the host (or too old): the wrapper for good; a starter that
                # worked and ended (killed): a new one, if the link is still up
                starter = None if starter.worked else False
                self._starter = starter
            if (
                starter is None
                and self._spooled >= self._starter_from
                and not self._closed
                and self._transport.is_active()
            ):
                self._starter = Starter(self._open_channel)
                return None
        if isinstance(starter, Starter) and starter.worked and not starter.dead:
            return starter
        return None

    def _run_started(
        self,
        starter: Starter,
        where: str,
        body: str,
        sudo: Sudo,
        out: OutputCollector,
        limit: Limit,
        argv: list[str] | None = None,
        exports: Mapping[str, str] | None = None,
        fence: str | None = None,
    ) -> tuple[int | None, str | None]:
        """Run ``body`` (or ``argv`` with ``exports``, without a shell) through ``starter``
        under the spool directory ``where``; stream its output into ``out`` until it ends or
        ``limit`` says stop (then kill its group)."""
        error = self._acquire_slot(limit)
        if error is not None:
            return None, error
        try:
            try:
                job = starter.submit(where, sudo, body, argv, exports, fence)
            except OSError:
                return None, "disconnected"
            reason = self._follow(job, out, limit)
            if isinstance(reason, int):
                return reason, None
            if reason == "disconnected":
                return None, reason
            # the starter writes no rc for it and says its pid (its process group's id)
            starter.forget(job)
            self._follow(job, out, Limit(time.monotonic() + MARKER_WAIT_S, None))
            starter.drop(job)
            if job.pid is not None:
                self._kill_remote(job.pid, sudo)
            return None, reason
        finally:
            self._slots.release()

    def _follow(self, job: Job, out: OutputCollector, limit: Limit) -> int | str:
        """Feed ``job``'s output to ``out`` until it ends (its exit code), the starter is gone
        ("disconnected"), says its pid ("pid", after ``forget``) or ``limit`` says stop
        ("timeout"/"cancelled")."""
        while True:
            reason = limit.reason()
            if reason is not None:
                return reason
            try:
                kind, data = job.events.get(timeout=limit.wait_s())
            except queue.Empty:
                continue
            if kind == "O":
                out.feed("stdout", data)
            elif kind == "E":
                out.feed("stderr", data)
            elif kind == "P":
                job.pid = int(data)
                return "pid"
            elif kind == "X":
                return int(data)
            elif kind == "F":
                fenced = data.startswith(b"drx: ")  # else the spool's files could not be made
                out.feed(
                    "stderr",
                    (b"" if fenced else b"cannot create the spool directory: ") + data + b"\n",
                )
                return SPOOL_FAILED_RC
            else:
                return "disconnected"

    def _run_script(
        self,
        script: str,
        marker: str,
        sudo: Sudo,
        timeout: float | None,
        log_path: LogTarget | None,
        redact: Redactor | None,
        cancel: CancelToken | None,
        command: str = STDIN_COMMAND,
    ) -> CommandResult:
        def on_a_channel(out: OutputCollector, limit: Limit) -> tuple[int | None, str | None]:
            error = self._acquire_slot(limit)
            if error is not None:
                return None, error
            try:
                return self._run_channel(script, marker, sudo, out, limit, command)
            finally:
                self._slots.release()

        return timed_run(
            on_a_channel, timeout=timeout, log_path=log_path, redact=redact, cancel=cancel
        )

    def _acquire_slot(self, limit: Limit) -> str | None:
        """Wait for a free channel slot; return an error ("timeout"/"cancelled") or None."""
        while True:
            reason = limit.reason()
            if reason is not None:
                return reason
            if self._slots.acquire(timeout=limit.wait_s()):
                return None

    def _open_channel(self) -> paramiko.Channel:
        if self._closed:
            raise TransportError(self.host.name, "connection closed")
        try:
            return self._transport.open_session(
                window_size=WINDOW_SIZE, timeout=self.host.connect_timeout
            )
        except ChannelException as exc:
            raise TransportError(self.host.name, f"channel refused: {exc}") from exc
        except (SSHException, OSError, EOFError) as exc:
            raise TransportError(self.host.name, f"connection lost: {exc}") from exc

    def _run_channel(
        self,
        script: str,
        marker: str,
        sudo: Sudo,
        out: OutputCollector,
        limit: Limit,
        command: str = STDIN_COMMAND,
    ) -> tuple[int | None, str | None]:
        chan = self._open_channel()
        pg = _MarkerFilter(marker.encode())
        # A spooled command's wrapper copies new output when nudged (see spool.program);
        # any other program ends with its text (the command's own stdin is /dev/null).
        nudge = Nudger(lambda: _nudge(chan)) if command == SPOOL_COMMAND else None
        try:
            try:
                chan.exec_command(command)
                chan.sendall(script.encode("utf-8"))
                if nudge is None:
                    chan.shutdown_write()
            except (SSHException, OSError, EOFError):
                return None, "disconnected"
            reason = self._pump(chan, pg, out, limit, nudge=nudge)
            if reason is None:
                reason = self._wait_status(chan, limit)
            if reason is None:
                if chan.exit_status >= 0:
                    return chan.exit_status, None
                # Channel closed without an exit status: either the link went down, or the
                # command died of a signal (sshd reports "exit-signal", which Paramiko drops).
                return None, "signal" if self._transport.is_active() else "disconnected"
            if not self._transport.is_active():
                return None, "disconnected"
            if pg.pgid is None:
                # The marker is the first thing the command prints: give it a moment to arrive.
                soon = Limit(time.monotonic() + MARKER_WAIT_S, None)
                self._pump(chan, pg, out, soon, until_marker=True)
            if pg.pgid is not None:
                self._kill_remote(pg.pgid, sudo)
            # Keep what the command printed before it died, without waiting for more.
            self._pump(chan, pg, out, Limit(time.monotonic(), None))
            return None, reason
        finally:
            rest = pg.flush()
            if rest:
                out.feed("stderr", rest)
            chan.close()

    def _drain(self, chan: paramiko.Channel, pg: _MarkerFilter, out: OutputCollector) -> None:
        if chan.recv_ready():
            out.feed("stdout", chan.recv(READ_SIZE))
        if chan.recv_stderr_ready():
            data = pg.feed(chan.recv_stderr(READ_SIZE))
            if data:
                out.feed("stderr", data)

    def _pump(
        self,
        chan: paramiko.Channel,
        pg: _MarkerFilter,
        out: OutputCollector,
        limit: Limit,
        *,
        until_marker: bool = False,
        nudge: Nudger | None = None,
    ) -> str | None:
        """Move output from ``chan`` to ``out`` until end of output (or until the marker is
        seen); return "timeout"/"cancelled" if that comes first, else None."""
        while True:
            self._drain(chan, pg, out)
            if until_marker and pg.done:
                return None
            if chan.eof_received or chan.closed:
                # EOF comes after the last data: one more read empties the buffers for good.
                self._drain(chan, pg, out)
                if not (chan.recv_ready() or chan.recv_stderr_ready()):
                    rest = pg.flush()
                    if rest:
                        out.feed("stderr", rest)
                    return None
                continue
            reason = limit.reason()
            if reason is not None:
                return reason
            # Paramiko's channel fileno is a pipe that becomes readable on stdout or stderr data
            # and at end of file.
            wait_s = limit.wait_s() if nudge is None else nudge.wait_s(limit.wait_s())
            # poll, not select: select refuses descriptors past 1023, which a run over many
            # hosts opens (a socket and this pipe per connection)
            poller = select.poll()
            poller.register(chan.fileno(), select.POLLIN)
            poller.poll(None if wait_s is None else max(0.0, wait_s) * 1000)

    def _wait_status(self, chan: paramiko.Channel, limit: Limit) -> str | None:
        """Output has ended; wait for the exit status (or the channel's close)."""
        while True:
            reason = limit.reason()
            if reason is not None:
                return reason
            if chan.status_event.wait(limit.wait_s()):
                return None

    def _kill_remote(self, pgid: int, sudo: Sudo) -> None:
        """End process group ``pgid`` on the host through a new channel (best effort: if the
        link itself is gone, nothing can be done from here)."""
        script = shell_command(_kill_script(pgid, self._kill_grace_s), {}, sudo)
        give_up = time.monotonic() + self.host.connect_timeout + self._kill_grace_s + 1.0
        while time.monotonic() < give_up:
            try:
                chan = self._transport.open_session(timeout=self.host.connect_timeout)
            except ChannelException:
                # Every session slot of the server is taken (MaxSessions): try again shortly.
                time.sleep(0.05)
                continue
            except (SSHException, OSError, EOFError):
                return
            try:
                chan.exec_command(script)
                chan.shutdown_write()
                chan.status_event.wait(max(0.0, give_up - time.monotonic()))
            except (SSHException, OSError, EOFError):
                pass
            finally:
                chan.close()
            return

    # --- closing --------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection, its channels, and the bastion connection; idempotent."""
        if self._closed:
            return
        self._closed = True
        for conn in (self._conn, self._bastion):
            if conn is not None:
                # Shut the socket down first: Paramiko's reader thread otherwise sits in recv()
                # until its 0.1 s poll timeout, and Paramiko joins it at interpreter exit — every
                # drx run would end ~100 ms late.
                with contextlib.suppress(Exception):
                    conn.transport.sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
                with contextlib.suppress(Exception):
                    conn.close()

    def __enter__(self) -> SSHConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SSHTransport:
    """Opens ``SSHConnection``s.

    ``max_sessions`` caps concurrent commands per connection; keep it below the servers'
    ``MaxSessions`` (OpenSSH default 10) so that a kill channel always fits beside them.
    ``kill_grace_s`` is how long a timed-out command gets between TERM and KILL.
    ``starter``: spooled commands are started by one starter process per connection where the
    host has python3 (see transport/starter.py); False keeps the per-command wrapper.
    """

    def __init__(
        self,
        *,
        max_sessions: int = 8,
        kill_grace_s: float = 2.0,
        ask_passphrase: bool | None = None,
        starter: bool = True,
    ) -> None:
        self.max_sessions = max_sessions
        self.starter = starter
        self.kill_grace_s = kill_grace_s
        #: whether an encrypted key's passphrase may be asked on the terminal (default: when
        #: stdin is a terminal)
        self.ask_passphrase = sys.stdin.isatty() if ask_passphrase is None else ask_passphrase
        self._keys: dict[tuple[str, int], paramiko.PKey | _InAgent] = {}
        self._keys_lock = threading.Lock()
        #: known_hosts path -> (file version, its keys)
        self._known: dict[str, tuple[tuple[int, int, int], paramiko.HostKeys]] = {}
        self._known_lock = threading.Lock()

    def connect(self, host: HostSpec) -> SSHConnection:
        """Open and authenticate a connection to ``host`` (through its bastion, if any).

        Raises ``HostUnreachable`` (refused, timed out, DNS, no banner), ``AuthenticationFailed``
        or ``HostKeyError`` (unknown or changed key under the policy in force).
        """
        bastion = None
        try:
            if host.proxy_jump:
                try:
                    user, address, port = parse_jump(host.proxy_jump, host.user)
                except ValueError as exc:
                    raise HostUnreachable(host.name, str(exc)) from None
                bastion = self._open(host, address, port, user, None, f"bastion {address}:{port}: ")
            conn = self._open(host, host.address, host.port, host.user, bastion, "")
        except BaseException:
            if bastion is not None:
                bastion.close()
            raise
        return SSHConnection(
            host,
            conn,
            bastion,
            max_sessions=self.max_sessions,
            kill_grace_s=self.kill_grace_s,
            starter=self.starter,
        )

    def _load_key(self, host: HostSpec, path: str) -> paramiko.PKey | _InAgent:
        """Load (once per file version) the identity file's private key. An encrypted key is
        taken from the SSH agent when the agent holds it (matched by the ``.pub`` beside it),
        else its passphrase is asked once on the terminal; with neither, authentication fails
        with a message that says so."""
        full = os.path.expanduser(path)
        try:
            stamp = os.stat(full).st_mtime_ns
        except OSError as exc:
            raise AuthenticationFailed(host.name, f"identity file {path}: {exc.strerror}") from None
        with self._keys_lock:
            key = self._keys.get((full, stamp))
            if key is None:
                try:
                    key = paramiko.PKey.from_path(full)
                except (PasswordRequiredException, TypeError):
                    # Paramiko raises PasswordRequiredException for PEM keys, and cryptography's
                    # TypeError ("password was not provided") for OpenSSH-format ones.
                    key = _InAgent.find(full) or self._ask_passphrase(host, path, full)
                except (SSHException, OSError, ValueError) as exc:
                    raise AuthenticationFailed(
                        host.name, f"identity file {path} unreadable: {exc}"
                    ) from None
                self._keys[(full, stamp)] = key
            return key

    def _ask_passphrase(self, host: HostSpec, path: str, full: str) -> paramiko.PKey:
        """The key at ``full``, decrypted with a passphrase typed on the terminal (once: the
        caller caches the key; the keys lock keeps parallel connects from asking twice)."""
        if not self.ask_passphrase:
            raise AuthenticationFailed(
                host.name,
                f"identity file {path} is encrypted: add it to ssh-agent (ssh-add), or run drx "
                "on a terminal to type its passphrase",
            )
        import getpass

        try:
            passphrase = getpass.getpass(f"Passphrase for {path}: ")
        except (EOFError, OSError):
            passphrase = ""
        try:
            # typed as str in Paramiko, but cryptography's OpenSSH loader insists on bytes
            return paramiko.PKey.from_path(full, password=passphrase.encode())  # type: ignore[arg-type]
        except (SSHException, OSError, ValueError, TypeError) as exc:
            raise AuthenticationFailed(
                host.name, f"identity file {path}: wrong passphrase ({exc})"
            ) from None

    def _open(
        self,
        host: HostSpec,
        address: str,
        port: int,
        user: str,
        gateway: _Link | None,
        via: str,
    ) -> _Link:
        """Open one connection (target or bastion) with drx's host key checking."""
        timeout = host.connect_timeout
        kwargs: dict[str, Any] = {
            "timeout": timeout,
            "banner_timeout": timeout,
            "auth_timeout": timeout,
            "channel_timeout": timeout,
        }
        agent = None
        if host.identity_file:
            # Only the inventory's key: trying every key of an agent could exhaust the server's
            # MaxAuthTries and would make behaviour depend on who runs drx.
            loaded = self._load_key(host, host.identity_file)
            pkey: paramiko.PKey | None = None
            if isinstance(loaded, _InAgent):
                agent, pkey = loaded.open()
            else:
                pkey = loaded
            if pkey is None:
                raise AuthenticationFailed(
                    host.name, f"the SSH agent no longer holds {host.identity_file}"
                )
            kwargs.update(pkey=pkey, look_for_keys=False, allow_agent=False)
        else:
            kwargs.update(look_for_keys=True, allow_agent=True)
        sock = None
        if gateway is None:
            sock = self._tcp_connect(host, address, port, via)
            kwargs["sock"] = sock
        # no ~/.ssh/config is read here: the inventory (and model/ssh_config, when it names an
        # alias) says how to reach the host
        conn = _Link(address, port, user, kwargs, gateway, timeout)
        try:
            self._apply_host_key_policy(conn.client, host, address, port, via)
            conn.open()
        except BaseException as exc:
            with contextlib.suppress(Exception):
                conn.client.close()
            if sock is not None:
                sock.close()
            raise self._map_error(host, address, port, via, exc) from None
        finally:
            if agent is not None:
                agent.close()  # authenticated (or failed): the agent is not needed any more
        return conn

    @staticmethod
    def _tcp_connect(host: HostSpec, address: str, port: int, via: str) -> socket.socket:
        """Open the TCP connection ourselves: options are set before the SSH handshake, and
        the failure causes are told apart."""
        where = f"{via}{address}:{port}"
        try:
            sock = socket.create_connection((address, port), timeout=host.connect_timeout)
        except ConnectionRefusedError:
            raise HostUnreachable(host.name, f"{where}: connection refused") from None
        except TimeoutError:
            raise HostUnreachable(
                host.name, f"{where}: connect timed out after {host.connect_timeout:g}s"
            ) from None
        except socket.gaierror as exc:
            raise HostUnreachable(host.name, f"{where}: cannot resolve: {exc.strerror}") from None
        except OSError as exc:
            raise HostUnreachable(host.name, f"{where}: {exc.strerror or exc}") from None
        _tune_socket(sock)
        if _TCP_QUICKACK:
            timeout = sock.gettimeout()
            sock = _QuickAckSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
            sock.settimeout(timeout)
        return sock

    def _apply_host_key_policy(
        self, client: paramiko.SSHClient, host: HostSpec, address: str, port: int, via: str
    ) -> None:
        policy = host.host_key_policy
        if policy == "ignore":
            # Nothing loaded (a stale entry would otherwise still fail as "changed"); the base
            # policy accepts whatever key is offered.
            client.set_missing_host_key_policy(paramiko.MissingHostKeyPolicy())
            return
        if policy not in ("strict", "accept-new"):
            raise HostKeyError(host.name, f"unknown host_key_policy {policy!r}")
        path = Path(host.known_hosts).expanduser() if host.known_hosts else None
        if path is not None:
            # Only this host's keys, from the file parsed once per version: parsing a
            # 1,000-line known_hosts for each of 1,000 connections took minutes.
            known = self._known_hosts(host, path)
            name = address if port == 22 else f"[{address}]:{port}"
            mine = known.lookup(name)
            for keytype, key in (mine or {}).items():
                client.get_host_keys().add(name, keytype, key)
        if policy == "strict":
            client.set_missing_host_key_policy(_RejectUnknown(host.name, via))
        elif path is None:
            raise HostKeyError(host.name, "host_key_policy accept-new needs a known_hosts file")
        else:
            client.set_missing_host_key_policy(_RecordNew(path))

    def _known_hosts(self, host: HostSpec, path: Path) -> paramiko.HostKeys:
        """``path`` parsed, cached until the file changes (size, mtime or inode: accept-new
        appends to it); a missing file holds no key."""
        with self._known_lock:
            try:
                st = os.stat(path)
            except FileNotFoundError:
                return paramiko.HostKeys()
            except OSError as exc:
                raise HostKeyError(host.name, f"cannot read known_hosts {path}: {exc}") from None
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            cached = self._known.get(str(path))
            if cached is not None and cached[0] == stamp:
                return cached[1]
            keys = paramiko.HostKeys()
            try:
                keys.load(str(path))
            except FileNotFoundError:
                pass  # every key is unknown: refused (strict) or recorded (accept-new)
            except (OSError, SSHException, ValueError) as exc:
                raise HostKeyError(host.name, f"cannot read known_hosts {path}: {exc}") from None
            self._known[str(path)] = (stamp, keys)
            return keys

    @staticmethod
    def _map_error(
        host: HostSpec, address: str, port: int, via: str, exc: BaseException
    ) -> BaseException:
        """Turn what connecting raised into drx's exception tree."""
        where = f"{via}{address}:{port}"
        if isinstance(exc, TransportError):
            return exc
        if isinstance(exc, BadHostKeyException):
            return HostKeyError(
                host.name,
                f"{via}host key changed for {address}:{port}: known_hosts has "
                f"{exc.expected_key.fingerprint}, server offers {exc.key.fingerprint}",
            )
        if isinstance(exc, AuthenticationException):
            return AuthenticationFailed(host.name, f"{where}: authentication failed: {exc}")
        if isinstance(exc, SSHException) and "authentication" in str(exc).lower():
            return AuthenticationFailed(host.name, f"{where}: {exc}")
        if isinstance(exc, ChannelException):
            return HostUnreachable(host.name, f"{where}: bastion could not connect: {exc}")
        if isinstance(exc, (SSHException, OSError, EOFError)):
            text = str(exc) or type(exc).__name__
            if "banner" in text and isinstance(exc.__context__, EOFError | ConnectionResetError):
                # closed or reset before the banner: sshd past its MaxStartups
                return ConnectionDropped(
                    host.name, f"{where}: closed before the SSH banner (sshd MaxStartups?)"
                )
            # Paramiko's banner timeout and its handshake timeout race: either message means
            # the server accepted TCP but did not complete the SSH handshake in time.
            if "banner" in text or "No existing session" in text:
                text = f"no SSH handshake within {host.connect_timeout:g}s (host hung?)"
            return HostUnreachable(host.name, f"{where}: {text}")
        return exc
