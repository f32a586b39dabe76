"""Many sshd hosts: ``hosts`` lab hosts × 3 chained steps of ``/bin/true`` through one
``drx failover``, as section 4's wide run (200 hosts) and its many-host part (1,000 by default;
``BENCH_MANY_HOSTS=0`` skips it). Both are measured the same way in the same benchmark run:

- every task-host ok, and no connection dropped (sshd logs one it turns away past MaxStartups);
- drx's wall time (process start to exit), its measured RTO, its CPU time, its peak RSS
  (ru_maxrss), and the most threads and open descriptors it had (sampled every 100 ms from
  /proc);
- the machine's memory in use at its peak during the run (MemTotal - MemAvailable: the lab's
  sshd processes and their sessions count too), against the machine's RAM;
- the time to start and to stop the lab's sshd processes (all stopped by PID).

The many-host figure compares its wall time with the wide run's: it should grow no faster than
the host count.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench_common import (
    Figure,
    Section,
    chain_runbook,
    drx_failover,
    lab_inventory,
    latest_summary,
    secs,
    write_yaml,
)

from orchestrator.lab.sshd import Lab

#: what sshd logs for a connection it turns away (MaxStartups, penalties)
DROP_LINES = ("drop connection", "MaxStartups")
#: the many-host part's memory target: the machine's memory in use stays below this share
MEMORY_SHARE = 0.8
#: RAM to have available before starting the hosts: twice the ~4 MB a host measured (its sshd,
#: its session's processes, drx's share)
RAM_PER_HOST_MB = 8
#: free process ids to have: an sshd listener, a session's monitor and user processes, the
#: spool's helper, and drx's two threads a host, with room to spare
PIDS_PER_HOST = 8


@dataclass
class Peaks:
    """The most a process (and the machine) held while it ran, sampled from /proc."""

    threads: int = 0
    fds: int = 0
    fd_limit: int | None = None
    machine_used_kb: int = 0

    def watch(self, pid: int, exited: threading.Event) -> None:
        """Sample ``pid`` every 100 ms until ``exited`` is set."""
        while not exited.wait(0.1):
            self.threads = max(self.threads, _threads(pid))
            with contextlib.suppress(OSError):
                self.fds = max(self.fds, len(os.listdir(f"/proc/{pid}/fd")))
            limit = _fd_limit(pid)
            if limit is not None:
                self.fd_limit = limit
            self.machine_used_kb = max(self.machine_used_kb, machine_used_kb())


@dataclass
class HostsRun:
    """One many-host run's figures (results.json keeps them as they are)."""

    hosts: int
    steps: int
    lab_start_s: float = 0.0
    lab_stop_s: float = 0.0
    wall_s: float = 0.0
    exit_code: int = -1
    rto_s: float | None = None
    task_hosts_ok: int = 0
    task_hosts_expected: int = 0
    failures: list[str] = field(default_factory=list)
    refused: str | None = None
    drx_peak_rss_mb: float = 0.0
    drx_cpu_s: float = 0.0
    drx_peak_threads: int = 0
    drx_peak_fds: int = 0
    drx_fd_limit: int | None = None
    machine_used_before_gb: float = 0.0
    machine_used_peak_gb: float = 0.0
    machine_memory_gb: float = 0.0
    sshd_dropped_connections: int = 0

    @property
    def good(self) -> bool:
        """Every task-host ok, drx exited 0, no connection dropped."""
        return (
            self.exit_code == 0
            and self.task_hosts_ok == self.task_hosts_expected
            and self.sshd_dropped_connections == 0
        )

    def text(self) -> str:
        """The run in one cell: tasks, wall, drops, RSS, threads."""
        head = (
            f"{self.task_hosts_ok}/{self.task_hosts_expected} ok in {secs(self.wall_s)}, "
            f"{self.sshd_dropped_connections} dropped; peak RSS {self.drx_peak_rss_mb:.0f} MB, "
            f"{self.drx_peak_threads} threads, {self.drx_peak_fds} fds"
        )
        return head + ("" if self.refused is None else f"; {self.refused}")


def measure(lab: Lab, workdir: Path, hosts: int, *, steps: int = 3, prefix: str = "w") -> HostsRun:
    """Start ``hosts`` new lab hosts, run ``steps`` chained steps on all of them through drx,
    then stop and forget the hosts (by PID, also when the run fails or is interrupted)."""
    run = HostsRun(hosts=hosts, steps=steps, task_hosts_expected=hosts * steps)
    run.machine_memory_gb = _meminfo().get("MemTotal", 0) / 2**20
    names = [f"{prefix}{i:04d}" for i in range(hosts)]
    base = workdir / f"hosts-{prefix}{hosts}"
    base.mkdir(parents=True, exist_ok=True)
    run.machine_used_before_gb = machine_used_kb() / 2**20
    try:
        for name in names:
            lab.add_host(name)
        t0 = time.perf_counter()
        lab.start(names)
        run.lab_start_s = time.perf_counter() - t0
        inventory = write_yaml(base / "inventory.yaml", lab_inventory(lab, names))
        runbook = write_yaml(base / "runbook.yaml", chain_runbook(steps))
        state = base / "state"
        peaks = Peaks()
        timed = drx_failover(runbook, inventory, state, timeout=1200, watch=peaks.watch)
        summary = latest_summary(state)
        if not timed.ok:
            run.refused = timed.failure() + _debug_tail(state / "debug.log")
        shutil.rmtree(state, ignore_errors=True)
        run.sshd_dropped_connections = sum(
            _count_lines(lab.host(name).log_file, DROP_LINES) for name in names
        )
    finally:
        t0 = time.perf_counter()
        lab.remove_many([n for n in names if n in lab.hosts])
        run.lab_stop_s = time.perf_counter() - t0
    run.wall_s = timed.wall_s
    run.exit_code = timed.returncode
    run.drx_peak_rss_mb = timed.maxrss_kb / 1024
    run.drx_cpu_s = timed.cpu_s
    run.drx_peak_threads = peaks.threads
    run.drx_peak_fds = peaks.fds
    run.drx_fd_limit = peaks.fd_limit
    run.machine_used_peak_gb = peaks.machine_used_kb / 2**20
    if summary is not None:
        run.rto_s = summary["rto"]["measured_s"]
        for step in summary["steps"]:
            for h in step.get("hosts", []):
                if h.get("rc") == 0:
                    run.task_hosts_ok += 1
                else:
                    run.failures.append(
                        f"{step['id']}/{h.get('host')}: {h.get('error') or h.get('rc')}"
                    )
    del run.failures[20:]
    return run


def capacity_problem(hosts: int) -> str | None:
    """Why this machine cannot take ``hosts`` more lab hosts now (memory, process ids), or
    None: the part is skipped with the reason rather than run into the OOM killer."""
    available_mb = _meminfo().get("MemAvailable", 0) / 1024
    if available_mb < hosts * RAM_PER_HOST_MB:
        return (
            f"{available_mb:.0f} MB of RAM available, {hosts} hosts need "
            f"~{hosts * RAM_PER_HOST_MB} MB"
        )
    try:
        pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
        threads_max = int(Path("/proc/sys/kernel/threads-max").read_text())
    except (OSError, ValueError):
        return None
    in_use = sum(_threads(int(p)) for p in os.listdir("/proc") if p.isdigit())
    free = min(pid_max, threads_max) - in_use
    if free < hosts * PIDS_PER_HOST:
        return f"{free} process ids free (pid_max {pid_max}), {hosts} hosts need ~{hosts * PIDS_PER_HOST}"
    return None


def wide_section(run: HostsRun) -> Section:
    """Section 4's wide run (its figure and data keys as before, plus threads and memory)."""
    sec = Section("wide")
    sec.data = asdict(run)
    sec.add(
        Figure(
            key="wide.hosts",
            label=f"{run.hosts} sshd hosts × {run.steps} steps through drx",
            drx=run.text(),
            target="no dropped connection",
            met=run.good,
        )
    )
    return sec


def many_section(
    run: HostsRun | None, reference: dict[str, Any] | None, skipped: str, *, failed: bool = False
) -> Section:
    """The many-host part beside the wide run of the same benchmark run: wall time against
    host count, peak RSS and threads, the machine's memory. Without a run, a row saying why
    (``failed``: the machine could not take it, which is a target not met)."""
    sec = Section("many_hosts")
    if run is None:
        sec.data = {"skipped": skipped}
        sec.add(
            Figure(
                "many.hosts",
                "many sshd hosts × 3 steps",
                f"skipped ({skipped})",
                met=False if failed else None,
            )
        )
        return sec
    ref_wall = reference.get("wall_s") if reference else None
    ref_hosts = reference.get("hosts") if reference else None
    growth = run.wall_s / ref_wall if ref_wall else None
    host_ratio = run.hosts / ref_hosts if ref_hosts else None
    sec.data = asdict(run) | {
        "reference_hosts": ref_hosts,
        "reference_wall_s": ref_wall,
        "wall_growth": growth,
        "host_growth": host_ratio,
    }
    ref_text = (
        f"{ref_hosts} hosts (same run): {reference.get('task_hosts_ok')}/"
        f"{reference.get('task_hosts_expected')} ok in {secs(ref_wall)}, peak RSS "
        f"{reference.get('drx_peak_rss_mb', 0):.0f} MB, "
        f"{reference.get('drx_peak_threads', 0)} threads"
        if reference and ref_wall
        else "no wide run to compare with"
    )
    sec.add(
        Figure(
            key="many.hosts",
            label=f"{run.hosts} sshd hosts × {run.steps} steps through drx",
            drx=run.text(),
            peers=ref_text,
            ratio=f"{growth:.2f}×" if growth is not None else "",
            target=(
                f"all ok, 0 dropped, wall ≤ {host_ratio:.1f}× (the host ratio)"
                if host_ratio
                else "all ok, 0 dropped"
            ),
            met=run.good and (growth is None or host_ratio is None or growth <= host_ratio),
        )
    )
    per_host = (run.machine_used_peak_gb - run.machine_used_before_gb) / run.hosts * 1024
    sec.add(
        Figure(
            key="many.memory",
            label=f"  machine memory in use at peak ({run.hosts} sshd + drx)",
            drx=f"{run.machine_used_peak_gb:.1f} GB of {run.machine_memory_gb:.0f} GB "
            f"({run.machine_used_before_gb:.1f} GB before; ~{per_host:.1f} MB a host)",
            peers=f"lab start {secs(run.lab_start_s)}, stop {secs(run.lab_stop_s)}; "
            f"drx fd limit {run.drx_fd_limit}",
            target=f"< {MEMORY_SHARE:.0%} of RAM",
            met=run.machine_used_peak_gb < MEMORY_SHARE * run.machine_memory_gb,
        )
    )
    return sec


# --- /proc --------------------------------------------------------------------------------


def _meminfo() -> dict[str, int]:
    """/proc/meminfo in kB."""
    out: dict[str, int] = {}
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                out[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return out


def machine_used_kb() -> int:
    """The machine's memory in use now: MemTotal - MemAvailable (kB)."""
    info = _meminfo()
    return info.get("MemTotal", 0) - info.get("MemAvailable", 0)


def _threads(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _fd_limit(pid: int) -> int | None:
    """The soft RLIMIT_NOFILE of ``pid`` (drx raises its own when a run has many hosts)."""
    try:
        with open(f"/proc/{pid}/limits") as fh:
            for line in fh:
                if line.startswith("Max open files"):
                    return int(line.split()[3])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _debug_tail(path: Path) -> str:
    """The last lines of drx's debug.log (the traceback of an internal error), if any."""
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | debug.log: " + " | ".join(lines[-3:]) if lines else ""


def _count_lines(path: Path, needles: Sequence[str]) -> int:
    """Lines of ``path`` holding any of ``needles`` (0 when the file is missing)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return 0
    return sum(1 for line in text.splitlines() if any(n in line for n in needles))
