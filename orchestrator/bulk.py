"""Building big trees of new objects (a 10,000-step runbook, plan or run summary) quickly,
and the collector's settings for a run.

Such a tree is a few hundred thousand dicts, lists and records, none of them garbage; the
cyclic collector's repeated full passes over everything alive would cost more than building
it. ``paused_gc`` pauses the collector for the build (as a ``with`` block or a decorator)."""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import MISSING, fields
from typing import Any

_run_lock = threading.Lock()
_runs = 0  # runs under way in this process (site plans may run several at once)
_saved: list[int] = []  # the thresholds before the first of them


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
            if _runs:
                # During a run what was built lives until its end, as what existed at its
                # start does: frozen with it (run_gc), rather than walked by the first young
                # collection after this block (~40 ms for a 10,000-step summary)
                gc.freeze()
            gc.enable()


@contextmanager
def run_gc() -> Iterator[None]:
    """The collector's settings for a run. What exists when it starts (modules, the plan, the
    inventory) lives until it ends, so it is left out of every collection meanwhile
    (``gc.freeze``), and young objects are collected in batches of 2,000 allocations rather
    than 700: a run's events mostly die young, and those that survive (its record) need not
    be walked again and again. On a 10,000-step run this took the collector's share from
    ~0.3 s to under 0.1 s. The first run in flight sets this up, the last one out restores
    it."""
    global _runs
    with _run_lock:
        _runs += 1
        if _runs == 1:
            _saved[:] = gc.get_threshold()
            gc.freeze()
            gc.set_threshold(2000, 10, 10)
    try:
        yield
    finally:
        with _run_lock:
            _runs -= 1
            if _runs == 0:
                gc.set_threshold(*_saved)
                gc.unfreeze()


def slot_init(cls: type) -> Callable[..., None]:
    """A frozen slotted dataclass's ``__init__`` that sets each slot through its descriptor.
    The one dataclasses writes for a frozen class goes through ``object.__setattr__`` by name,
    field by field (7 µs for a runbook's ``Step``, 4 µs this way; a journal event costs more to
    build than the dict it replaced). Same signature, defaults and factories; still frozen.
    For classes without ``__post_init__``, ``InitVar`` or ``init=False`` fields."""
    positional: list[str] = []
    keyword: list[str] = []
    body: list[str] = []
    scope: dict[str, Any] = {"MISSING": MISSING}
    for f in fields(cls):
        n = f.name
        if not f.init:
            raise TypeError(f"{cls.__name__}.{n}: init=False is not supported")
        slot = next(k.__dict__[n] for k in cls.__mro__ if n in k.__dict__)
        scope[f"set_{n}"] = slot.__set__
        value = n
        if f.default is not MISSING:
            scope[f"default_{n}"] = f.default
            param = f"{n}=default_{n}"
        elif f.default_factory is not MISSING:
            scope[f"factory_{n}"] = f.default_factory
            param = f"{n}=MISSING"
            value = f"factory_{n}() if {n} is MISSING else {n}"
        else:
            param = n
        (keyword if f.kw_only else positional).append(param)
        body.append(f"    set_{n}(self, {value})")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__}: __post_init__ is not supported")
    params = ", ".join(["self", *positional, *(["*", *keyword] if keyword else [])])
    exec(f"def __init__({params}):\n" + "\n".join(body), scope)  # the class's own field names
    init: Callable[..., None] = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    return init
