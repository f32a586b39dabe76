"""The PostgreSQL drill, end to end on every change: runbooks/postgres.yaml moves a real primary
from site-a to site-b and back over real sshd hosts (commands through ``sudo: postgres``), with
an application writing rows throughout — 0 rows lost, RPO 0 B, both runs succeeded."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.lab.postgres import (
    SUDOERS_DIR,
    PostgresLab,
    latest_summary,
    run_drill,
    run_drx,
)
from orchestrator.lab.sshd import LabError

pytestmark = [pytest.mark.postgres, pytest.mark.sshd]

RUNBOOK = Path(__file__).resolve().parents[1] / "runbooks" / "postgres.yaml"


def _summary_json(state_dir: Path, direction: str) -> dict[str, Any] | None:
    """The latest run in ``direction``, as its summary.json document."""
    summary = latest_summary(state_dir, direction)
    return summary.to_dict() if summary is not None else None


@pytest.fixture
def lab_root() -> Iterator[Path]:
    """A lab directory under /tmp (the lab user and postgres must reach it); needs PostgreSQL:
    without it the test fails under CI=true and is skipped elsewhere."""
    try:
        PostgresLab._check_environment()
    except LabError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL lab unavailable in CI: {exc}")
        pytest.skip(str(exc))
    root = Path(tempfile.mkdtemp(prefix="drx-pglab-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _processes_under(root: Path) -> list[str]:
    """Command lines of live processes that mention ``root`` (postgres -D, sshd -f, the app)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(root) in cmdline:
            found.append(f"{entry}: {cmdline}")
    return found


@pytest.mark.timeout(300)
def test_postgres_failover_and_failback_lose_no_row(lab_root: Path) -> None:
    """Failover to site-b and the mirrored failback both succeed over sshd+sudo, the RPO is 0 B
    both ways, every acknowledged row is at the final primary (site-a), rows were written at both
    sites, the failback ran the reprotect phase and then the same steps the other way, and the lab
    leaves no process or sudoers file."""
    result = run_drill(lab_root, RUNBOOK, echo=False)
    assert (result.failover_exit, result.failback_exit) == (0, 0)
    assert (result.lost_after_failover, result.lost) == (0, 0)
    assert result.primary_at_end == "site-a"
    assert result.rows_by_site is not None
    assert result.rows_by_site.get("site-a", 0) > 0 and result.rows_by_site.get("site-b", 0) > 0
    assert 0 < result.committed <= sum(result.rows_by_site.values())
    assert result.failover is not None and result.failback is not None
    fo, fb = result.failover.to_dict(), result.failback.to_dict()  # as summary.json has them
    assert fo["rpo"]["measured_bytes"] == 0 and fo["rpo"]["guard"]["tripped"] is False
    assert fo["rto"]["measured_s"] > 0 and fb["rto"]["measured_s"] > 0
    chain = [
        "precheck", "drain-app", "freeze-source", "wait-replica", "stop-source",
        "measure-rpo", "promote-target", "repoint-app", "rejoin-source",
    ]  # fmt: skip
    assert [s["id"] for s in fo["steps"] if s["status"] == "succeeded"] == chain
    assert (fb["failback_mode"], fb["source"], fb["target"]) == ("mirror", "site-b", "site-a")
    mirrored = sorted(
        (s for s in fb["steps"] if s["status"] == "succeeded"), key=lambda s: s["started_at"]
    )
    assert [s["id"] for s in mirrored] == ["rejoin-target", *chain]
    assert fb["reprotect"]["steps"] == ["rejoin-target"] and fb["rto"]["start_step"] == "precheck"
    # the mirrored failback measures its RPO as the failover does, held to 0 B by the guard
    assert (fb["rpo"]["step"], fb["rpo"]["measured_bytes"]) == ("measure-rpo", 0)
    assert fb["rpo"]["guard"]["tripped"] is False
    # the write probe saw what the application saw: its longest down window against the longest
    # gap between acknowledged commits, within one probe interval + 50 ms, in both directions
    for summary, gap in ((fo, result.failover_gap_s), (fb, result.failback_gap_s)):
        (probe,) = summary["probes"]
        assert probe["name"] == "write" and probe["breached"] is False and gap is not None
        print(f"\n{summary['direction']}: probe {probe['longest_down_s']} s, app gap {gap} s")
        assert abs(probe["longest_down_s"] - gap) <= probe["interval_s"] + 0.05, (probe, gap)
    assert result.ok
    # the decision card came first, before the failover; after the drill, the metrics count it
    assert result.check_exit == 0
    assert result.card.splitlines()[0] == "drx check site-b: runbook postgres, site-a active"
    assert result.card.splitlines()[1].split()[:2] == ["verdict", "ready:"]
    assert 'drx_rto_seconds_count{runbook="postgres",site="site-b"} 1.0' in result.metrics
    assert 'drx_ready{runbook="postgres",site="site-b"} 1.0' in result.metrics
    assert _processes_under(lab_root) == []
    assert result.sudoers is not None and result.sudoers.parent == SUDOERS_DIR
    assert not result.sudoers.exists()


@pytest.mark.timeout(300)
def test_site_a_lost_the_rpo_guard_needs_accept_data_loss(lab_root: Path) -> None:
    """Site a is lost (sshd and postmaster gone): an --emergency failover cannot measure the
    RPO, so the guard refuses to promote (exit 1, db-b still a standby); resuming with
    --accept-data-loss promotes db-b, the app writes there, and the run records the acceptance."""
    with PostgresLab(lab_root) as pg:
        pg.start()
        pg.lose("db-a")
        common = ["-r", str(RUNBOOK), "-i", str(pg.inventory), "--state-dir", str(pg.state_dir)]
        code = run_drx(["failover", "site-b", "--emergency", "--yes", *common], echo=False)
        assert code == 1
        refused = _summary_json(pg.state_dir, "failover")
        assert refused is not None
        guard = refused["rpo"]["guard"]
        assert (guard["tripped"], guard["accepted"]) == (True, False)
        assert guard["blocked"] == ["promote-target", "repoint-app", "rejoin-source"]
        assert "measure-rpo measured no RPO" in refused["message"]
        assert pg.primary_site() is None  # nothing promoted: db-b is still a standby
        code = run_drx(["resume", "--yes", "--accept-data-loss", *common], echo=False)
        assert code == 0
        done = _summary_json(pg.state_dir, "failover")
        assert done is not None and done["parent_run"] == refused["run_id"]
        assert (done["rpo"]["guard"]["accepted"], done["rpo"]["measured_bytes"]) == (True, None)
        assert pg.primary_site() == "site-b" and pg.app_healthy("site-b")


@pytest.mark.timeout(300)
def test_a_drill_of_the_lab_ends_at_site_a_with_no_row_lost(lab_root: Path) -> None:
    """drx drill site-b on the lab: both legs succeed (exit 0), the primary ends at site-a with
    every acknowledged row, both runs carry one drill_id, and the write probe agrees with the
    application's longest commit gap within one interval + 50 ms on both legs."""
    result = run_drill(lab_root, RUNBOOK, echo=False, round_trip=True)
    assert result.failback_exit == 0 and result.failover_exit == 0
    assert result.primary_at_end == "site-a" and result.lost == 0
    assert result.failover is not None and result.failback is not None
    fo, fb = result.failover.to_dict(), result.failback.to_dict()  # as summary.json has them
    assert fo["drill_id"] == fb["drill_id"] == fo["run_id"] and fb["rollback"] is False
    for summary, gap in ((fo, result.failover_gap_s), (fb, result.failback_gap_s)):
        (probe,) = summary["probes"]
        print(f"\ndrill {summary['direction']}: probe {probe['longest_down_s']} s, gap {gap} s")
        assert gap is not None
        assert abs(probe["longest_down_s"] - gap) <= probe["interval_s"] + 0.05, (probe, gap)
    assert _processes_under(lab_root) == []


def _journal_has(state_dir: Path, event: str, step: str) -> bool:
    for journal in (state_dir / "runs").glob("*-failover-*/journal.jsonl"):
        for line in journal.read_text().splitlines():
            e = json.loads(line)
            if e.get("event") == event and e.get("step") == step:
                return True
    return False


@pytest.mark.timeout(300)
def test_failover_killed_at_promote_resumes_to_success(lab_root: Path) -> None:
    """The controller is SIGKILLed once promote-target has started: ``drx resume`` (no
    --rerun-inflight) takes promote's outcome from db-b's spool instead of promoting twice,
    carries the checks whose dependents all succeeded (the precheck 'streams from the primary'
    cannot hold any more), and the failover ends with site-b the primary, taking writes."""
    with PostgresLab(lab_root) as pg:
        pg.start()
        common = ["-r", str(RUNBOOK), "-i", str(pg.inventory), "--state-dir", str(pg.state_dir)]
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "failover", "site-b", "--yes", *common],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            # promote's command is running on db-b once its spool has a pid
            spool = Path(pwd.getpwnam(pg.user).pw_dir) / ".drx" / "spool"
            deadline = time.monotonic() + 120
            while not _journal_has(pg.state_dir, "host_started", "promote-target") or not any(
                spool.glob("*-failover-site-b/promote-target/db-b/1/pid")
            ):
                assert proc.poll() is None, "the failover ended before promote"
                assert time.monotonic() < deadline, "promote-target never started"
                time.sleep(0.005)
            os.killpg(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        code = run_drx(["resume", "--yes", *common], echo=False)
        assert code == 0
        done = _summary_json(pg.state_dir, "failover")
        assert done is not None and done["status"] == "succeeded" and done["parent_run"]
        steps = {s["id"]: s for s in done["steps"]}
        assert steps["precheck"]["carried_from"] == done["parent_run"]
        assert steps["wait-replica"]["carried_from"] == done["parent_run"]
        promote = steps["promote-target"]
        assert promote["status"] == "succeeded"
        assert promote.get("carried_from") or promote["hosts"][0].get("reattached") is True
        assert pg.primary_site() == "site-b" and pg.app_healthy("site-b")


def test_a_failover_stopped_by_the_rpo_guard_is_rolled_back_by_its_undos(lab_root: Path) -> None:
    """db-a's sshd is gone (its cluster still runs): an --emergency failover drains the app but
    cannot stop db-a nor measure the RPO, so the guard refuses to promote db-b (exit 1). Once
    db-a's sshd is back, drx failback rolls back exactly what the failover did (the undo plan,
    not the mirror): the app writes at site-a again, db-a stayed the primary, 0 rows lost."""
    with PostgresLab(lab_root) as pg:
        pg.start()
        assert pg.sshd is not None
        pg.sshd.kill("db-a")
        common = ["-r", str(RUNBOOK), "-i", str(pg.inventory), "--state-dir", str(pg.state_dir)]
        code = run_drx(["failover", "site-b", "--emergency", "--yes", *common], echo=False)
        assert code == 1
        refused = _summary_json(pg.state_dir, "failover")
        assert refused is not None and refused["rpo"]["guard"]["tripped"] is True
        assert "promote-target" in refused["rpo"]["guard"]["blocked"]
        assert not pg.app_healthy("site-b") and pg.primary_site() == "site-a"
        pg.sshd.restart("db-a")
        code = run_drx(["failback", "--yes", *common], echo=False)
        assert code == 0
        back = _summary_json(pg.state_dir, "failback")
        assert back is not None and back["failback_mode"] == "undo"
        assert back["parent_run"] == refused["run_id"]
        assert [s["undo_of"] for s in back["steps"] if s["status"] == "succeeded"] == ["drain-app"]
        assert pg.app_healthy("site-a") and pg.primary_site() == "site-a"
        pg.drain_app()
        committed = pg.committed_ids()
        assert committed and not committed - pg.row_ids("site-a")
