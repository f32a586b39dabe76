"""`drx check SITE` between drills: readiness checks (run once, in parallel, at the sites their
selectors name), the decision card (predicted and measured RTO, RPO exposure, verdict), drift
since the last succeeded failover, drill_every and --strict, and the Prometheus page."""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.lab.sshd import Lab
from orchestrator.record.drift import quantile
from orchestrator.report.prometheus import METRICS
from tests.drill import DEFAULT_SITES, World, world_dir

RUNBOOK = """
    name: rdy
    rto_target: 1m
    rpo_target: 1MB
    drill_every: 90d
    rpo_probe:
      hosts: db@source
      run: cat "$DRX_HOST_DIR/lag" 2>/dev/null || echo 0
    readiness:
      - name: replica
        hosts: db@target
        run: 'date +%s.%N > "$DRX_HOST_DIR/began-replica"; sleep SLEEP; date +%s.%N > "$DRX_HOST_DIR/ended-replica"; echo streaming; test ! -e "$DRX_HOST_DIR/broken"'
        capture: text
      - name: every-host
        hosts: "@target"
        run: 'date +%s.%N > "$DRX_HOST_DIR/began-every"; sleep SLEEP; date +%s.%N > "$DRX_HOST_DIR/ended-every"; echo 7'
        capture: number
        until: value == 7
    health:
      - name: up
        hosts: control
        run: "true"
    steps:
      - {id: freeze, hosts: app@source, run: 'true', undo: 'true'}
      - {id: promote, hosts: db@target, run: 'true', undo: 'true', needs: [freeze]}
"""


def _runbook(sleep: str = "0") -> str:
    return RUNBOOK.replace("SLEEP", sleep)


@pytest.fixture
def local_world() -> Iterator[World]:
    """Local hosts (no SSH): history, drift, card and metrics."""
    w = World(world_dir(), "local")
    w.write_inventory()
    w.write_runbook(_runbook())
    yield w
    shutil.rmtree(w.root, ignore_errors=True)


@pytest.fixture
def ssh_world(lab: Lab, fresh_host) -> Iterator[World]:
    """Real sshd hosts of the test's own (it may re-key them)."""
    w = World(world_dir(), "ssh", lab=lab)
    w.lab_names = {n: fresh_host().name for hosts in DEFAULT_SITES.values() for n in hosts}
    w.write_inventory()
    w.write_runbook(_runbook())
    yield w
    shutil.rmtree(w.root, ignore_errors=True)


def _json(world: World, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    code, _err = world.run(capsys, "check", "site-b", "--format", "json", *args)
    return code, json.loads(world.last_stdout)


def _drill(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    """One failover to site-b and its failback, both succeeded."""
    assert world.run(capsys, "failover", "site-b", "--yes")[0] == 0
    assert world.run(capsys, "failback", "--yes")[0] == 0


# -- readiness over real sshd ------------------------------------------------------------------


def test_readiness_checks_run_on_their_hosts_in_parallel(
    ssh_world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each readiness entry runs once on each host its selector names at the target site,
    over SSH, at the same time as the others; each is reported with its rc and value."""
    ssh_world.write_runbook(_runbook("1"))
    code, doc = _json(ssh_world, capsys)
    assert code == 0, doc["problems"]
    got = {(r["name"], r["host"]): r for r in doc["readiness"]}
    assert set(got) == {("replica", "db-b"), ("every-host", "db-b"), ("every-host", "app-b")}
    assert got["replica", "db-b"]["rc"] == 0 and got["replica", "db-b"]["value"] == "streaming"
    assert got["every-host", "app-b"]["value"] == 7 and got["every-host", "app-b"]["ok"]
    # only the target's hosts ran them
    assert not ssh_world.host_file("db-a", "began-replica").exists()
    assert not ssh_world.host_file("app-a", "began-every").exists()
    assert doc["card"]["readiness"] == {"ok": 3, "total": 3}
    # in parallel: each of the three (1 s of sleep each) began before any had ended
    runs = [("db-b", "replica"), ("db-b", "every"), ("app-b", "every")]
    began = [float(ssh_world.host_file(h, f"began-{c}").read_text()) for h, c in runs]
    ended = [float(ssh_world.host_file(h, f"ended-{c}").read_text()) for h, c in runs]
    assert max(began) < min(ended)
    text_code, _ = ssh_world.run(capsys, "check", "site-b")
    assert text_code == 0
    assert "readiness (replica)" in ssh_world.last_stdout
    assert "ok (rc 0, value 'streaming')" in ssh_world.last_stdout


def test_a_failing_readiness_check_makes_the_site_not_ready(
    ssh_world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """A readiness check that fails on its host: exit 2, FAILED in the table with its exit
    code and output, one problem line, and the verdict says NOT READY."""
    ssh_world.host_file("db-b", "broken").touch()
    code, err = ssh_world.run(capsys, "check", "site-b")
    assert code == 2
    out = ssh_world.last_stdout
    assert "NOT READY: readiness 'replica' on db-b: exit 1" in out
    row = next(line for line in out.splitlines() if line.startswith("readiness (replica)"))
    assert "FAILED: exit 1: streaming" in row
    assert "problem: readiness 'replica' on db-b: exit 1: streaming" in err
    assert "a failover now would be refused" in err


def test_drift_names_a_rebuilt_host_with_the_drill_it_differs_from(
    ssh_world: World, lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    """After a succeeded failover over SSH, db-b gets a new host key (trusted in known_hosts):
    check still passes but reports the key change, naming the date and run of the last good
    failover; --strict exits 1; the summary recorded every host's address and key."""
    _drill(ssh_world, capsys)
    failover = next(s for s in ssh_world.summaries() if s["direction"] == "failover")
    recorded = {h["name"]: h for h in failover["hosts"]}
    assert set(recorded) == {"db-a", "app-a", "db-b", "app-b"}
    assert recorded["db-b"]["host_key"].startswith("ssh-ed25519 SHA256:")
    code, doc = _json(ssh_world, capsys)
    assert code == 0 and doc["drift"]["changes"] == []
    old_key = recorded["db-b"]["host_key"]
    lab.rekey(ssh_world.lab_names["db-b"])
    code, doc = _json(ssh_world, capsys)
    assert code == 0, doc["problems"]
    (change,) = doc["drift"]["changes"]
    assert (change["kind"], change["subject"]) == ("host-key", "db-b")
    assert old_key in change["text"] and failover["run_id"] in change["text"]
    assert failover["finished_at"][:10] in change["text"]
    code, err = ssh_world.run(capsys, "check", "site-b", "--strict")
    assert code == 1
    assert "warning: host key of db-b changed since the last successful drill" in err


# -- drift, history and the card (local hosts) -------------------------------------------------


def test_drift_of_files_and_hosts(local_world: World, capsys: pytest.CaptureFixture[str]) -> None:
    """Runbook edited, a host added, one removed, one re-addressed since the last good
    failover: each is one change naming it; exit 0, --strict 1."""
    _drill(local_world, capsys)
    code, doc = _json(local_world, capsys)
    assert code == 0 and doc["drift"]["changes"] == []
    local_world.write_runbook(_runbook() + "\n# edited\n")
    local_world.sites = {"site-a": ["db-a", "app-a", "web-a"], "site-b": ["db-b"]}
    local_world.write_inventory()
    text = local_world.inventory.read_text()
    local_world.inventory.write_text(
        text.replace("address: 127.0.0.1", "address: 127.0.0.9", 1)
    )  # db-a's
    local_world.write_runbook(
        _runbook().replace("hosts: app@source", "hosts: db@source") + "\n# edited\n"
    )
    code, doc = _json(local_world, capsys)
    assert code == 0, doc["problems"]
    kinds = {(c["kind"], c["subject"]) for c in doc["drift"]["changes"]}
    assert kinds == {
        ("runbook", str(local_world.runbook)),
        ("inventory", str(local_world.inventory)),
        ("host-added", "web-a"),
        ("host-removed", "app-b"),
        ("host-readdressed", "db-a"),
    }
    assert local_world.run(capsys, "check", "site-b", "--strict")[0] == 1


def test_drill_overdue_without_and_with_an_old_drill(
    local_world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """drill_every: 90d — overdue with no succeeded failover, not after one, overdue again
    when that failover is older than 90 days; a warning (exit 0), exit 1 under --strict."""
    code, doc = _json(local_world, capsys)
    assert code == 0 and doc["drill"]["overdue"] is True and doc["drill"]["every_s"] == 7776000
    code, err = local_world.run(capsys, "check", "site-b", "--strict")
    assert code == 1 and "warning: drill overdue" in err
    _drill(local_world, capsys)
    code, doc = _json(local_world, capsys, "--strict")
    assert code == 0 and doc["drill"]["overdue"] is False
    failover = next(r for r in local_world.run_dirs() if "-failover-" in r.name)
    summary = json.loads((failover / "summary.json").read_text())
    summary["finished_at"] = "2026-01-02T03:04:05.000Z"
    (failover / "summary.json").write_text(json.dumps(summary))
    code, doc = _json(local_world, capsys)
    assert code == 0 and doc["drill"]["overdue"] is True
    assert "2026-01-02" in " ".join(doc["warnings"])


def test_the_card_shows_the_measured_rto_distribution_and_the_rpo_exposure(
    local_world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """After three failovers to site-b: count 3, p50/p90/max/last from their summaries, the
    predicted RTO and critical path as drx plan gives them, RPO exposure from the rpo_probe
    (bytes, as rpo_target), and the one-line verdict."""
    for _ in range(3):
        _drill(local_world, capsys)
    local_world.host_file("db-a", "lag").write_text("2048\n")
    code, doc = _json(local_world, capsys)
    assert code == 0
    rtos = [s["rto"]["measured_s"] for s in local_world.summaries() if s["direction"] == "failover"]
    m = doc["card"]["measured_rto"]
    assert m["count"] == 3 and m["max_s"] == max(rtos) and m["last_s"] == rtos[-1]
    assert m["p50_s"] == sorted(rtos)[1]
    assert m["p90_s"] == round(quantile(rtos, 0.9), 3)
    assert local_world.run(capsys, "plan", "site-b", "--format", "json")[0] == 0
    plan = json.loads(local_world.last_stdout)
    assert doc["card"]["predicted_rto_s"] == plan["predicted_rto_s"]
    assert doc["card"]["critical_path"] == plan["critical_path"] == ["freeze", "promote"]
    rpo = doc["card"]["rpo_exposure"]
    assert (rpo["unit"], rpo["value"], rpo["target"], rpo["host"]) == (
        "bytes",
        2048,
        1048576,
        "db-a",
    )
    assert doc["card"]["verdict"].startswith("ready: expect ")
    assert "over 3 drills); RPO exposure 2 KB" in doc["card"]["verdict"]
    local_world.run(capsys, "check", "site-b")
    first = local_world.last_stdout.splitlines()[:3]
    assert first[0] == "drx check site-b: runbook rdy, site-a active"
    assert first[1].split(None, 1) == ["verdict", doc["card"]["verdict"]]


def test_an_rpo_exposure_over_target_is_a_warning(
    local_world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """The probe reading more than rpo_target: still ready (exit 0), the verdict and a
    warning say the exposure is over target; a probe that finds no number: exposure unknown."""
    local_world.host_file("db-a", "lag").write_text("5242880\n")
    code, err = local_world.run(capsys, "check", "site-b")
    assert code == 0
    assert "RPO exposure 5 MB (over the 1 MB target)" in local_world.last_stdout
    assert "warning: RPO exposure 5 MB on db-a is over rpo_target 1 MB" in err
    local_world.host_file("db-a", "lag").write_text("replica gone\n")
    code, doc = _json(local_world, capsys)
    assert code == 0 and doc["card"]["rpo_exposure"]["value"] is None
    assert "capture number found nothing" in doc["card"]["rpo_exposure"]["why"]


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "line", "message"),
    [
        (
            (
                """        run: 'date +%s.%N > "$DRX_HOST_DIR/began-every"; sleep 0; date +%s.%N > "$DRX_HOST_DIR/ended-every"; echo 7'\n""",
                "",
            ),
            "every-host",
            "missing required field 'run' in a readiness entry",
        ),
        (
            ("drill_every: 90d", "drill_every: soon"),
            "drill_every",
            "field 'drill_every': bad duration",
        ),
        (("    rpo_target: 1MB\n", ""), "rpo_probe:", "rpo_probe needs rpo_target"),
    ],
)
def test_bad_readiness_input_names_file_and_line(
    local_world: World, capsys: pytest.CaptureFixture[str], change, line, message
) -> None:
    """A readiness entry without run, drill_every not a duration, rpo_probe without
    rpo_target: exit 2 naming the runbook and the line, and nothing runs."""
    text = _runbook().replace(*change)
    local_world.write_runbook(text)
    code, err = local_world.run(capsys, "check", "site-b")
    assert code == 2
    lines = local_world.runbook.read_text().splitlines()
    number = next(i for i, t in enumerate(lines, 1) if line in t)
    assert f"{local_world.runbook}:{number}" in err and message in err, err
    assert not local_world.host_file("db-b", "began-replica").exists()


# -- formats -----------------------------------------------------------------------------------


def test_prometheus_page_parses_with_every_metric(
    local_world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """--format prometheus -o FILE: written atomically (no temp file left, mode 0644), parsed
    by prometheus_client's parser: ready, hosts, readiness, drift, overdue, last success,
    the RTO quantiles, predicted RTO, targets and the RPO exposure with its unit."""
    _drill(local_world, capsys)
    _drill(local_world, capsys)
    local_world.host_file("db-a", "lag").write_text("0\n")
    out = local_world.root / "textfile" / "drx.prom"
    code, _ = local_world.run(capsys, "check", "site-b", "--format", "prometheus", "-o", str(out))
    assert code == 0 and local_world.last_stdout == ""
    assert [p.name for p in out.parent.iterdir()] == ["drx.prom"]
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o644
    families = {f.name: f for f in text_string_to_metric_families(out.read_text())}
    assert set(families) == set(METRICS)

    def value(name: str, **labels: str) -> float:
        (s,) = [
            s
            for s in families[name].samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]
        return float(s.value)

    assert value("drx_ready", runbook="rdy", site="site-b") == 1
    assert value("drx_host_up", host="db-b", site="site-b") == 1
    assert value("drx_readiness_check_ok", check="replica", host="db-b") == 1
    assert value("drx_drift", runbook="rdy") == 0
    assert value("drx_drill_overdue", runbook="rdy") == 0
    assert value("drx_rpo_exposure", unit="bytes", site="site-a") == 0
    assert value("drx_rto_target_seconds") == 60
    rtos = sorted(
        s["rto"]["measured_s"] for s in local_world.summaries() if s["direction"] == "failover"
    )
    assert families["drx_rto_seconds"].type == "summary"
    p50 = next(s for s in families["drx_rto_seconds"].samples if s.labels.get("quantile") == "0.5")
    assert p50.value == pytest.approx(sum(rtos) / 2, abs=0.001)
    count = next(s for s in families["drx_rto_seconds"].samples if s.name.endswith("_count"))
    assert count.value == 2
    last = json.loads(
        (
            next(r for r in reversed(local_world.run_dirs()) if "-failover-" in r.name)
            / "summary.json"
        ).read_text()
    )
    from orchestrator.report.units import parse_when

    stamp = parse_when(last["finished_at"])
    assert stamp is not None
    assert value("drx_last_drill_success_timestamp_seconds") == pytest.approx(stamp.timestamp())


def test_not_ready_still_writes_the_metrics(
    local_world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failing readiness check: exit 2, but the page is written with drx_ready 0 (the
    alert needs it) and that check's drx_readiness_check_ok 0."""
    local_world.host_file("db-b", "broken").touch()
    out = local_world.root / "drx.prom"
    code, _ = local_world.run(capsys, "check", "site-b", "-f", "prometheus", "-o", str(out))
    assert code == 2
    page = out.read_text()
    assert 'drx_ready{runbook="rdy",site="site-b"} 0.0' in page
    assert 'drx_readiness_check_ok{check="replica",host="db-b",runbook="rdy"} 0.0' in page


def test_quantile_interpolates_between_ranks() -> None:
    """p90 of 1..10 lies between the 9th and 10th values; one value is every quantile."""
    assert quantile([float(x) for x in range(1, 11)], 0.9) == pytest.approx(9.1)
    assert quantile([3.0], 0.9) == 3.0
    assert quantile([2.0, 1.0], 0.5) == 1.5
