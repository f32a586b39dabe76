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

    from orchestrator import slog
    from orchestrator.record.events import HostFinished, StepFinished, StepStarted
    from orchestrator.run import live

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
    plan = types.SimpleNamespace(run_id="r-1")

    def lines(direct: bool) -> list[str]:
        out = io.StringIO()
        with redirect_stderr(out):
            live.configure_logging(log_format, 0)
            if not direct:  # structlog configured as drx does, its logger writing the lines
                slog.structlog()
                live._SETUP = None
            view = live.LogView(
                plan, types.SimpleNamespace(listeners=[]), 0, None, log_format == "json"
            )  # type: ignore[arg-type]
            assert (view._render is not None) is direct
            for e in events:
                view.on_event(e)
        live.unconfigure_logging()
        slog.structlog().reset_defaults()
        # the timestamps differ by when each was written
        return [
            re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+Z", "T", line) for line in out.getvalue().splitlines()
        ]

    direct, through = lines(True), lines(False)
    assert len(direct) == 3 and direct == through
    assert "two | three | four" in direct[1]
    if log_format == "json":
        assert all(json.loads(line)["run_id"] == "r-1" for line in direct)
    # another configuration (not drx's) made after drx's: the view logs through structlog
    live.configure_logging(log_format, 0)
    slog.structlog().configure(processors=[slog.structlog().processors.JSONRenderer()])
    try:
        view = live.LogView(plan, types.SimpleNamespace(listeners=[]), 0, None, False)  # type: ignore[arg-type]
        assert view._render is None and view.log is not None
    finally:
        live.unconfigure_logging()
        slog.structlog().reset_defaults()


def test_a_console_run_does_not_import_structlog(world: World, tmp_path) -> None:
    """A run's console lines need no structlog (nor the asyncio it imports), and a runbook
    without a template needs no Jinja: a failover of such a local runbook in a fresh
    interpreter leaves all three unimported, and its lines are there."""
    import subprocess
    import sys
    import textwrap

    (tmp_path / "rb.yaml").write_text(
        "name: quiet\nsteps:\n  - {id: a, hosts: n1@target, run: 'true'}\n"
    )
    (tmp_path / "inv.yaml").write_text(
        textwrap.dedent(
            """
            active: site-a
            defaults: {transport: local}
            sites:
              site-a: {hosts: {n0: {address: 127.0.0.1}}}
              site-b: {hosts: {n1: {address: 127.0.0.1, roles: [n1]}}}
            """
        )
    )
    script = textwrap.dedent(
        f"""
        import sys
        from orchestrator.cli import main
        try:
            main(["failover", "site-b", "-r", "{tmp_path}/rb.yaml", "-i", "{tmp_path}/inv.yaml",
                  "--state-dir", "{tmp_path}/state", "--yes"])
        except SystemExit as exc:
            print("exit", exc.code, "structlog" in sys.modules, "asyncio" in sys.modules,
                  "jinja2" in sys.modules)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.split() == ["exit", "0", "False", "False", "False"], done.stderr
    assert "step_started step=a" in done.stderr and "step_finished step=a" in done.stderr
