"""The collector's settings for a run (orchestrator/bulk.py): what exists before a run is
frozen out of collections while it runs, young objects are collected in bigger batches, and
the last run out restores both — also when several runs overlap in one process."""

from __future__ import annotations

import gc
import threading

from orchestrator.bulk import run_gc


def test_a_run_freezes_what_existed_and_restores_the_collector() -> None:
    before = gc.get_threshold()
    assert gc.get_freeze_count() == 0
    with run_gc():
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == 2000
        with run_gc():  # a second run in the same process (a site plan's child)
            assert gc.get_threshold()[0] == 2000
        assert gc.get_freeze_count() > 0  # the first is still running
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before


def test_overlapping_runs_in_threads_restore_once_the_last_ends() -> None:
    before = gc.get_threshold()
    inside = threading.Barrier(3)
    leave = threading.Event()

    def run() -> None:
        with run_gc():
            inside.wait()
            leave.wait()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    inside.wait()
    assert gc.get_threshold()[0] == 2000 and gc.get_freeze_count() > 0
    leave.set()
    for t in threads:
        t.join()
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before


def test_an_error_in_a_run_still_restores_the_collector() -> None:
    before = gc.get_threshold()
    try:
        with run_gc():
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == before


def test_what_a_run_builds_in_bulk_is_frozen_with_it_and_nothing_outside_a_run() -> None:
    from orchestrator.bulk import paused_gc

    with paused_gc():
        outside = [[i] for i in range(1000)]
    assert gc.get_freeze_count() == 0 and gc.isenabled()
    with run_gc():
        frozen = gc.get_freeze_count()
        with paused_gc():
            built = [[i] for i in range(1000)]
        assert gc.get_freeze_count() >= frozen + 1000 and gc.isenabled()
    assert gc.get_freeze_count() == 0
    assert len(outside) == len(built) == 1000
