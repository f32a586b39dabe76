"""contrib/: the systemd service + timer that run `drx check` every 30 minutes for
node_exporter, and the Prometheus alert rules on its metrics — checked and unit-tested with
promtool, their metric names checked against what drx exports."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.report.prometheus import METRICS
from tests.drill import World, world_dir

ROOT = Path(__file__).resolve().parents[1]
CONTRIB = ROOT / "contrib"
RULES = CONTRIB / "prometheus" / "drx-alerts.yml"


def _promtool() -> str:
    """promtool (Debian's prometheus package, make system-deps): required under CI."""
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool not installed (make system-deps)")
        pytest.skip("promtool not installed (make system-deps)")
    return found


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(CONTRIB / "systemd" / name)
    return parser


def test_promtool_accepts_the_alert_rules() -> None:
    """promtool check rules passes on the shipped rules."""
    res = subprocess.run(
        [_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 5 rules found" in res.stdout


def test_each_alert_fires_on_its_series() -> None:
    """promtool test rules: not ready (after 5 m), overdue, drift, RPO exposure over target
    and a stale check each fire with their labels and text; a ready site does not."""
    res = subprocess.run(
        [_promtool(), "test", "rules", "drx-alerts.test.yml"],
        cwd=RULES.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_rules_use_only_metrics_drx_exports() -> None:
    """Every drx_* name in an alert expression is one drx check writes; the three the
    operator asked for are there."""
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    used = {name for r in rules for name in re.findall(r"\bdrx_[a-z_]+", r["expr"])}
    assert used <= set(METRICS), used - set(METRICS)
    exprs = {r["expr"] for r in rules}
    assert {"drx_ready == 0", "drx_drill_overdue == 1", "drx_drift == 1"} <= exprs


def test_the_timer_runs_the_service_every_30_minutes() -> None:
    """The timer's calendar is every 30 minutes, persistent; the service is oneshot and
    counts 'not ready' (2) and '--strict' (1) as done (the metrics carry the finding)."""
    timer = _unit("drx-check.timer")
    assert timer["Timer"]["OnCalendar"] == "*:00/30"
    assert timer["Timer"]["Persistent"] == "true"
    service = _unit("drx-check.service")["Service"]
    assert service["Type"] == "oneshot"
    assert set(service["SuccessExitStatus"].split()) == {"1", "2"}


@pytest.fixture
def world() -> Iterator[World]:
    w = World(world_dir(), "local")
    w.write_inventory()
    w.write_runbook(
        """
        name: svc
        drill_every: 90d
        steps:
          - {id: promote, hosts: db@target, run: 'true', undo: 'true'}
        """
    )
    yield w
    shutil.rmtree(w.root, ignore_errors=True)


def test_the_services_command_writes_a_page_prometheus_reads(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """The service's ExecStart (with the textfile path moved into a temp dir) is a valid drx
    command: it writes a page that parses, with the metrics the alerts read."""
    argv = shlex.split(_unit("drx-check.service")["Service"]["ExecStart"])
    assert argv[:3] == ["/usr/local/bin/drx", "check", "site-b"]
    out = world.root / "textfile_collector" / "drx.prom"
    args = [str(out) if a.endswith("/drx.prom") else a for a in argv[1:]]
    code, err = world.run(capsys, *args)
    assert code == 0, err
    names = {f.name for f in text_string_to_metric_families(out.read_text())}
    assert {"drx_ready", "drx_drill_overdue", "drx_drift", "drx_check_timestamp_seconds"} <= names
