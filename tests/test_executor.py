"""The scheduler on the fake transport (no sockets): deterministic start order, checks on
stderr, capture failures, emergency tolerance of source-site failures."""

from __future__ import annotations

import textwrap
from pathlib import Path

from orchestrator.model.loading import load_both
from orchestrator.plan.build import build_plan
from orchestrator.record.journal import Journal
from orchestrator.record.outcomes import Status
from orchestrator.record.store import file_sink
from orchestrator.run.executor import Executor
from orchestrator.transport.fake import FakeReply, FakeTransport

INVENTORY = """
active: site-a
defaults: {transport: ssh}
sites:
  site-a: {hosts: {db-a: {address: 10.9.0.1, roles: [db]}, app-a: {address: 10.9.0.2, roles: [app]}}}
  site-b: {hosts: {db-b: {address: 10.9.1.1, roles: [db]}, app-b: {address: 10.9.1.2, roles: [app]}}}
"""


def _run(
    tmp_path: Path, runbook: str, handler, *, max_parallel: int = 8, emergency=False, guard=None
):
    (tmp_path / "rb.yaml").write_text(textwrap.dedent(runbook))
    (tmp_path / "inv.yaml").write_text(INVENTORY)
    rb, inv = load_both(str(tmp_path / "rb.yaml"), str(tmp_path / "inv.yaml"))
    plan = build_plan(rb, inv, "site-b", emergency=emergency)
    transport = FakeTransport(handler)
    conns = {h.name: transport.connect(h.spec) for h in plan.hosts() if h.name != "control"}
    journal = Journal(file_sink(tmp_path / "journal.jsonl", fsync=False), plan.redactor)
    ex = Executor(
        plan, conns, journal, tmp_path / "output", max_parallel=max_parallel, gate=lambda *_: True
    )
    if guard is not None:
        ex.start_guards.append(guard)
    outcomes = ex.run()
    journal.close()
    return outcomes, transport, journal.events


def test_ready_steps_start_in_declaration_order(tmp_path: Path) -> None:
    """With one slot, independent steps start in the order the runbook declares them."""
    runbook = "name: o\nsteps:\n" + "".join(
        f"  - {{id: s{i}, hosts: db@target, run: 'echo {i}'}}\n" for i in (3, 1, 2, 0)
    )
    _, transport, events = _run(tmp_path, runbook, lambda h, c: 0, max_parallel=1)
    assert transport.commands() == ["echo 3", "echo 1", "echo 2", "echo 0"]
    started = [e["step"] for e in events if e["event"] == "step_started"]
    assert started == ["s3", "s1", "s2", "s0"]


def test_check_until_reads_stderr(tmp_path: Path) -> None:
    """`until` sees stderr: the check holds once stderr says ready."""
    polls = iter(["starting", "starting", "ready"])

    def handler(host, command):
        return FakeReply(rc=0, stderr=next(polls) + "\n")

    outcomes, _, events = _run(
        tmp_path,
        """
        name: c
        steps:
          - {id: wait, kind: check, hosts: db@target, run: probe, until: "'ready' in stderr", interval: 50ms}
        """,
        handler,
    )
    assert outcomes["wait"].status is Status.SUCCEEDED
    assert [e["ok"] for e in events if e["event"] == "poll"] == [False, False, True]


def test_capture_that_finds_nothing_fails_a_command_step(tmp_path: Path) -> None:
    """A command step whose capture finds no number fails with error 'capture'."""
    outcomes, _, _ = _run(
        tmp_path,
        """
        name: c
        steps:
          - {id: lag, hosts: db@target, run: lag, capture: number, on_failure: continue}
          - {id: frac, hosts: app@target, run: frac, capture: number}
        """,
        lambda h, c: FakeReply(stdout="no digits here\n" if c == "lag" else "x=2.50s\n"),
    )
    assert outcomes["lag"].status is Status.FAILED and outcomes["lag"].error == "capture"
    assert outcomes["frac"].value == 2.5


def test_emergency_tolerates_failures_of_source_only_steps(tmp_path: Path) -> None:
    """Under emergency a failing step whose hosts are all at the source lets dependents run;
    without emergency it aborts the run."""
    runbook = """
        name: e
        steps:
          - {id: freeze, hosts: app@source, run: freeze}
          - {id: promote, hosts: db@target, run: promote, needs: [freeze]}
    """

    def handler(host, command):
        return 1 if command == "freeze" else 0

    outcomes, _, _ = _run(tmp_path, runbook, handler, emergency=True)
    assert outcomes["freeze"].status is Status.FAILED
    assert outcomes["promote"].status is Status.SUCCEEDED
    outcomes, _, _ = _run(tmp_path, runbook, handler)
    assert outcomes["promote"].status is Status.NOT_RUN


def test_a_start_guard_stops_new_steps_attempts_and_polls(tmp_path: Path) -> None:
    """A guard added to the executor's one may-I-start check stops check polls, retries and
    new steps alike; what never started is cancelled with the guard's reason."""
    calls: list[str] = []

    def handler(host, command):
        calls.append(command)
        return 1 if command == "flaky" else 0

    def guard():
        return "lease in doubt" if len(calls) >= 2 else None

    runbook = """
        name: g
        steps:
          - {id: first, kind: check, hosts: db@target, run: probe, until: "rc == 1", interval: 50ms}
          - {id: later, hosts: db@target, run: later}
    """
    outcomes, _, _ = _run(tmp_path, runbook, handler, max_parallel=1, guard=guard)
    assert calls == ["probe", "probe"]
    assert outcomes["first"].status is Status.CANCELLED
    assert outcomes["later"].status is Status.CANCELLED
    assert outcomes["later"].message == "lease in doubt"
    calls.clear()
    runbook = """
        name: g
        steps:
          - {id: first, hosts: app@target, run: flaky, retries: 5, retry_delay: 0}
    """
    outcomes, _, _ = _run(tmp_path, runbook, handler, guard=guard)
    assert calls == ["flaky", "flaky"]
    assert outcomes["first"].status is Status.FAILED and outcomes["first"].attempts == 2


def test_a_wait_step_ends_at_once_when_the_run_stops(tmp_path: Path) -> None:
    """A wait runs nothing: when nothing new may start, it ends cancelled within a moment
    instead of sleeping out its duration."""
    import time

    stop_at = time.monotonic() + 0.3
    outcomes, _, _ = _run(
        tmp_path,
        """
        name: w
        steps:
          - {id: pause, kind: wait, duration: 30s}
        """,
        lambda h, c: 0,
        guard=lambda: "lease in doubt" if time.monotonic() > stop_at else None,
    )
    assert time.monotonic() - stop_at < 1.0
    assert outcomes["pause"].status is Status.CANCELLED
    assert outcomes["pause"].message == "lease in doubt"
