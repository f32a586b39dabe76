"""Two drx builds against each other and the raw-Paramiko floor, interleaved round by round on
one lab of sshd hosts: the DAG drill's RTO (``dag``), the marginal cost per task-host, wall
and client CPU (``marginal``), or the fan-out end to end (``fanout``), as ``make bench`` makes
them.

    python benchmarks/ab_ssh.py dag --old /path/to/old/drx [--new .venv/bin/drx] [--rounds 7]

``--old`` is another checkout's drx (its own virtualenv), e.g. main's, so that a change is
measured against what it changes under the same machine load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bench_common
import bench_ssh
from bench_common import (
    DRX,
    PYTHON,
    Peer,
    Timed,
    base_env,
    chain_runbook,
    lab_inventory,
    timed_run,
    write_yaml,
)

from orchestrator.lab.sshd import Lab


def _drx(world: bench_ssh.SshWorld, binary: str, runbook: Path, inventory: Path) -> Any:
    bench_common.DRX = binary
    state = world.state_dir()
    timed = bench_common.drx_failover(runbook, inventory, state)
    summary = bench_common.latest_summary(state)
    world.done(state)
    if not timed.ok or summary is None:
        raise RuntimeError(f"{binary}: {timed.failure()}")
    return timed, summary


def _rounds(jobs: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[Any]]:
    """Every job once a round, the order rotated each round."""
    order, out = list(jobs), {name: [] for name in jobs}
    for r in range(rounds):
        for name in order[r % len(order) :] + order[: r % len(order)]:
            out[name].append(jobs[name]())
        print(f"round {r + 1}/{rounds}, load {os.getloadavg()[0]:.1f}", file=sys.stderr)
    return out


def dag(world: bench_ssh.SshWorld, builds: dict[str, str], rounds: int) -> None:
    book = bench_ssh.dag_book(50, world.names, world.groups)
    work = world.workdir
    inventory = write_yaml(work / "inv.yaml", lab_inventory(world.lab, world.names, world.groups))
    runbook = write_yaml(work / "dag.yaml", book.doc)
    hosts = bench_ssh.hosts_json(world, world.names, work / "hosts.json")
    floor_doc = work / "floor-dag.json"
    floor_doc.write_text(json.dumps(book.floor_doc()))

    def floor() -> float:
        timed = timed_run(
            [PYTHON, bench_ssh.FLOOR, str(hosts), "--dag", str(floor_doc)], env=base_env()
        )
        if not timed.ok:
            raise RuntimeError(f"floor: {timed.failure()}")
        return float(json.loads(timed.stdout.strip().splitlines()[-1])["dag_s"])

    jobs: dict[str, Callable[[], Any]] = {
        name: (lambda b=binary: _drx(world, b, runbook, inventory)[1]["rto"]["measured_s"])
        for name, binary in builds.items()
    }
    jobs["floor"] = floor
    res = _rounds(jobs, rounds)
    f = statistics.median(res["floor"])
    print(f"DAG 50 steps x {len(world.names)} hosts, bound {book.bound_s:.3f} s")
    for name, values in res.items():
        med = statistics.median(values)
        print(f"{name:6} RTO median {med:.3f} s ({(med / f - 1) * 100:+.2f} % vs the floor)")


def marginal(world: bench_ssh.SshWorld, builds: dict[str, str], rounds: int) -> None:
    small, large = 10, 30
    work = world.workdir
    inventory = write_yaml(work / "inv.yaml", lab_inventory(world.lab, world.names))
    books = {k: write_yaml(work / f"chain-{k}.yaml", chain_runbook(k)) for k in (small, large)}
    hosts = bench_ssh.hosts_json(world, world.names, work / "hosts.json")
    jobs: dict[str, Callable[[], Any]] = {}
    for k in (small, large):
        for name, binary in builds.items():
            jobs[f"{name}_{k}"] = lambda b=binary, k=k: _drx(world, b, books[k], inventory)[0]
        jobs[f"floor_{k}"] = lambda k=k: bench_ssh.run_floor(hosts, k)
    res = _rounds(jobs, rounds)
    extra = (large - small) * len(world.names)
    for tool in [*builds, "floor"]:
        pairs: list[tuple[Timed, Timed]] = list(
            zip(res[f"{tool}_{small}"], res[f"{tool}_{large}"], strict=True)
        )
        wall = statistics.median((b.wall_s - a.wall_s) / extra for a, b in pairs) * 1000
        cpu = statistics.median((b.cpu_s - a.cpu_s) / extra for a, b in pairs) * 1000
        print(f"{tool:6} per task-host: wall {wall:.3f} ms, client CPU {cpu:.3f} ms")


def fanout(world: bench_ssh.SshWorld, builds: dict[str, str], rounds: int) -> None:
    """The 5-step fan-out, process start to exit, each build against the floor."""
    tasks = bench_ssh.FANOUT_TASKS
    work = world.workdir
    inventory = write_yaml(work / "inv.yaml", lab_inventory(world.lab, world.names))
    runbook = write_yaml(work / "fanout.yaml", chain_runbook(tasks))
    hosts = bench_ssh.hosts_json(world, world.names, work / "hosts.json")
    jobs: dict[str, Callable[[], Any]] = {
        name: (lambda b=binary: _drx(world, b, runbook, inventory)[0])
        for name, binary in builds.items()
    }
    jobs["floor"] = lambda: bench_ssh.run_floor(hosts, tasks)
    res = _rounds(jobs, rounds)
    floor = statistics.median(t.wall_s for t in res["floor"])
    print(f"fan-out {tasks} x {len(world.names)}")
    for name, values in res.items():
        pairs = [t.wall_s / f.wall_s for t, f in zip(values, res["floor"], strict=True)]
        med = statistics.median(t.wall_s for t in values)
        cpu = statistics.median(t.cpu_s for t in values)
        print(
            f"{name:6} wall median {med:.3f} s ({med / floor:.2f}x the floor's median, "
            f"paired {statistics.median(pairs):.2f}x), client CPU {cpu:.3f} s"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["dag", "marginal", "fanout"])
    parser.add_argument("--old", required=True, help="the other build's drx")
    parser.add_argument("--new", default=DRX, help="this build's drx (default: this venv's)")
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="drx-ab-"))
    work.chmod(0o755)  # the lab user must reach the lab under it
    names = [f"h{i:03d}" for i in range(args.hosts)]
    try:
        with Lab(work / "lab") as lab:
            for name in names:
                lab.add_host(name)
            lab.start(names)
            none = Peer("none", skipped="not run")
            world = bench_ssh.SshWorld(lab, names, work, none, none)
            builds = {"old": args.old, "new": args.new}
            {"dag": dag, "marginal": marginal, "fanout": fanout}[args.what](
                world, builds, args.rounds
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
