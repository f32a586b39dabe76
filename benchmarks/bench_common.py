"""What the benchmark sections share: figures, timed subprocesses, the machine, peer tools'
virtualenvs and the files that describe a lab world to drx."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from orchestrator.lab.sshd import Lab

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
VENVS_DIR = BENCH_DIR / ".venvs"
#: the drx console script of the virtualenv running the benchmark
DRX = str(Path(sys.executable).parent / "drx")
PYTHON = sys.executable


# --- figures ----------------------------------------------------------------------------------


@dataclass
class Figure:
    """One row of the final table (and of results.json ``figures``)."""

    key: str
    label: str
    drx: str
    peers: str = ""
    ratio: str = ""
    target: str = ""
    met: bool | None = None  # None: no target, or not measured

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Section:
    """A benchmark section's table rows and its raw numbers for results.json."""

    name: str
    figures: list[Figure] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure


def ms(seconds: float | None, digits: int = 1) -> str:
    """Seconds as a readable millisecond figure."""
    return "n/a" if seconds is None else f"{seconds * 1000:.{digits}f} ms"


def secs(seconds: float | None) -> str:
    """Seconds with a unit, millisecond precision."""
    return "n/a" if seconds is None else f"{seconds:.3f} s"


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence."""
    return float(statistics.median(values))


def ratio(a: float | None, b: float | None) -> str:
    """``a/b`` as ``1.23x`` (n/a when either is missing)."""
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.2f}x"


# --- processes --------------------------------------------------------------------------------


@dataclass
class Timed:
    """A finished subprocess: wall time from spawn to reap, exit code, output, peak RSS."""

    argv: list[str]
    wall_s: float
    returncode: int
    stdout: str
    stderr: str
    maxrss_kb: int  # ru_maxrss from wait4: the process (or its largest waited-for child)
    cpu_s: float = 0.0  # user + system CPU of the process and its waited-for children
    vmhwm_kb: int | None = None  # VmHWM of the process itself, last sample before it exited

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def failure(self) -> str:
        """A one-line reason for a non-zero exit."""
        tail = (self.stderr.strip() or self.stdout.strip()).splitlines()[-3:]
        return f"exit {self.returncode}: {' | '.join(tail)[-300:]}"


def _vmhwm(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def timed_run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 600.0,
    sample_memory: bool = False,
    watch: Callable[[int, threading.Event], None] | None = None,
) -> Timed:
    """Run ``argv`` to completion and time it from spawn to exit (stdout/stderr go to temp
    files, so a chatty tool never blocks on a pipe). ``sample_memory`` polls the process's
    VmHWM every 20 ms (its own high-water mark, children excluded). ``watch(pid, exited)`` runs
    on a thread of its own from spawn until the process has exited (``exited`` is then set)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
        )
        hwm: list[int] = []
        stop = threading.Event()
        sampler = None
        if sample_memory:

            def sample() -> None:
                while not stop.wait(0.02):
                    value = _vmhwm(proc.pid)
                    if value is not None:
                        hwm.append(value)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
        watcher = None
        if watch is not None:
            watcher = threading.Thread(target=watch, args=(proc.pid, stop), daemon=True)
            watcher.start()
        killer = threading.Timer(timeout, proc.kill)  # a hung tool ends as a failure
        killer.start()
        try:
            _, status, rusage = os.wait4(proc.pid, 0)
        except BaseException:
            # Ctrl-C or SIGTERM of the benchmark: the tool does not outlive it (nor the lab's
            # hosts, which are stopped on the way out)
            with contextlib.suppress(OSError):
                proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
        finally:
            killer.cancel()
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        stop.set()
        if sampler is not None:
            sampler.join()
        if watcher is not None:
            watcher.join()
        out.seek(0)
        err.seek(0)
        return Timed(
            argv=list(argv),
            wall_s=wall,
            returncode=proc.returncode,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
            maxrss_kb=rusage.ru_maxrss if rusage is not None else 0,
            cpu_s=rusage.ru_utime + rusage.ru_stime if rusage is not None else 0.0,
            vmhwm_kb=max(hwm) if hwm else None,
        )


def base_env(home: Path | None = None) -> dict[str, str]:
    """The environment for tools under test: no SSH agent, no colours, optionally a private
    HOME (so no ~/.ssh/config, ~/.ansible or shell start-up files of the operator apply)."""
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    env.update(NO_COLOR="1", TERM="dumb", PYTHONDONTWRITEBYTECODE="1")
    if home is not None:
        env["HOME"] = str(home)
    return env


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A temporary directory every user can traverse (lab hosts log in as another user)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# --- the machine ------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """CPU model, cores, kernel, Python and OpenSSH versions of this machine."""
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    openssh = "not installed"
    with contextlib.suppress(OSError):
        proc = subprocess.run(["ssh", "-V"], capture_output=True, text=True, timeout=10)
        openssh = (proc.stderr or proc.stdout).strip()
    mem_kb = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as fh:
        match = re.search(r"MemTotal:\s+(\d+)", fh.read())
        mem_kb = int(match.group(1)) if match else 0
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "openssh": openssh,
    }


# --- peers' virtualenvs ----------------------------------------------------------------------


@dataclass
class Peer:
    """A peer tool in its own virtualenv; ``skipped`` says why it cannot be used."""

    name: str
    executable: Path | None = None
    version: str = ""
    skipped: str | None = None


def ensure_peer(name: str, package: str, executable: str, *, install: bool = True) -> Peer:
    """The peer ``name`` from ``benchmarks/.venvs/<name>``, installing ``package`` with pip
    into a new virtualenv there if it is missing (and ``install`` allows it)."""
    venv = VENVS_DIR / name
    exe = venv / "bin" / executable
    if not exe.exists():
        if not install:
            return Peer(name, skipped="not installed and installs are off (--quick)")
        print(f"bench: installing {package} into {venv} (first run only)...", file=sys.stderr)
        shutil.rmtree(venv, ignore_errors=True)
        steps = [
            [PYTHON, "-m", "venv", str(venv)],
            [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", package],
        ]
        for argv in steps:
            try:
                proc = subprocess.run(argv, capture_output=True, text=True, timeout=900)
            except (OSError, subprocess.TimeoutExpired) as exc:
                shutil.rmtree(venv, ignore_errors=True)
                return Peer(name, skipped=f"install failed: {exc}")
            if proc.returncode != 0:
                shutil.rmtree(venv, ignore_errors=True)
                last = (proc.stderr.strip().splitlines() or ["?"])[-1]
                return Peer(name, skipped=f"install failed: {last[:200]}")
    try:
        proc = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Peer(name, skipped=f"cannot run {exe}: {exc}")
    if proc.returncode != 0:
        return Peer(name, skipped=f"{executable} --version failed: {proc.stderr.strip()[:200]}")
    version = (proc.stdout.strip().splitlines() or [""])[0]
    return Peer(name, executable=exe, version=version)


# --- a lab world described for drx ----------------------------------------------------------


def lab_inventory(lab: Lab, names: Sequence[str], groups: int = 1) -> dict[str, Any]:
    """An inventory whose target site ``site-b`` holds the lab hosts ``names`` (roles ``node``
    and ``g<k>``, hosts dealt round-robin into ``groups`` groups); the source site ``site-a``
    has one local host that no step uses."""
    hosts: dict[str, Any] = {}
    for i, name in enumerate(names):
        h = lab.host(name)
        hosts[name] = {
            "address": h.address,
            "port": h.port,
            "roles": ["node", f"g{i % groups}"],
            "env": {"DRX_HOST_DIR": str(h.state_dir)},
        }
    return {
        "active": "site-a",
        "defaults": {
            "transport": "ssh",
            "user": lab.user,
            "identity_file": str(lab.identity_file),
            "known_hosts": str(lab.known_hosts),
            "host_key_policy": "strict",
            "connect_timeout": "20s",
        },
        "sites": {
            "site-a": {"hosts": {"src-0": {"address": "127.0.0.1", "transport": "local"}}},
            "site-b": {"hosts": hosts},
        },
    }


def chain_runbook(steps: int, command: str = "/bin/true", hosts: str = "@target") -> dict[str, Any]:
    """A runbook of ``steps`` steps in one chain, each running ``command`` on ``hosts``."""
    out = []
    for i in range(steps):
        step: dict[str, Any] = {"id": f"s{i}", "hosts": hosts, "run": command, "timeout": "10m"}
        if i:
            step["needs"] = [f"s{i - 1}"]
        out.append(step)
    return {"name": f"chain-{steps}", "steps": out}


def write_yaml(path: Path, doc: Mapping[str, Any]) -> Path:
    """Write ``doc`` as YAML to ``path``; return the path."""
    path.write_text(yaml.safe_dump(dict(doc), sort_keys=False))
    return path


def drx_failover(
    runbook: Path,
    inventory: Path,
    state_dir: Path,
    *,
    sample_memory: bool = False,
    timeout: float = 600.0,
    extra: Sequence[str] = (),
    watch: Callable[[int, threading.Event], None] | None = None,
) -> Timed:
    """``drx failover site-b --yes`` as a subprocess of this virtualenv's drx, timed."""
    return timed_run(
        [
            DRX,
            "failover",
            "site-b",
            "-r",
            str(runbook),
            "-i",
            str(inventory),
            "--state-dir",
            str(state_dir),
            "--yes",
            *extra,
        ],
        env=base_env(),
        sample_memory=sample_memory,
        timeout=timeout,
        watch=watch,
    )


def latest_summary(state_dir: Path) -> dict[str, Any] | None:
    """The summary.json of the latest run in ``state_dir`` (None when there is none)."""
    import json

    runs = state_dir / "runs"
    if not runs.is_dir():
        return None
    for run in sorted(runs.iterdir(), reverse=True):
        path = run / "summary.json"
        if path.exists():
            data: dict[str, Any] = json.loads(path.read_text())
            return data
    return None
