"""Section 8 of ``make bench``: what shared state in etcd costs a drill.

A real 3-member etcd cluster on loopback (the test suite's lab), and the same work done against
a local state directory and against the cluster, alternated round by round:

* the same drill (parallel chains of ``sleep`` steps on local hosts, run by the ``drx`` command
  end to end): its measured RTO with ``--state-url`` against the local figure — target: within
  2 % + 10 ms;
* ``fake_scale.py`` (10,000 no-op steps through the runner on the fake transport): its execute
  time with ``--state-url`` against the local time — target: at most 1.5×.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import yaml
from bench_common import DRX, PYTHON, Figure, Section, base_env, median, secs, timed_run

from orchestrator.lab.etcd import EtcdCluster

FAKE_SCALE = str(Path(__file__).resolve().parent / "fake_scale.py")
#: the drill: CHAINS parallel chains of LENGTH steps, each a sleep of STEP_S
CHAINS, LENGTH, STEP_S = 3, 4, 0.25
RTO_TARGET_RATIO, RTO_TARGET_MS = 1.02, 10.0
SCALE_TARGET_RATIO = 1.5


def _drill_files(root: Path, step_s: float) -> tuple[Path, Path]:
    steps: list[dict[str, Any]] = []
    for c in range(CHAINS):
        for i in range(LENGTH):
            step: dict[str, Any] = {"id": f"c{c}s{i}", "hosts": f"n{c}", "run": f"sleep {step_s}"}
            if i:
                step["needs"] = [f"c{c}s{i - 1}"]
            steps.append(step)
    runbook = root / "runbook.yaml"
    runbook.write_text(yaml.safe_dump({"name": "shared-bench", "steps": steps}, sort_keys=False))
    inventory = root / "inventory.yaml"
    inventory.write_text(
        textwrap.dedent(
            """\
            active: site-a
            defaults: {transport: local}
            sites:
              site-a: {hosts: {src: {}}}
              site-b: {hosts: {n0: {}, n1: {}, n2: {}}}
            """
        )
    )
    return runbook, inventory


def _drill_rto(runbook: Path, inventory: Path, state: list[str]) -> float:
    """One failover through the drx command; its measured RTO from the report."""
    files = ["-r", str(runbook), "-i", str(inventory)]
    env = base_env()
    env.pop("DRX_STATE_URL", None)
    run = timed_run([DRX, "failover", "site-b", "--yes", *files, *state], env=env, timeout=300)
    if not run.ok:
        raise RuntimeError(f"drill failed: {run.failure()}")
    report = timed_run([DRX, "report", "--format", "json", *state], env=env)
    if not report.ok:
        raise RuntimeError(f"report failed: {report.failure()}")
    return float(json.loads(report.stdout)["rto"]["measured_s"])


def _fake_scale(steps: int, state_url: str | None) -> float:
    argv = [PYTHON, FAKE_SCALE, "--steps", str(steps)]
    if state_url:
        argv += ["--state-url", state_url]
    run = timed_run(argv, env=base_env(), timeout=1800)
    if not run.ok:
        raise RuntimeError(f"fake_scale failed: {run.failure()}")
    last = [line for line in run.stdout.splitlines() if line.startswith("{")][-1]
    return float(json.loads(last)["execute_s"])


def shared_state(workdir: Path, rounds: int, scale_steps: int, quick: bool) -> Section:
    """Drill RTO and a 10,000-step run, local directory against a 3-member etcd cluster."""
    sec = Section("shared_state")
    root = workdir / "shared-state"
    root.mkdir(parents=True, exist_ok=True)
    step_s = 0.05 if quick else STEP_S
    runbook, inventory = _drill_files(root, step_s)
    with EtcdCluster(root / "etcd", names=("site-a", "site-b", "witness")) as cluster:
        cluster.start()
        local_rto: list[float] = []
        etcd_rto: list[float] = []
        for r in range(rounds):
            local_rto.append(_drill_rto(runbook, inventory, ["--state-dir", str(root / f"l{r}")]))
            url = cluster.url(f"bench-drill-{r}", ttl="10s")
            state = ["--state-dir", str(root / f"e{r}"), "--state-url", url]
            etcd_rto.append(_drill_rto(runbook, inventory, state))
        local_s, etcd_s = median(local_rto), median(etcd_rto)
        allowed = local_s * RTO_TARGET_RATIO + RTO_TARGET_MS / 1000
        sec.add(
            Figure(
                key="shared.rto",
                label=f"drill RTO, {CHAINS}×{LENGTH} steps, etcd ×3 vs local dir",
                drx=f"{secs(etcd_s)} with etcd",
                peers=f"local dir {secs(local_s)}",
                ratio=f"{(etcd_s - local_s) * 1000:+.1f} ms",
                target=f"≤ local × {RTO_TARGET_RATIO} + {RTO_TARGET_MS:g} ms",
                met=etcd_s <= allowed,
            )
        )
        local_run: list[float] = []
        etcd_run: list[float] = []
        for r in range(max(1, min(rounds, 2))):
            local_run.append(_fake_scale(scale_steps, None))
            etcd_run.append(_fake_scale(scale_steps, cluster.url(f"bench-scale-{r}", ttl="10s")))
        local_x, etcd_x = median(local_run), median(etcd_run)
        sec.add(
            Figure(
                key="shared.scale",
                label=f"{scale_steps} no-op steps (fake transport), etcd ×3 vs local dir",
                drx=f"{secs(etcd_x)} with etcd",
                peers=f"local dir {secs(local_x)}",
                ratio=f"{etcd_x / local_x:.2f}×",
                target=f"≤ {SCALE_TARGET_RATIO}× local",
                met=etcd_x <= local_x * SCALE_TARGET_RATIO,
            )
        )
    sec.data = {
        "drill": {"steps": CHAINS * LENGTH, "step_s": step_s, "local_rto_s": local_rto},
        "drill_etcd_rto_s": etcd_rto,
        "scale": {"steps": scale_steps, "local_s": local_run, "etcd_s": etcd_run},
    }
    return sec
