"""drx's benchmarks, as ``make bench`` runs them: one table on stdout, every figure in
benchmarks/results.json.

    python benchmarks/run.py [--hosts 20] [--rounds 5] [--quick] [--output FILE]

Sections (see each module for how a figure is made):

1. SSH fan-out — 5 steps of ``/bin/true`` on N real sshd hosts: drx against ansible-playbook,
   pyinfra and a raw-Paramiko floor, end to end (process start to exit), alternated in rounds.
2. Marginal cost per task-host — the slope of wall time between two sizes, drx vs raw Paramiko.
3. DAG drill — a generated 50-step runbook of ``sleep``s in parallel branches: drx's measured RTO
   against the critical-path lower bound, the sum of all steps and ansible-playbook.
4. Scale — validate + plan 10,000 steps; the peak memory of validating 100,000; 10,000 no-op steps through the runner on the fake
   transport; 200 sshd hosts × 3 steps with no dropped connection; then, a separate part, 1,000
   sshd hosts × 3 steps beside the 200 (bench_hosts.py; ``--many-hosts 0`` or
   ``BENCH_MANY_HOSTS=0`` skips it).
5. Memory — peak RSS of drx while a step prints 1 GB (local transport, then over SSH).
6. Start-up — ``drx --help`` and ``drx plan site-b`` on the sample.
7. Reports — rendering each report format for a 1,000-step run.
8. Shared state — a 3-member etcd cluster on loopback against a local state directory: the same
   drill's measured RTO, and the 10,000-step fake-transport run (bench_etcd.py).
9. Spool — what the host-side spool adds to one command attempt on a reused connection, against
   the path before it (bench_spool.py).

The peers are installed on first use into benchmarks/.venvs/ (ansible-core, pyinfra); a peer
that cannot be installed or run is reported as skipped with the reason. ``--quick`` runs tiny
sizes without peers (the smoke test). Needs root and OpenSSH's sshd for the lab hosts.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import sys
import textwrap
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import bench_engine
import bench_etcd
import bench_hosts
import bench_spool
import bench_ssh
from bench_common import (
    BENCH_DIR,
    Figure,
    Peer,
    Section,
    ensure_peer,
    machine,
    scratch_dir,
)

from orchestrator.lab.sshd import Lab, LabError

#: the environment variable that sets (0: skips) the many-host part's host count
MANY_HOSTS_ENV = "BENCH_MANY_HOSTS"


@dataclass
class Config:
    """The sizes of one benchmark run."""

    hosts: int = 20
    rounds: int = 5
    quick: bool = False
    peers: bool = True
    marginal_small: int = 10
    marginal_large: int = 30
    dag_steps: int = 50
    dag_rounds: int = 3  # at most; each round is a drx run and a raw-Paramiko run
    dag_ansible: bool = True
    scale_steps: int = 10_000
    shape_steps: int = 20_000  # validate of a chain, a fan-out and a random DAG
    validate_memory_steps: int = 100_000  # the peak memory of validating a big random DAG
    profile_steps: int = 1_000
    wide_hosts: int = 200
    memory_size: str = "1G"
    memory_over_ssh: bool = True
    startup_runs: int = 7
    report_steps: int = 1_000
    spool_runs: int = 300
    many_hosts: int = 1_000  # the many-host part (0: skipped)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Config:
        """Defaults, or tiny sizes with ``--quick``; explicit options win over both."""
        cfg = cls()
        if args.quick:
            cfg = cls(
                hosts=3,
                rounds=1,
                quick=True,
                peers=False,
                marginal_small=2,
                marginal_large=4,
                dag_steps=8,
                dag_ansible=False,
                scale_steps=300,
                shape_steps=300,
                validate_memory_steps=300,
                profile_steps=0,
                wide_hosts=5,
                memory_size="5M",
                startup_runs=2,
                report_steps=50,
                spool_runs=5,
                many_hosts=8,
            )
        env_many = os.environ.get(MANY_HOSTS_ENV, "").strip()
        if env_many:
            cfg.many_hosts = int(env_many)
        for name in ("hosts", "rounds", "scale_steps", "wide_hosts", "memory_size", "many_hosts"):
            value = getattr(args, name)
            if value is not None:
                setattr(cfg, name, value)
        if args.no_peers:
            cfg.peers = False
        return cfg


# --- the table ---------------------------------------------------------------------------------

COLUMNS = (
    ("figure", "label", 40),
    ("drx", "drx", 30),
    ("peer(s) / reference", "peers", 34),
    ("ratio", "ratio", 8),
    ("target", "target", 24),
    ("met", "met", 7),
)


def _cell(figure: Figure, attr: str) -> str:
    if attr == "met":
        return {True: "met", False: "NOT MET", None: "—"}[figure.met]
    return str(getattr(figure, attr) or "")


def render_table(figures: list[Figure]) -> str:
    """A fixed-width table, long cells wrapped within their column."""
    widths = [w for _, _, w in COLUMNS]
    sep = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    lines = [sep, _row([title for title, _, _ in COLUMNS], widths), sep.replace("-", "=")]
    for fig in figures:
        lines.append(_row([_cell(fig, attr) for _, attr, _ in COLUMNS], widths))
    lines.append(sep)
    return "\n".join(lines)


def _row(cells: list[str], widths: list[int]) -> str:
    wrapped = [textwrap.wrap(c, w) or [""] for c, w in zip(cells, widths, strict=True)]
    height = max(len(w) for w in wrapped)
    out = []
    for i in range(height):
        parts = [
            (col[i] if i < len(col) else "").ljust(w)
            for col, w in zip(wrapped, widths, strict=True)
        ]
        out.append("| " + " | ".join(parts) + " |")
    return "\n".join(out)


def render_machine(info: dict[str, Any]) -> str:
    """The machine, one line each."""
    return "\n".join(
        [
            f"CPU:     {info['cpu']} ({info['cores']} cores, {info['memory_gb']} GB RAM)",
            f"Kernel:  {info['kernel']}  ({info['os']})",
            f"Python:  {info['python']}",
            f"OpenSSH: {info['openssh']}",
        ]
    )


# --- running the sections ----------------------------------------------------------------------


class Runner:
    """Runs sections one after the other; a section that breaks becomes an error row."""

    def __init__(self) -> None:
        self.sections: list[Section] = []
        self.errors: list[dict[str, str]] = []
        self.timings: dict[str, float] = {}
        self.peers: dict[str, str] = {}

    def run(self, name: str, fn: Callable[[], Section]) -> Section:
        """Run one section, timing it; an exception becomes an error row and an error."""
        print(f"bench: {name}...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            section = fn()
        except Exception as exc:
            self.errors.append(
                {"section": name, "error": repr(exc), "trace": traceback.format_exc()}
            )
            print(f"bench: {name} failed: {exc!r}", file=sys.stderr, flush=True)
            section = Section(name)
            section.add(Figure(f"{name}.error", f"{name}", f"error: {exc!r}", met=False))
        self.timings[name] = time.perf_counter() - start
        self.sections.append(section)
        return section


def peers(cfg: Config) -> tuple[Peer, Peer]:
    """ansible-core and pyinfra from benchmarks/.venvs (installed if missing), or skipped."""
    if not cfg.peers:
        reason = "--quick" if cfg.quick else "--no-peers"
        return Peer("ansible", skipped=reason), Peer("pyinfra", skipped=reason)
    return (
        ensure_peer("ansible", "ansible-core", "ansible-playbook"),
        ensure_peer("pyinfra", "pyinfra", "pyinfra"),
    )


def run_all(cfg: Config, workdir: Path) -> Runner:
    """Every section, quiet machine first: the engine alone, then the lab of sshd hosts."""
    runner = Runner()
    runner.run("startup", lambda: bench_engine.startup(cfg.startup_runs))
    runner.run("reports", lambda: bench_engine.reports(cfg.report_steps, workdir))
    runner.run("plan_scale", lambda: bench_engine.plan_scale(cfg.scale_steps))
    runner.run("site_scale", lambda: bench_engine.site_scale())
    runner.run("validate_shapes", lambda: bench_engine.validate_shapes(cfg.shape_steps))
    runner.run("validate_memory", lambda: bench_engine.validate_memory(cfg.validate_memory_steps))
    runner.run(
        "fake_scale",
        lambda: bench_engine.fake_scale(cfg.scale_steps, workdir, cfg.profile_steps or None),
    )
    runner.run(
        "shared_state",
        lambda: bench_etcd.shared_state(workdir, cfg.rounds, cfg.scale_steps, cfg.quick),
    )
    memory = runner.run("memory", lambda: bench_engine.memory_local(workdir, cfg.memory_size))
    ansible, pyinfra = peers(cfg)
    for peer in (ansible, pyinfra):
        runner.peers[peer.name] = peer.version or f"skipped ({peer.skipped})"

    names = [f"h{i:03d}" for i in range(cfg.hosts)]
    lab: Lab | None = None
    try:
        lab = Lab(workdir / "lab")
        for name in names:
            lab.add_host(name)
        lab.start(names)
    except LabError as exc:  # no sshd, not root...: the SSH sections cannot run at all
        if lab is not None:
            lab.stop()
        runner.errors.append({"section": "lab", "error": str(exc), "trace": str(exc)})
        section = runner.run("lab", lambda: Section("lab"))
        section.add(
            Figure("lab.error", "SSH sections (lab of sshd hosts)", f"error: {exc}", met=False)
        )
        return finish_scale(cfg, runner)
    with lab:
        world = bench_ssh.SshWorld(lab, names, workdir, ansible, pyinfra)
        runner.run("fanout", lambda: bench_ssh.fanout(world, cfg.rounds))
        runner.run(
            "marginal",
            lambda: bench_ssh.marginal(world, cfg.rounds, cfg.marginal_small, cfg.marginal_large),
        )
        runner.run(
            "dag",
            lambda: bench_ssh.dag_drill(
                world, min(cfg.rounds, cfg.dag_rounds), cfg.dag_steps, cfg.dag_ansible
            ),
        )
        wide = runner.run("wide", lambda: bench_ssh.wide(lab, workdir, cfg.wide_hosts))

        def many() -> Section:
            if cfg.many_hosts <= 0:
                return bench_hosts.many_section(None, None, f"{MANY_HOSTS_ENV}=0")
            problem = bench_hosts.capacity_problem(cfg.many_hosts)
            if problem is not None:
                return bench_hosts.many_section(None, None, problem, failed=True)
            run = bench_hosts.measure(lab, workdir, cfg.many_hosts, prefix="m")
            return bench_hosts.many_section(run, wide.data, "")

        runner.run("many_hosts", many)
        runner.run("spool", lambda: bench_spool.spool_cost(lab, names[0], cfg.spool_runs))
        if cfg.memory_over_ssh:

            def over_ssh() -> Section:
                command = bench_engine.BIG_OUTPUT.format(size=cfg.memory_size)
                timed = bench_ssh.memory_ssh(lab, workdir, command)
                figure, data = bench_engine.memory_figure(
                    f"memory: a step printing {cfg.memory_size}B over SSH",
                    "memory.ssh",
                    timed,
                    cfg.memory_size,
                )
                memory.add(figure)
                memory.data["ssh"] = data
                return Section("memory_ssh")

            runner.run("memory_ssh", over_ssh)
    return finish_scale(cfg, runner)


def finish_scale(cfg: Config, runner: Runner) -> Runner:
    """Fill in the plan figure from the fake-transport run when plan_scale.py is missing."""
    # A missing plan_scale.py: the fake-transport run planned a runbook of the same size.
    plan = next(s for s in runner.sections if s.name == "plan_scale")
    fake = next(s for s in runner.sections if s.name == "fake_scale")
    if not plan.figures and "plan_s" in fake.data:
        total = fake.data["load_s"] + fake.data["plan_s"]
        plan.add(
            Figure(
                "scale.plan",
                f"validate + plan {cfg.scale_steps} steps",
                f"{total:.3f} s",
                target=f"< {bench_engine.PLAN_SCALE_TARGET_S:g} s",
                met=total < bench_engine.PLAN_SCALE_TARGET_S,
            )
        )
    return runner


ORDER = (
    "fanout",
    "marginal",
    "dag",
    "plan_scale",
    "site_scale",
    "validate_shapes",
    "validate_memory",
    "fake_scale",
    "shared_state",
    "wide",
    "many_hosts",
    "memory",
    "startup",
    "reports",
    "spool",
)


def ordered(sections: list[Section]) -> list[Figure]:
    """The figures in the order of the brief (sections 1–7), whatever order they ran in."""
    rank = {name: i for i, name in enumerate(ORDER)}
    by_rank = sorted(sections, key=lambda s: rank.get(s.name, len(ORDER)))
    return [f for s in by_rank for f in s.figures]


def compile_drx() -> None:
    """Compile drx's modules to bytecode, as pip does when it installs a wheel: this checkout
    is installed in editable mode (no bytecode), and every tool runs with
    PYTHONDONTWRITEBYTECODE (``base_env``), so drx would otherwise compile ~90 modules on every
    run (~0.1 s) while the peers load theirs compiled."""
    import compileall

    compileall.compile_dir(str(BENCH_DIR.parent / "orchestrator"), quiet=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmarks/run.py", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--hosts", type=int, help="sshd hosts for fan-out and DAG (default 20)")
    parser.add_argument("--rounds", type=int, help="alternated rounds per comparison (default 5)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, no peers (smoke test)")
    parser.add_argument("--no-peers", action="store_true", help="do not run ansible/pyinfra")
    parser.add_argument("--scale-steps", type=int, help="steps of the scale runs (10000)")
    parser.add_argument("--wide-hosts", type=int, help="hosts of the wide run (200)")
    parser.add_argument(
        "--many-hosts",
        type=int,
        help=f"hosts of the many-host part (1000; 0 skips it; or {MANY_HOSTS_ENV})",
    )
    parser.add_argument("--memory-size", help="output of the memory runs, for head -c (1G)")
    parser.add_argument(
        "--output", type=Path, default=BENCH_DIR / "results.json", help="results JSON file"
    )
    args = parser.parse_args(argv)
    cfg = Config.from_args(args)
    compile_drx()
    # SIGTERM as Ctrl-C: the lab's sshd processes are stopped on the way out either way
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    started = datetime.datetime.now(datetime.UTC)
    t0 = time.perf_counter()
    info = machine()
    with scratch_dir("drx-bench-") as workdir:
        runner = run_all(cfg, workdir)
    duration = time.perf_counter() - t0
    figures = ordered(runner.sections)
    results = {
        "machine": info,
        "peers": runner.peers,
        "config": asdict(cfg),
        "started_at": started.isoformat(timespec="seconds"),
        "duration_s": round(duration, 1),
        "section_durations_s": {k: round(v, 2) for k, v in runner.timings.items()},
        "figures": [f.as_dict() for f in figures],
        "sections": {s.name: s.data for s in runner.sections if s.data},
        "notes": [n for s in runner.sections for n in s.notes],
        "errors": runner.errors,
    }
    args.output.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print()
    print(render_machine(info))
    print("Peers:   " + "; ".join(f"{k}: {v}" for k, v in runner.peers.items()))
    print()
    print(render_table(figures))
    missed = [f.label for f in figures if f.met is False]
    print(
        f"\n{len(figures)} figures, {len(missed)} target(s) not met; "
        f"{duration:.0f} s; results in {args.output}"
    )
    profile = runner_profile(runner)
    if profile:
        print(
            "\nWhere the fake-transport run's CPU goes (cProfile in every thread, thread CPU "
            "time; call-heavy pure-Python code is over-weighted by the profiler):"
        )
        print(profile)
    for err in runner.errors:
        print(f"\nsection {err['section']} failed:\n{err['trace']}", file=sys.stderr)
    return 1 if runner.errors else 0


def runner_profile(runner: Runner) -> str:
    """The fake-transport profile (when one was taken) as a few readable lines."""
    fake = next((s for s in runner.sections if s.name == "fake_scale"), None)
    prof = fake.data.get("profile") if fake else None
    if not prof or "by_own_time" not in prof:
        return ""
    lines = [
        f"  ({prof['steps']} steps: plan {prof['plan_s']:.2f} s, execute {prof['execute_s']:.2f} s"
        " under the profiler)"
    ]
    for title, key in (
        ("by own time", "by_own_time"),
        ("engine, cumulative", "engine_by_cumulative_time"),
    ):
        lines.append(f"  {title}:")
        for row in prof[key][:7]:
            lines.append(
                f"  {row['tottime_s']:8.2f} s own  {row['cumtime_s']:8.2f} s cum  "
                f"{row['calls']:>10} calls  {row['function']}"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
