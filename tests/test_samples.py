"""The shipped samples work as the README says: the local demo drill, and the lab drill over
real sshd hosts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _copy_samples(dest: Path) -> None:
    for name in ("runbooks", "inventory", "demo"):
        shutil.copytree(REPO / name, dest / name)


def _drx(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_COLOR": "1"},
    )


def test_demo_drill_with_local_inventory_fails_over_and_back(tmp_path: Path) -> None:
    """From a directory holding the samples, `drx failover site-b --yes` succeeds with the
    defaults, health holds at site-b, and `drx failback --yes` brings it back to site-a."""
    _copy_samples(tmp_path)
    done = _drx(tmp_path, "failover", "site-b", "--yes")
    assert done.returncode == 0, done.stderr
    runs = list((tmp_path / ".drx" / "runs").iterdir())
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert summary["status"] == "succeeded" and summary["rto"]["met"] is True
    assert summary["rpo"]["measured_s"] <= 5
    assert (tmp_path / ".drx/demo-world/dns/www").read_text().strip() == "127.0.2.10"
    back = _drx(tmp_path, "failback", "--yes")
    assert back.returncode == 0, back.stderr
    assert (tmp_path / ".drx/demo-world/dns/www").read_text().strip() == "127.0.1.10"
    status = _drx(tmp_path, "status")
    assert "active site: site-a" in status.stdout


def test_lab_drill_runs_the_sample_over_real_sshd() -> None:
    """`python -m orchestrator.lab.sshd drill` (make lab) fails over and back over SSH, with
    its runs in an owner-only state directory of their own (no warning about its mode)."""
    root = Path(tempfile.mkdtemp(prefix="drx-labdrill-"))
    root.chmod(0o755)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "orchestrator.lab", "drill", "--dir", str(root / "lab")],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert "readable by others" not in done.stderr
        assert (root / "lab/drx").stat().st_mode & 0o777 == 0o700
        runs = sorted((root / "lab/drx/runs").iterdir())
        summaries = [json.loads((r / "summary.json").read_text()) for r in runs]
        assert [(s["direction"], s["status"]) for s in summaries] == [
            ("failover", "succeeded"),
            ("failback", "succeeded"),
        ]
        assert (root / "lab/failover.html").stat().st_size > 10_000
        assert (root / "lab/failback.html").stat().st_size > 10_000
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_failback_of_the_sample_reports_rpo_not_measured_in_every_format(
    tmp_path: Path,
) -> None:
    """A failback measures no RPO: text, md, html, json and junit all say "not measured",
    none counts it as a failure, and junit's rpo-target carries no RPO value in its time."""
    import xml.etree.ElementTree as ET

    _copy_samples(tmp_path)
    assert _drx(tmp_path, "failover", "site-b", "--yes").returncode == 0
    back = _drx(tmp_path, "failback", "--yes")
    assert back.returncode == 0, back.stderr
    report = {
        fmt: _drx(tmp_path, "report", "--format", fmt).stdout
        for fmt in ("text", "md", "html", "json", "junit")
    }
    assert json.loads(report["json"])["rpo"] is None
    for fmt in ("text", "md", "html"):
        assert "not measured" in report[fmt].lower(), fmt
        assert "this failback measures no RPO" in report[fmt], fmt
    assert "RPO" in report["text"] and "missed" not in report["text"].split("RPO", 1)[1][:80]
    case = next(
        c for c in ET.fromstring(report["junit"]).iter("testcase") if c.get("name") == "rpo-target"
    )
    assert case.find("failure") is None and case.find("skipped") is not None
    assert float(case.get("time", "0")) == 0.0


def test_lab_directories_lie_outside_the_private_state_directory() -> None:
    """make lab and make lab-postgres build their labs outside ./.drx, which drx creates 0700
    (make demo does): the lab user could not reach a lab inside it."""
    import re

    from orchestrator.lab import postgres

    recipe = re.search(r"^lab-postgres:.*\n\t(.*)$", (REPO / "Makefile").read_text(), re.M)
    assert recipe is not None
    made = re.search(r"--dir (\S+)", recipe.group(1))
    assert made is not None and Path(made.group(1)) == postgres.DEFAULT_DIR
    assert ".drx" not in postgres.DEFAULT_DIR.parts
    assert re.search(
        r"^lab:.*\n\t.*orchestrator\.lab drill$", (REPO / "Makefile").read_text(), re.M
    )


def test_the_readme_layout_names_every_module() -> None:
    """README's Layout section names every package and module under orchestrator/, so a new
    module shows up there (or this test fails)."""
    import re

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    layout = readme[readme.index("## Layout") :]
    start = layout.index("```\norchestrator/")
    block = layout[start : layout.index("```\n", start + 4)]
    missing = []
    for path in sorted((REPO / "orchestrator").rglob("*.py")):
        rel = path.relative_to(REPO / "orchestrator")
        names = [*rel.parts[:-1], path.stem]
        if path.stem in ("__init__", "__main__"):
            names = list(rel.parts[:-1])
        for i, name in enumerate(names):
            word = f"{name}/" if i < len(rel.parts) - 1 else name
            if not re.search(rf"(?<![\w/]){re.escape(word)}(?!\w)", block):
                missing.append(str(rel))
    assert sorted(set(missing)) == []
