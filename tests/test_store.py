"""The storage seam: a second ``Store`` implementation carries a whole run without the engine
knowing, and the local directory keeps its files where docs/reference.md says."""

from __future__ import annotations

import json
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any, Unpack

import pytest

from orchestrator.errors import RefusedError, UsageError
from orchestrator.model.loading import load_both
from orchestrator.plan.build import build_plan
from orchestrator.record.runs import load_summaries, load_summary, resolve_run
from orchestrator.record.store import (
    JournalSink,
    LocalStore,
    RunLock,
    State,
    StateFields,
    Store,
    parse_journal,
)
from orchestrator.run.runner import RunOptions, execute

RUNBOOK = """
name: tiny
rto_target: 1m
steps:
  - {id: one, hosts: "@target", run: "echo one", undo: "echo undo-one"}
  - {id: two, hosts: "@target", run: "echo two", needs: [one]}
"""
INVENTORY = """
active: site-a
defaults: {transport: local}
sites:
  site-a: {hosts: {a1: {}}}
  site-b: {hosts: {b1: {}}}
"""


class MemoryLock(RunLock):
    def __init__(self, store: MemoryStore, holder: str) -> None:
        self.store = store
        store.holder = holder

    def release(self) -> None:
        self.store.holder = None


class MemorySink(JournalSink):
    def __init__(self, lines: list[bytes]) -> None:
        self.lines = lines
        self.closed = False

    def write(self, line: bytes) -> None:
        assert not self.closed
        self.lines.append(line)

    def close(self) -> None:
        self.closed = True


class MemoryStore(Store):
    """Everything in dictionaries: what a distributed store would keep remotely."""

    def __init__(self, local_dir: Path) -> None:
        self.local_dir = local_dir
        self.state = State()
        self.holder: str | None = None
        self.journals: dict[str, list[bytes]] = {}
        self.plans: dict[str, dict[str, Any]] = {}
        self.summaries: dict[str, dict[str, Any]] = {}
        self.holders_seen: list[str] = []

    @property
    def location(self) -> str:
        return "memory://test"

    def exists(self) -> bool:
        return bool(self.state or self.journals)

    def read_state(self) -> State:
        return self.state

    def update_state(self, **changes: Unpack[StateFields]) -> State:
        if self.holder:
            self.holders_seen.append(self.holder)
        self.state = replace(self.state, **changes)
        return self.state

    def acquire(self, holder: str) -> RunLock:
        if self.holder is not None:
            raise RefusedError(f"held by {self.holder}")
        return MemoryLock(self, holder)

    def lock_holder(self) -> str | None:
        return self.holder

    def run_ids(self) -> list[str]:
        return sorted(self.journals)

    def has_run(self, run_id: str) -> bool:
        return run_id in self.journals

    def create_run(self, run_id: str, plan_doc: dict[str, Any], lock: RunLock) -> JournalSink:
        self.plans[run_id] = plan_doc
        self.journals[run_id] = []
        return MemorySink(self.journals[run_id])

    def read_journal(self, run_id: str) -> list[dict[str, Any]]:
        if run_id not in self.journals:
            raise UsageError(f"no run {run_id}")
        return parse_journal(b"".join(self.journals[run_id]), run_id)

    def write_summary_document(self, run_id: str, text: str, lock: RunLock) -> None:
        self.summaries[run_id] = json.loads(text)

    def read_summary_document(self, run_id: str) -> dict[str, Any] | None:
        return self.summaries.get(run_id)

    def read_plan_document(self, run_id: str) -> dict[str, Any] | None:
        return self.plans.get(run_id)


def _plan(tmp_path: Path) -> Any:
    (tmp_path / "rb.yaml").write_text(textwrap.dedent(RUNBOOK))
    (tmp_path / "inv.yaml").write_text(textwrap.dedent(INVENTORY))
    runbook, inventory = load_both(str(tmp_path / "rb.yaml"), str(tmp_path / "inv.yaml"))
    return build_plan(runbook, inventory, "site-b", source="site-a")


def test_a_second_store_carries_a_whole_run(tmp_path: Path) -> None:
    """A run through another Store writes journal, plan, summary and state there; only output
    logs land in its local directory, and runs are read back through it."""
    store = MemoryStore(tmp_path / "local")
    code, summary = execute(_plan(tmp_path), store, RunOptions(yes=True))
    assert code == 0 and summary.status == "succeeded"
    (run_id,) = store.run_ids()
    assert store.plans[run_id]["run_id"] == run_id
    assert store.summaries[run_id]["status"] == "succeeded"
    events = [e["event"] for e in store.read_journal(run_id)]
    assert events[0] == "run_started" and events[-1] == "run_finished"
    assert store.state.active == "site-b" and store.state.last_run == run_id
    assert store.holder is None and run_id in store.holders_seen
    local = sorted(
        p.relative_to(tmp_path / "local").as_posix()
        for p in store.local_dir.rglob("*")
        if p.is_file()
    )
    assert all(p.startswith(f"runs/{run_id}/output") for p in local)
    assert f"runs/{run_id}/output/one/b1.log" in local
    assert resolve_run(store, None) == run_id
    assert load_summaries(store)[0].run_id == run_id


def test_a_crashed_run_is_rebuilt_from_the_stores_journal(tmp_path: Path) -> None:
    """Without a summary, a store's journal alone reads back as a crashed run."""
    store = MemoryStore(tmp_path / "local")
    execute(_plan(tmp_path), store, RunOptions(yes=True))
    (run_id,) = store.run_ids()
    del store.summaries[run_id]
    store.journals[run_id] = [
        line for line in store.journals[run_id] if b'"run_finished"' not in line
    ]
    assert load_summary(store, run_id).status == "crashed"


def test_local_store_keeps_the_documented_layout(tmp_path: Path) -> None:
    """The local directory holds state.json, lock, and per run journal, plan and summary."""
    store = LocalStore(tmp_path / "state")
    assert not store.exists()
    code, _ = execute(_plan(tmp_path), store, RunOptions(yes=True))
    assert code == 0 and store.exists()
    (run_id,) = store.run_ids()
    run_dir = tmp_path / "state" / "runs" / run_id
    for name in ("journal.jsonl", "plan.json", "summary.json"):
        assert (run_dir / name).is_file(), name
    assert json.loads((tmp_path / "state" / "state.json").read_text())["active"] == "site-b"
    assert store.lock_holder() is None


def test_local_lock_refuses_a_second_holder(tmp_path: Path) -> None:
    """While one holder has the lock, another is refused with the holder's name."""
    store = LocalStore(tmp_path)
    with store.acquire("run-1"):
        assert (store.lock_holder() or "").startswith("run-1")
        with pytest.raises(RefusedError, match="run-1"):
            LocalStore(tmp_path).acquire("run-2")
    assert store.lock_holder() is None


def test_summary_document_round_trips(tmp_path: Path) -> None:
    """summary.json read back into a RunSummary writes out the very same document."""
    from orchestrator.record.summary import RunSummary

    store = LocalStore(tmp_path / "state")
    execute(_plan(tmp_path), store, RunOptions(yes=True))
    (run_id,) = store.run_ids()
    doc = store.read_summary_document(run_id)
    assert doc is not None and doc["steps"][0]["hosts"][0]["attempts"][0]["n"] == 1
    assert RunSummary.from_dict(doc).to_dict() == doc


def test_plan_read_back_typed_and_copied_whole(tmp_path: Path) -> None:
    """read_plan gives the predictions typed (mistyped figures as None, id-less steps left
    out); read_plan_document keeps every key of plan.json for copies."""
    from orchestrator.record.store import LocalStore, PlannedStep, PlanRecord

    store = LocalStore(tmp_path / ".drx")
    doc = {
        "run_id": "R",
        "extra": [1, 2],
        "predicted_health_s": 4,
        "steps": [
            {"id": "a", "needs": [], "predicted_s": 2.5, "hosts": ["h"]},
            {"id": "b", "needs": ["a"], "predicted_s": "soon"},
            {"name": "no id"},
        ],
    }
    lock = store.acquire("R")
    store.create_run("R", doc, lock).close()
    lock.release()
    assert store.read_plan_document("R") == doc
    assert store.read_plan("R") == PlanRecord(
        (PlannedStep("a", (), 2.5), PlannedStep("b", ("a",), None)), 4.0
    )
    assert store.read_plan("missing") is None
