"""Measure the SSH transport against a lab of real sshd hosts (needs root and openssh-server).

    .venv/bin/python benchmarks/ssh_latency.py [--hosts 20] [--runs 200] [--per-host 5]

Reports:
- lab start-up time for N hosts (after key generation);
- per-command latency on one reused connection (median and p90 over ``--runs`` of ``true``);
- wall time to connect N hosts in parallel and run ``--per-host`` x ``/bin/true`` on each.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from orchestrator.lab.sshd import Lab
from orchestrator.transport.base import HostSpec
from orchestrator.transport.ssh import SSHTransport


def per_command_latency(spec: HostSpec, runs: int) -> list[float]:
    """Seconds taken by each of ``runs`` ``true`` commands on one reused connection."""
    with SSHTransport().connect(spec) as conn:
        for _ in range(10):  # warm-up: first channels, imports, caches
            conn.run("true")
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            result = conn.run("true")
            times.append(time.perf_counter() - start)
            assert result.ok, result
    return times


def fan_out(specs: list[HostSpec], per_host: int) -> tuple[float, float]:
    """(wall seconds for connect + per_host commands on every host in parallel, slowest
    connect alone)."""
    transport = SSHTransport()

    def one(spec: HostSpec) -> float:
        start = time.perf_counter()
        conn = transport.connect(spec)
        connected = time.perf_counter() - start
        try:
            for _ in range(per_host):
                result = conn.run("/bin/true")
                assert result.ok, result
        finally:
            conn.close()
        return connected

    start = time.perf_counter()
    with ThreadPoolExecutor(len(specs)) as pool:
        connects = list(pool.map(one, specs))
    return time.perf_counter() - start, max(connects)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--per-host", type=int, default=5)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="drx-bench-"))
    try:
        with Lab(root) as lab:
            names = [f"h{i:02d}" for i in range(args.hosts)]
            for name in names:
                lab.add_host(name)
            start = time.perf_counter()
            lab.start()
            print(f"lab start, {args.hosts} hosts: {(time.perf_counter() - start) * 1000:.0f} ms")

            times = per_command_latency(lab.host_spec(names[0]), args.runs)
            p90 = statistics.quantiles(times, n=10)[-1]
            print(
                f"per command on a reused connection ({args.runs} x true): "
                f"median {statistics.median(times) * 1000:.2f} ms, p90 {p90 * 1000:.2f} ms"
            )

            specs = [lab.host_spec(n) for n in names]
            fan_out(specs, 1)  # warm-up of the process (imports, thread pool), not measured
            wall, slowest_connect = fan_out(specs, args.per_host)
            print(
                f"connect {args.hosts} hosts in parallel + {args.per_host} x /bin/true each: "
                f"{wall * 1000:.0f} ms wall (slowest connect {slowest_connect * 1000:.0f} ms)"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
