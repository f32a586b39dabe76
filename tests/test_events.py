"""Typed journal events: every kind has its class, lines keep today's format, old journals
load, the fold reads them, and a misspelt field is a type error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.record.events import (
    EVENT_TYPES,
    Event,
    GateAnswered,
    GateWaiting,
    HostFinished,
    HostStarted,
    JournalEvent,
    RunStarted,
    StepCarried,
    StepFinished,
    StepStarted,
    from_json,
    parse,
    stamp,
    to_json,
)
from orchestrator.record.fold import WAITING, RunState
from orchestrator.record.journal import Journal
from orchestrator.record.outcomes import Status
from orchestrator.record.runs import approvals_from_events, outcomes_from_events
from orchestrator.record.store import file_sink

#: lines as drx wrote them before events were typed (one of each shape that matters)
OLD_LINES = [
    '{"event":"run_started","t":0.0,"ts":"2026-11-26T17:45:00.000Z","run_id":"R1",'
    '"runbook":"rb","direction":"failover","source":"a","target":"b","steps":[]}',
    '{"event":"step_started","t":0.1,"ts":"2026-11-26T17:45:00.100Z","step":"s1",'
    '"kind":"command","hosts":["h1"],"wave":0,"undo_of":null}',
    '{"event":"host_started","t":0.1,"ts":"2026-11-26T17:45:00.100Z","step":"s1",'
    '"host":"h1","attempt":1}',
    '{"event":"host_finished","t":0.3,"ts":"2026-11-26T17:45:00.300Z","step":"s1",'
    '"host":"h1","attempt":1,"status":"succeeded","rc":0,"error":null,"duration_s":0.2,'
    '"output_tail":"ok","stdout":"42","value":"42","command":"echo 42"}',
    '{"event":"step_finished","t":0.3,"ts":"2026-11-26T17:45:00.300Z","step":"s1",'
    '"status":"succeeded","error":null,"attempts":1,"value":"42","outcome_unknown":null,'
    '"message":null}',
    '{"event":"step_started","t":0.4,"ts":"2026-11-26T17:45:00.400Z","step":"gate",'
    '"kind":"manual","hosts":[],"wave":1,"undo_of":null}',
    '{"event":"gate_waiting","t":0.4,"ts":"2026-11-26T17:45:00.400Z","step":"gate","prompt":"go?"}',
    '{"event":"from_a_newer_drx","t":0.5,"ts":"2026-11-26T17:45:00.500Z","x":1}',
]


def test_every_event_kind_has_exactly_one_class() -> None:
    """Each ``Event`` string names one registered dataclass, frozen, with slots."""
    assert set(EVENT_TYPES) == {e.value for e in Event}
    for name, cls in EVENT_TYPES.items():
        assert cls.event == name
        assert "__slots__" in cls.__dict__
        event = from_json({"event": name, "t": 1.0, "ts": "x"})
        assert event is not None
        with pytest.raises(AttributeError):
            event.t = 2.0  # type: ignore[misc]


def test_lines_written_before_typing_read_back_and_write_again_unchanged() -> None:
    """An old journal's lines load as typed events, unknown kinds left out, and each writes
    back as the same JSON object (the shortened run_started line gains its defaults)."""
    records = [json.loads(line) for line in OLD_LINES]
    events = parse(records)
    assert [type(e) for e in events] == [
        RunStarted,
        StepStarted,
        HostStarted,
        HostFinished,
        StepFinished,
        StepStarted,
        GateWaiting,
    ]
    start = to_json(events[0])
    assert {k: start[k] for k in records[0]} == records[0]
    for record, event in zip(records[1:], events[1:], strict=False):
        assert to_json(event) == record
        assert list(to_json(event)) == list(record)  # the keys in the same order


def test_sparse_fields_are_left_out_and_an_old_line_lacking_a_field_reads_as_none() -> None:
    """step_finished names by/via/comment only when a gate was answered from elsewhere; a
    line missing a required field (an older drx) still loads, with the field None."""
    line = to_json(stamp(StepFinished(step="g", status="succeeded", by="ann@h"), 1.0, "T"))
    assert line == {
        "event": "step_finished",
        "t": 1.0,
        "ts": "T",
        "step": "g",
        "status": "succeeded",
        "error": None,
        "attempts": None,
        "value": None,
        "outcome_unknown": None,
        "by": "ann@h",
        "message": None,
    }
    assert "by" not in to_json(StepFinished(step="g", status="failed"))
    event = from_json({"event": "step_finished", "t": 2, "ts": "T", "step": "g"})
    assert isinstance(event, StepFinished) and event.status is None and event.t == 2.0


def test_the_journal_stamps_redacts_and_hands_listeners_the_typed_event(
    tmp_path: Path,
) -> None:
    """A written event gets t/ts, the file holds its line with the secret masked, and a
    listener gets the same (masked) typed event."""
    from orchestrator.model.templating import Redactor

    path = tmp_path / "journal.jsonl"
    journal = Journal(file_sink(path, fsync=False), Redactor(["hunter2"]))
    heard: list[JournalEvent] = []
    journal.listeners.append(heard.append)
    written = journal.write(
        HostFinished(step="s", host="h", status="failed", output_tail="pw=hunter2"), 1.5
    )
    journal.close()
    (line,) = path.read_text().splitlines()
    assert json.loads(line)["output_tail"] == "pw=***" and json.loads(line)["t"] == 1.5
    assert heard == [written]
    assert isinstance(written, HostFinished) and written.output_tail == "pw=***"
    assert written.t == 1.5 and written.ts.endswith("Z")


def test_one_fold_gives_outcomes_approvals_and_waiting_gates() -> None:
    """The fold of an old journal: s1 succeeded on h1 with its value, the gate waits; a
    carried step keeps its approval and the run it came from."""
    events = parse(json.loads(line) for line in OLD_LINES)
    state = RunState.of(events)
    assert state.started is not None and state.started.run_id == "R1"
    assert state.steps["gate"].status == WAITING
    outcomes = outcomes_from_events(events)
    assert outcomes["s1"].status is Status.SUCCEEDED and outcomes["s1"].value == "42"
    assert outcomes["s1"].hosts["h1"].stdout == "42"
    assert outcomes["gate"].status is Status.UNKNOWN and outcomes["gate"].outcome_unknown
    carried = StepCarried(
        step="gate", from_run="R0", attempts=1, approval={"by": "ann@h", "via": "terminal"}
    )
    answered = GateAnswered(step="s1", approved=True, by="bob@h", via="drx approve")
    assert approvals_from_events([*events, carried, answered]) == {
        "gate": {"by": "ann@h", "via": "terminal"},
        "s1": {"by": "bob@h", "via": "drx approve", "comment": None},
    }
    assert outcomes_from_events([carried])["gate"].message == "R0"


def test_a_misspelt_event_field_is_a_type_error(tmp_path: Path) -> None:
    """mypy --strict refuses an event built or read with a field it does not have."""
    source = tmp_path / "misspelt.py"
    source.write_text(
        "from orchestrator.record.events import StepFinished\n"
        "e = StepFinished(step='s', staus='failed')\n"
        "print(e.stats)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 1, proc.stdout
    assert 'Unexpected keyword argument "staus"' in proc.stdout
    assert 'has no attribute "stats"' in proc.stdout


def test_events_are_frozen_comparable_and_hashable() -> None:
    """Every event class is frozen (assigning or deleting a field raises), compares by its
    fields, hashes alike when equal, and ``dataclasses.replace`` builds a changed copy."""
    import dataclasses

    from orchestrator.record.events import EVENT_TYPES, HostStarted, RunFinished

    started = HostStarted(step="a", host="h", attempt=1)
    for attempt in (lambda: setattr(started, "step", "b"), lambda: delattr(started, "host")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            attempt()
    assert (
        started
        == HostStarted(step="a", host="h", attempt=1)
        != HostStarted(step="a", host="x", attempt=1)
    )
    finished = RunFinished(status="succeeded", exit_code=0)
    assert hash(finished) == hash(RunFinished(status="succeeded", exit_code=0))
    assert dataclasses.replace(started, host="x").host == "x" and started.host == "h"
    for cls in EVENT_TYPES.values():
        assert dataclasses.is_dataclass(cls) and "__slots__" in cls.__dict__, cls
        with pytest.raises(dataclasses.FrozenInstanceError):
            object.__new__(cls).t = 1.0  # type: ignore[misc]
