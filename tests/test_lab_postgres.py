"""The PostgreSQL drill, end to end on every change: runbooks/postgres.yaml moves a real primary
from site-a to site-b and back over real sshd hosts (commands through ``sudo: postgres``), with
an application writing rows throughout — 0 rows lost, RPO 0 B, both runs succeeded."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

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
    fo, fb = result.failover, result.failback
    assert fo is not None and fb is not None
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
    assert result.ok
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
        refused = latest_summary(pg.state_dir, "failover")
        assert refused is not None
        guard = refused["rpo"]["guard"]
        assert (guard["tripped"], guard["accepted"]) == (True, False)
        assert guard["blocked"] == ["promote-target", "repoint-app", "rejoin-source"]
        assert "measure-rpo measured no RPO" in refused["message"]
        assert pg.primary_site() is None  # nothing promoted: db-b is still a standby
        code = run_drx(["resume", "--yes", "--accept-data-loss", *common], echo=False)
        assert code == 0
        done = latest_summary(pg.state_dir, "failover")
        assert done is not None and done["parent_run"] == refused["run_id"]
        assert (done["rpo"]["guard"]["accepted"], done["rpo"]["measured_bytes"]) == (True, None)
        assert pg.primary_site() == "site-b" and pg.app_healthy("site-b")


@pytest.mark.timeout(300)
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
        refused = latest_summary(pg.state_dir, "failover")
        assert refused is not None and refused["rpo"]["guard"]["tripped"] is True
        assert "promote-target" in refused["rpo"]["guard"]["blocked"]
        assert not pg.app_healthy("site-b") and pg.primary_site() == "site-a"
        pg.sshd.restart("db-a")
        code = run_drx(["failback", "--yes", *common], echo=False)
        assert code == 0
        back = latest_summary(pg.state_dir, "failback")
        assert back is not None and back["failback_mode"] == "undo"
        assert back["parent_run"] == refused["run_id"]
        assert [s["undo_of"] for s in back["steps"] if s["status"] == "succeeded"] == ["drain-app"]
        assert pg.app_healthy("site-a") and pg.primary_site() == "site-a"
        pg.drain_app()
        committed = pg.committed_ids()
        assert committed and not committed - pg.row_ids("site-a")
