"""Run a generated runbook of no-op steps through the real runner on the fake transport.

    python benchmarks/fake_scale.py --steps 10000 [--summary-out FILE] [--profile FILE]

Everything a real run does happens (lock, pre-flight, journal with fsync, output logs, summary,
state), except that commands go to ``FakeTransport`` (no sockets, no processes), so the time
measured is the engine's own: scheduling, templating, journaling and bookkeeping. Prints one
JSON object: the sizes, the time to load + plan, the time to execute, and the cost per step.

Shapes: ``blocks`` (default) is a hub step, then ``CHAINS`` parallel chains hanging off it,
the next block's hub needing the last step of every chain, each step on one host; ``fanout`` is
one chain of steps each on all ``--hosts`` hosts (the SSH fan-out's shape, without SSH).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

import orchestrator.run.runner as runner
from orchestrator.model.loading import load_both
from orchestrator.plan.build import build_plan
from orchestrator.record.store import open_store
from orchestrator.run.live import configure_logging
from orchestrator.transport.fake import FakeTransport

#: parallel chains per block, and steps per chain
CHAINS = 8
CHAIN_LENGTH = 12
HOSTS = 8


def runbook_doc(steps: int) -> dict[str, Any]:
    """A runbook of ``steps`` no-op steps in hub-and-chains blocks (see the module docstring)."""
    out: list[dict[str, Any]] = []
    block_tails: list[str] = []
    while len(out) < steps:
        hub = f"s{len(out)}"
        out.append({"id": hub, "hosts": f"n{len(out) % HOSTS}", "run": "true"})
        if block_tails:
            out[-1]["needs"] = block_tails
        block_tails = []
        for _ in range(CHAINS):
            prev = hub
            for _ in range(CHAIN_LENGTH):
                if len(out) >= steps:
                    break
                sid = f"s{len(out)}"
                out.append(
                    {"id": sid, "hosts": f"n{len(out) % HOSTS}", "run": "true", "needs": [prev]}
                )
                prev = sid
            if prev != hub:
                block_tails.append(prev)
    return {"name": "fake-scale", "steps": out[:steps]}


def fanout_doc(steps: int) -> dict[str, Any]:
    """One chain of ``steps`` steps, each on every host of the target site."""
    out: list[dict[str, Any]] = []
    for i in range(steps):
        out.append({"id": f"s{i}", "hosts": "@target", "run": "/bin/true"})
        if i:
            out[-1]["needs"] = [f"s{i - 1}"]
    return {"name": "fake-fanout", "steps": out}


def inventory_doc(hosts: int = HOSTS) -> dict[str, Any]:
    """Two sites; the target's hosts n0.. are 'local' in the file, fake at run time."""
    return {
        "active": "site-a",
        "defaults": {"transport": "local"},
        "sites": {
            "site-a": {"hosts": {"src": {"address": "127.0.0.1"}}},
            "site-b": {
                "hosts": {
                    f"n{i}": {"address": "127.0.0.1", "roles": ["node"]} for i in range(hosts)
                }
            },
        },
    }


def run(
    steps: int,
    workdir: Path,
    summary_out: Path | None = None,
    *,
    shape: str = "blocks",
    hosts: int = HOSTS,
    profiler: ThreadProfiler | None = None,
    state_url: str | None = None,
) -> dict[str, Any]:
    """Load, plan and execute a ``steps``-step runbook on the fake transport; the timings.
    A ``profiler`` runs from loading to the end of the run (not while files are written)."""
    rb_path, inv_path = workdir / "runbook.yaml", workdir / "inventory.yaml"
    doc = fanout_doc(steps) if shape == "fanout" else runbook_doc(steps)
    rb_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    inv_path.write_text(yaml.safe_dump(inventory_doc(hosts), sort_keys=False))
    fake = FakeTransport()
    configure_logging("console", 0)  # as drx does: the run's log lines on stderr, not stdout
    if profiler is not None:
        profiler.start()
    t0 = time.perf_counter()
    runbook, inventory = load_both(str(rb_path), str(inv_path))
    t1 = time.perf_counter()
    plan = build_plan(runbook, inventory, "site-b")
    t2 = time.perf_counter()
    code, record = runner.execute(
        plan,
        open_store(workdir / "state", state_url),
        runner.RunOptions(yes=True, transports=lambda kind: fake),
    )
    t3 = time.perf_counter()
    if profiler is not None:
        profiler.stop()
    summary = record.to_dict()  # the benchmark's own counts: not the engine's work
    if summary_out is not None:
        summary_out.write_text(json.dumps(summary))
    succeeded = sum(1 for s in summary["steps"] if s["status"] == "succeeded")
    return {
        "steps": steps,
        "shape": shape,
        "hosts": hosts,
        "waves": len(plan.waves),
        "exit_code": code,
        "status": summary["status"],
        "succeeded_steps": succeeded,
        "commands": len(fake.calls),
        "load_s": t1 - t0,
        "plan_s": t2 - t1,
        "execute_s": t3 - t2,
        "per_step_ms": (t3 - t2) / steps * 1000,
    }


class ThreadProfiler:
    """cProfile in every thread: the engine runs each step in a pool thread, which a profiler
    of the main thread alone would not see. One ``cProfile.Profile`` per thread (started by a
    ``threading.setprofile`` hook in each new thread), merged into one dump. Each profile
    counts its thread's CPU time (``time.thread_time``), so time spent waiting for the GIL, a
    lock or a queue is not charged to whatever function happened to be running."""

    def __init__(self) -> None:
        self._profiles: list[cProfile.Profile] = []
        self._lock = threading.Lock()

    def _hook(self, frame: Any, event: str, arg: Any) -> None:
        profile = cProfile.Profile(time.thread_time)
        with self._lock:
            self._profiles.append(profile)
        profile.enable()  # replaces this hook in the new thread

    def start(self) -> None:
        threading.setprofile(self._hook)
        main = cProfile.Profile(time.thread_time)
        self._profiles.append(main)
        main.enable()

    def stop(self) -> None:
        threading.setprofile(None)  # type: ignore[arg-type]
        self._profiles[0].disable()

    def dump(self, path: Path) -> None:
        """Write the merged statistics of every thread to ``path``."""
        stats = pstats.Stats(self._profiles[0], stream=io.StringIO())
        for profile in self._profiles[1:]:
            stats.add(profile)
        stats.dump_stats(str(path))


def top_functions(stats_path: Path, limit: int = 10) -> dict[str, list[dict[str, Any]]]:
    """Where the time goes in a cProfile dump: the functions with the most own time, and the
    engine's (``orchestrator/``) functions with the most cumulative time."""
    stats = pstats.Stats(str(stats_path), stream=io.StringIO())
    rows = []
    for (filename, line, name), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append(
            {
                "function": f"{_short(filename)}:{line}({name})",
                "calls": nc,
                "tottime_s": round(tt, 4),
                "cumtime_s": round(ct, 4),
                "engine": "/orchestrator/" in filename,
            }
        )
    own = sorted(rows, key=lambda r: r["tottime_s"], reverse=True)[:limit]
    engine = sorted((r for r in rows if r["engine"]), key=lambda r: r["cumtime_s"], reverse=True)[
        :limit
    ]
    return {"by_own_time": own, "engine_by_cumulative_time": engine}


def _short(filename: str) -> str:
    """``orchestrator/executor.py`` or ``networkx/.../dag.py`` rather than an absolute path."""
    parts = Path(filename).parts
    for anchor in ("orchestrator", "networkx", "yaml", "jinja2", "json", "threading"):
        if anchor in parts:
            return "/".join(parts[parts.index(anchor) :])
    return Path(filename).name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--summary-out", type=Path, help="write the run's summary.json here")
    parser.add_argument("--profile", type=Path, help="profile the run with cProfile into FILE")
    parser.add_argument("--shape", choices=("blocks", "fanout"), default="blocks")
    parser.add_argument("--hosts", type=int, default=HOSTS, help="hosts of the target site")
    parser.add_argument("--state-url", help="keep the run in etcd (default: a local directory)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="drx-fake-scale-") as tmp:
        options: dict[str, Any] = {
            "shape": args.shape,
            "hosts": args.hosts,
            "state_url": args.state_url,
        }
        if args.profile:
            profiler = ThreadProfiler()
            result = run(args.steps, Path(tmp), args.summary_out, profiler=profiler, **options)
            profiler.dump(args.profile)
            result["profile_top"] = top_functions(args.profile)
        else:
            result = run(args.steps, Path(tmp), args.summary_out, **options)
    print(json.dumps(result))
    return 0 if result["exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
