"""The append-only journal of a run: one JSON object a line, written as each event happens.

Each event is written with one ``write(2)`` as it happens, so it survives the controller being
killed (SIGKILL) — the kernel has it. A syncer thread then ``fsync``s the file within ~5 ms
of every write (the events of that interval share one fsync), so events also survive a
machine crash without putting an fsync on the scheduler's path. ``close()`` fsyncs what is left.

Every event carries ``t`` (seconds since the run's start on the monotonic clock, the basis of
every duration) and ``ts`` (UTC wall clock, for humans and reports).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.errors import JournalError
from orchestrator.model.templating import Redactor

#: the longest the syncer rests between two fsyncs
SYNC_PAUSE_S = 0.005


def utc_iso(ts: float | None = None) -> str:
    """``2026-11-26T17:45:00.123Z`` for a POSIX time (default now)."""
    moment = time.time() if ts is None else ts
    seconds = int(moment)
    millis = int((moment - seconds) * 1000)
    return f"{_utc_second(seconds)}.{millis:03d}Z"


@functools.lru_cache(maxsize=8)
def _utc_second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


class Journal:
    """Writer of ``journal.jsonl``; thread-safe."""

    def __init__(self, path: Path, redactor: Redactor | None = None, *, fsync: bool = True):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._redact = redactor or Redactor()
        self._lock = threading.Lock()
        self.mono0 = time.monotonic()
        self.wall0 = time.time()
        self._dirty = threading.Event()
        self._pending = False  # written but not yet fsynced
        self._closed = False
        self._syncer: threading.Thread | None = None
        #: called with each event as written (live view, logs); must be quick and never raise
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        if fsync:
            self._syncer = threading.Thread(
                target=self._sync_loop, name="journal-fsync", daemon=True
            )
            self._syncer.start()

    def now(self) -> float:
        """Seconds since the run started (monotonic)."""
        return time.monotonic() - self.mono0

    def wall(self, t: float) -> str:
        """The UTC wall-clock time of run offset ``t``."""
        return utc_iso(self.wall0 + t)

    def write(self, event: str, t: float | None = None, **fields: Any) -> dict[str, Any]:
        """Append one event; returns it (as written, secrets redacted)."""
        offset = self.now() if t is None else t
        record = {"event": event, "t": round(offset, 6), "ts": self.wall(offset), **fields}
        if self._redact:
            record = self._redact.deep(record)
        line = (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode()
        with self._lock:
            if self._closed:
                raise JournalError(f"journal {self.path} is closed")
            os.write(self._fd, line)
            wake = not self._pending
            self._pending = True
        if wake:  # the syncer is (or will be) asleep: one wake-up per batch, not per event
            self._dirty.set()
        for listener in list(self.listeners):
            try:
                listener(record)
            except Exception:
                # never fail the run; the journal is the record, so the view is just dropped
                with contextlib.suppress(ValueError):
                    self.listeners.remove(listener)
        return record

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
            os.fsync(self._fd)
            os.close(self._fd)
        self._dirty.set()


def read_journal(path: Path) -> list[dict[str, Any]]:
    """Every event of a journal; a torn last line (the controller died mid-write) is dropped."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise JournalError(f"cannot read journal {path}: {exc.strerror}") from exc
    events: list[dict[str, Any]] = []
    lines = raw.split(b"\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            events.append(json.loads(line))
        except ValueError as exc:
            if number >= len(lines) - 1:  # the last line, cut short by a crash
                break
            raise JournalError(f"{path}:{number}: corrupt journal line") from exc
    return events
