"""Building big trees of new objects (a 10,000-step runbook, plan or run summary) quickly.

Such a tree is a few hundred thousand dicts, lists and records, none of them garbage; the
cyclic collector's repeated full passes over everything alive would cost more than building
it. ``paused_gc`` pauses the collector for the build (as a ``with`` block or a decorator)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while a large tree of new objects is built;
    re-enabled on the way out (unless it was off already: the blocks nest)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
