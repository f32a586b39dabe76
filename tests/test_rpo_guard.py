"""The RPO guard (runbook ``rpo_guard: true``): a failover whose rpo_step measures more than
rpo_target fails (exit 1) before any step that needs the rpo_step starts; --accept-data-loss lets
it through and every record of the run says the operator accepted it, and how much."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests.drill import World, world_dir

RUNBOOK = """\
name: guarded
rpo_target: 1KB
rpo_step: measure
rpo_guard: true
steps:
  - id: stop-source
    hosts: db@source
    run: touch "$DRX_HOST_DIR/stopped"
    undo: rm -f "$DRX_HOST_DIR/stopped"
  - id: measure
    hosts: db@target
    run: echo "{{ vars.lag }} bytes behind"
    capture: number
    needs: [stop-source]
  - id: promote
    hosts: db@target
    run: touch "$DRX_HOST_DIR/promoted"
    undo: rm -f "$DRX_HOST_DIR/promoted"
    needs: [measure]
  - id: switch
    hosts: app@target
    run: touch "$DRX_HOST_DIR/switched"
    undo: rm -f "$DRX_HOST_DIR/switched"
    needs: [promote]
"""


@pytest.fixture
def local_world() -> Iterator[World]:
    """A two-site world of local hosts with the guarded runbook."""
    w = World(world_dir(), "local")
    w.write_inventory()
    w.write_runbook(RUNBOOK)
    try:
        yield w
    finally:
        shutil.rmtree(w.root, ignore_errors=True)


def _statuses(world: World, summary: dict[str, Any]) -> dict[str, str]:
    return {s["id"]: s["status"] for s in summary["steps"]}


def _started(world: World) -> list[str]:
    return [e["step"] for e in world.journal() if e["event"] == "step_started"]


def test_guard_trip_fails_the_run_before_dependents_start(world: World, capsys) -> None:
    """Over target: exit 1, promote/switch never start (nothing on their hosts), the message
    says measured vs target; over real sshd as on local hosts."""
    world.write_runbook(RUNBOOK)
    code, err = world.run(capsys, "failover", "site-b", "--yes", "--var", "lag=5000")
    assert code == 1
    summary = world.summary()
    assert _statuses(world, summary) == {
        "stop-source": "succeeded",
        "measure": "succeeded",
        "promote": "not_run",
        "switch": "not_run",
    }
    assert _started(world) == ["stop-source", "measure"]
    assert not world.host_file("db-b", "promoted").exists()
    assert not world.host_file("app-b", "switched").exists()
    message = "measure measured 5,000 B, over the rpo_target of 1,024 B"
    assert message in summary["message"] and message in err
    assert f"drx resume {summary['run_id']}" in err and "--accept-data-loss" in err
    assert summary["rpo"]["measured_bytes"] == 5000 and summary["rpo"]["met"] is False
    assert summary["rpo"]["guard"] == {
        "tripped": True,
        "accepted": False,
        "blocked": ["promote", "switch"],
        "message": summary["message"],
    }
    guard = [e for e in world.journal() if e["event"] == "rpo_guard"]
    assert [(e["measured"], e["target"], e["accepted"]) for e in guard] == [(5000, 1024, False)]
    assert world.step(summary, "promote")["message"] == summary["message"]


def test_accepted_data_loss_runs_and_every_report_records_it(local_world: World, capsys) -> None:
    """--accept-data-loss: the run goes on (exit 0) and summary.json and the text, md, html,
    json and junit reports all say the operator accepted the loss, and how much."""
    w = local_world
    code, _ = w.run(
        capsys, "failover", "site-b", "--yes", "--var", "lag=5000", "--accept-data-loss"
    )
    assert code == 0
    assert w.host_file("db-b", "promoted").exists() and w.host_file("app-b", "switched").exists()
    guard = w.summary()["rpo"]["guard"]
    assert (guard["tripped"], guard["accepted"], guard["accepted_loss_bytes"]) == (True, True, 5000)
    assert guard["blocked"] == []
    start = w.journal()[0]
    assert (start["rpo_guard"], start["accept_data_loss"]) == (True, True)
    texts = {}
    for fmt in ("text", "md", "html", "json", "junit"):
        code, _ = w.run(capsys, "report", "--format", fmt)
        assert code == 0
        texts[fmt] = w.last_stdout
    for fmt in ("text", "md", "html", "junit"):
        assert "accepted the data loss (--accept-data-loss)" in texts[fmt], fmt
        assert "4.9 KB (5,000 B)" in texts[fmt], fmt
    assert json.loads(texts["json"])["rpo"]["guard"]["accepted_loss_bytes"] == 5000
    assert '<property name="data_loss_accepted" value="5000.0"' in texts["junit"]
    assert '<property name="rpo_guard" value="accepted"' in texts["junit"]


def test_within_target_the_guard_holds_nothing_back(local_world: World, capsys) -> None:
    """At or under rpo_target the run is untouched, and the record says the guard did not trip."""
    code, _ = local_world.run(capsys, "failover", "site-b", "--yes", "--var", "lag=1024")
    assert code == 0
    assert local_world.summary()["rpo"]["guard"]["tripped"] is False
    code, _ = local_world.run(capsys, "report")
    assert "RPO guard on: the measured RPO was within 1 KB" in local_world.last_stdout


def test_guard_applies_under_emergency(local_world: World, capsys) -> None:
    """--emergency relaxes health and reachability, not the RPO guard."""
    code, _ = local_world.run(
        capsys, "failover", "site-b", "--yes", "--emergency", "--var", "lag=5000"
    )
    assert code == 1
    assert not local_world.host_file("db-b", "promoted").exists()


def test_resume_after_a_trip_needs_accept_data_loss(local_world: World, capsys) -> None:
    """Resuming a refused failover trips the guard again on the carried measurement (exit 1);
    with --accept-data-loss the blocked steps run and the acceptance is recorded."""
    w = local_world
    assert w.run(capsys, "failover", "site-b", "--yes", "--var", "lag=5000")[0] == 1
    code, err = w.run(capsys, "resume", "--yes", "--var", "lag=5000")
    assert code == 1 and "over the rpo_target" in err
    assert _started(w) == []
    code, _ = w.run(capsys, "resume", "--yes", "--var", "lag=5000", "--accept-data-loss")
    assert code == 0
    assert _started(w) == ["promote", "switch"]
    summary = w.summary()
    assert w.step(summary, "measure")["carried_from"] is not None
    assert summary["rpo"]["guard"]["accepted_loss_bytes"] == 5000


def test_failback_after_a_trip_undoes_what_ran(local_world: World, capsys) -> None:
    """A refused failover leaves a clean failback: only the steps that ran are undone."""
    w = local_world
    assert w.run(capsys, "failover", "site-b", "--yes", "--var", "lag=5000")[0] == 1
    assert w.host_file("db-a", "stopped").exists()
    code, _ = w.run(capsys, "failback", "--yes", "--var", "lag=5000")
    assert code == 0
    assert _started(w) == ["undo-stop-source"]
    assert not w.host_file("db-a", "stopped").exists()


def test_a_tolerated_failure_of_the_rpo_step_measured_nothing(local_world: World, capsys) -> None:
    """An rpo_step that fails with on_failure: continue would let its dependents run: it
    measured no RPO, so the guard refuses; --accept-data-loss lets it through, recorded."""
    w = local_world
    w.write_runbook(
        RUNBOOK.replace(
            "    needs: [stop-source]\n", "    needs: [stop-source]\n    on_failure: continue\n"
        )
    )
    code, err = w.run(capsys, "failover", "site-b", "--yes", "--var", "lag=unknown")
    assert code == 1 and "measure measured no RPO (failed)" in err
    assert _started(w) == ["stop-source", "measure"]
    code, _ = w.run(capsys, "resume", "--yes", "--var", "lag=unknown", "--accept-data-loss")
    assert code == 0
    guard = w.summary()["rpo"]["guard"]
    assert (guard["accepted"], guard["accepted_loss_bytes"]) == (True, None)


FAILBACK_MEASURED = RUNBOOK.replace(
    "rpo_guard: true\n", "rpo_guard: true\nfailback_rpo_step: undo-measure\n"
).replace(
    "    capture: number\n    needs: [stop-source]\n",
    "    capture: number\n    needs: [stop-source]\n"
    "    undo: {run: 'echo \"{{ vars.back_lag }} bytes behind\"', capture: number}\n",
)

BACK_LAG_0 = ("--var", "back_lag=0")


def test_failback_rpo_step_measures_and_guards_a_failback(local_world: World, capsys) -> None:
    """With failback_rpo_step, a failback records its own RPO and the guard holds it too: over
    target, the undos that need the measurement never start (exit 1) until the loss is accepted."""
    w = local_world
    w.write_runbook(FAILBACK_MEASURED)
    assert w.run(capsys, "failover", "site-b", "--yes", "--var", "lag=0", *BACK_LAG_0)[0] == 0
    code, err = w.run(capsys, "failback", "--yes", "--var", "lag=0", "--var", "back_lag=4096")
    assert code == 1 and "undo-measure measured 4,096 B, over the rpo_target of 1,024 B" in err
    assert _started(w) == ["undo-switch", "undo-promote", "undo-measure"]
    assert w.host_file("db-a", "stopped").exists()  # the source was not brought back
    summary = w.summary()
    assert summary["rpo"]["step"] == "undo-measure" and summary["rpo"]["measured_bytes"] == 4096
    assert summary["rpo"]["guard"]["blocked"] == ["undo-stop-source"]
    code, _ = w.run(
        capsys, "resume", "--yes", "--var", "lag=0", "--var", "back_lag=4096", "--accept-data-loss"
    )
    assert code == 0 and not w.host_file("db-a", "stopped").exists()
    assert w.summary()["rpo"]["guard"]["accepted_loss_bytes"] == 4096


def test_a_failback_within_target_reports_its_rpo(local_world: World, capsys) -> None:
    """A failback whose failback_rpo_step measures within target runs through and reports it."""
    w = local_world
    w.write_runbook(FAILBACK_MEASURED)
    assert w.run(capsys, "failover", "site-b", "--yes", "--var", "lag=0", *BACK_LAG_0)[0] == 0
    assert w.run(capsys, "failback", "--yes", "--var", "lag=0", *BACK_LAG_0)[0] == 0
    rpo = w.summary()["rpo"]
    assert (rpo["measured_bytes"], rpo["met"], rpo["guard"]["tripped"]) == (0, True, False)
