"""Where drx keeps what lives between commands: the state (active site, last run), the run lock,
each run's journal, plan and summary, and the list of runs.

``Store`` is the one interface for all of it; the engine, ``runs``, ``report``, ``failback`` and
``resume`` go through it and never touch files themselves. ``LocalStore`` keeps it in a state
directory (docs/reference.md, "State directory")::

    .drx/state.json                    the active site and the last run
    .drx/lock                          held (flock) while a run executes
    .drx/runs/<run-id>/journal.jsonl   append-only events, one JSON object a line
    .drx/runs/<run-id>/plan.json       the plan as executed
    .drx/runs/<run-id>/summary.json    written when the run ends

A second implementation (a distributed store) plugs in by implementing ``Store``, ``RunLock``
and ``JournalSink``. Full command output is not part of the store: it always stays in the local
directory (``Store.local_dir``), beside anything a store could not write.
"""

from __future__ import annotations

import abc
import contextlib
import datetime
import enum
import errno
import fcntl
import json
import os
import stat
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, TypedDict, Unpack

from orchestrator.bulk import paused_gc
from orchestrator.errors import JournalError, RefusedError, StateDirError
from orchestrator.record.jsonfast import dumpb, loads

if TYPE_CHECKING:
    from orchestrator.record.events import JournalEvent
    from orchestrator.record.summary import RunSummary

#: the longest the local journal's syncer rests between two fsyncs
SYNC_PAUSE_S = 0.005


@dataclass(frozen=True, slots=True)
class PlannedStep:
    """One step of plan.json as read back: its needs and how long it was predicted to take."""

    id: str
    needs: tuple[str, ...] = ()
    predicted_s: float | None = None


@dataclass(frozen=True, slots=True)
class PlanRecord:
    """The part of a run's plan.json drx reads back (the progress of a running run); copies
    and archives keep the whole document (``Store.read_plan_document``)."""

    steps: tuple[PlannedStep, ...] = ()
    predicted_health_s: float | None = None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> PlanRecord:
        """Tolerantly: a step without an id is left out, a mistyped figure reads as None."""
        from orchestrator.record.document import as_number

        steps = []
        for s in raw.get("steps") or ():
            if not isinstance(s, Mapping) or s.get("id") is None:
                continue
            needs = s.get("needs") or ()
            steps.append(
                PlannedStep(
                    str(s["id"]),
                    tuple(str(n) for n in needs) if isinstance(needs, list | tuple) else (),
                    as_number(s.get("predicted_s")),
                )
            )
        return cls(tuple(steps), as_number(raw.get("predicted_health_s")))


class LockState(enum.Enum):
    """What the holder of the run lock may do now."""

    HELD = "held"  # carry on
    IN_DOUBT = "in_doubt"  # start nothing new until the lock is confirmed again
    LOST = "lost"  # another controller may own the run: stop


class RunLock(abc.ABC):
    """The run lock while it is held. The engine asks ``state()`` before it starts anything new
    (a step, an attempt, a poll) and releases the lock when the run ends."""

    #: why the lock was lost (set with ``LockState.LOST``)
    lost_reason: str | None = None

    def state(self) -> LockState:
        return LockState.HELD

    @abc.abstractmethod
    def release(self) -> None: ...

    def __enter__(self) -> RunLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class JournalSink(abc.ABC):
    """Where a run's journal lines go. ``write`` takes one complete line (bytes ending in a
    newline) and must return quickly: it is on the scheduler's path."""

    @abc.abstractmethod
    def write(self, line: bytes) -> None: ...

    def write_lines(self, lines: list[bytes]) -> None:
        """Several complete lines, in order (the journal hands them over in batches)."""
        for line in lines:
            self.write(line)

    @abc.abstractmethod
    def close(self) -> None:
        """Make everything written durable, then release the sink."""


class Store(abc.ABC):
    """Everything drx keeps between commands. See the module docstring."""

    #: local directory for what never leaves this controller: output logs, debug.log
    local_dir: Path

    @property
    @abc.abstractmethod
    def location(self) -> str:
        """Where the store is, for messages (``.drx``, ``etcd://…/prefix``)."""

    @abc.abstractmethod
    def exists(self) -> bool:
        """Whether anything has been stored yet (no state, no runs: False)."""

    # -- state ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def read_state(self) -> State: ...

    @abc.abstractmethod
    def update_state(self, **changes: Unpack[StateFields]) -> State:
        """Merge ``changes`` into the state atomically; returns the new state."""

    # -- the lock ------------------------------------------------------------------------------
    @abc.abstractmethod
    def acquire(self, holder: str) -> RunLock:
        """Take the run lock for ``holder`` (a run id) or raise ``RefusedError`` naming the
        current holder."""

    @abc.abstractmethod
    def lock_holder(self) -> str | None:
        """Who holds the lock now (``<run-id> …``), or None."""

    # -- runs ----------------------------------------------------------------------------------
    @abc.abstractmethod
    def run_ids(self) -> list[str]:
        """Every run id, oldest first (ids sort by start time)."""

    @abc.abstractmethod
    def has_run(self, run_id: str) -> bool: ...

    @abc.abstractmethod
    def create_run(self, run_id: str, plan_doc: dict[str, Any], lock: RunLock) -> JournalSink:
        """Record ``plan.json`` of a new run and open its journal, under ``lock``."""

    @abc.abstractmethod
    def read_journal(self, run_id: str) -> list[dict[str, Any]]:
        """Every line of a run's journal as written, in order, every field kept (for copies
        and archives); a torn last line is dropped."""

    def read_events(self, run_id: str) -> list[JournalEvent]:
        """Every event of a run's journal, typed, in order (kinds this drx does not know are
        left out)."""
        # imported when first needed: commands that read no events skip building its classes
        from orchestrator.record.events import parse

        return parse(self.read_journal(run_id))

    @abc.abstractmethod
    def write_summary_document(self, run_id: str, text: str, lock: RunLock) -> None:
        """Store a run's summary.json as ``text`` (a copy keeps another drx's document as
        it is)."""

    @abc.abstractmethod
    def read_summary_document(self, run_id: str) -> dict[str, Any] | None:
        """A run's summary.json as written, every key kept (for copies and archives)."""

    def write_summary(self, run_id: str, summary: RunSummary, lock: RunLock) -> None:
        """Store a run's summary (summary.json), under ``lock``."""
        self.write_summary_document(run_id, document_json(summary.to_dict()), lock)

    def read_summary(self, run_id: str) -> RunSummary | None:
        """A run's summary, typed; None while the run has none (running or crashed)."""
        from orchestrator.record.summary import RunSummary

        doc = self.read_summary_document(run_id)
        return RunSummary.from_dict(doc) if doc is not None else None

    @abc.abstractmethod
    def read_plan_document(self, run_id: str) -> dict[str, Any] | None:
        """A run's plan.json as written, every key kept (for copies and archives)."""

    def read_plan(self, run_id: str) -> PlanRecord | None:
        """What drx reads back from a run's plan.json (its predictions); None without one."""
        doc = self.read_plan_document(run_id)
        return PlanRecord.from_dict(doc) if doc is not None else None

    def output_dir(self, run_id: str) -> Path:
        """Local directory for a run's full command output."""
        return inside(self.local_dir / "runs", run_id, "output")

    def new_run_id(self, direction: str, site: str) -> str:
        """``YYYYMMDDTHHMMSS.fffZ-<direction>-<site>``, with a suffix if taken."""
        now = datetime.datetime.now(datetime.UTC)
        stamp = now.strftime("%Y%m%dT%H%M%S.") + f"{now.microsecond // 1000:03d}Z"
        base = f"{stamp}-{direction}-{site}"
        run_id, n = base, 1
        while self.has_run(run_id):
            n += 1
            run_id = f"{base}-{n}"
        return run_id


@dataclass(frozen=True, slots=True)
class RunbookState:
    """One runbook's part of the state: its active site, since when, its last run."""

    active: str | None = None
    active_since: str | None = None
    last_run: str | None = None

    def to_json(self) -> dict[str, str]:
        return {
            k: v
            for k, v in (
                ("active", self.active),
                ("active_since", self.active_since),
                ("last_run", self.last_run),
            )
            if v is not None
        }

    @classmethod
    def from_json(cls, doc: object) -> RunbookState:
        if not isinstance(doc, Mapping):
            return cls()
        return cls(
            _text(doc.get("active")), _text(doc.get("active_since")), _text(doc.get("last_run"))
        )


class StateFields(TypedDict, total=False):
    """What ``Store.update_state`` may change (each a field of ``State``)."""

    active: str | None
    active_since: str | None
    last_run: str | None
    running: str | None
    runbooks: dict[str, RunbookState] | None
    other: dict[str, Any]


@dataclass(frozen=True, slots=True)
class State:
    """state.json (docs/reference.md, "State directory"): the active site, the last run and
    the run under way — state-wide, and per runbook once two runbooks share a store (a
    database tier, a web tier) and fail over independently."""

    active: str | None = None
    active_since: str | None = None
    last_run: str | None = None
    #: the run holding the lock, while it runs
    running: str | None = None
    #: per runbook; None: a state written before runbooks were kept apart
    runbooks: dict[str, RunbookState] | None = None
    #: fields this drx does not know (a newer one wrote them), kept as they are
    other: dict[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        """Whether anything was ever recorded."""
        return self != State()

    def runbook(self, name: str) -> RunbookState:
        """One runbook's part. A state written before runbooks were kept apart counts for
        every runbook."""
        if self.runbooks is not None:
            return self.runbooks.get(name, RunbookState())
        return RunbookState(self.active, self.active_since, self.last_run)

    def fields(self) -> StateFields:
        """Every field, as ``update_state`` takes them (a whole state copied elsewhere)."""
        return StateFields(
            active=self.active,
            active_since=self.active_since,
            last_run=self.last_run,
            running=self.running,
            runbooks=self.runbooks,
            other=self.other,
        )

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = dict(self.other)
        for key in _SCALARS:
            value = getattr(self, key)
            if value is not None or key in self.other or key == "running":
                doc[key] = value
        if self.runbooks is not None:
            doc["runbooks"] = {name: rb.to_json() for name, rb in self.runbooks.items()}
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | None) -> State:
        if not doc:
            return cls()
        books = doc.get("runbooks")
        return cls(
            _text(doc.get("active")),
            _text(doc.get("active_since")),
            _text(doc.get("last_run")),
            _text(doc.get("running")),
            runbooks=(
                {str(k): RunbookState.from_json(v) for k, v in books.items()}
                if isinstance(books, Mapping)
                else None
            ),
            other={k: v for k, v in doc.items() if k not in _SCALARS and k != "runbooks"},
        )


#: the state-wide fields of state.json, in ``State``'s order
_SCALARS = ("active", "active_since", "last_run", "running")


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def runbook_changes(state: State, runbook: str, **changes: str | None) -> StateFields:
    """The ``update_state`` changes that set ``changes`` for ``runbook``. The state-wide
    fields stay as well, naming the last run and what it made active, for readers of the
    single-runbook layout; drx itself reads the per-runbook entries once they exist."""
    books = dict(state.runbooks or {})
    books[runbook] = replace(state.runbook(runbook), **changes)
    out = StateFields(runbooks=books)
    if "active" in changes:
        out["active"] = changes["active"]
    if "active_since" in changes:
        out["active_since"] = changes["active_since"]
    if "last_run" in changes:
        out["last_run"] = changes["last_run"]
    return out


def open_store(state_dir: Path, state_url: str | None = None) -> Store:
    """The store for the common options: etcd when ``state_url`` is given (command output and
    anything unwritten then stay in ``state_dir``), else the local state directory."""
    if state_url:
        from orchestrator.record.etcd_store import EtcdStore, StateURL

        return EtcdStore(StateURL.parse(state_url), state_dir)
    return LocalStore(state_dir)


# -- the local directory ----------------------------------------------------------------------


def open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading if it is a regular file, without following a symlink: a
    file of the state directory replaced by a link (to /etc/passwd, say) is not read through.
    ``OSError`` otherwise (``ELOOP`` for a symlink)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def read_regular(path: Path) -> bytes:
    """The bytes of a regular file of the state directory (``open_regular``)."""
    with open_regular(path) as fh:
        return fh.read()


def is_regular(path: Path) -> bool:
    """Whether ``path`` is a regular file itself, not a symlink to one."""
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def is_real_dir(path: Path) -> bool:
    """Whether ``path`` is a directory itself, not a symlink to one."""
    try:
        return stat.S_ISDIR(path.lstat().st_mode)
    except OSError:
        return False


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = loads(read_regular(path))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


#: what drx writes in a state directory is for its owner only: command output, journals and
#: summaries can hold what nobody declared secret (docs/reference.md, "State directory")
PRIVATE_DIR, PRIVATE_FILE = 0o700, 0o600


def private_dir(path: Path, base: Path | None = None) -> None:
    """Create ``path`` (and its missing parents below ``base``) owner-only, 0700.

    The path is normalised first and must stay inside ``base``: a name that walked out of the
    state directory (``runs/<id>/../..``) is refused, never created. Only a directory this call
    created is chmodded — never one that existed (``/`` once became 0700 that way)."""
    target = Path(os.path.abspath(path))
    if base is not None:
        root = Path(os.path.abspath(base))
        if not target.is_relative_to(root):
            raise StateDirError(f"{path} is outside the state directory {base}")
        private_dir(root)
    missing = []
    current = target
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:
            continue  # made by someone else meanwhile: not ours to chmod
        with contextlib.suppress(OSError):
            directory.chmod(PRIVATE_DIR)  # mkdir's mode is reduced by the umask


def inside(base: Path, *names: str) -> Path:
    """``base / name / …`` where each name must be one plain path component (a run id, a step
    id, a host name): names come from runbooks and inventories, and one that is ``..`` or holds
    a ``/`` must not reach a file outside ``base``."""
    for name in names:
        if not name or name in (".", "..") or "/" in name or "\0" in name:
            raise StateDirError(f"{name!r} is not a plain name: refusing a path outside {base}")
    return base.joinpath(*names)


def private_open(path: Path, flags: int) -> int:
    """``os.open`` of a file drx writes, created owner-only (0600). A symlink in its place is
    not followed (``ELOOP``): with it, whoever could write the directory could make drx
    truncate or overwrite any file its user can."""
    try:
        return os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StateDirError(
                f"{path} is a symbolic link: drx writes no file through one"
            ) from exc
        raise


def unsafe_state_dir(state_dir: Path) -> str | None:
    """Why ``state_dir`` (or its ``runs/``) must not be used, or None: owned by another user,
    or writable by group or others — then someone else could plant links or files in it that
    drx would write through or report as its own. A directory not made yet is safe."""
    for directory in (state_dir, state_dir / "runs"):
        try:
            st = directory.stat()
        except OSError:
            continue
        if st.st_uid != os.geteuid():
            return f"state directory {directory} is owned by another user (uid {st.st_uid})"
        if st.st_mode & 0o022:
            mode = oct(st.st_mode & 0o777)[2:]
            return (
                f"state directory {directory} is writable by others (mode {mode}): "
                f"chmod 700 {directory}"
            )
    return None


def readable_by_others(state_dir: Path) -> bool:
    """Whether a state directory lets others than its owner in (drx then warns)."""
    try:
        return bool(state_dir.stat().st_mode & 0o077)
    except OSError:
        return False


def _write_atomic(path: Path, text: str) -> None:
    """Write a temp file, fsync, rename: readers see the old or the new file, never half. The
    temp file is new (``O_EXCL``, a name nobody could have planted); the rename replaces a
    symlink at ``path`` rather than writing through it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class LocalStore(Store):
    """A state directory on this controller's disk."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.local_dir = state_dir

    @property
    def location(self) -> str:
        return str(self.state_dir)

    def exists(self) -> bool:
        return is_regular(self.state_dir / "state.json") or is_real_dir(self._runs)

    @property
    def _runs(self) -> Path:
        return self.state_dir / "runs"

    def _ensure_dir(self) -> None:
        private_dir(self.state_dir)

    # -- state
    def read_state(self) -> State:
        return State.from_json(_read_json(self.state_dir / "state.json"))

    def update_state(self, **changes: Unpack[StateFields]) -> State:
        state = replace(self.read_state(), **changes)
        self._ensure_dir()
        text = json.dumps(state.to_json(), indent=2, sort_keys=True)
        _write_atomic(self.state_dir / "state.json", text)
        return state

    # -- the lock
    def acquire(self, holder: str) -> RunLock:
        self._ensure_dir()
        return _FileLock(self.state_dir, holder)

    def lock_holder(self) -> str | None:
        path = self.state_dir / "lock"
        if not is_regular(path):
            return None
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown holder"
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    # -- runs
    def run_ids(self) -> list[str]:
        if not is_real_dir(self._runs):
            return []
        # a symlinked run directory or journal is not a run drx recorded
        return sorted(
            p.name
            for p in self._runs.iterdir()
            if is_real_dir(p) and is_regular(p / "journal.jsonl")
        )

    def has_run(self, run_id: str) -> bool:
        path = self._runs / run_id
        return path.exists() or path.is_symlink()

    def create_run(self, run_id: str, plan_doc: dict[str, Any], lock: RunLock) -> JournalSink:
        run_dir = inside(self._runs, run_id)
        if run_dir.exists() or run_dir.is_symlink():
            raise FileExistsError(errno.EEXIST, "run directory exists", str(run_dir))
        private_dir(run_dir / "output", self.state_dir)
        _write_atomic(run_dir / "plan.json", document_json(plan_doc))
        return _FileSink(run_dir / "journal.jsonl")

    def read_journal(self, run_id: str) -> list[dict[str, Any]]:
        path = inside(self._runs, run_id, "journal.jsonl")
        if not (is_real_dir(path.parent) and is_regular(path)):
            from orchestrator.errors import UsageError

            raise UsageError(f"no run '{run_id}' in {self.location}")
        try:
            raw = read_regular(path)
        except OSError as exc:
            raise JournalError(f"cannot read journal {path}: {exc.strerror}") from exc
        return parse_journal(raw, str(path))

    def write_summary_document(self, run_id: str, text: str, lock: RunLock) -> None:
        _write_atomic(self._runs / run_id / "summary.json", text)

    def read_summary_document(self, run_id: str) -> dict[str, Any] | None:
        return _read_json(self._runs / run_id / "summary.json")

    def read_plan_document(self, run_id: str) -> dict[str, Any] | None:
        return _read_json(self._runs / run_id / "plan.json")


class _FileLock(RunLock):
    """``.drx/lock`` held with flock for the life of the run; it names the holder."""

    def __init__(self, state_dir: Path, holder: str) -> None:
        self._fd = private_open(state_dir / "lock", os.O_RDWR)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held_by = ""
            with contextlib.suppress(OSError):
                held_by = os.pread(self._fd, 4096, 0).decode("utf-8", "replace").strip()
            os.close(self._fd)
            raise RefusedError(
                f"another run holds the lock on {state_dir}: {held_by or 'unknown holder'}"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{holder} (pid {os.getpid()})\n".encode(), 0)
        self._released = False

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)


class _FileSink(JournalSink):
    """``journal.jsonl`` on the local disk.

    Each batch the journal hands over (``Journal``: the events of the last ~2 ms) is written with
    one ``write(2)``, so it survives the controller being killed (SIGKILL) — the kernel has it. A
    syncer thread then ``fsync``s the file within ~5 ms of every write (the lines of that interval
    share one fsync), so events also survive a machine crash without putting an fsync on the
    scheduler's path. ``close()`` fsyncs what is left.
    """

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        self.path = path
        self._fd = private_open(path, os.O_WRONLY | os.O_APPEND)
        self._lock = threading.Lock()
        self._dirty = threading.Event()
        self._pending = False  # written but not yet fsynced
        self._closed = False
        self._syncer: threading.Thread | None = None
        if fsync and stat.S_ISREG(os.fstat(self._fd).st_mode):
            self._syncer = threading.Thread(
                target=self._sync_loop, name="journal-fsync", daemon=True
            )
            self._syncer.start()

    def write(self, line: bytes) -> None:
        self.write_lines([line])

    def write_lines(self, lines: list[bytes]) -> None:
        data = b"".join(lines)
        with self._lock:
            if self._closed:
                raise JournalError(f"journal {self.path} is closed")
            while data:  # a regular file takes it all at once; a pipe may not
                data = data[os.write(self._fd, data) :]
            wake = not self._pending
            self._pending = True
        if wake and self._syncer is not None:  # one wake-up per batch, not per event
            self._dirty.set()

    def _sync_loop(self) -> None:
        while True:
            self._dirty.wait()
            self._dirty.clear()
            with self._lock:
                if self._closed:
                    return
                fd = self._fd
                self._pending = False
            try:
                os.fsync(fd)
            except OSError:
                return
            # write(2) and fsync(2) on one file serialise in the kernel: pausing between fsyncs
            # keeps writers from queueing behind a syncer that never rests (it cut a 10,000-step
            # run's cost per step in half), and an event still reaches the disk within ~5 ms
            time.sleep(SYNC_PAUSE_S)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._syncer is not None:
                os.fsync(self._fd)
            os.close(self._fd)
        self._dirty.set()


def file_sink(path: Path, *, fsync: bool = True) -> JournalSink:
    """A journal written to ``path`` (tests and scratch journals; ``os.devnull`` discards)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return _FileSink(path, fsync=fsync)


def parse_journal(raw: bytes, name: str) -> list[dict[str, Any]]:
    """Every event of a journal's bytes; a torn last line (the writer died mid-write) is
    dropped, a corrupt line elsewhere is an error naming ``name`` and the line."""
    events: list[dict[str, Any]] = []
    lines = raw.split(b"\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            events.append(loads(line))
        except ValueError as exc:
            if number >= len(lines) - 1:  # the last line, cut short by a crash
                break
            raise JournalError(f"{name}:{number}: corrupt journal line") from exc
    return events


@paused_gc()
def document_json(doc: dict[str, Any]) -> str:
    """summary.json / plan.json text: a top-level field a line and a step a line. Readable,
    and each line written in one call of a compiled encoder (``indent=`` falls back to the
    standard library's pure-Python one, which took most of the end of a 10,000-step run)."""
    lines = []
    for key, value in doc.items():
        if key == "steps" and isinstance(value, list) and value:
            steps = b",\n    ".join([dumpb(step) for step in value])
            lines.append(b'  "steps": [\n    ' + steps + b"\n  ]")
        else:
            lines.append(b"  " + dumpb(key) + b": " + dumpb(value))
    return (b"{\n" + b",\n".join(lines) + b"\n}\n").decode()


@contextlib.contextmanager
def held(store: Store, holder: str) -> Iterator[RunLock]:
    """``with held(store, run_id) as lock:`` — the run lock for the block."""
    lock = store.acquire(holder)
    try:
        yield lock
    finally:
        lock.release()
