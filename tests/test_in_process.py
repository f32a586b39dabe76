"""Runs made in-process through the Python API the command line calls: the log's
configuration, stderr, the SIGINT handler, the environment and drx's module-level state are
the same after a drill as before it, so that a second drill sees nothing of the first."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from typing import Any

import pytest
import structlog

from orchestrator.cli import say
from orchestrator.cli.app import _WARNED
from orchestrator.cli.drill import run_drill
from orchestrator.cli.runcommand import at_the_edge, run_inputs
from orchestrator.record import journal
from tests.drill import World

RUNBOOK = """
    name: twice
    steps:
      - {id: a, hosts: db@target, run: 'echo a >> "$DRX_HOST_DIR/ran"', undo: 'echo undo-a >> "$DRX_HOST_DIR/undone"'}
      - {id: b, hosts: app@target, run: 'echo b >> "$DRX_HOST_DIR/ran"', undo: 'echo undo-b >> "$DRX_HOST_DIR/undone"', needs: [a]}
"""


def _process_state() -> dict[str, Any]:
    """What a run could leave behind in the process."""
    return {
        "structlog_configured": structlog.is_configured(),
        "structlog": structlog.get_config(),
        "stderr": sys.stderr,
        "sigint": signal.getsignal(signal.SIGINT),
        "env": dict(os.environ),
        "json_lines": say.json_lines(),
        "open_journals": len(journal._OPEN),
        "warned_state_dirs": set(_WARNED),
        "threads": sorted(
            t.name
            for t in threading.enumerate()
            if not t.daemon and t is not threading.main_thread()
        ),
    }


def _drill(world: World, log_format: str) -> int:
    """``drx drill site-b --yes --log-format LOG_FORMAT`` as the command line makes it: stderr
    wrapped for JSON by the entry point, the run command's edge, then the drill itself."""
    inputs = run_inputs(
        runbook=str(world.runbook),
        inventory=str(world.inventory),
        state_dir=str(world.state),
        log_format=log_format,
    )
    with say.log_format(log_format), at_the_edge(inputs) as ready:
        seen_inside = signal.getsignal(signal.SIGINT)
        code = run_drill(
            ready, "site-b", hold_s=0, yes=True, force=False, max_parallel=4, accept_data_loss=False
        )
    assert seen_inside is ready.opts.interrupts  # Ctrl-C went to the drill, then the runs
    return code


def test_two_drills_in_one_process_leave_nothing_behind(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two drills in one process (JSON log lines, then console lines): each exits 0 and goes
    home; after each, structlog's configuration, sys.stderr, the SIGINT handler, the
    environment, the open journals and threads are as before; the second drill logs console
    lines (not the first's JSON) and its two runs name only its own drill."""
    world.write_runbook(RUNBOOK)
    capsys.readouterr()
    before = _process_state()

    assert _drill(world, "json") == 0
    after_first = _process_state()
    first_err = capsys.readouterr().err
    assert after_first == before

    assert _drill(world, "console") == 0
    assert _process_state() == before
    second_err = capsys.readouterr().err

    first_lines = [line for line in first_err.splitlines() if line.strip()]
    assert first_lines and all(json.loads(line) for line in first_lines)
    assert "step_finished" in first_err
    assert not any(line.startswith("{") for line in second_err.splitlines())
    assert "step_finished" in second_err

    runs = world.summaries()
    assert [r["direction"] for r in runs] == ["failover", "failback"] * 2
    first_drill, second_drill = runs[0]["run_id"], runs[2]["run_id"]
    assert [r["drill_id"] for r in runs] == [first_drill] * 2 + [second_drill] * 2
    assert runs[3]["parent_run"] == second_drill
    assert world.host_file("db-b", "undone").read_text().split() == ["undo-a", "undo-a"]


def test_a_run_made_without_the_edge_sets_nothing_process_wide(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner alone (a failover planned and executed through the Python API, no command
    line edge around it) succeeds without configuring structlog or setting a SIGINT handler,
    during the run as well as after it."""
    from orchestrator.cli.failover import failover_plan
    from orchestrator.cli.options import run_options
    from orchestrator.run.executor import Executor
    from orchestrator.run.runner import execute

    world.write_runbook(RUNBOOK)
    seen: list[tuple[object, bool]] = []
    original = Executor.run

    def watched(self: Executor) -> Any:
        seen.append((signal.getsignal(signal.SIGINT), structlog.is_configured()))
        return original(self)

    monkeypatch.setattr(Executor, "run", watched)
    before = _process_state()
    inputs = run_inputs(
        runbook=str(world.runbook), inventory=str(world.inventory), state_dir=str(world.state)
    )
    opts = inputs.opts
    plan = failover_plan(inputs, "site-b", force=False, emergency=False)
    code, summary = execute(plan, opts.store, run_options(opts, yes=True))
    assert (code, summary.status) == (0, "succeeded")
    assert seen == [(before["sigint"], before["structlog_configured"])]
    assert _process_state() == before
