"""``--log-format json``: every line drx writes on stderr is one JSON object — run log lines,
the closing line, refusals, validation problems, warnings and the parser's own usage errors."""

from __future__ import annotations

import json
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
