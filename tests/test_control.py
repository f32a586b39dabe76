"""Control from another terminal: ``drx approve``/``deny``/``abort``/``done`` run as second
processes against a running run with no terminal, through a state directory (and, in
test_etcd_control, through etcd)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.drill import World, world_dir

RUNBOOK = """
    name: gated
    steps:
      - {id: prep, hosts: db@target, run: 'true', undo: 'true'}
      - {id: promote, kind: manual, prompt: "Promote {{ target }}?", needs: [prep]}
      - {id: after, hosts: db@target, run: 'touch "$DRX_HOST_DIR/after"', needs: [promote], undo: 'true'}
"""


@pytest.fixture
def world() -> Iterator[World]:
    root = world_dir()
    w = World(root, "local")
    w.write_inventory()
    w.write_runbook(RUNBOOK)
    yield w
    shutil.rmtree(root, ignore_errors=True)


def drx(*args: str, state: Path | None = None, url: str | None = None) -> tuple[int, str, str]:
    """``drx ARGS`` as a second process (another terminal): (exit code, stdout, stderr)."""
    where = ["--state-dir", str(state)] if state is not None else []
    if url:
        where += ["--state-url", url]
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args, *where],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout, done.stderr


def journal_of(state: Path) -> list[dict[str, Any]]:
    runs = sorted((state / "runs").iterdir()) if (state / "runs").is_dir() else []
    if not runs or not (runs[-1] / "journal.jsonl").exists():
        return []
    lines = (runs[-1] / "journal.jsonl").read_text().splitlines()
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            break
    return out


def wait_event(state: Path, kind: str, step: str | None = None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e["event"] == kind and step in (None, e.get("step")) for e in journal_of(state)):
            return
        time.sleep(0.05)
    raise AssertionError(f"no {kind} {step or ''} in the journal: {journal_of(state)[-3:]}")


def finish(proc: subprocess.Popen[str], timeout: float = 60.0) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, err


def test_approve_from_another_process_lets_the_run_continue(world: World) -> None:
    """With no terminal the gate waits (printing the command that answers it); drx approve
    from a second process answers it, the run continues, and the journal, summary and report
    name user@host, 'drx approve' and the comment."""
    proc = world.spawn("failover", "site-b")
    try:
        wait_event(world.state, "gate_waiting", "promote")
        code, out, err = drx("approve", "latest", "--comment", "checked lag", state=world.state)
        assert code == 0, err
        assert "approved gate promote" in out
        code, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, err
    assert "drx approve" in err  # the waiting gate printed the command that answers it
    assert world.host_file("db-b", "after").exists()
    answered = next(e for e in world.journal() if e["event"] == "gate_answered")
    assert answered["approved"] is True and answered["via"] == "drx approve"
    assert answered["comment"] == "checked lag" and "@" in answered["by"]
    gate = world.step(world.summary(), "promote")
    assert gate["approved_via"] == "drx approve" and gate["approval_comment"] == "checked lag"
    code, report, _ = drx("report", state=world.state)
    assert code == 0 and answered["by"] in report


def test_refusals_name_what_is_waiting(world: World) -> None:
    """An unknown run, an unknown gate, done on a started step, and any request once the run
    has ended are refused with exit 2 and say why; the run is not changed by them."""
    proc = world.spawn("failover", "site-b")
    try:
        wait_event(world.state, "gate_waiting", "promote")
        code, _, err = drx("approve", "no-such-run", state=world.state)
        assert code == 2 and "no run 'no-such-run'" in err
        code, _, err = drx("approve", "latest", "nope", state=world.state)
        assert code == 2 and "no gate 'nope'" in err and "waiting: promote" in err
        code, _, err = drx("done", "latest", "prep", "--comment", "x", state=world.state)
        assert code == 2 and "already started" in err
        code, _, err = drx("deny", "latest", "--comment", "lag too high", state=world.state)
        assert code == 0, err
        code, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 1, err
    assert not world.host_file("db-b", "after").exists()
    gate = world.step(world.summary(), "promote")
    assert gate["status"] == "failed" and "declined by" in gate["message"]
    assert "via drx deny" in gate["message"] and "lag too high" in gate["message"]
    code, _, err = drx("approve", "latest", state=world.state)
    assert code == 2 and "is not running" in err


def test_abort_acts_as_a_first_ctrl_c(world: World) -> None:
    """drx abort while a gate waits ends the run cancelled (exit 130); the journal's interrupt
    names who aborted, how, and the comment, and the run's message says so."""
    proc = world.spawn("failover", "site-b")
    try:
        wait_event(world.state, "gate_waiting", "promote")
        code, _, err = drx("abort", "--comment", "wrong window", state=world.state)
        assert code == 0, err
        code, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 130, err
    stop = next(e for e in world.journal() if e["event"] == "interrupt")
    assert stop["via"] == "drx abort" and stop["comment"] == "wrong window"
    summary = world.summary()
    assert summary["status"] == "cancelled" and "wrong window" in summary["message"]
    assert not world.host_file("db-b", "after").exists()


def test_done_by_hand_lets_dependents_proceed(world: World) -> None:
    """drx done on a step that has not started marks it done_by_hand (journaled with who and
    the comment); it never runs, its dependents do, and the run succeeds."""
    world.write_runbook("""
        name: by-hand
        steps:
          - {id: slow, hosts: db@target, run: 'sleep 2', undo: 'true'}
          - {id: dns, hosts: db@target, run: 'touch "$DRX_HOST_DIR/dns"', needs: [slow], undo: 'touch "$DRX_HOST_DIR/undo-dns"'}
          - {id: after, hosts: db@target, run: 'touch "$DRX_HOST_DIR/after"', needs: [dns], undo: 'true'}
    """)
    proc = world.spawn("failover", "site-b")
    try:
        wait_event(world.state, "step_started", "slow")
        code, _, err = drx(
            "done", "latest", "dns", "--comment", "switched at the registrar", state=world.state
        )
        assert code == 0, err
        code, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, err
    assert not world.host_file("db-b", "dns").exists()
    assert world.host_file("db-b", "after").exists()
    dns = world.step(world.summary(), "dns")
    assert dns["status"] == "done_by_hand" and "switched at the registrar" in dns["message"]
    done = [e for e in world.journal() if e.get("step") == "dns"]
    assert [e["event"] for e in done] == ["step_finished"] and done[0]["via"] == "drx done"
    for fmt in ("text", "md", "html", "json", "junit"):
        code, report, err = drx("report", "--format", fmt, state=world.state)
        assert code == 0 and "switched at the registrar" in report, (fmt, err)
    code, _, err = drx(
        "failback", "--yes", "-r", str(world.runbook), "-i", str(world.inventory), state=world.state
    )
    assert code == 0, err
    assert not world.host_file("db-b", "undo-dns").exists()  # done by hand: not undone
    plan = json.loads((world.run_dirs()[-1] / "plan.json").read_text())
    assert {"id": "dns", "reason": "done by hand: a failback does not undo it"} in plan["left_out"]


def test_a_gate_nobody_answers_is_denied_at_its_timeout(world: World) -> None:
    """A manual step's timeout ends the wait for an answer: the gate is denied (error
    timeout), nothing after it runs, exit 1."""
    world.write_runbook(RUNBOOK.replace("needs: [prep]}", "needs: [prep], timeout: 1s}"))
    proc = world.spawn("failover", "site-b")
    code, err = finish(proc)
    assert code == 1, err
    gate = world.step(world.summary(), "promote")
    assert gate["status"] == "failed" and gate["error"] == "timeout"
    assert not world.host_file("db-b", "after").exists()
