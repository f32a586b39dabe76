"""The journal of a run: one JSON object a line, appended as each event happens.

The journal formats and redacts events and tells its listeners (live view, logs); where the lines
go — a local file, fsynced within milliseconds, or a shared store — is the ``JournalSink`` the
store hands it (``orchestrator.record.store``). Event kinds are named in
``orchestrator.record.events``.

Lines reach the sink in batches: a flusher thread hands it everything written in the last
``FLUSH_S`` in one call (one ``write(2)`` for a local file), so the scheduler's threads never
make a system call, nor queue behind the kernel's fsync of the file, to journal an event. A
controller killed (SIGKILL) loses at most the events of that last interval; an ordinary exit,
even through an unexpected error, flushes first (``close`` or ``flush_open``).

Every event carries ``t`` (seconds since the run's start on the monotonic clock, the basis of
every duration) and ``ts`` (UTC wall clock, for humans and reports).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, cast

from orchestrator.bulk import paused_gc
from orchestrator.errors import JournalError
from orchestrator.model.templating import Redactor
from orchestrator.record.events import E, JournalEvent, from_json, stamp, to_json
from orchestrator.record.jsonfast import dumpb, loads
from orchestrator.record.store import JournalSink


def utc_iso(ts: float | None = None) -> str:
    """``2026-11-26T17:45:00.123Z`` for a POSIX time (default now)."""
    moment = time.time() if ts is None else ts
    seconds = int(moment)
    millis = int((moment - seconds) * 1000)
    return f"{_utc_second(seconds)}.{millis:03d}Z"


@functools.lru_cache(maxsize=8)
def _utc_second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


#: the longest an event waits in memory before it is handed to the sink (docs/reference.md:
#: what a SIGKILLed controller can lose)
FLUSH_S = 0.002

#: journals not yet closed, flushed at interpreter exit
_OPEN: weakref.WeakSet[Journal] = weakref.WeakSet()


class Journal:
    """Writer of a run's journal; thread-safe."""

    def __init__(self, sink: JournalSink, redactor: Redactor | None = None) -> None:
        self.sink = sink
        self._redact = redactor or Redactor()
        self._lock = threading.Lock()
        self._closed = False
        self.mono0 = time.monotonic()
        self.wall0 = time.time()
        #: called with each event as written (live view, logs); must be quick and never raise
        self.listeners: list[Callable[[JournalEvent], None]] = []
        self._lines: list[bytes] = []  # every line written, in order
        self._parsed: list[dict[str, Any]] = []  # the first len(_parsed) lines, read back
        self._written: list[JournalEvent] = []  # every event as written (secrets redacted)
        self._queued: list[bytes] = []  # written, not yet handed to the sink
        self._sink_lock = threading.Lock()  # one batch at a time reaches the sink, in order
        self._failed: BaseException | None = None  # the sink's error, raised to the next writer
        self._wake = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, name="journal", daemon=True)
        self._flusher.start()
        _OPEN.add(self)

    def now(self) -> float:
        """Seconds since the run started (monotonic)."""
        return time.monotonic() - self.mono0

    def wall(self, t: float) -> str:
        """The UTC wall-clock time of run offset ``t``."""
        return utc_iso(self.wall0 + t)

    def write(self, event: E, t: float | None = None) -> E:
        """Append one event, stamped with ``t`` (default now); returns it as written (secrets
        redacted), which is also what the listeners get."""
        offset = self.now() if t is None else t
        stamp(event, round(offset, 6), self.wall(offset))
        record = to_json(event)
        if self._redact:
            record = self._redact.deep(record)
            event = cast(E, from_json(record))
        line = dumpb(record) + b"\n"
        with self._lock:
            if self._closed:
                raise JournalError("the journal is closed")
            if self._failed is not None:
                raise self._failed
            self._lines.append(line)
            self._written.append(event)
            self._queued.append(line)
            wake = len(self._queued) == 1  # one wake-up per batch, not per event
        if wake:
            self._wake.set()
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:
                # never fail the run; the journal is the record, so the view is just dropped
                with contextlib.suppress(ValueError):
                    self.listeners.remove(listener)
        return event

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event written so far, in order, as the journal holds it (what a reader of the
        file would get). Lines are read back here, when asked — at the end of a run — rather
        than on the scheduler's path, and each only once."""
        with self._lock:
            new = self._lines[len(self._parsed) :]
            if new:  # one JSON array: one parser call, not one per line
                with paused_gc():
                    self._parsed.extend(loads(b"[" + b",".join(new) + b"]"))
            return list(self._parsed)

    def typed_events(self) -> list[JournalEvent]:
        """Every event written so far, in order, typed: as written (secrets redacted), not
        read back from the lines (the summary at the end of a run reads them all)."""
        with self._lock:
            return list(self._written)

    def _flush_loop(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(FLUSH_S)  # the events of this interval share one write
            with self._lock:
                self._wake.clear()
                closed = self._closed
            self.flush()
            if closed:
                return

    def flush(self) -> None:
        """Hand every queued line to the sink now."""
        with self._sink_lock:
            with self._lock:
                batch, self._queued = self._queued, []
            if not batch or self._failed is not None:
                return
            try:
                self.sink.write_lines(batch)
            except BaseException as exc:  # the next write (or close) raises it
                self._failed = exc

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._wake.set()
        self._flusher.join()
        self.flush()
        _OPEN.discard(self)
        self.sink.close()
        if self._failed is not None:
            raise self._failed


@atexit.register
def flush_open() -> None:
    """An exit without ``close`` (an unexpected error) still leaves every event written (the
    CLI calls it before its ``os._exit``, which skips ``atexit``)."""
    for journal in list(_OPEN):
        with contextlib.suppress(Exception):
            journal.flush()
