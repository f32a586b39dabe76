"""The host-side spool's cost per command attempt on a reused SSH connection.

Four ways to run one command on one lab host, alternated command by command on open
connections so that machine noise falls on all four alike:

- ``argv``: the path drx had before the spool — the command text (marker line first) handed to
  sshd as the exec request, so it is the login shell's argv;
- ``stdin``: the program on stdin (``. /dev/stdin``), run in the foreground — what commands
  outside a step (the pre-flight) take now;
- ``wrapper``: a step's command, detached under the host's spool by a wrapper program sent on
  a channel of its own (hosts without python3);
- ``spool``: a step's command as drx runs it: started under the host's spool by the
  connection's starter, its output streamed.

The figure is the median of ``spool`` minus the median of ``argv``, for a silent command
(``true``) and for one that prints a line (``echo``).

    python benchmarks/bench_spool.py [--runs 300]
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_common import Figure, Section, ms

from orchestrator.lab.sshd import Lab
from orchestrator.transport.spool import SpoolKey, cleanup_program, mkdir_program, ssh_dir
from orchestrator.transport.ssh import SSHConnection, SSHTransport

#: the budget the spool may add to a command attempt
TARGET_S = 0.001


def _argv_path(conn: SSHConnection, command: str) -> Any:
    """Run ``command`` as drx did before the spool: its text in the exec request."""
    marker = f"drx-pgid-{secrets.token_hex(8)}:"
    script = f"printf '%s%s\\n' '{marker}' \"$$\" >&2\n{command}"
    # nothing follows on stdin: the exec request is the program
    return conn._run_script("", marker, False, 30.0, None, None, None, script)


def measure(
    conn: SSHConnection, wrapped: SSHConnection, command: str, runs: int
) -> dict[str, list[float]]:
    """Seconds per command for each path, ``runs`` of each, interleaved (``wrapped``: a
    connection without a starter)."""
    run_id = f"bench-{secrets.token_hex(4)}"
    # the directories exist before the steps run, as drx makes them (one command per host)
    keys = [SpoolKey(run_id, "step", conn.host.name, str(i)) for i in range(2 * runs + 10)]
    for start in range(0, len(keys), 500):
        dirs = [ssh_dir(k, conn.host.spool_dir) for k in keys[start : start + 500]]
        conn.run(mkdir_program(dirs), timeout=60.0)
    left = iter(keys)

    paths: dict[str, Callable[[], Any]] = {
        "argv": lambda: _argv_path(conn, command),
        "stdin": lambda: conn.run(command, timeout=30.0),
        "wrapper": lambda: wrapped.run(command, timeout=30.0, spool=next(left)),
        "spool": lambda: conn.run(command, timeout=30.0, spool=next(left)),
    }
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(5):  # warm the connection and the host's caches
        for run in paths.values():
            run()
    order = list(paths)
    for i in range(runs):
        for name in order[i % len(order) :] + order[: i % len(order)]:
            t0 = time.perf_counter()
            res = paths[name]()
            times[name].append(time.perf_counter() - t0)
            if res.rc != 0:
                raise RuntimeError(f"{name}: {command!r} failed: {res.output_tail}")
    for start in range(0, len(keys), 500):
        dirs = [ssh_dir(k, conn.host.spool_dir) for k in keys[start : start + 500]]
        conn.run(cleanup_program(dirs), timeout=60.0)
    return times


def spool_cost(lab: Lab, name: str, runs: int) -> Section:
    """The spool's added cost per command attempt, as a benchmark section."""
    sec = Section("spool")
    spec = lab.host_spec(name)
    with SSHTransport().connect(spec) as conn, SSHTransport(starter=False).connect(spec) as old:
        if not conn.start_spooling(10):
            raise RuntimeError(f"{name}: the starter did not start (no python3 on the host?)")
        for label, command in (("silent", "true"), ("printing", "echo spooled")):
            times = measure(conn, old, command, runs)
            med = {k: statistics.median(v) for k, v in times.items()}
            added = med["spool"] - med["argv"]
            sec.data[label] = {
                "command": command,
                "runs": runs,
                "median_s": med,
                "p90_s": {k: statistics.quantiles(v, n=10)[-1] for k, v in times.items()},
                "added_s": added,
            }
            sec.add(
                Figure(
                    key=f"spool.{label}",
                    label=f"spool: added per attempt, reused connection ({command})",
                    drx=ms(added, 2),
                    peers=f"before {ms(med['argv'], 2)}, now {ms(med['spool'], 2)}, "
                    f"wrapper {ms(med['wrapper'], 2)}, stdin only {ms(med['stdin'], 2)}",
                    target=f"≤ {ms(TARGET_S, 0)}",
                    met=added <= TARGET_S,
                )
            )
    return sec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="drx-bench-spool-") as tmp, Lab(Path(tmp)) as lab:
        lab.add_host("spool")
        lab.start(["spool"])
        sec = spool_cost(lab, "spool", args.runs)
    for figure in sec.figures:
        print(f"{figure.label}: {figure.drx} ({figure.peers}; target {figure.target})")
    return 0 if all(f.met for f in sec.figures) else 1


if __name__ == "__main__":
    sys.exit(main())
