"""One long-lived starter process per SSH connection, which starts every spooled command of
that connection and streams its output back.

Starting a command through a channel of its own costs a channel open, an exec request, a
login shell, the spool's wrapper program sent on stdin and the wrapper's fork: the bulk of a
short command's time. The starter is a small Python program (``STARTER``; sent once on the
stdin of one exec channel, started with the host's ``python3`` if it has one of at least 3.8,
else the connection keeps the wrapper of ``orchestrator.transport.spool``). For each command it
receives one frame — the spool directory, the ``sudo`` words and the command's program — and:

- creates the spool directory (0700) and its ``out``/``err`` (0600) as the wrapper does: ``out``
  exclusively (the attempt's claim), then, if the run's fence exists, starts nothing (writes
  ``fenced``; see ``spool.fence_program``);
- spawns ``/bin/sh`` in a session (and process group) of its own, stdin ``/dev/null``,
  stdout/stderr appended to ``out``/``err``, reading its program from a pipe (``. /dev/fd/9``):
  nothing of it is in an argv; under ``sudo`` the program reaches the other user's shell
  through a pipe, as with the wrapper;
- writes ``pid`` (``PID PGID``: the shell leads its own group), copies new output to the
  channel every ``STREAM_EVERY_S``, and when the command ends writes ``rc`` (128 + N for a
  command killed by signal N) before the process is reaped, then sends the exit code.

drx starts it in the background when a connection is told it will run enough spooled commands
(``SSHConnection.expect_spooled``: in the pre-flight, which waits for it to be ready) or when
more come; until it says it is ready, spooled commands go through the wrapper, so its start-up
(~15 ms of python3) delays no command.

It outlives drx: at the end of its stdin it stops sending, waits for the commands it started,
writes their ``rc`` and exits. A command drx gave up on (timeout, cancel: drx then kills its
process group) gets no ``rc``, as with the wrapper. The on-disk layout is the wrapper's, so
``drx resume`` reads either alike. See docs/reference.md (spool).

Frames, drx to the starter: ``R<id> <dir bytes> <sudo bytes> <program bytes>\\n`` followed by
those bytes (the directory preceded by its run's fence and a NUL; the sudo words NUL-separated); ``S<id> <dir bytes> <argv bytes> <env bytes>\\n`` (a plain program call, spawned without a
shell: its words and the variables to export, NUL-separated); ``K<id>\\n`` (forget: no ``rc``); ``C0 <length>\\n`` then spool directories,
NUL-separated, to remove once every command has ended and drx has gone (answered ``C``). The starter to
drx: ``<kind><id> <length>\\n`` then the payload, kind ``H`` (ready), ``O``/``E``
(stdout/stderr bytes), ``X`` (exit code), ``F`` (not started: why), ``P`` (the pid of a
command drx gave up on, in answer to ``K``), ``C`` (a ``C`` frame taken). What the starter has to say in one turn goes out
in one write (one SSH packet).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import paramiko
from paramiko.ssh_exception import SSHException

from orchestrator.errors import TransportError
from orchestrator.transport.base import Sudo, sudo_argv
from orchestrator.transport.spool import FENCED_TEXT, STREAM_EVERY_S

#: the shell text the other user's shell runs under sudo: its program comes on stdin
SUDO_INNER = '__drx_s=$(cat); eval "$__drx_s" </dev/null'

#: The starter itself (Python ≥ 3.8, standard library only, no site: it starts in ~15 ms).
STARTER = r"""
import os, select, sys, time
try:
    import _signal as signal  # the C module: signal.py's enums cost ~4 ms of start-up
except ImportError:
    import signal
if sys.version_info < (3, 8) or not hasattr(os, "posix_spawn"):
    sys.exit(127)
os.umask(0o077)
EVERY = __EVERY__
# the environment the login shell gave, without the LC_CTYPE python sets for itself in a C
# locale (PEP 538): the shell passes its own LC_CTYPE, "x" + the value or "" when unset
ENV = dict(os.environ)
if sys.argv[1:] == [""]:
    ENV.pop("LC_CTYPE", None)
elif sys.argv[1:]:
    ENV["LC_CTYPE"] = sys.argv[1][1:]
wake_r, wake_w = os.pipe()
os.set_blocking(wake_w, False)
signal.set_wakeup_fd(wake_w)
signal.signal(signal.SIGCHLD, lambda s, f: None)
gone = False
pending = []
size = 0
def send(kind, jid, data=b""):
    global size
    if not gone:
        pending.append(b"%s%d %d\n" % (kind, jid, len(data)) + data)
        size += len(data)
        if size > 1 << 20:
            flush()
def flush():
    global gone, size
    b = b"".join(pending)
    del pending[:]
    size = 0
    try:
        while b and not gone:
            b = b[os.write(1, b):]
    except OSError:
        gone = True
jobs = {}
ids = {}
class Job:
    pass
def copy(job):
    for fd, kind in ((job.out, b"O"), (job.err, b"E")):
        while True:
            data = os.read(fd, 1 << 16)
            if not data:
                break
            send(kind, job.id, data)
def feed(fd, data):
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        pass
    os.close(fd)
def put(path, data):
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    except OSError:
        pass  # (the directory removed under it: nothing to keep the outcome in)
def start(jid, d, sudo, prog, argv=None, extra=None):
    fence, d = d.split("\0", 1) if "\0" in d else (None, d)
    append = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    try:
        if not os.path.isdir(d):
            os.makedirs(d, 0o700)
        # the claim (out, exclusively), then the run's fence: as the wrapper does
        ow = os.open(d + "/out", append | os.O_EXCL, 0o600)
        ew = os.open(d + "/err", append, 0o600)
        out, err = os.open(d + "/out", os.O_RDONLY), os.open(d + "/err", os.O_RDONLY)
    except OSError as e:
        send(b"F", jid, str(e).encode())
        return
    if fence is not None and os.path.lexists(fence):
        put(d + "/fenced", b"")
        for fd in (ow, ew, out, err):
            os.close(fd)
        send(b"F", jid, b"__FENCED__")
        return
    if argv is not None:
        spawn(jid, d, argv, extra, ow, ew, out, err)
        return
    r, w = os.pipe()
    acts = [(os.POSIX_SPAWN_DUP2, ow, 1), (os.POSIX_SPAWN_DUP2, ew, 2)]
    if sudo:
        words = ["sh", "-c", '"$@"; exit "$?"', "sh"] + sudo + ["sh", "-c", __INNER__]
        acts.insert(0, (os.POSIX_SPAWN_DUP2, r, 0))
    else:
        words = ["sh", "-c", ". /dev/fd/9"]
        # __drx_d: the attempt's directory, as the wrapper's runner has it
        here = os.path.abspath(d).replace("'", "'\\''").encode()
        prog = b"exec 9<&-\n__drx_d='" + here + b"'\n" + prog
        acts.insert(0, (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0))
        if r == 9:
            os.set_inheritable(r, True)
        else:
            acts.append((os.POSIX_SPAWN_DUP2, r, 9))
    try:
        pid = os.posix_spawn("/bin/sh", words, ENV, file_actions=acts, setsid=True,
                             setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))
    except OSError as e:
        for fd in (ow, ew, r, w, out, err):
            os.close(fd)
        send(b"F", jid, str(e).encode())
        return
    for fd in (ow, ew, r):
        os.close(fd)
    if len(prog) <= 60000:
        feed(w, prog)
    else:
        import threading
        threading.Thread(target=feed, args=(w, prog), daemon=True).start()
    job = Job()
    job.id, job.pid, job.dir, job.forget, job.next = jid, pid, d, False, time.monotonic() + 0.01
    job.out, job.err = out, err
    put(d + "/pid", b"%d %d\n" % (pid, pid))
    jobs[pid] = ids[jid] = job
def spawn(jid, d, argv, extra, ow, ew, out, err):
    # a plain program call (words only): spawned as the shell's exec would run it, without
    # the shell; a program that cannot be run ends as the shell says it (127, 126)
    env = dict(ENV)
    env.update(extra)
    acts = [(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, ow, 1), (os.POSIX_SPAWN_DUP2, ew, 2)]
    try:
        pid = os.posix_spawnp(argv[0], argv, env, file_actions=acts, setsid=True,
                              setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))
    except OSError as e:
        rc = 127 if isinstance(e, FileNotFoundError) else 126
        why = "not found" if rc == 127 else (e.strerror or str(e))
        os.write(ew, ("%s: %s\n" % (argv[0], why)).encode())
        for fd in (ow, ew):
            os.close(fd)
        job = Job()
        job.id, job.dir, job.forget, job.out, job.err = jid, d, False, out, err
        copy(job)
        put(d + "/rc", b"%d\n" % rc)
        send(b"X", jid, b"%d" % rc)
        os.close(out)
        os.close(err)
        return
    for fd in (ow, ew):
        os.close(fd)
    job = Job()
    job.id, job.pid, job.dir, job.forget, job.next = jid, pid, d, False, time.monotonic() + 0.01
    job.out, job.err = out, err
    put(d + "/pid", b"%d %d\n" % (pid, pid))
    jobs[pid] = ids[jid] = job
def reap():
    while jobs:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if info is None or not info.si_pid:
            return
        job = jobs.pop(info.si_pid, None)
        if job is not None:
            ids.pop(job.id, None)
            rc = info.si_status if info.si_code == os.CLD_EXITED else 128 + info.si_status
            if not job.forget:
                copy(job)
                put(job.dir + "/rc", b"%d\n" % rc)
                send(b"X", job.id, b"%d" % rc)
            os.close(job.out)
            os.close(job.err)
        os.waitpid(info.si_pid, 0)
# one trial spawn before saying ready: a python that cannot spawn as start() does (no
# POSIX_SPAWN_SETSID) exits 127 here, and the connection keeps the wrapper
try:
    os.waitpid(os.posix_spawn("/bin/sh", ["sh", "-c", ":"], ENV, setsid=True), 0)
except Exception:
    sys.exit(127)
def remove(path):
    try:
        with os.scandir(path) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    remove(e.path)
                else:
                    os.unlink(e.path)
        os.rmdir(path)
    except OSError:
        pass
buf = b""
eof = False
spent = []
send(b"H", 0)
while not (eof and not jobs):
    flush()
    wait = None
    if jobs:
        wait = max(0.0, min(j.next for j in jobs.values()) - time.monotonic())
    ready = select.select([wake_r] if eof else [wake_r, 0], [], [], wait)[0]
    if wake_r in ready:
        os.read(wake_r, 4096)
    if 0 in ready:
        data = os.read(0, 1 << 20)
        if not data:
            eof = gone = True
        buf += data
        while True:
            nl = buf.find(b"\n")
            if nl < 0:
                break
            head = buf[1:nl].split()
            if buf[:1] == b"C":
                n = int(head[1])
                if len(buf) < nl + 1 + n:
                    break
                spent.extend(buf[nl + 1:nl + 1 + n].decode().split("\0"))
                buf = buf[nl + 1 + n:]
                send(b"C", 0)
                continue
            if buf[:1] == b"K":
                job = ids.get(int(head[0]))
                if job is not None:
                    job.forget = True
                    send(b"P", job.id, b"%d" % job.pid)
                buf = buf[nl + 1:]
                continue
            jid, a, b, c = (int(x) for x in head)
            if len(buf) < nl + 1 + a + b + c:
                break
            p = nl + 1
            d = buf[p:p + a].decode()
            if buf[:1] == b"S":
                argv = [w.decode() for w in buf[p + a:p + a + b].split(b"\0")]
                extra = dict(kv.decode().split("=", 1) for kv in buf[p + a + b:p + a + b + c].split(b"\0") if kv)
                buf = buf[p + a + b + c:]
                start(jid, d, [], b"", argv, extra)
                continue
            sudo = [w.decode() for w in buf[p + a:p + a + b].split(b"\0")] if b else []
            prog = buf[p + a + b:p + a + b + c]
            buf = buf[p + a + b + c:]
            start(jid, d, sudo, prog)
    reap()
    now = time.monotonic()
    for job in list(jobs.values()):
        if job.next <= now:
            job.next = now + EVERY
            if not job.forget:
                copy(job)
# spent attempts drx asked to remove (C frames), once every command has ended; their parents
# (host, step, run) too once empty
for d in spent:
    remove(d)
    for _ in range(3):
        d = os.path.dirname(d)
        try:
            os.rmdir(d)
        except OSError:
            break
"""
STARTER = STARTER.replace("__EVERY__", repr(STREAM_EVERY_S))
STARTER = STARTER.replace("__INNER__", repr(SUDO_INNER))
STARTER = STARTER.replace('b"__FENCED__"', repr(f"drx: {FENCED_TEXT}".encode()))

#: the interpreter the starter runs with, looked up on the host's PATH
PYTHON = "python3"
#: the exec request: the host's python3, its program read from the channel's stdin (isolated,
#: no site: nothing of the environment changes what it imports); without one, exit 127 and the
#: connection keeps the wrapper
BOOT = (
    "command -v {python} >/dev/null 2>&1 || exit 127; "
    "exec {python} -I -S -c 'import sys; exec(sys.stdin.buffer.read({size}))' "
    '"${{LC_CTYPE+x}}${{LC_CTYPE-}}"'
)


#: frames of output held for one command before the reader waits for drx to take them (the
#: starter sends at most 64 KiB a frame): what stands in for the channel window's back-pressure
QUEUED_FRAMES = 64


@dataclass
class Job:
    """One command as drx follows it: what the starter said about it, in order."""

    id: int
    events: queue.Queue[tuple[str, bytes]] = field(
        default_factory=lambda: queue.Queue(QUEUED_FRAMES)
    )
    pid: int | None = None
    #: drx no longer follows it (nothing waits for its events)
    dropped: bool = False


class Starter:
    """drx's end of one starter: sends commands, and a reader thread hands each command's
    frames to its ``Job``. ``dead`` once the channel has ended (every pending job then gets a
    ``D`` event)."""

    def __init__(self, open_channel: Callable[[], paramiko.Channel]) -> None:
        #: set when the starter has said it is ready (``worked``), or has ended before
        self.ready = threading.Event()
        self.worked = False
        self.dead = False
        self.chan: paramiko.Channel | None = None
        self._send_lock = threading.Lock()
        self._jobs: dict[int, Job] = {}
        self._jobs_lock = threading.Lock()
        self._next_id = 1
        #: set when the starter has taken a ``C`` frame
        self._taken = threading.Event()
        # opened, started and read on a thread of its own: the command that asked for it
        # goes on at once (through the wrapper)
        self._reader = threading.Thread(
            target=self._read, args=(open_channel,), name="drx-starter", daemon=True
        )
        self._reader.start()

    def submit(
        self,
        directory: str,
        sudo: Sudo,
        program: str,
        argv: list[str] | None = None,
        env: Mapping[str, str] | None = None,
        fence: str | None = None,
    ) -> Job:
        """Start ``program`` under ``directory`` (absolute, or relative to the login home) —
        or, with ``argv``, that plain program call with ``env`` exported, without a shell;
        not if the run's ``fence`` (a path as ``directory``) exists (spool.fence_program).
        Raises ``OSError`` when the starter is gone."""
        kind = "R"
        if argv is not None:
            kind = "S"
            words = "\0".join(argv).encode()
            text = "\0".join(f"{k}={v}" for k, v in (env or {}).items()).encode()
        else:
            words = "\0".join(sudo_argv(sudo)).encode() if sudo else b""
            text = program.encode()
        where = directory.encode() if fence is None else f"{fence}\0{directory}".encode()
        with self._jobs_lock:
            if self.dead:
                raise OSError("starter gone")
            job = Job(self._next_id)
            self._next_id += 1
            self._jobs[job.id] = job
        head = f"{kind}{job.id} {len(where)} {len(words)} {len(text)}\n".encode()
        try:
            with self._send_lock:
                assert self.chan is not None  # submitted to only once it has worked
                self.chan.sendall(head + where + words + text)
        except (SSHException, OSError, EOFError) as exc:
            self.drop(job)
            raise OSError(str(exc)) from exc
        return job

    def forget(self, job: Job) -> None:
        """Tell the starter drx has given up on ``job``: it writes no ``rc`` for it, and
        answers with its pid (a ``P`` event)."""
        with contextlib.suppress(SSHException, OSError, EOFError), self._send_lock:
            if self.chan is not None:
                self.chan.sendall(f"K{job.id}\n".encode())

    def discard(self, directories: list[str], wait_s: float) -> bool:
        """Have the starter remove ``directories`` (spool paths) once every command it started
        has ended and drx has gone; whether it said, within ``wait_s``, that it will."""
        payload = "\0".join(directories).encode()
        with self._jobs_lock:
            if self.dead:
                return False
            self._taken.clear()
        try:
            with self._send_lock:
                assert self.chan is not None
                self.chan.sendall(f"C0 {len(payload)}\n".encode() + payload)
        except (SSHException, OSError, EOFError):
            return False
        return self._taken.wait(wait_s) and not self.dead

    def drop(self, job: Job) -> None:
        """Stop following ``job``."""
        job.dropped = True
        with self._jobs_lock:
            self._jobs.pop(job.id, None)

    def _read(self, open_channel: Callable[[], paramiko.Channel]) -> None:
        buf = b""
        try:
            self.chan = chan = open_channel()
            chan.exec_command(BOOT.format(python=PYTHON, size=len(STARTER.encode())))
            chan.sendall(STARTER.encode())
            while True:
                data = chan.recv(1 << 20)
                if not data:
                    break
                buf += data
                at = 0
                while True:
                    nl = buf.find(b"\n", at)
                    if nl < 0:
                        break
                    kind, _, size = buf[at:nl].partition(b" ")
                    end = nl + 1 + int(size)
                    if len(buf) < end:
                        break
                    self._deliver(kind[:1].decode(), int(kind[1:]), buf[nl + 1 : end])
                    at = end
                buf = buf[at:]
        except (SSHException, OSError, EOFError, ValueError, TransportError):
            pass
        finally:
            with self._jobs_lock:
                self.dead = True
                pending = list(self._jobs.values())
                self._jobs.clear()
            for job in pending:
                self._put(job, "D", b"")
            self.ready.set()
            self._taken.set()
            if self.chan is not None:
                with contextlib.suppress(Exception):
                    self.chan.close()

    def _deliver(self, kind: str, jid: int, payload: bytes) -> None:
        if kind == "H":
            self.worked = True
            self.ready.set()
            return
        if kind == "C":
            self._taken.set()
            return
        with self._jobs_lock:
            job = self._jobs.get(jid)
            if job is not None and kind in "XFP":
                del self._jobs[jid]
        if job is not None:
            self._put(job, kind, payload)

    @staticmethod
    def _put(job: Job, kind: str, payload: bytes) -> None:
        """Hand an event to ``job``'s follower, waiting while it has too many to take (unless
        it stops following)."""
        while not job.dropped:
            try:
                job.events.put((kind, payload), timeout=0.1)
                return
            except queue.Full:
                continue
