"""The fault campaign: its invariant checks catch what they are meant to catch, and a short
campaign over a real etcd lab, real sshd hosts and two controllers finds no violation."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from typing import Any

import pytest

from orchestrator.lab.chaos import FAULTS, Journal, Mark, campaign, check, finish, wait_for

RUN = "r1-failover"
RUN2 = "r2-failover"


def finished(step: str, host: str, attempt: int, status: str = "succeeded", **extra: Any) -> dict:
    return {
        "event": "host_finished",
        "step": step,
        "host": host,
        "attempt": attempt,
        "status": status,
        **extra,
    }


def journal(events: dict[str, list[dict[str, Any]]], status: str = "succeeded") -> Journal:
    runs = list(events)
    for run in runs:
        events[run].insert(0, {"event": "run_started", "direction": "failover"})
    summaries: dict[str, dict[str, Any] | None] = {r: None for r in runs}
    summaries[runs[-1]] = {"status": status, "direction": "failover"}
    return Journal(runs, events, summaries)


def ran(run: str, step: str, host: str, attempt: str, holder: str, t0: float) -> list[Mark]:
    return [
        Mark("begin", run, step, attempt, holder, host, t0),
        Mark("end", run, step, attempt, holder, host, t0 + 0.3),
    ]


def test_check_passes_a_clean_takeover() -> None:
    """A run whose in-flight step was read from the spool by the next holder: no violation."""
    j = journal(
        {
            RUN: [finished("one", "db-b", 1)],
            RUN2: [finished("two", "db-b", 1, from_run=RUN, reattached=True)],
        }
    )
    marks = ran(RUN, "one", "db-b", "1", "a1", 1.0) + ran(RUN, "two", "db-b", "1", "a1", 2.0)
    assert check(j, marks, ["a1", "b2"], "site-b", "site-b") == []


def test_check_finds_each_kind_of_violation() -> None:
    """A step run twice without a recorded failure, an old holder starting after the takeover,
    a success that never ran, an ended command taken from the spool as failed, a command the
    journal lost, and a wrong active site are each reported."""
    j = journal(
        {
            RUN: [finished("one", "db-b", 1)],
            RUN2: [
                finished("one", "db-b", 1),
                finished("ghost", "app-b", 1),
                finished("two", "db-a", 1, "failed", from_run=RUN, reattached=True),
            ],
        }
    )
    marks = (
        ran(RUN, "one", "db-b", "1", "a1", 1.0)
        + ran(RUN2, "one", "db-b", "1", "b2", 2.0)  # ran again: nothing failed
        + ran(RUN, "late", "app-a", "1", "a1", 3.0)  # the old holder after b2 started
        + ran(RUN, "two", "db-a", "1", "a1", 1.5)  # ended, yet taken from the spool as failed
    )
    found = check(j, marks, ["a1", "b2"], "site-a", "site-b")
    text = "\n".join(found)
    assert "ran 2 times" in text
    assert "after b2 took over" in text
    assert "ghost succeeded on app-b" in text and "never ended there" in text
    assert "late ran to its end on app-a" in text and "no outcome" in text
    assert "two failed on db-a" in text and "ran to its end there" in text
    assert "store says site site-a is active" in text


def test_check_allows_a_retry_after_a_recorded_failure() -> None:
    """A step that ran to its end, was recorded as failed (its connection died) and was
    retried is not a double run."""
    j = journal({RUN: [finished("one", "db-b", 1, "failed"), finished("one", "db-b", 2)]})
    marks = ran(RUN, "one", "db-b", "1", "a1", 1.0) + ran(RUN, "one", "db-b", "2", "a1", 2.0)
    assert check(j, marks, ["a1"], "site-b", "site-b") == []


@pytest.mark.timeout(400)
def test_short_campaign_finds_no_violation() -> None:
    """20 randomized schedules (every fault kind) over a real 3-member etcd, four sshd hosts
    and two controllers: every drill is recovered from the other controller and the hosts'
    record agrees with the journal (0 violations). Fails, never skips, without etcd or sshd."""
    t0 = time.monotonic()
    lines: list[str] = []
    with campaign(seed=26, say=lines.append) as c:
        wall = c.run(20)
        figures = c.figures(wall)
    print("\n".join(lines))
    print(figures, f"({time.monotonic() - t0:.0f}s with set-up)")
    assert len(c.results) == 20
    assert {r.fault for r in c.results} == set(FAULTS)
    assert sum(r.injected for r in c.results) >= 15
    assert c.violations == 0, "\n".join(lines)


@pytest.mark.timeout(300)
def test_fenced_holder_leaves_its_spool_to_the_takeover() -> None:
    """A holder paused mid-failback past its lease, then continued once the other controller
    took the run over, removes no spool of the attempts it could not journal: the takeover
    takes the in-flight step's outcome from the spool (no failure, no re-run), and the hosts'
    record agrees with the journal."""
    with campaign(seed=0) as c:
        a, b = c.controllers
        assert finish(a.spawn("failover", "site-b", *c.common("a1")))[0] == 0
        before = set(c.store.run_ids())
        paused = a.spawn("failback", *c.common("a2"))
        assert wait_for(lambda: bool(set(c.store.run_ids()) - before), 30)
        time.sleep(1.0)
        os.killpg(paused.pid, signal.SIGSTOP)
        try:
            assert wait_for(lambda: c.store.lock_holder() is None, 15)
            taking = b.spawn("resume", *c.common("b3"))
            assert wait_for(lambda: c.store.lock_holder() is not None, 30)
        finally:
            os.killpg(paused.pid, signal.SIGCONT)
        code, err = finish(paused)
        assert code == 1 and "lock was lost" in err
        code, err = finish(taking)
        assert code == 0, err
        runs = [r for r in c.store.run_ids() if r not in before]
        journal = c.journal(runs)
        spooled = [e for _, e in journal.host_finished() if e.get("from_run")]
        assert spooled and all(e["status"] == "succeeded" for e in spooled)
        marks = [m for m in c.host_marks() if m.run in runs]
        assert check(journal, marks, ["a1", "a2", "b3"], "site-a", c._host_active()) == []
        ends = Counter((m.step, m.host) for m in marks if m.phase == "end")
        assert ends and set(ends.values()) == {1}
