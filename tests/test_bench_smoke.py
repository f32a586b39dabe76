"""The benchmark runner works end to end at tiny sizes (``benchmarks/run.py --quick``): it exits
0, prints the machine and one table, and writes results JSON with every section. No timing is
asserted: the figures are the benchmark's business, not the test's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.sshd

REPO = Path(__file__).resolve().parent.parent
SECTIONS = {
    "fanout",
    "marginal",
    "dag",
    "plan_scale",
    "validate_shapes",
    "validate_memory",
    "fake_scale",
    "shared_state",
    "wide",
    "many_hosts",
    "memory",
    "startup",
}
FIGURE_KEYS = {"key", "label", "drx", "peers", "ratio", "target", "met"}


@pytest.mark.timeout(60)
def test_quick_benchmark_prints_the_table_and_writes_results(tmp_path: Path) -> None:
    """``run.py --quick`` (3 hosts, 1 round, no peers) completes, prints the table with the
    machine, and writes JSON holding the machine, the config, every figure and section."""
    output = tmp_path / "results.json"
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    proc = subprocess.Popen(
        [sys.executable, "benchmarks/run.py", "--quick", "--output", str(output)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        out, err = proc.communicate(timeout=55)
    except subprocess.TimeoutExpired:
        # SIGTERM, not SIGKILL: the benchmark stops its lab's sshd processes on the way out
        proc.terminate()
        out, err = proc.communicate(timeout=60)
        pytest.fail(f"benchmarks/run.py --quick took over 55 s: {err[-2000:]}")
    assert proc.returncode == 0, err[-3000:]

    assert "CPU:" in out and "OpenSSH:" in out and "Python:" in out
    header = next(line for line in out.splitlines() if line.startswith("| figure"))
    for column in ("drx", "peer(s)", "ratio", "target", "met"):
        assert column in header
    assert out.count("| figure") == 1, "one table"
    assert "skipped (--quick)" in out, "peers are skipped, never shown as zero"

    results = json.loads(output.read_text())
    assert {"machine", "config", "figures", "sections", "errors", "duration_s"} <= set(results)
    assert results["errors"] == []
    assert results["config"]["quick"] is True
    assert {"cpu", "cores", "kernel", "python", "openssh"} <= set(results["machine"])
    assert set(results["sections"]) >= SECTIONS
    keys = {f["key"] for f in results["figures"]}
    for key in (
        "fanout.paramiko",
        "fanout.paramiko_spool",
        "fanout.ansible",
        "fanout.pyinfra",
        "marginal.per_task_host",
        "dag.rto",
        "scale.plan",
        "scale.validate_chain",
        "scale.validate_fanout",
        "scale.validate_random",
        "scale.scheduler",
        "wide.hosts",
        "many.hosts",
        "many.memory",
        "memory.local",
        "memory.ssh",
        "startup.help",
        "startup.plan",
    ):
        assert key in keys, key
    for figure in results["figures"]:
        assert set(figure) >= FIGURE_KEYS
    fanout = results["sections"]["fanout"]["tools"]
    assert fanout["drx"]["median_wall_s"] > 0 and fanout["paramiko"]["median_wall_s"] > 0
    # the floor doing drx's host-side work ran (its programs exited 0 on every host)
    assert fanout["paramiko_spool"]["median_wall_s"] > 0
    assert fanout["ansible"] == {"skipped": "--quick"}
    wide = results["sections"]["wide"]
    assert wide["task_hosts_ok"] == wide["task_hosts_expected"]
    many = results["sections"]["many_hosts"]
    assert many["task_hosts_ok"] == many["task_hosts_expected"] > 0
    assert many["drx_peak_threads"] > 0 and many["reference_hosts"] == wide["hosts"]
