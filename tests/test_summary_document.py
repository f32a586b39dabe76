"""summary.json has one reader and one writer, driven by the records' fields (record/document.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from orchestrator.record.document import FALSY, NONE, doc, from_doc, to_doc
from orchestrator.record.summary import RunSummary
from orchestrator.report.render import render
from orchestrator.vocab import Direction, RunStatus, StepKind, StepStatus

FULL: dict[str, Any] = {
    "run_id": "r1",
    "runbook": "webapp",
    "direction": "failback",
    "source": "site-a",
    "target": "site-b",
    "parent_run": "r0",
    "resumes": None,
    "reverses": "r0",
    "status": "cancelled",
    "emergency": True,
    "started_at": "2026-11-26T17:45:00.000Z",
    "finished_at": "2026-11-26T17:46:00.000Z",
    "rto": {
        "measured_s": 12.5,
        "target_s": 60.0,
        "met": True,
        "start_step": "a",
        "predicted_s": None,
        "end_to_end_s": 30.0,
    },
    "rpo": {
        "measured_bytes": 0.0,
        "target_bytes": 1024.0,
        "met": True,
        "step": "lag",
        "guard": {"tripped": True, "accepted": True, "blocked": [], "message": "ok",
                  "accepted_loss_bytes": 512.0},
    },
    "manual_wait_s": 3.0,
    "critical_path": ["a", "gate"],
    "steps": [
        {
            "id": "a", "name": "A", "kind": "command", "status": "succeeded",
            "started_at": "2026-11-26T17:45:01.000Z", "finished_at": "2026-11-26T17:45:02.000Z",
            "duration_s": 1.0, "start_offset_s": 0.0, "attempts": 2, "needs": [],
            "undo_of": "x", "wave": 0, "error": None, "carried_from": None,
            "outcome_unknown": False, "manual_wait_s": None, "approved_by": None,
            "value": {"lag": 3}, "message": None,
            "hosts": [{
                "host": "db-b", "rc": 0, "duration_s": 1.0, "output_tail": "ok\n",
                "error": None, "status": "succeeded",
                "attempts": [{"n": 1, "started_at": None, "finished_at": None,
                              "start_offset_s": 0.0, "duration_s": 0.5, "rc": 1,
                              "error": None,
                              "polls": [{"duration_s": 0.1, "ok": False,
                                         "start_offset_s": 0.0}]}],
                "value": 3, "command": "echo ok", "reattached": True, "output_cut": 10,
            }],
        },
        {
            "id": "gate", "name": "gate", "kind": "manual", "status": "cancelled",
            "started_at": None, "finished_at": None, "duration_s": None,
            "start_offset_s": None, "attempts": 0, "needs": ["a"], "undo_of": None,
            "wave": 1, "error": None, "carried_from": None, "outcome_unknown": False,
            "manual_wait_s": 3.0, "approved_by": None, "value": None,
            "message": "declined by ops", "hosts": [], "prompt": "go?",
            "declined_by": "ops@h", "declined_via": "terminal", "decline_comment": None,
        },
    ],
    "health": {"held_at": None, "polls": 4, "held_offset_s": None, "duration_s": None,
               "timed_out": True},
    "exit_code": 130,
    "yes": False,
    "runbook_file": "rb.yaml",
    "inventory_file": "inv.yaml",
    "runbook_sha256": "ab",
    "inventory_sha256": "cd",
    "runbook_description": "the web app",
    "rto_started_at": "2026-11-26T17:45:01.000Z",
    "moves_to": "site-a",
    "failback_mode": "mirror",
    "reprotect": {"steps": ["a"], "duration_s": 1.0, "carried_from": None},
    "message": "aborted by ops",
    "mode": "drill",
    "drill_id": "r0",
    "rollback": False,
    "rolled_back_by": None,
    "probes": [{"name": "write", "polls": 3, "failed_polls": 1, "down_s": 1.0,
                "longest_down_s": 1.0, "windows": [[1.0, None]], "breached": False,
                "max_down_s": None, "interval_s": 0.5}],
    "hosts": [{"name": "db-b", "site": "site-b", "address": "127.0.0.1", "port": 22,
               "host_key": None}],
    "progress": {"as_of": "2026-11-26T17:46:00.000Z", "elapsed_s": 60.0,
                 "rto_elapsed_s": 59.0, "projected_rto_s": None},
    "children": [{"id": "db", "status": "succeeded"}],
}  # fmt: skip


def test_every_optional_field_is_written_back_byte_for_byte() -> None:
    """A document using every optional and conditional key reads back and writes out the same
    bytes, keys in the same order (approval keys only beside approved_via, declined_* beside
    declined_by, output_cut/reattached/command/progress/children/message only when set)."""
    assert json.dumps(RunSummary.from_dict(FULL).to_dict()) == json.dumps(FULL)


def test_words_are_read_as_their_enums_and_written_as_strings() -> None:
    """Status, direction and kind read back as enum members; summary.json keeps the strings."""
    summary = RunSummary.from_dict(FULL)
    assert summary.status is RunStatus.CANCELLED and summary.direction is Direction.FAILBACK
    assert summary.steps[1].kind is StepKind.MANUAL
    assert summary.steps[0].hosts[0].status is StepStatus.SUCCEEDED
    assert '"status": "cancelled"' in json.dumps(summary.to_dict())


@pytest.mark.parametrize(
    ("document", "check"),
    [
        ({}, lambda s: (s.status, s.direction, s.run_id, s.steps) == ("crashed", "failover", "", [])),
        ({"status": "exploded"}, lambda s: s.status is RunStatus.CRASHED),
        ({"steps": [{"id": 3, "status": 7, "needs": "x"}]},
         lambda s: (s.steps[0].id, s.steps[0].name, s.steps[0].status, s.steps[0].needs)
         == ("3", "3", "not_run", [])),
        ({"steps": [{"id": "a", "hosts": [{"rc": 2}, {"rc": 0}, {"error": "cancelled"}]}]},
         lambda s: [h.status for h in s.steps[0].hosts] == ["failed", "succeeded", "cancelled"]),
        ({"rto": "fast", "health": [], "probes": [{"windows": [[None, 2], "x"]}]},
         lambda s: s.rto.measured_s is None and s.health is None and s.probes[0].spans == []),
        ({"failed_back_by": ["r9"], "resumed_by_runs": ["r8"]},
         lambda s: (s.failed_back_by, s.resumed_by) == ([], [])),
    ],
)  # fmt: skip
def test_mistyped_or_missing_fields_read_as_defaults(document: Any, check: Any) -> None:
    """Reading never raises: a missing, null, mistyped or unknown value takes the field's
    default (a host's status from its rc/error); lists filled in by listing are not read."""
    assert check(RunSummary.from_dict(document))


@dataclass
class _Sample:
    name: str
    size: int = 0
    note: str | None = field(default=None, metadata=doc(omit=NONE))
    tags: list[str] = field(default_factory=list, metadata=doc(key="labels", omit=FALSY))


def test_a_new_field_is_one_declaration() -> None:
    """A field declared on a record is written and read back with no other code: its key, its
    place in the document and its tolerance come from the declaration."""
    record = _Sample("x", 3, None, ["a"])
    assert to_doc(record) == {"name": "x", "size": 3, "labels": ["a"]}
    assert list(to_doc(record)) == ["name", "size", "labels"]
    assert from_doc(_Sample, to_doc(record)) == record
    assert from_doc(_Sample, {"name": "y", "size": "big", "note": 5}) == _Sample("y", 0, "5")


def test_reports_render_the_summary_model_itself() -> None:
    """A RunSummary and the summary.json written from it render the very same report."""
    summary = RunSummary.from_dict(FULL)
    for fmt in ("text", "md", "html", "junit", "json"):
        assert render(summary, fmt) == render(summary.to_dict(), fmt)
