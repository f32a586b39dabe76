"""The state directory: ``state.json``, the run lock, and where each run's files live."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from orchestrator.errors import RefusedError


def read_state(state_dir: Path) -> dict[str, Any]:
    path = state_dir / "state.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_state(state_dir: Path, **changes: Any) -> dict[str, Any]:
    """Update ``state.json`` atomically (write a temp file, fsync, rename)."""
    state = read_state(state_dir) | changes
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_dir / "state.json.tmp"
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(state, fh, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(state_dir / "state.json")
    return state


def runs_dir(state_dir: Path) -> Path:
    return state_dir / "runs"


@contextlib.contextmanager
def run_lock(state_dir: Path, holder: str) -> Iterator[None]:
    """Hold ``.drx/lock`` (flock) for the run; a second run gets RefusedError naming the holder."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            with contextlib.suppress(OSError):
                held_by = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
            raise RefusedError(
                f"another run holds the lock on {state_dir}: {held_by or 'unknown holder'}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{holder} (pid {os.getpid()})\n".encode(), 0)
        yield
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def lock_holder(state_dir: Path) -> str | None:
    """Who holds the lock now, or None."""
    path = state_dir / "lock"
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown holder"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
