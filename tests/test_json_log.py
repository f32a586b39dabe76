"""``--log-format json``: every line drx writes on stderr is one JSON object — run log lines,
the closing line, refusals, validation problems, warnings and the parser's own usage errors."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.drill import World

pytestmark = pytest.mark.parametrize("world", ["local"], indirect=True)


def objects(stderr: str) -> list[dict[str, Any]]:
    """Every line of ``stderr`` as a JSON object (fails on any other line)."""
    out = []
    for line in stderr.splitlines():
        record = json.loads(line)
        assert isinstance(record, dict), line
        assert {"event", "level", "timestamp"} <= set(record), line
        out.append(record)
    assert out, "nothing on stderr"
    return out


def test_every_stderr_line_is_json(world: World, capsys) -> None:
    """A run, its closing line, a refusal, validation errors and warnings, an unused --var
    warning and a usage error: all JSON objects, with their fields."""
    world.write_runbook("""
        name: js
        rto_target: 1h
        steps:
          - {id: a, hosts: db@target, run: 'echo hi'}
    """)
    code, err = world.run(capsys, "failover", "site-b", "--log-format", "json", "--var", "x=1")
    assert code == 0
    records = objects(err)
    assert any(r["level"] == "warning" and r.get("var") == "x" for r in records)
    closing = records[-1]
    assert closing["event"] == "run_closed" and closing["status"] == "succeeded"
    assert closing["run_id"] == world.summary()["run_id"] and closing["rto_met"] is True
    code, err = world.run(capsys, "failover", "site-b", "--log-format", "json")
    assert code == 2
    [refusal] = objects(err)
    assert refusal["level"] == "error" and refusal["exit_code"] == 2
    assert "already active" in refusal["event"]
    code, err = world.run(capsys, "validate", "--log-format", "json")
    assert code == 0
    warning, ok = objects(err)
    assert (warning["level"], warning["step"], warning["line"]) == ("warning", "a", 5)
    assert ok["warnings"] == 1
    world.write_runbook("""
        name: js
        steps:
          - {id: a, hosts: db@target, run: 'echo {{ vars.nope }}', needs: [b]}
          - {id: b, hosts: db@target, run: 'true', needs: [a]}
    """)
    code, err = world.run(capsys, "validate", "--log-format", "json")
    assert code == 2
    records = objects(err)
    assert {r.get("step") for r in records if r["level"] == "error"} >= {"a"}
    assert records[-1]["exit_code"] == 2
    code, err = world.run(capsys, "failover", "--log-format", "json", "--bogus")
    assert code == 2
    assert any("--bogus" in r["event"] for r in objects(err))


@pytest.mark.parametrize("log_format", ["console", "json"])
def test_run_log_lines_are_what_structlog_would_write(world: World, log_format: str) -> None:
    """The run's step lines are rendered by the configured renderer and written directly (no
    per-line structlog dispatch): the same text structlog itself writes for the same event —
    a started step, a failed host with its output, a failed step — with the run id bound in
    JSON; under another structlog configuration the lines go through structlog."""
    import io
    import types
    from contextlib import redirect_stderr

    from orchestrator.record.events import HostFinished, StepFinished, StepStarted
    from orchestrator.run import live
    from orchestrator.slog import structlog

    events = [
        StepStarted(t=1.5, ts="x", step="promote db", hosts=["db1"], wave=2),
        HostFinished(
            t=2.0,
            ts="y",
            step="promote db",
            host="db1",
            status="failed",
            rc=3,
            duration_s=0.5,
            output_tail="one\ntwo\nthree\nfour",
            attempt=1,
        ),
        StepFinished(t=2.0, ts="y", step="promote db", status="failed", error="rc 3"),
    ]

    def lines(direct: bool) -> list[str]:
        out = io.StringIO()
        with redirect_stderr(out):
            live.configure_logging(log_format, 0)
            journal = types.SimpleNamespace(listeners=[])
            plan = types.SimpleNamespace(run_id="r-1")
            view = live.LogView(plan, journal, 0, None, log_format == "json")  # type: ignore[arg-type]
            assert (view._render is not None) is True
            if not direct:
                view._render = None
            for e in events:
                view.on_event(e)
        structlog.reset_defaults()
        # the timestamps differ by when each was written
        return [
            re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+Z", "T", line) for line in out.getvalue().splitlines()
        ]

    direct, through = lines(True), lines(False)
    assert len(direct) == 3 and direct == through
    assert (
        "two | three | four" in direct[1] or "two | three | four" in json.loads(direct[1])["output"]
    )
    if log_format == "json":
        assert all(json.loads(line)["run_id"] == "r-1" for line in direct)
    # another configuration (not drx's): the view logs through structlog
    structlog.configure(processors=[structlog.processors.JSONRenderer()])
    try:
        view = live.LogView(
            types.SimpleNamespace(run_id="r"), types.SimpleNamespace(listeners=[]), 0, None, False
        )  # type: ignore[arg-type]
        assert view._render is None
    finally:
        structlog.reset_defaults()
