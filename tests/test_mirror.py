"""failback: mirror — a succeeded failover is failed back by running the runbook's steps the
other way; a half-done one is still rolled back by the undo plan. On local hosts and on real sshd
hosts."""

from __future__ import annotations

import json

from tests.drill import World

# Each step appends "<step>:<source>-><target>:<direction>" to a file on the host it runs on.
MIRROR = """
    name: mirrored
    failback: mirror
    rto_target: 5m
    health:
      - {name: primary, hosts: db@active, run: 'test -f "$DRX_HOST_DIR/primary"', timeout: 10s,
         interval: 100ms}
    steps:
      - id: demote
        hosts: db@source
        run: 'rm -f "$DRX_HOST_DIR/primary"; echo "demote:{{ source }}->{{ target }}:{{ direction }}" >> "$DRX_HOST_DIR/log"'
        undo: 'touch "$DRX_HOST_DIR/primary"; echo undo-demote >> "$DRX_HOST_DIR/log"'
      - id: promote
        hosts: db@target
        run: 'touch "$DRX_HOST_DIR/primary"; echo "promote:{{ source }}->{{ target }}:{{ direction }}" >> "$DRX_HOST_DIR/log"'
        undo: 'rm -f "$DRX_HOST_DIR/primary"; echo undo-promote >> "$DRX_HOST_DIR/log"'
        needs: [demote]
      - id: gate
        hosts: app@target
        run: '{{ "exit 1" if vars.get("fail_gate") else "true" }}'
        needs: [promote]
"""


def _log(world: World, host: str) -> list[str]:
    path = world.host_file(host, "log")
    return path.read_text().split() if path.exists() else []


def test_mirrored_failback_runs_the_steps_the_other_way(world: World, capsys) -> None:
    """A succeeded failover a→b of a mirror runbook is failed back by the same steps with source
    b, target a, direction failback (not by the undos), recorded as failback_mode mirror in
    summary.json, drx runs, the report and the OTLP trace; state moves back to a."""
    world.write_inventory()
    world.host_file("db-a", "primary").touch()
    world.write_runbook(MIRROR)
    assert world.run(capsys, "failover", "site-b", "--yes")[0] == 0
    failover = world.summary()
    code, err = world.run(capsys, "failback", "--dry-run", "--format", "json")
    assert code == 0, err
    preview = json.loads(world.last_stdout)
    assert preview["failback_mode"] == "mirror"
    assert (preview["source"], preview["target"], preview["moves_to"]) == (
        "site-b",
        "site-a",
        "site-a",
    )
    assert preview["waves"] == [["demote"], ["promote"], ["gate"]]
    assert {s["id"]: s["hosts"] for s in preview["steps"]} == {
        "demote": ["db-b"],
        "promote": ["db-a"],
        "gate": ["app-a"],
    }
    assert preview["health"] == [{"name": "primary", "hosts": ["db-a"]}]
    assert world.run(capsys, "failback", "--dry-run")[0] == 0
    assert "(mirror: reverses" in world.last_stdout
    code, err = world.run(capsys, "failback", "--yes")
    assert code == 0, err
    assert _log(world, "db-a") == [
        "demote:site-a->site-b:failover",
        "promote:site-b->site-a:failback",
    ]
    assert _log(world, "db-b") == [
        "promote:site-a->site-b:failover",
        "demote:site-b->site-a:failback",
    ]
    summary = world.summary()
    assert summary["direction"] == "failback" and summary["failback_mode"] == "mirror"
    assert (summary["source"], summary["target"], summary["moves_to"]) == (
        "site-b",
        "site-a",
        "site-a",
    )
    assert summary["parent_run"] == summary["reverses"] == failover["run_id"]
    assert [s["undo_of"] for s in summary["steps"]] == [None, None, None]
    assert summary["health"]["held_at"] is not None
    state = json.loads((world.state / "state.json").read_text())
    assert state["active"] == "site-a"
    assert world.run(capsys, "runs")[0] == 0
    line = next(ln for ln in world.last_stdout.splitlines() if ln.startswith(summary["run_id"]))
    assert "site-a" in line and "mode mirror" in line and f"reverses {failover['run_id']}" in line
    assert world.run(capsys, "report", summary["run_id"])[0] == 0
    assert "failback mode mirror" in world.last_stdout
    assert "site-b → site-a" in world.last_stdout
    assert world.run(capsys, "report", summary["run_id"], "--format", "otlp")[0] == 0
    assert '"drx.failback_mode"' in world.last_stdout and '"mirror"' in world.last_stdout
    # the failover is failed back now: nothing left to fail back
    code, err = world.run(capsys, "failback", "--yes")
    assert code == 2 and "nothing to fail back" in err


def test_failed_failover_of_a_mirror_runbook_is_rolled_back_by_its_undos(
    world: World, capsys
) -> None:
    """A mirror runbook's failover that failed half-way is failed back by the undo plan of what
    it did (failback_mode undo), never by running the steps the other way."""
    world.write_inventory()
    world.host_file("db-a", "primary").touch()
    world.write_runbook(MIRROR)
    code, _ = world.run(capsys, "failover", "site-b", "--yes", "--var", "fail_gate=1")
    assert code == 1
    code, err = world.run(capsys, "failback", "--dry-run", "--format", "json")
    assert code == 0, err
    preview = json.loads(world.last_stdout)
    assert preview["failback_mode"] == "undo"
    assert preview["waves"] == [["undo-promote"], ["undo-demote"]]
    assert world.run(capsys, "failback", "--yes")[0] == 0
    summary = world.summary()
    assert summary["failback_mode"] == "undo"
    assert (summary["source"], summary["target"]) == ("site-a", "site-b")
    assert _log(world, "db-b")[-1] == "undo-promote"
    assert _log(world, "db-a")[-1] == "undo-demote"
    assert world.host_file("db-a", "primary").exists()
    assert not world.host_file("db-b", "primary").exists()


def test_mirrored_failback_is_predicted_from_every_run_that_moved_the_service_there(
    world: World, capsys
) -> None:
    """The plan of a mirrored failback to a takes its step figures from the runs that moved the
    service to a (here: the first mirrored failback), not from the undo failbacks."""
    world.write_inventory()
    world.host_file("db-a", "primary").touch()
    world.write_runbook(MIRROR)
    for _ in range(2):
        assert world.run(capsys, "failover", "site-b", "--yes")[0] == 0
        code, err = world.run(capsys, "failback", "--dry-run", "--format", "json")
        assert code == 0, err
        preview = json.loads(world.last_stdout)
        assert world.run(capsys, "failback", "--yes")[0] == 0
    sources = {s["id"]: s["prediction_source"] for s in preview["steps"]}
    assert sources == {"demote": "history", "promote": "history", "gate": "history"}


def test_unknown_failback_mode_is_refused_with_its_line(world: World, capsys) -> None:
    """failback: revert is a validation error naming the file and line, exit 2, nothing runs."""
    world.write_inventory()
    world.write_runbook("""
        name: bad
        failback: revert
        steps:
          - {id: a, hosts: db@target, run: 'touch "$DRX_HOST_DIR/ran"'}
    """)
    code, err = world.run(capsys, "failover", "site-b", "--yes")
    assert code == 2
    assert "runbook.yaml:3" in err and "failback must be undo or mirror" in err
    assert not world.host_file("db-b", "ran").exists()


def test_validate_warns_when_a_mirror_runbook_has_no_undo_at_all(world: World, capsys) -> None:
    """drx validate of a mirror runbook without any undo warns once, at the failback line,
    instead of once per step; with one undo, no warning."""
    world.write_inventory()
    world.write_runbook("""
        name: noundo
        failback: mirror
        steps:
          - {id: a, hosts: db@target, run: 'true'}
          - {id: b, hosts: db@target, run: 'true', needs: [a]}
    """)
    code, err = world.run(capsys, "validate")
    out = world.last_stdout + err
    assert code == 0, out
    assert "runbook.yaml:3" in out and "no step has an 'undo'" in out
    assert "failback will leave it out" not in out
    world.write_runbook("""
        name: oneundo
        failback: mirror
        steps:
          - {id: a, hosts: db@target, run: 'true', undo: 'true'}
          - {id: b, hosts: db@target, run: 'true', needs: [a]}
    """)
    code, err = world.run(capsys, "validate")
    out = world.last_stdout + err
    assert code == 0 and "undo" not in out, out


def test_a_failed_mirrored_failback_is_resumed_as_a_mirror(world: World, capsys) -> None:
    """A mirrored failback that failed at its last step resumes as a mirrored failback: the
    steps that succeeded are carried, the failed one runs at the failover's source, and the
    service ends at site-a."""
    world.write_inventory()
    world.host_file("db-a", "primary").touch()
    world.write_runbook(MIRROR)
    assert world.run(capsys, "failover", "site-b", "--yes")[0] == 0
    assert world.run(capsys, "failback", "--yes", "--var", "fail_gate=1")[0] == 1
    failed = world.summary()
    assert failed["failback_mode"] == "mirror" and failed["status"] == "failed"
    code, err = world.run(capsys, "resume", "--yes")
    assert code == 0, err
    resumed = world.summary()
    assert resumed["direction"] == "failback" and resumed["failback_mode"] == "mirror"
    assert (resumed["source"], resumed["target"]) == ("site-b", "site-a")
    assert resumed["resumes"] == failed["run_id"]
    carried = {s["id"]: s.get("carried_from") for s in resumed["steps"]}
    assert carried["demote"] == carried["promote"] == failed["run_id"]
    assert carried["gate"] is None
    assert _log(world, "db-a").count("promote:site-b->site-a:failback") == 1
    state = json.loads((world.state / "state.json").read_text())
    assert state["active"] == "site-a"


# The old primary is made a replica again before the mirrored failback: the reprotect phase.
REPROTECTED = (
    MIRROR
    + """
    reprotect:
      - id: rejoin
        hosts: db@target
        run: 'sleep 0.3; echo "rejoin:{{ source }}->{{ target }}:{{ direction }}" >> "$DRX_HOST_DIR/log"'
      - id: caught-up
        kind: check
        hosts: db@target
        run: 'grep -c rejoin "$DRX_HOST_DIR/log"'
        capture: number
        until: value >= 1
        interval: 100ms
        timeout: 10s
        needs: [rejoin]
"""
)


def test_reprotect_runs_first_and_outside_the_failback_rto(world: World, capsys) -> None:
    """A mirrored failback runs the reprotect steps first (at the failback's target, with its
    source/target), every forward step after them; the RTO starts at the first forward step and
    the reprotect time is reported apart."""
    world.write_inventory()
    world.host_file("db-a", "primary").touch()
    world.write_runbook(REPROTECTED)
    assert world.run(capsys, "failover", "site-b", "--yes")[0] == 0
    assert world.summary()["reprotect"] is None
    code, err = world.run(capsys, "failback", "--dry-run", "--format", "json")
    assert code == 0, err
    preview = json.loads(world.last_stdout)
    assert preview["waves"] == [["rejoin"], ["caught-up"], ["demote"], ["promote"], ["gate"]]
    assert {s["id"]: s["hosts"] for s in preview["steps"]}["rejoin"] == ["db-a"]
    assert preview["critical_path"] == ["demote", "promote", "gate"]
    assert world.run(capsys, "failback", "--yes")[0] == 0
    assert _log(world, "db-a") == [
        "demote:site-a->site-b:failover",
        "rejoin:site-b->site-a:failback",
        "promote:site-b->site-a:failback",
    ]
    summary = world.summary()
    assert summary["rto"]["start_step"] == "demote"
    steps = {s["id"]: s for s in summary["steps"]}
    assert steps["demote"]["needs"] == ["caught-up"]
    assert summary["reprotect"]["steps"] == ["rejoin", "caught-up"]
    assert summary["reprotect"]["duration_s"] >= 0.3
    assert summary["reprotect"]["carried_from"] is None
    # the RTO is measured from the first forward step: the 0.3 s reprotect is not in it
    assert steps["rejoin"]["start_offset_s"] < 0 <= steps["demote"]["start_offset_s"]
    assert world.run(capsys, "report", summary["run_id"])[0] == 0
    assert "reprotect phase took" in world.last_stdout
    assert "before the RTO started" in world.last_stdout


def test_drx_reprotect_alone_is_carried_by_the_later_failback(world: World, capsys) -> None:
    """drx reprotect runs only the reprotect steps (direction reprotect, the service stays at
    site-b); the mirrored failback after it carries them instead of running them again."""
    world.write_inventory()
    world.host_file("db-a", "primary").touch()
    world.write_runbook(REPROTECTED)
    assert world.run(capsys, "failover", "site-b", "--yes")[0] == 0
    failover = world.summary()
    code, err = world.run(capsys, "reprotect", "--yes")
    assert code == 0, err
    rep = world.summary()
    assert rep["direction"] == "reprotect" and rep["reverses"] == failover["run_id"]
    assert [s["id"] for s in rep["steps"]] == ["rejoin", "caught-up"]
    assert _log(world, "db-a")[-1] == "rejoin:site-b->site-a:reprotect"
    state = json.loads((world.state / "state.json").read_text())
    assert state["active"] == state["runbooks"]["mirrored"]["active"] == "site-b"
    code, err = world.run(capsys, "failback", "--dry-run", "--format", "json")
    assert code == 0, err
    preview = {s["id"]: s for s in json.loads(world.last_stdout)["steps"]}
    assert preview["rejoin"]["carried_from"] == rep["run_id"]
    assert "carried_from" not in preview["demote"]
    code, err = world.run(capsys, "failback", "--yes")
    assert code == 0, err
    back = world.summary()
    assert back["reverses"] == failover["run_id"]
    carried = {s["id"]: s.get("carried_from") for s in back["steps"]}
    assert carried["rejoin"] == carried["caught-up"] == rep["run_id"]
    assert back["reprotect"]["carried_from"] == rep["run_id"]
    assert world.run(capsys, "report", back["run_id"], "--format", "md")[0] == 0
    assert f"reprotect phase was carried from run {rep['run_id']}" in world.last_stdout
    assert _log(world, "db-a").count("rejoin:site-b->site-a:reprotect") == 1
    assert not any(
        line.startswith("rejoin:") and "failback" in line for line in _log(world, "db-a")
    )


def test_reprotect_is_refused_without_a_mirrored_failback_to_prepare(world: World, capsys) -> None:
    """drx reprotect exits 2 and runs nothing for a failover that failed (its failback is the
    undo plan) and for a runbook without reprotect steps."""
    world.write_inventory()
    world.host_file("db-a", "primary").touch()
    world.write_runbook(REPROTECTED)
    assert world.run(capsys, "failover", "site-b", "--yes", "--var", "fail_gate=1")[0] == 1
    code, err = world.run(capsys, "reprotect", "--yes")
    assert code == 2 and "failed back by its undos" in err
    assert not any(line.startswith("rejoin") for line in _log(world, "db-a"))
    world.write_runbook(MIRROR)
    code, err = world.run(capsys, "reprotect", "--yes")
    assert code == 2 and "no 'reprotect' steps" in err


def test_a_reprotect_step_needing_a_forward_step_is_refused_with_its_line(
    world: World, capsys
) -> None:
    """A reprotect step that needs a step of 'steps' is an error at its needs line, exit 2,
    nothing runs."""
    world.write_inventory()
    world.write_runbook("""
        name: bad
        failback: mirror
        steps:
          - {id: a, hosts: db@target, run: 'touch "$DRX_HOST_DIR/ran"'}
        reprotect:
          - id: r
            hosts: db@target
            run: 'true'
            needs: [a]
    """)
    code, err = world.run(capsys, "failover", "site-b", "--yes")
    assert code == 2
    assert "runbook.yaml:10" in err and "reprotect step 'r' needs 'a'" in err
    assert not world.host_file("db-b", "ran").exists()
