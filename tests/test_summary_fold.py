"""The summary is built from typed events through the shared fold (record/fold.py): the same
journal gives the same summary.json, byte for byte, whether the events come from a run as it
ends or are read back from the store."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.record.events import parse
from orchestrator.record.fold import RunState
from orchestrator.record.store import document_json, parse_journal
from orchestrator.record.summary import build_summary
from tests.drill import World
from tests.test_lineage import RUNBOOK as LINEAGE

DATA = Path(__file__).parent / "data" / "journals"
JOURNALS = sorted(DATA.glob("*.jsonl"))


def _summary_of(path: Path) -> str:
    events = parse(parse_journal(path.read_bytes(), str(path)))
    return document_json(build_summary(events).to_dict())


@pytest.mark.parametrize("journal", JOURNALS, ids=[p.stem for p in JOURNALS])
def test_summary_of_a_recorded_journal_is_unchanged(journal: Path) -> None:
    """Every event kind the summary reads (carried steps, retried hosts, polls, gates approved
    and declined, the RPO guard, probes, health, a crash) gives the summary.json drx wrote
    for that journal before the builder shared the fold, byte for byte."""
    expected = journal.with_name(journal.stem + ".summary.json").read_text()
    assert _summary_of(journal) == expected


def test_journals_are_there() -> None:
    """The recorded journals above exist (a missing data directory must not pass silently)."""
    assert {p.stem for p in JOURNALS} >= {
        "every_event",
        "every_event_succeeded",
        "every_event_crashed",
    }


def test_summary_facts_come_from_the_fold() -> None:
    """What a step did in the summary is what the fold says: status, times, attempts, carried
    run and approval agree with RunState for every step of a journal."""
    path = DATA / "every_event.jsonl"
    events = parse(parse_journal(path.read_bytes(), str(path)))
    state = RunState.of(events)
    summary = build_summary(events)
    for step in summary.steps:
        folded = state.steps.get(step.id)
        if folded is None:
            assert step.status == "not_run" and step.started_at is None
            continue
        assert step.carried_from == folded.carried_from
        assert step.attempts >= folded.attempts
        if folded.carried_from is None:
            assert (step.started_at, step.finished_at) == (folded.started_at, folded.finished_at)
            assert step.status == folded.status
        if folded.approval is not None:
            assert step.approved_by == folded.approval["by"]
    assert summary.health is not None
    assert summary.health.held_at == state.held_at


@pytest.mark.parametrize("world", ["local"], indirect=True)
def test_summary_written_at_the_end_of_a_run_reads_back_the_same(world: World, capsys) -> None:
    """summary.json as each run writes it (from the events it journaled, in memory) equals the
    summary rebuilt from its stored journal, byte for byte: a failed failover, its resume,
    and the failback."""
    world.write_runbook(LINEAGE)
    broken = world.host_file("db-b", "broken")
    broken.touch()
    assert world.run(capsys, "failover", "site-b")[0] == 1
    broken.unlink()
    assert world.run(capsys, "resume")[0] == 0
    assert world.run(capsys, "failback", "--yes")[0] == 0
    runs = world.run_dirs()
    assert len(runs) == 3
    for run in runs:
        events = parse(parse_journal((run / "journal.jsonl").read_bytes(), run.name))
        written = (run / "summary.json").read_text()
        assert written == document_json(build_summary(events).to_dict())
