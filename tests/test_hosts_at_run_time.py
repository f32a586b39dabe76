"""hosts decided at run time: a hosts template over the results of the steps a step needs,
bounded by candidates (pre-flighted), shown in plans as "decided at run time from STEP", and
undone on the hosts actually used. On local hosts and on real sshd hosts."""

from __future__ import annotations

import json

from tests.drill import World

FIND = """
    name: found
    steps:
      - id: find-primary
        hosts: control
        run: echo {{ vars.primary }}
        capture: text
      - id: fence
        hosts: "{{ steps['find-primary'].value }}"
        run: 'touch "$DRX_HOST_DIR/fenced"'
        undo: 'rm "$DRX_HOST_DIR/fenced"; touch "$DRX_HOST_DIR/unfenced"'
        needs: [find-primary]
    vars: {primary: db-b}
"""


def test_hosts_template_picks_the_hosts_when_the_step_starts(world: World, capsys) -> None:
    """The plan shows the step's candidates and where its hosts come from; the run renders the
    template from find-primary's value and runs only there; the failback undoes it there."""
    world.write_runbook(FIND)
    code, err = world.run(capsys, "plan", "site-b")
    assert code == 0, err
    assert (
        "hosts: decided at run time from find-primary (candidates: db-a, app-a, db-b, app-b)"
        in (world.last_stdout)
    )
    code, err = world.run(capsys, "plan", "site-b", "--format", "json")
    fence = next(s for s in json.loads(world.last_stdout)["steps"] if s["id"] == "fence")
    assert fence["hosts_decided_at_run_time_from"] == ["find-primary"]
    assert fence["hosts"] == ["db-a", "app-a", "db-b", "app-b"]
    code, err = world.run(capsys, "failover", "site-b", "--yes")
    assert code == 0, err
    summary = world.summary()
    step = next(s for s in summary["steps"] if s["id"] == "fence")
    assert [h["host"] for h in step["hosts"]] == ["db-b"]
    assert world.host_file("db-b", "fenced").exists()
    assert not any(world.host_file(h, "fenced").exists() for h in ("db-a", "app-a", "app-b"))
    code, err = world.run(capsys, "failback", "--yes")
    assert code == 0, err
    assert world.host_file("db-b", "unfenced").exists()
    assert not world.host_file("db-a", "unfenced").exists()


def test_a_list_of_selectors_runs_on_each_with_serial(world: World, capsys) -> None:
    """A template that renders 'db-a, app@target' runs on db-a and app-b, one at a time under
    serial: 1."""
    world.write_runbook(
        FIND.replace("{primary: db-b}", "{primary: 'db-a, app@target'}").replace(
            "needs: [find-primary]", "needs: [find-primary]\n        serial: 1"
        )
    )
    code, err = world.run(capsys, "failover", "site-b", "--yes")
    assert code == 0, err
    step = next(s for s in world.summary()["steps"] if s["id"] == "fence")
    hosts = {h["host"]: h for h in step["hosts"]}
    assert set(hosts) == {"db-a", "app-b"}
    first, second = sorted(hosts.values(), key=lambda h: h["attempts"][0]["started_at"])
    assert first["attempts"][0]["finished_at"] <= second["attempts"][0]["started_at"]


def test_a_host_outside_the_candidates_fails_the_step(world: World, capsys) -> None:
    """The template names app-b but candidates are db@target: the step fails (exit 1) with a
    message naming the candidates, and runs nowhere."""
    world.write_runbook(
        FIND.replace("{primary: db-b}", "{primary: app-b}").replace(
            "needs: [find-primary]", "needs: [find-primary]\n        candidates: db@target"
        )
    )
    code, _ = world.run(capsys, "failover", "site-b", "--yes")
    assert code == 1
    step = next(s for s in world.summary()["steps"] if s["id"] == "fence")
    assert step["status"] == "failed"
    assert "app-b is not among the candidates of step 'fence' (db-b)" in (step.get("message") or "")
    assert not world.host_file("app-b", "fenced").exists()


def test_bad_hosts_templates_and_candidates_are_refused_with_their_line(
    world: World, capsys
) -> None:
    """A hosts template reading a step outside its needs, and candidates matching no host, are
    errors at their lines, exit 2, and nothing runs."""
    world.write_runbook("""
        name: bad
        steps:
          - {id: find-primary, hosts: control, run: 'touch "$DRX_HOST_DIR/ran"; echo db-b', capture: text}
          - id: fence
            hosts: "{{ steps['find-primary'].value }}"
            run: 'true'
          - id: fence2
            hosts: "{{ steps['find-primary'].value }}"
            candidates: cache@target
            run: 'true'
            needs: [find-primary]
    """)
    code, err = world.run(capsys, "failover", "site-b", "--yes")
    assert code == 2
    assert (
        "runbook.yaml:6" in err and "'find-primary' is not among the needs of step 'fence'" in err
    )
    assert "runbook.yaml:10" in err and "candidates:" in err


def test_every_candidate_is_pre_flighted(world: World, capsys) -> None:
    """A candidate nobody can reach refuses the run at the pre-flight (exit 2) before anything
    runs, even though the template would not have picked it."""
    import yaml

    from orchestrator.lab.sshd import free_port

    world.write_runbook(FIND.replace("{primary: db-b}", "{primary: db-a}"))
    doc = yaml.safe_load(world.inventory.read_text())
    db_b = doc["sites"]["site-b"]["hosts"]["db-b"]
    db_b.update(transport="ssh", address="127.0.0.1", port=free_port("127.0.0.1"), user="nobody")
    world.inventory.write_text(yaml.safe_dump(doc, sort_keys=False))
    code, err = world.run(capsys, "failover", "site-b", "--yes")
    assert code == 2
    assert "pre-flight failed" in err and "db-b" in err
    assert not world.host_file("db-a", "fenced").exists()
