"""The run lock's say in scheduling, with a lock whose state the test sets: while it is in
doubt nothing new starts and a renewal lets the run carry on; once it is lost the run ends
(exit 1, LockLost) having started nothing more."""

from __future__ import annotations

import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import LockLost
from orchestrator.model.loading import load_both
from orchestrator.plan.build import build_plan
from orchestrator.record.store import LockState, RunLock
from orchestrator.run.runner import RunOptions, execute
from tests.test_store import INVENTORY, MemoryStore

RUNBOOK = """
name: guarded
steps:
  - {id: one, hosts: "@target", run: "sleep 0.3"}
  - {id: two, hosts: "@target", run: "echo two", needs: [one]}
"""


class SwitchLock(RunLock):
    """A run lock whose state the test switches."""

    def __init__(self, store: MemoryStore, holder: str) -> None:
        self.store = store
        store.holder = holder
        self.current = LockState.HELD

    def state(self) -> LockState:
        return self.current

    def release(self) -> None:
        self.store.holder = None


class SwitchStore(MemoryStore):
    def __init__(self, local_dir: Path) -> None:
        super().__init__(local_dir)
        self.lock: SwitchLock | None = None

    def acquire(self, holder: str) -> RunLock:
        self.lock = SwitchLock(self, holder)
        return self.lock


def _plan(tmp_path: Path) -> Any:
    (tmp_path / "rb.yaml").write_text(textwrap.dedent(RUNBOOK))
    (tmp_path / "inv.yaml").write_text(textwrap.dedent(INVENTORY))
    runbook, inventory = load_both(str(tmp_path / "rb.yaml"), str(tmp_path / "inv.yaml"))
    return build_plan(runbook, inventory, "site-b", source="site-a")


def _events(store: SwitchStore) -> list[dict[str, Any]]:
    (run_id,) = store.run_ids()
    return store.read_journal(run_id)


def _switch_after_one_started(store: SwitchStore, then: list[tuple[float, LockState]]) -> None:
    def run() -> None:
        while not store.run_ids() or not any(e["event"] == "host_started" for e in _events(store)):
            time.sleep(0.01)
        for delay, state in then:
            time.sleep(delay)
            assert store.lock is not None
            if state is LockState.LOST:
                store.lock.lost_reason = "the store says the lease is gone (test)"
            store.lock.current = state

    threading.Thread(target=run, daemon=True).start()


def test_in_doubt_holds_back_new_steps_until_the_lock_is_confirmed(tmp_path: Path) -> None:
    """A lock in doubt when step one ends: step two waits (nothing starts) until the lock is
    held again, then the run carries on and succeeds; doubt and confirmation are journaled."""
    store = SwitchStore(tmp_path / "local")
    _switch_after_one_started(store, [(0.0, LockState.IN_DOUBT), (0.8, LockState.HELD)])
    code, summary = execute(_plan(tmp_path), store, RunOptions(yes=True))
    assert code == 0 and summary.status == "succeeded"
    events = _events(store)
    kinds = [e["event"] for e in events]
    assert kinds.index("lock_in_doubt") < kinds.index("lock_confirmed")
    confirmed = next(e["t"] for e in events if e["event"] == "lock_confirmed")
    two = next(e for e in events if e["event"] == "step_started" and e["step"] == "two")
    one_done = next(e for e in events if e["event"] == "step_finished" and e["step"] == "one")
    assert two["t"] >= confirmed and two["t"] - one_done["t"] > 0.4


def test_lost_lock_ends_the_run_with_nothing_more_started(tmp_path: Path) -> None:
    """The lock lost while step one runs: step one ends, step two never starts (cancelled with
    the reason), and the run ends with LockLost (exit 1) naming why."""
    store = SwitchStore(tmp_path / "local")
    _switch_after_one_started(store, [(0.05, LockState.LOST)])
    with pytest.raises(LockLost, match="lease is gone") as lost:
        execute(_plan(tmp_path), store, RunOptions(yes=True))
    assert lost.value.exit_code == 1
    events = _events(store)
    assert not any(e["event"] == "step_started" and e["step"] == "two" for e in events)
    two = next(e for e in events if e["event"] == "step_finished" and e["step"] == "two")
    assert two["status"] == "cancelled" and "lock was lost" in two["message"]
    one = next(e for e in events if e["event"] == "step_finished" and e["step"] == "one")
    assert one["status"] == "succeeded"
    assert "lock_lost" in [e["event"] for e in events]
