"""Site plans (runbooks made of runbooks): one DAG of namespaced steps, each child keeping its
vars, steps, health, RTO and undo; failover, failback and resume across children — on local
hosts and on real sshd hosts."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from tests.drill import World


def mark(name: str) -> str:
    """A command that appends ``name`` and the time to the host's marks file."""
    return f'echo "{name} $(date +%s.%N)" >> "$DRX_HOST_DIR/marks"'


DB = f"""
    name: db
    rto_target: 1m
    rpo_target: 30s
    rpo_step: lag
    rto_start: lag
    vars: {{port: 5432}}
    health:
      - name: primary
        hosts: db@active
        run: test -f "$DRX_HOST_DIR/primary"
        interval: 100ms
        timeout: 10s
    steps:
      - id: fence
        hosts: db@source
        run: 'rm -f "$DRX_HOST_DIR/primary"; {mark("db/fence")}'
        undo: 'touch "$DRX_HOST_DIR/primary"; {mark("undo-db/fence")}'
      - id: lag
        kind: check
        hosts: db@target
        run: echo 3
        capture: number
        needs: [fence]
      - id: promote
        hosts: db@target
        run: 'touch "$DRX_HOST_DIR/primary"; {mark("db/promote")}; echo port={{{{ vars.port }}}} lag={{{{ steps.lag.value }}}}'
        undo: 'rm -f "$DRX_HOST_DIR/primary"; {mark("undo-db/promote")}'
        needs: [lag]
"""

WEB = f"""
    name: web
    vars: {{port: 80}}
    health:
      - name: http
        hosts: app@active
        run: test -f "$DRX_HOST_DIR/serving"
        interval: 100ms
        timeout: 10s
    steps:
      - id: gate
        hosts: app@target
        run: 'test -f "$DRX_HOST_DIR/go"'
        undo: 'true'
      - id: start
        hosts: app@target
        run: 'touch "$DRX_HOST_DIR/serving"; {mark("web/start")}; echo port={{{{ vars.port }}}}; if [ -f "$DRX_HOST_DIR/slow" ]; then touch "$DRX_HOST_DIR/started"; sleep 1.5; fi'
        undo: 'rm -f "$DRX_HOST_DIR/serving"; {mark("undo-web/start")}'
        needs: [gate]
"""

SITE = f"""
    name: site
    rto_target: 5m
    steps:
      - id: prepare
        hosts: db@target
        run: '{mark("prepare")}'
        undo: '{mark("undo-prepare")}'
      - id: db
        kind: runbook
        runbook: db.yaml
        vars: {{port: 6543}}
        needs: [prepare]
      - id: web
        kind: runbook
        runbook: web.yaml
        needs: [db]
      - id: announce
        hosts: app@target
        run: '{mark("announce")}'
        undo: '{mark("undo-announce")}'
        needs: [web]
"""


def site_world(world: World) -> None:
    (world.root / "db.yaml").write_text(textwrap.dedent(DB))
    (world.root / "web.yaml").write_text(textwrap.dedent(WEB))
    world.write_runbook(SITE)
    world.host_file("db-a", "primary").touch()
    world.host_file("app-a", "serving").touch()


def marks(world: World) -> list[str]:
    """Every host's marks, in the order they were made."""
    found: list[tuple[float, str]] = []
    for host in ("db-a", "db-b", "app-a", "app-b"):
        path = world.host_file(host, "marks")
        if path.exists():
            for line in path.read_text().splitlines():
                name, t = line.split()
                found.append((float(t), name))
    return [name for _, name in sorted(found)]


def test_site_plan_fails_over_and_back_child_by_child(world: World, capsys) -> None:
    """Children run in dependency order with their own vars and steps, each child's health is
    polled at the target before the next child starts; the summary judges each child; state
    names the site for the plan and each child; failback undoes in reverse and polls each
    child's health back at the source."""
    site_world(world)
    world.host_file("app-b", "go").touch()
    code, err = world.run(capsys, "failover", "site-b", "--yes")
    assert code == 0, err
    assert marks(world) == ["prepare", "db/fence", "db/promote", "web/start", "announce"]
    summary = world.summary()
    steps = {s["id"]: s for s in summary["steps"]}
    assert list(steps) == [
        "prepare", "db/fence", "db/lag", "db/promote", "db/health:primary",
        "web/gate", "web/start", "web/health:http", "announce",
    ]  # fmt: skip
    assert steps["db/health:primary"]["hosts"][0]["host"] == "db-b"
    # the health of db held before web started
    db_health_end = steps["db/health:primary"]["start_offset_s"]
    assert db_health_end <= steps["web/gate"]["start_offset_s"]
    children = {c["id"]: c for c in summary["children"]}
    assert children["db"]["status"] == "succeeded" and children["db"]["runbook"] == "db"
    assert children["db"]["rto"]["target_s"] == 60 and children["db"]["rto"]["met"] is True
    assert children["db"]["rto"]["start_step"] == "db/lag"  # the child's own rto_start
    db_rto = steps["db/health:primary"]["start_offset_s"] - steps["db/lag"]["start_offset_s"]
    assert children["db"]["rto"]["measured_s"] >= round(db_rto, 3) - 0.002
    assert children["db"]["rpo"]["measured_s"] == 3 and children["db"]["rpo"]["met"] is True
    assert children["web"]["rto"]["measured_s"] <= summary["rto"]["measured_s"]
    assert len(children["db"]["runbook_sha256"]) == 64
    assert summary["rpo"]["step"] == "db/lag" and summary["rpo"]["measured_s"] == 3
    state = json.loads((world.state / "state.json").read_text())
    assert {k: state["runbooks"][k]["active"] for k in ("site", "db", "web")} == {
        "site": "site-b",
        "db": "site-b",
        "web": "site-b",
    }
    # drx logs names a child's step by its namespaced id; the child's vars were overridden
    code, err = world.run(capsys, "logs", "latest", "db/promote", "db-b")
    assert code == 0, err
    assert "port=6543 lag=3" in world.last_stdout
    code, err = world.run(capsys, "logs", "latest", "web/start")
    assert "port=80" in world.last_stdout
    assert world.host_file("db-b", "primary").exists()
    assert not world.host_file("db-a", "primary").exists()
    world.host_file("db-a", "marks").unlink()
    for host in ("db-b", "app-a", "app-b"):
        world.host_file(host, "marks").unlink(missing_ok=True)
    code, err = world.run(capsys, "failback", "--yes")
    assert code == 0, err
    assert marks(world) == [
        "undo-announce", "undo-web/start", "undo-db/promote", "undo-db/fence", "undo-prepare",
    ]  # fmt: skip
    back = {s["id"]: s for s in world.summary()["steps"]}
    assert back["undo-db/health:primary"]["hosts"][0]["host"] == "db-a"
    assert back["undo-db/health:primary"]["status"] == "succeeded"
    assert world.host_file("db-a", "primary").exists()
    state = json.loads((world.state / "state.json").read_text())
    assert state["runbooks"]["db"]["active"] == "site-a"


def test_site_plan_failed_in_a_child_resumes_and_fails_back(world: World, capsys) -> None:
    """A child step that fails stops the site run; resume carries what succeeded in every child,
    runs the rest; the failback of the resumed run undoes steps of both runs."""
    site_world(world)
    code, err = world.run(capsys, "failover", "site-b", "--yes")
    assert code == 1, err
    failed = world.summary()
    children = {c["id"]: c["status"] for c in failed["children"]}
    assert children == {"db": "succeeded", "web": "failed"}
    world.host_file("app-b", "go").touch()
    code, err = world.run(capsys, "resume", "--yes")
    assert code == 0, err
    resumed = world.summary()
    assert world.step(resumed, "db/promote")["carried_from"] == failed["run_id"]
    assert {c["id"]: c["status"] for c in resumed["children"]} == {
        "db": "succeeded",
        "web": "succeeded",
    }
    assert marks(world) == ["prepare", "db/fence", "db/promote", "web/start", "announce"]
    code, err = world.run(capsys, "failback", "--yes")
    assert code == 0, err
    assert marks(world)[5:] == [
        "undo-announce", "undo-web/start", "undo-db/promote", "undo-db/fence", "undo-prepare",
    ]  # fmt: skip


def test_source_health_of_a_child_is_checked_before_failover(world: World, capsys) -> None:
    """A child whose health does not hold at the source refuses the site failover; nothing ran."""
    site_world(world)
    world.host_file("app-a", "serving").unlink()
    code, err = world.run(capsys, "failover", "site-b", "--yes")
    assert code != 0
    assert "web/health:http" in err or "http" in err
    assert marks(world) == []


def test_plan_json_names_children_and_predicts_from_standalone_runs(world: World, capsys) -> None:
    """A standalone run of a child, or a run of another site plan including it, predicts that
    child's steps in the site plan; plan json steps carry their child and the document lists the
    children with predicted RTOs."""
    site_world(world)
    world.write_runbook(DB)  # the db runbook drilled alone first
    code, err = world.run(capsys, "failover", "site-b", "--yes")
    assert code == 0, err
    world.write_runbook(SITE)
    code, err = world.run(capsys, "plan", "site-b", "--format", "json", "--force")
    assert code == 0, err
    doc = json.loads(world.last_stdout)
    steps = {s["id"]: s for s in doc["steps"]}
    assert steps["db/promote"]["child"] == "db" and steps["prepare"]["child"] is None
    assert steps["db/promote"]["prediction_source"] == "history"
    assert steps["web/start"]["prediction_source"] == "unknown"
    # web drilled as a child of another site plan (under another id) predicts it here too
    world.write_runbook("""
        name: other
        steps: [{id: frontend, kind: runbook, runbook: web.yaml}]
    """)
    world.host_file("app-b", "go").touch()
    code, err = world.run(capsys, "failover", "site-b", "--yes")
    assert code == 0, err
    world.write_runbook(SITE)
    code, err = world.run(capsys, "plan", "site-b", "--format", "json", "--force")
    steps = {s["id"]: s for s in json.loads(world.last_stdout)["steps"]}
    assert steps["web/start"]["prediction_source"] == "history"
    kids = {c["id"]: c for c in doc["children"]}
    assert kids["db"]["runbook"] == "db" and kids["db"]["predicted_rto_s"] > 0
    assert Path(kids["web"]["file"]).name == "web.yaml"
    code, _ = world.run(capsys, "plan", "site-b", "--force")
    assert "Site critical path: prepare → [db] → [web] → announce" in world.last_stdout
    assert "  db: db (" in world.last_stdout
    code, _ = world.run(capsys, "plan", "site-b", "--force", "--format", "dot")
    assert "subgraph cluster_0 {" in world.last_stdout and 'label="db (db)"' in world.last_stdout
    code, _ = world.run(capsys, "plan", "site-b", "--force", "--format", "mermaid")
    assert 'subgraph c1["web (web)"]' in world.last_stdout


# -- validation ---------------------------------------------------------------------------------

CASES_INVENTORY = Path(__file__).parent / "cases" / "inventory.yaml"
GOOD_CHILD = """\
name: child
steps:
  - id: one
    hosts: db@target
    run: 'true'
    undo: 'true'
"""


def validate(
    capsys, tmp_path: Path, files: dict[str, str]
) -> tuple[int, list[tuple[str, int, str]]]:
    """Write ``files`` (the first is the site plan), run ``drx validate``: (exit, problems as
    (file name, line, message))."""
    from tests.cli import drx
    from tests.test_validation import problems

    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(textwrap.dedent(text))
    first = tmp_path / next(iter(files))
    code, _, err = drx(capsys, "validate", "-r", str(first), "-i", str(CASES_INVENTORY))
    found = [(p["file"], p["line"], p["message"]) for p in problems(err)]
    return code, [f for f, p in zip(found, problems(err), strict=True) if p["severity"] == "error"]


def test_every_problem_of_a_site_plan_is_reported_at_once_in_its_own_file(
    capsys, tmp_path: Path
) -> None:
    """A missing child, a kind: runbook step with run/hosts/undo, an rpo_step naming a kind:
    runbook step, an error inside a child (a bad duration, a site the inventory lacks, an unknown
    need) and two children with one name: all reported in one go, each with the file and line
    where it is, exit 2."""
    code, found = validate(
        capsys,
        tmp_path,
        {
            "site.yaml": """\
                name: site
                rpo_step: twin
                steps:
                  - id: gone
                    kind: runbook
                    runbook: missing.yaml
                  - id: bad
                    kind: runbook
                    runbook: sub/bad.yaml
                    hosts: db@target
                    run: 'true'
                    undo: 'true'
                  - id: twin
                    kind: runbook
                    runbook: twin.yaml
                """,
            "sub/bad.yaml": """\
                name: child
                steps:
                  - id: one
                    hosts: db@site-c
                    run: 'true'
                    timeout: soon
                  - id: two
                    hosts: db@target
                    run: 'true'
                    needs: [three]
                """,
            "twin.yaml": GOOD_CHILD,
        },
    )
    assert code == 2
    where = {(f, line) for f, line, _ in found}
    assert ("site.yaml", 6) in where  # missing.yaml
    assert {("site.yaml", 10), ("site.yaml", 11), ("site.yaml", 12)} <= where  # hosts/run/undo
    assert ("site.yaml", 2) in where  # rpo_step names a kind: runbook step
    assert ("bad.yaml", 6) in where  # bad duration, in the child's file
    assert ("bad.yaml", 4) in where  # site-c: the inventory has no such site
    assert ("bad.yaml", 10) in where  # needs an unknown step
    assert any("same name" in m or "both have the name" in m for _, _, m in found)


def test_include_cycle_names_the_chain_of_files(capsys, tmp_path: Path) -> None:
    """a.yaml → b.yaml → a.yaml is refused where b includes a, naming the chain."""
    include = "name: {n}\nsteps:\n  - id: next\n    kind: runbook\n    runbook: {to}\n"
    code, found = validate(
        capsys,
        tmp_path,
        {
            "a.yaml": include.format(n="a", to="b.yaml"),
            "b.yaml": include.format(n="b", to="a.yaml"),
        },
    )
    assert code == 2
    assert [(f, line) for f, line, _ in found] == [("b.yaml", 5)]
    assert "a.yaml → b.yaml → a.yaml" in found[0][2]


def test_nesting_deeper_than_eight_is_refused(capsys, tmp_path: Path) -> None:
    """Nine levels of children below the site plan: refused at the ninth include."""
    include = "name: r{n}\nsteps:\n  - id: c\n    kind: runbook\n    runbook: r{m}.yaml\n"
    files = {f"r{n}.yaml": include.format(n=n, m=n + 1) for n in range(9)}
    files["r9.yaml"] = GOOD_CHILD.replace("child", "r9")
    code, found = validate(capsys, tmp_path, files)
    assert code == 2
    assert [(f, line) for f, line, _ in found] == [("r8.yaml", 5)]
    assert "at most 8" in found[0][2]
    del files["r9.yaml"]
    files["r8.yaml"] = GOOD_CHILD.replace("child", "r8")
    code, found = validate(capsys, tmp_path / "ok", files)
    assert code == 0, found


def test_child_named_like_its_parent_and_duplicate_child_ids(capsys, tmp_path: Path) -> None:
    """A child whose name is its parent's, and two children with one id, are refused."""
    code, found = validate(
        capsys,
        tmp_path,
        {
            "site.yaml": """\
                name: child
                steps:
                  - {id: x, kind: runbook, runbook: c.yaml}
                  - {id: x, kind: runbook, runbook: c.yaml}
                """,
            "c.yaml": GOOD_CHILD,
        },
    )
    assert code == 2
    messages = " | ".join(m for _, _, m in found)
    assert "same name as the runbook that includes it" in messages
    assert "duplicate step id 'x'" in messages


def test_reports_show_each_child(world: World, capsys, tmp_path: Path) -> None:
    """Text, Markdown and HTML reports list each child with its RTO; JUnit has a testsuite per
    child (its steps and its rto-target); OTLP has a span per child holding its steps' spans;
    ``drx runs`` lists the children under the site run."""
    site_world(world)
    world.host_file("app-b", "go").touch()
    assert world.run(capsys, "failover", "site-b", "--yes")[0] == 0
    world.run(capsys, "report")
    text = world.last_stdout
    assert "Children — 2" in text and "60 s target — met" in text
    assert "2 of 2 child health checks held (db/health:primary, web/health:http)" in text
    world.run(capsys, "report", "--format", "md")
    assert "## Children" in world.last_stdout and "| `web` | web |" in world.last_stdout
    world.run(capsys, "report", "--format", "html")
    assert '<section id="children">' in world.last_stdout
    assert '<g class="child succeeded"><title>db (db): succeeded' in world.last_stdout
    world.run(capsys, "report", "--format", "junit")
    import xml.etree.ElementTree as ET

    root = ET.fromstring(world.last_stdout)
    suites = {s.get("name", "").rpartition("/")[2]: s for s in root.iter("testsuite")}
    assert set(suites) == {"site.failover.site-b", "db", "web"}
    assert [c.get("name") for c in suites["db"].iter("testcase")] == [
        "db/fence", "db/lag", "db/promote", "db/health:primary", "rto-target",
    ]  # fmt: skip
    assert root.get("tests") == str(sum(int(s.get("tests", "0")) for s in suites.values()))
    world.run(capsys, "report", "--format", "otlp")
    doc = json.loads(world.last_stdout)
    spans = [s for r in doc["resourceSpans"] for ss in r["scopeSpans"] for s in ss["spans"]]
    by_id = {s["spanId"]: s["name"] for s in spans}
    parent = {s["name"]: by_id.get(s.get("parentSpanId", "")) for s in spans}
    assert parent["db/promote"] == "db (db)" and parent["web/start"] == "web (web)"
    assert parent["db (db)"] == "failover site" and parent["prepare"] == "failover site"
    world.run(capsys, "runs")
    lines = world.last_stdout.splitlines()
    assert lines[2].split()[:4] == ["└", "db", "db", "succeeded"]
    assert lines[3].split()[:4] == ["└", "web", "web", "succeeded"]


def test_nested_children_and_when_wire_into_one_dag(tmp_path: Path) -> None:
    """Grandchildren are named a/b/step; a child's steps without needs need what its include
    step needs; needing an include step needs every step of that child (health included);
    the include's when guards each of its steps."""
    from orchestrator.model.loading import load_both
    from orchestrator.plan.build import build_plan

    (tmp_path / "leaf.yaml").write_text(
        textwrap.dedent("""\
            name: leaf
            health: [{name: ok, hosts: db@active, run: 'true'}]
            steps:
              - {id: x, hosts: db@target, run: 'true', undo: 'true'}
              - {id: y, hosts: db@target, run: 'true', undo: 'true', needs: [x]}
            """)
    )
    (tmp_path / "mid.yaml").write_text(
        textwrap.dedent("""\
            name: mid
            steps:
              - {id: first, hosts: app@target, run: 'true', undo: 'true'}
              - {id: b, kind: runbook, runbook: leaf.yaml, when: "direction == 'failover'"}
            """)
    )
    (tmp_path / "site.yaml").write_text(
        textwrap.dedent("""\
            name: top
            steps:
              - {id: start, hosts: app@target, run: 'true', undo: 'true'}
              - {id: a, kind: runbook, runbook: mid.yaml, needs: [start]}
              - {id: end, hosts: app@target, run: 'true', undo: 'true', needs: [a]}
            """)
    )
    runbook, inventory = load_both(str(tmp_path / "site.yaml"), str(CASES_INVENTORY))
    plan = build_plan(runbook, inventory, "site-b")
    assert list(plan.steps) == ["start", "a/first", "a/b/x", "a/b/y", "a/b/health:ok", "end"]
    assert plan.steps["a/first"].needs == ["start"]
    assert plan.steps["a/b/x"].needs == ["start"]  # inherited through two includes
    assert plan.steps["a/b/health:ok"].needs == ["a/b/x", "a/b/y"]
    assert set(plan.steps["end"].needs) == {"a/first", "a/b/x", "a/b/y", "a/b/health:ok"}
    assert plan.steps["a/b/y"].step.when == "direction == 'failover'"
    assert [h.name for h in plan.steps["a/b/health:ok"].hosts] == ["db-b"]
    assert set(runbook.children) == {"a", "a/b"} and runbook.children["a/b"].parent == "a"


def test_ctrl_c_in_a_child_resumes_and_fails_back(world: World, capsys) -> None:
    """Ctrl-C while a child's step runs lets it finish and starts nothing new; resume runs the
    rest of the site plan; the failback undoes the steps of both runs in reverse."""
    import os
    import signal
    import time

    site_world(world)
    world.host_file("app-b", "go").touch()
    world.host_file("app-b", "slow").touch()
    proc = world.spawn("failover", "site-b", "--yes")
    started = world.host_file("app-b", "started")
    deadline = time.monotonic() + 30
    while not started.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "web/start never started"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    cancelled = world.summaries()[-1]
    status = {s["id"]: s["status"] for s in cancelled["steps"]}
    assert status["web/start"] == "succeeded" and status["announce"] == "cancelled"
    world.host_file("app-b", "slow").unlink()
    code, err = world.run(capsys, "resume", "--yes")
    assert code == 0, err
    assert marks(world) == ["prepare", "db/fence", "db/promote", "web/start", "announce"]
    code, err = world.run(capsys, "failback", "--yes")
    assert code == 0, err
    assert marks(world)[5:] == [
        "undo-announce", "undo-web/start", "undo-db/promote", "undo-db/fence", "undo-prepare",
    ]  # fmt: skip


def test_site_plan_through_the_etcd_store(etcd, etcd_prefix: str) -> None:
    """With --state-url, a site plan fails over and back through the shared store: the lock,
    the journal and the state (the site plan's and each child's active site) live in etcd."""
    import os
    import shutil
    import subprocess
    import sys

    from tests.drill import world_dir

    root = world_dir()
    try:
        world = World(root, "local")
        world.write_inventory()
        site_world(world)
        world.host_file("app-b", "go").touch()
        url = etcd.url(etcd_prefix, ttl="5s")
        argv = [sys.executable, "-m", "orchestrator.cli"]
        files = ["-r", str(world.runbook), "-i", str(world.inventory)]
        opts = ["--state-dir", str(root / "local"), "--state-url", url]
        env = {**os.environ, "NO_COLOR": "1"}

        def drx(*args: str, files: list[str] = files) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*argv, *args, *files, *opts], capture_output=True, text=True, env=env, timeout=60
            )

        done = drx("failover", "site-b", "--yes")
        assert done.returncode == 0, done.stderr
        status = drx("status", "-r", str(root / "db.yaml"), files=["-i", str(world.inventory)])
        assert "active site: site-b" in status.stdout, status.stdout + status.stderr
        done = drx("failback", "--yes")
        assert done.returncode == 0, done.stderr
        assert marks(world)[-5:] == [
            "undo-announce", "undo-web/start", "undo-db/promote", "undo-db/fence", "undo-prepare",
        ]  # fmt: skip
        runs = json.loads(drx("runs", "--format", "json", files=[]).stdout)
        assert [r["direction"] for r in runs] == ["failover", "failback"]
        assert {c["id"] for c in runs[0]["children"]} == {"db", "web"}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_childs_rpo_guard_holds_the_site_plan(world: World, capsys) -> None:
    """A child's rpo_guard over target stops the steps that need its rpo_step, in the site
    plan too: the promote never ran, the summary says the guard tripped."""
    site_world(world)
    guarded = DB.replace("rpo_step: lag", "rpo_step: lag\n    rpo_guard: true").replace(
        "run: echo 3", "run: echo 99"
    )
    (world.root / "db.yaml").write_text(textwrap.dedent(guarded))
    world.host_file("app-b", "go").touch()
    code, err = world.run(capsys, "failover", "site-b", "--yes")
    assert code != 0, err
    summary = world.summary()
    assert summary["rpo"]["guard"]["tripped"] is True
    assert world.step(summary, "db/promote")["status"] == "not_run"
    assert "db/promote" not in marks(world)


def test_shipped_site_plan_fails_over_and_back_on_the_demo_hosts(tmp_path: Path) -> None:
    """runbooks/site.yaml (database, application and traffic tiers) validates, plans with a
    block per tier, fails the demo site over (www at site-b) and back (www at site-a), and
    records the active site of the site plan and of each tier."""
    import shutil
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    for name in ("runbooks", "inventory", "demo"):
        shutil.copytree(repo / name, tmp_path / name)

    def drx(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", *args, "-r", "runbooks/site.yaml"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert drx("validate").returncode == 0
    plan = drx("plan", "site-b", "--format", "json")
    assert plan.returncode == 0, plan.stderr
    doc = json.loads(plan.stdout)
    assert [c["id"] for c in doc["children"]] == ["db", "app", "traffic"]
    assert all(c["predicted_rto_s"] > 0 for c in doc["children"])
    done = drx("failover", "site-b", "--yes")
    assert done.returncode == 0, done.stderr
    www = tmp_path / ".drx/demo-world/dns/www"
    assert www.read_text().strip() == "127.0.2.10"
    state = json.loads((tmp_path / ".drx/state.json").read_text())
    assert {n: state["runbooks"][n]["active"] for n in state["runbooks"]} == {
        "site": "site-b",
        "database": "site-b",
        "application": "site-b",
        "traffic": "site-b",
    }
    back = drx("failback", "--yes")
    assert back.returncode == 0, back.stderr
    assert www.read_text().strip() == "127.0.1.10"


def test_sigkill_in_a_child_resumes_from_the_spool(world: World, capsys) -> None:
    """SIGKILL of the controller while a child's step runs: the command lives on under its
    host's spool, and resume takes its outcome from there (no --rerun-inflight, not run
    twice), then finishes the site plan without re-running what succeeded."""
    import os
    import signal
    import time

    site_world(world)
    world.host_file("app-b", "go").touch()
    world.host_file("app-b", "slow").touch()
    proc = world.spawn("failover", "site-b", "--yes")
    started = world.host_file("app-b", "started")
    deadline = time.monotonic() + 30
    while not started.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "web/start never started"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=10)
    world.host_file("app-b", "slow").unlink()
    code, err = world.run(capsys, "resume", "--yes")
    assert code == 0, err
    assert marks(world) == ["prepare", "db/fence", "db/promote", "web/start", "announce"]
    start = next(s for s in world.summary()["steps"] if s["id"] == "web/start")
    assert [h.get("reattached") for h in start["hosts"]] == [True]
    children = {c["id"]: c["status"] for c in world.summary()["children"]}
    assert children == {"db": "succeeded", "web": "succeeded"}


def test_a_mirrored_site_plan_takes_each_childs_reprotect_phase(tmp_path: Path) -> None:
    """A site plan with failback: mirror takes each child's reprotect steps, namespaced like its
    steps (db/rejoin-target, with the child's sudo); with failback: undo it takes none."""
    from orchestrator.model.siteplan import load_runbook

    runbooks = Path(__file__).resolve().parents[1] / "runbooks"
    flat, problems = load_runbook(runbooks / "site-lab.yaml")
    assert problems == [] and flat is not None
    assert [(s.id, s.sudo) for s in flat.reprotect] == [("db/rejoin-target", "postgres")]
    undo = tmp_path / "site.yaml"
    undo.write_text(
        "name: site\nsteps:\n  - id: db\n    kind: runbook\n"
        f"    runbook: {runbooks / 'postgres.yaml'}\n"
    )
    flat, problems = load_runbook(undo)
    assert problems == [] and flat is not None and flat.reprotect == []
