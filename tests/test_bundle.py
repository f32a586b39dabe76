"""drx bundle: one archive with plan, journal, summary, every report format, every output log and
a SHA256SUMS manifest that `sha256sum -c` verifies; a failback's holds the failover it reversed;
no secret value anywhere in it."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

from tests.drill import World

SECRET = "s3cret-b4ndle-v4lue"

RUNBOOK = """
    name: evidence
    steps:
      - id: promote
        hosts: db@target
        run: 'echo "promoting with {{ vars.db_password }}"; touch "$DRX_HOST_DIR/promoted"'
        undo: 'echo "demoting"'
      - {id: approve, kind: manual, prompt: "Switch?", needs: [promote]}
      - {id: switch, hosts: '@target', run: 'echo switched', undo: 'echo back', needs: [approve]}
"""


def _extract(archive: Path, into: Path) -> Path:
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    (top,) = list(into.iterdir())
    return top


def test_bundle_of_a_failback_verifies_with_sha256sum_and_holds_everything(
    world: World, tmp_path: Path, capsys
) -> None:
    """The failback's bundle extracts to one directory whose SHA256SUMS `sha256sum -c` accepts;
    it holds plan, journal, summary, html/md/json/junit/otlp reports and every output log, for
    the failback and for the failover it reversed; the secret is masked in every file."""
    world.write_runbook(RUNBOOK)
    secret = ["--secret-var", f"db_password={SECRET}"]
    code, err = world.run(
        capsys, "failover", "site-b", "--yes", "--comment", "drill 7 approved", *secret
    )
    assert code == 0, err
    code, err = world.run(capsys, "failback", "--yes", *secret)
    assert code == 0, err
    failover_id, failback_id = (r.name for r in world.run_dirs())
    archive = tmp_path / "evidence.tar.gz"
    code, err = world.run(capsys, "bundle", "-o", str(archive))
    assert code == 0, err
    top = _extract(archive, tmp_path / "x")
    assert top.name == f"drx-{failback_id}"
    checked = subprocess.run(
        ["sha256sum", "-c", "--strict", "SHA256SUMS"], cwd=top, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    files = {p.relative_to(top).as_posix() for p in top.rglob("*") if p.is_file()}
    listed = {line.split("  ", 1)[1] for line in (top / "SHA256SUMS").read_text().splitlines()}
    assert listed == files - {"SHA256SUMS"}
    core = {
        "plan.json",
        "journal.jsonl",
        "summary.json",
        "report.html",
        "report.md",
        "report.json",
        "report.junit.xml",
        "trace.otlp.json",
    }
    assert core <= files
    assert {f"reversed-failover/{name}" for name in core} <= files
    assert "output/undo-promote/db-b.log" in files
    assert "reversed-failover/output/promote/db-b.log" in files
    assert {"reversed-failover/output/switch/db-b.log", "output/undo-switch/app-b.log"} <= files
    assert json.loads((top / "summary.json").read_text())["run_id"] == failback_id
    reversed_summary = json.loads((top / "reversed-failover/summary.json").read_text())
    assert reversed_summary["run_id"] == failover_id
    gate = next(s for s in reversed_summary["steps"] if s["id"] == "approve")
    assert gate["approval_comment"] == "drill 7 approved"
    log = (top / "reversed-failover/output/promote/db-b.log").read_text()
    assert "promoting with ***" in log
    for path in top.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_a_tampered_bundle_fails_sha256sum(world: World, tmp_path: Path, capsys) -> None:
    """Changing one byte of a bundled file makes `sha256sum -c` fail naming that file."""
    world.write_runbook(RUNBOOK)
    code, err = world.run(capsys, "failover", "site-b", "--yes", "--var", "db_password=x")
    assert code == 0, err
    archive = tmp_path / "b.tar.gz"
    code, err = world.run(capsys, "bundle", "-o", str(archive))
    assert code == 0, err
    top = _extract(archive, tmp_path / "x")
    journal = top / "journal.jsonl"
    journal.write_bytes(journal.read_bytes().replace(b"succeeded", b"succeedex", 1))
    checked = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=top, capture_output=True, text=True
    )
    assert checked.returncode != 0
    assert "journal.jsonl: FAILED" in checked.stdout
