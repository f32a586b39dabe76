"""Benchmark sections over real sshd hosts: fan-out against peers, marginal cost per task-host,
the DAG drill, a wide run over many hosts, and memory while a remote step prints a lot.

Every tool is measured end to end as a separate process (interpreter start, imports, connects,
commands, exit), against the same lab hosts, with host keys checked against the lab's
known_hosts file.
"""

from __future__ import annotations

import json
import random
import shlex
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bench_hosts
import networkx as nx
import yaml
from bench_common import (
    BENCH_DIR,
    PYTHON,
    Figure,
    Peer,
    Section,
    Timed,
    base_env,
    chain_runbook,
    drx_failover,
    lab_inventory,
    latest_summary,
    median,
    ms,
    ratio,
    secs,
    timed_run,
    write_yaml,
)

from orchestrator.lab.sshd import Lab

FLOOR = str(BENCH_DIR / "paramiko_floor.py")
FAKE_SCALE = str(BENCH_DIR / "fake_scale.py")
#: steps (tasks) of the fan-out comparison
FANOUT_TASKS = 5


@dataclass
class SshWorld:
    """The lab and the files shared by the SSH sections."""

    lab: Lab
    names: list[str]  # the fan-out hosts
    workdir: Path
    ansible: Peer
    pyinfra: Peer
    groups: int = 4

    def __post_init__(self) -> None:
        self._runs = 0

    def state_dir(self) -> Path:
        """A fresh drx state directory (each run starts with site-a active)."""
        self._runs += 1
        return self.workdir / "state" / f"run-{self._runs}"

    def done(self, state_dir: Path) -> None:
        """Drop a run's state (its output logs would pile up)."""
        shutil.rmtree(state_dir, ignore_errors=True)


# --- the tools, one function each: run the same work, return the timed process ------------------


def run_drx(
    world: SshWorld,
    runbook: Path,
    inventory: Path,
    inspect: Callable[[Path], None] | None = None,
) -> tuple[Timed, dict[str, Any] | None]:
    """``drx failover site-b --yes`` on ``runbook``; the process and the run's summary.
    ``inspect`` is called with the run's directory before the state is dropped."""
    state = world.state_dir()
    timed = drx_failover(runbook, inventory, state)
    summary = latest_summary(state)
    if inspect is not None and summary is not None:
        inspect(state / "runs" / summary["run_id"])
    world.done(state)
    if timed.ok and (summary is None or summary.get("status") != "succeeded"):
        timed.returncode = 1
    return timed, summary


def hosts_json(world: SshWorld, names: Sequence[str], path: Path) -> Path:
    """The host list the raw-Paramiko floor reads."""
    lab = world.lab
    doc = [
        {
            "address": lab.host(n).address,
            "port": lab.host(n).port,
            "user": lab.user,
            "identity_file": str(lab.identity_file),
            "known_hosts": str(lab.known_hosts),
        }
        for n in names
    ]
    path.write_text(json.dumps(doc))
    return path


def run_floor(hosts_file: Path, commands: int) -> Timed:
    """The raw-Paramiko floor as its own process: connect every host, ``commands`` each."""
    return timed_run([PYTHON, FLOOR, str(hosts_file), "--commands", str(commands)], env=base_env())


def spool_floor_doc(world: SshWorld, names: Sequence[str], commands: int, path: Path) -> Path:
    """The programs of drx's host-side protocol for ``commands`` steps of /bin/true on each
    host (see paramiko_floor.py --spool), written with drx's own functions: the pre-flight's
    spool check (creating the first attempts' directories), a spool wrapper per command
    (as drx runs one under its 8-command starter threshold), the clean-up."""
    from orchestrator.transport.spool import (
        SpoolKey,
        check_program,
        cleanup_program,
        execed,
        program,
        ssh_dir,
    )

    run = "floor-" + "".join(random.choices("0123456789abcdef", k=12))
    doc = []
    for name in names:
        keys = [SpoolKey(run, f"s{i}", name, "1") for i in range(commands)]
        dirs = [ssh_dir(k) for k in keys]
        doc.append(
            {
                "check": check_program(ssh_dir(None), dirs),
                "commands": [program(execed("/bin/true"), "@@drx-floor@@", False, d) for d in dirs],
                "cleanup": "exec /bin/sh -c "
                + shlex.quote(cleanup_program(dirs))
                + " </dev/null >/dev/null 2>&1",
            }
        )
    path.write_text(json.dumps(doc))
    return path


def chain_floor_doc(steps: int, hosts: int, path: Path) -> Path:
    """The floor's DAG file for a chain of ``steps`` steps of /bin/true, each on every host and
    each after the one before has ended on all of them: a runbook's semantics (a step ends
    when all its hosts have), which the floor's ``--commands`` mode does not wait for."""
    doc = {
        "steps": [
            {
                "id": f"s{i}",
                "hosts": list(range(hosts)),
                "run": "/bin/true",
                "needs": [f"s{i - 1}"] if i else [],
            }
            for i in range(steps)
        ]
    }
    path.write_text(json.dumps(doc))
    return path


def ansible_project(world: SshWorld, directory: Path, forks: int) -> dict[str, str]:
    """An ansible.cfg and inventory for the lab hosts (strict host keys against the lab's
    known_hosts, the lab key, pipelining); returns the environment that selects them."""
    directory.mkdir(parents=True, exist_ok=True)
    lab = world.lab
    lines = ["[targets]"]
    for name in world.names:
        h = lab.host(name)
        lines.append(f"{name} ansible_host={h.address} ansible_port={h.port}")
    for g in range(world.groups):
        lines.append(f"\n[g{g}]")
        lines += [n for i, n in enumerate(world.names) if i % world.groups == g]
    ssh_args = (
        f"-F /dev/null -o UserKnownHostsFile={lab.known_hosts} -o StrictHostKeyChecking=yes "
        "-o IdentitiesOnly=yes -o BatchMode=yes"
    )
    lines += [
        "\n[targets:vars]",
        f"ansible_user={lab.user}",
        f"ansible_ssh_private_key_file={lab.identity_file}",
        "ansible_python_interpreter=/usr/bin/python3",
        f"ansible_ssh_common_args='{ssh_args}'",
    ]
    (directory / "inventory.ini").write_text("\n".join(lines) + "\n")
    (directory / "ansible.cfg").write_text(
        "[defaults]\n"
        f"inventory = {directory / 'inventory.ini'}\n"
        f"forks = {forks}\n"
        "host_key_checking = True\n"
        "retry_files_enabled = False\n"
        "interpreter_python = /usr/bin/python3\n"
        "[ssh_connection]\n"
        "pipelining = True\n"
    )
    home = directory / "home"
    home.mkdir(exist_ok=True)
    env = base_env(home)
    env["ANSIBLE_CONFIG"] = str(directory / "ansible.cfg")
    return env


def run_ansible(world: SshWorld, playbook: Path, env: dict[str, str], cp_dir: Path) -> Timed:
    """``ansible-playbook`` with a fresh ControlPersist directory (no connection of an earlier
    run is reused), whose master connections are closed afterwards."""
    assert world.ansible.executable is not None
    shutil.rmtree(cp_dir, ignore_errors=True)
    cp_dir.mkdir(parents=True)
    run_env = dict(env, ANSIBLE_SSH_CONTROL_PATH_DIR=str(cp_dir))
    try:
        return timed_run([str(world.ansible.executable), str(playbook)], env=run_env)
    finally:
        close_control_masters(cp_dir)


def close_control_masters(cp_dir: Path) -> None:
    """Ask every OpenSSH ControlPersist master under ``cp_dir`` to exit."""
    if not cp_dir.is_dir():
        return
    for sock in cp_dir.iterdir():
        subprocess.run(
            ["ssh", "-F", "/dev/null", "-o", f"ControlPath={sock}", "-O", "exit", "lab"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    shutil.rmtree(cp_dir, ignore_errors=True)


def fanout_playbook(path: Path, tasks: int) -> Path:
    """``tasks`` × ``command: /bin/true`` on every target host, no facts."""
    play = {
        "hosts": "targets",
        "gather_facts": False,
        "tasks": [{"name": f"t{i}", "ansible.builtin.command": "/bin/true"} for i in range(tasks)],
    }
    return write_yaml_list(path, [play])


def write_yaml_list(path: Path, items: list[dict[str, Any]]) -> Path:
    """Write a YAML list (a playbook)."""
    path.write_text(yaml.safe_dump(items, sort_keys=False))
    return path


def pyinfra_project(world: SshWorld, directory: Path, tasks: int) -> tuple[Path, Path]:
    """A pyinfra inventory of the lab hosts (host keys checked against the lab's known_hosts,
    strict) and a deploy of ``tasks`` × ``server.shell('/bin/true')``."""
    directory.mkdir(parents=True, exist_ok=True)
    lab = world.lab
    entries = []
    for name in world.names:
        h = lab.host(name)
        data = {
            "ssh_hostname": h.address,
            "ssh_port": h.port,
            "ssh_user": lab.user,
            "ssh_key": str(lab.identity_file),
            "ssh_known_hosts_file": str(lab.known_hosts),
            "ssh_strict_host_key_checking": "yes",
            "ssh_allow_agent": False,
            "ssh_look_for_keys": False,
            "ssh_config_file": "/dev/null",
        }
        entries.append(f"    ({name!r}, {data!r}),")
    inventory = directory / "inventory.py"
    inventory.write_text("targets = [\n" + "\n".join(entries) + "\n]\n")
    deploy = directory / "deploy.py"
    deploy.write_text(
        "from pyinfra.operations import server\n\n"
        f"for i in range({tasks}):\n"
        '    server.shell(name=f"t{i}", commands=["/bin/true"])\n'
    )
    return inventory, deploy


def run_pyinfra(world: SshWorld, inventory: Path, deploy: Path, parallel: int) -> Timed:
    """``pyinfra -y --parallel N inventory.py deploy.py``."""
    assert world.pyinfra.executable is not None
    home = inventory.parent / "home"
    home.mkdir(exist_ok=True)
    return timed_run(
        [
            str(world.pyinfra.executable),
            "-y",
            "--parallel",
            str(parallel),
            str(inventory),
            str(deploy),
        ],
        env=base_env(home),
        cwd=inventory.parent,
    )


# --- 1. fan-out -----------------------------------------------------------------------------


def fanout(world: SshWorld, rounds: int) -> Section:
    """5 steps of /bin/true on every host: drx, ansible-playbook, pyinfra, raw Paramiko,
    alternated within each round; medians, per task-host cost and paired ratios."""
    n = len(world.names)
    sec = Section("fanout")
    base = world.workdir / "fanout"
    base.mkdir(parents=True, exist_ok=True)
    inventory = write_yaml(base / "inventory.yaml", lab_inventory(world.lab, world.names))
    runbook = write_yaml(base / "runbook.yaml", chain_runbook(FANOUT_TASKS))
    floor_hosts = hosts_json(world, world.names, base / "hosts.json")

    spool_programs = spool_floor_doc(world, world.names, FANOUT_TASKS, base / "spool.json")
    tools: dict[str, Callable[[], Timed]] = {
        "drx": lambda: run_drx(world, runbook, inventory)[0],
        "paramiko": lambda: run_floor(floor_hosts, FANOUT_TASKS),
        "paramiko_spool": lambda: timed_run(
            [PYTHON, FLOOR, str(floor_hosts), "--spool", str(spool_programs)], env=base_env()
        ),
    }
    skipped: dict[str, str] = {}
    if world.ansible.skipped:
        skipped["ansible"] = world.ansible.skipped
    else:
        env = ansible_project(world, base / "ansible", forks=n)
        playbook = fanout_playbook(base / "ansible" / "playbook.yaml", FANOUT_TASKS)
        cp = base / "ansible" / "cp"
        tools["ansible"] = lambda: run_ansible(world, playbook, env, cp)
    if world.pyinfra.skipped:
        skipped["pyinfra"] = world.pyinfra.skipped
    else:
        inv_py, deploy = pyinfra_project(world, base / "pyinfra", FANOUT_TASKS)
        tools["pyinfra"] = lambda: run_pyinfra(world, inv_py, deploy, n)

    walls: dict[str, list[float | None]] = {t: [] for t in tools}
    errors: dict[str, str] = {}
    order = list(tools)
    for r in range(rounds):
        rotated = order[r % len(order) :] + order[: r % len(order)]
        for tool in rotated:
            timed = tools[tool]()
            if timed.ok:
                walls[tool].append(timed.wall_s)
            else:
                walls[tool].append(None)
                errors.setdefault(tool, timed.failure())
    task_hosts = FANOUT_TASKS * n
    data: dict[str, Any] = {"hosts": n, "tasks": FANOUT_TASKS, "rounds": rounds, "tools": {}}
    medians: dict[str, float | None] = {}
    for tool, values in walls.items():
        good = [v for v in values if v is not None]
        med = median(good) if len(good) == len(values) and good else None
        medians[tool] = med
        data["tools"][tool] = {
            "walls_s": values,
            "median_wall_s": med,
            "per_task_host_ms": med / task_hosts * 1000 if med is not None else None,
            "error": errors.get(tool),
        }
    for tool, reason in skipped.items():
        data["tools"][tool] = {"skipped": reason}

    def paired(peer: str) -> float | None:
        pairs = [
            d / p
            for d, p in zip(walls["drx"], walls.get(peer, []), strict=False)
            if d is not None and p is not None
        ]
        return median(pairs) if pairs and medians.get(peer) is not None else None

    drx_med = medians["drx"]
    drx_text = (
        f"{secs(drx_med)} ({ms(drx_med / task_hosts if drx_med else None, 2)}/task-host)"
        if drx_med is not None
        else f"failed: {errors.get('drx', '?')}"
    )
    labels = {
        "ansible": "ansible-playbook",
        "pyinfra": "pyinfra",
        "paramiko": "raw Paramiko",
        "paramiko_spool": "raw Paramiko doing drx's host-side work (check, spool, clean-up)",
    }
    for peer in ("ansible", "pyinfra", "paramiko", "paramiko_spool"):
        version = {"ansible": world.ansible.version, "pyinfra": world.pyinfra.version}.get(peer)
        if peer in skipped:
            peer_text, ratio_text = f"skipped ({skipped[peer]})", "n/a"
        elif medians.get(peer) is None:
            peer_text, ratio_text = f"failed ({errors.get(peer, '?')})", "n/a"
        else:
            pm = medians[peer]
            assert pm is not None
            peer_text = f"{secs(pm)} ({ms(pm / task_hosts, 2)}/task-host)"
            pr = paired(peer)
            ratio_text = f"{pr:.2f}x" if pr is not None else "n/a"
            data["tools"][peer]["paired_ratio_drx_over_peer"] = pr
        if version:
            data["tools"][peer]["version"] = version
        sec.add(
            Figure(
                key=f"fanout.{peer}",
                label=f"SSH fan-out {FANOUT_TASKS}×{n}: drx vs {labels[peer]}",
                drx=drx_text,
                peers=peer_text,
                ratio=ratio_text,
            )
        )
    sec.data = data
    return sec


# --- 2. marginal cost per task-host ---------------------------------------------------------


def marginal(world: SshWorld, rounds: int, small: int, large: int) -> Section:
    """drx and raw Paramiko at ``small`` and ``large`` steps × N hosts: the slope of wall time
    per extra task-host, from paired rounds (start-up and connects cancel out). Also the slope
    of each process's CPU time, and drx's engine alone on the fake transport (same shape, no
    SSH), which split drx's marginal cost into engine and transport."""
    n = len(world.names)
    sec = Section("marginal")
    base = world.workdir / "marginal"
    base.mkdir(parents=True, exist_ok=True)
    inventory = write_yaml(base / "inventory.yaml", lab_inventory(world.lab, world.names))
    books = {k: write_yaml(base / f"runbook-{k}.yaml", chain_runbook(k)) for k in (small, large)}
    floor_hosts = hosts_json(world, world.names, base / "hosts.json")
    extra = (large - small) * n
    runs: dict[str, list[Timed | None]] = {}
    rto: dict[int, list[float]] = {small: [], large: []}
    errors: list[str] = []

    def drx_at(k: int) -> Timed | None:
        timed, summary = run_drx(world, books[k], inventory)
        if not timed.ok:
            errors.append(f"drx {k} steps: {timed.failure()}")
            return None
        if summary and summary.get("rto", {}).get("measured_s") is not None:
            rto[k].append(summary["rto"]["measured_s"])
        return timed

    def floor_at(k: int) -> Timed | None:
        timed = run_floor(floor_hosts, k)
        if not timed.ok:
            errors.append(f"paramiko {k} commands: {timed.failure()}")
            return None
        return timed

    chains = {k: chain_floor_doc(k, n, base / f"chain-{k}.json") for k in (small, large)}

    def chain_at(k: int) -> Timed | None:
        timed = timed_run(
            [PYTHON, FLOOR, str(floor_hosts), "--dag", str(chains[k])], env=base_env()
        )
        if not timed.ok:
            errors.append(f"paramiko chain {k} steps: {timed.failure()}")
            return None
        return timed

    jobs: dict[str, Callable[[], Timed | None]] = {
        f"drx_{small}": lambda: drx_at(small),
        f"drx_{large}": lambda: drx_at(large),
        f"paramiko_{small}": lambda: floor_at(small),
        f"paramiko_{large}": lambda: floor_at(large),
        f"chain_{small}": lambda: chain_at(small),
        f"chain_{large}": lambda: chain_at(large),
    }
    names = list(jobs)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            runs.setdefault(name, []).append(jobs[name]())

    def slope(tool: str, attr: str = "wall_s") -> float | None:
        diffs = [
            (getattr(b, attr) - getattr(a, attr)) / extra
            for a, b in zip(runs[f"{tool}_{small}"], runs[f"{tool}_{large}"], strict=True)
            if a is not None and b is not None
        ]
        return median(diffs) if diffs and len(diffs) == rounds else None

    drx_slope, floor_slope = slope("drx"), slope("paramiko")
    chain_slope = slope("chain")
    drx_cpu, floor_cpu = slope("drx", "cpu_s"), slope("paramiko", "cpu_s")
    rto_slope = (
        (median(rto[large]) - median(rto[small])) / extra if rto[small] and rto[large] else None
    )
    engine = engine_slope(small, large, n, max(1, min(rounds, 3)))
    diff = drx_slope - floor_slope if drx_slope is not None and floor_slope is not None else None

    def per_ms(value: float | None) -> float | None:
        return value * 1000 if value is not None else None

    sec.data = {
        "hosts": n,
        "small_steps": small,
        "large_steps": large,
        "extra_task_hosts": extra,
        "walls_s": {k: [t.wall_s if t else None for t in v] for k, v in runs.items()},
        "cpu_s": {k: [t.cpu_s if t else None for t in v] for k, v in runs.items()},
        "drx_rto_s": {str(k): v for k, v in rto.items()},
        "drx_slope_ms": per_ms(drx_slope),
        "drx_slope_from_rto_ms": per_ms(rto_slope),
        "paramiko_slope_ms": per_ms(floor_slope),
        "difference_ms": per_ms(diff),
        "drx_cpu_per_task_host_ms": per_ms(drx_cpu),
        "paramiko_cpu_per_task_host_ms": per_ms(floor_cpu),
        "paramiko_chain_slope_ms": per_ms(chain_slope),
        "engine_only_fake_transport": engine,
        "errors": errors,
    }
    sec.add(
        Figure(
            key="marginal.per_task_host",
            label=f"marginal cost per task-host ({small}→{large} steps × {n})",
            drx=ms(drx_slope, 2),
            peers=f"raw Paramiko {ms(floor_slope, 2)}",
            ratio=f"+{diff * 1000:.2f} ms" if diff is not None else "n/a",
            target="≤ raw + 0.3 ms",
            met=(diff <= 0.0003) if diff is not None else False,
        )
    )
    sec.add(
        Figure(
            key="marginal.cpu_per_task_host",
            label="  client CPU per task-host (process user+sys)",
            drx=ms(drx_cpu, 2),
            peers=f"raw Paramiko {ms(floor_cpu, 2)}",
            ratio=ratio(drx_cpu, floor_cpu),
        )
    )
    chain_diff = (
        drx_slope - chain_slope if drx_slope is not None and chain_slope is not None else None
    )
    sec.add(
        Figure(
            key="marginal.step_barrier",
            label="  raw Paramiko with a runbook's step barrier (the same chain of all-host steps)",
            drx=ms(drx_slope, 2),
            peers=f"raw Paramiko chain {ms(chain_slope, 2)}",
            ratio=f"{chain_diff * 1000:+.2f} ms" if chain_diff is not None else "n/a",
        )
    )
    engine_wall = engine.get("slope_ms")
    sec.add(
        Figure(
            key="marginal.engine_only",
            label="  drx engine alone per task-host (fake transport, same shape)",
            drx=f"{engine_wall:.2f} ms" if engine_wall is not None else f"failed: {engine}",
            peers=f"CPU {engine['cpu_slope_ms']:.2f} ms" if engine_wall is not None else "",
        )
    )
    return sec


def engine_slope(small: int, large: int, hosts: int, rounds: int) -> dict[str, Any]:
    """The engine's own cost per task-host: the same chain of all-host steps run through the
    runner on the fake transport (no SSH), slope of the run time between the two sizes."""
    results: dict[int, list[Timed]] = {small: [], large: []}
    run_s: dict[int, list[float]] = {small: [], large: []}
    for _ in range(rounds):
        for k in (small, large):
            timed = timed_run(
                [PYTHON, FAKE_SCALE, "--shape", "fanout", "--hosts", str(hosts), "--steps", str(k)],
                env=base_env(),
            )
            if not timed.ok:
                return {"error": timed.failure()}
            results[k].append(timed)
            run_s[k].append(float(json.loads(timed.stdout.strip().splitlines()[-1])["execute_s"]))
    extra = (large - small) * hosts
    walls = [(b - a) / extra for a, b in zip(run_s[small], run_s[large], strict=True)]
    cpus = [
        (b.cpu_s - a.cpu_s) / extra for a, b in zip(results[small], results[large], strict=True)
    ]
    return {
        "rounds": rounds,
        "execute_s": {str(k): v for k, v in run_s.items()},
        "slope_ms": median(walls) * 1000,
        "cpu_slope_ms": median(cpus) * 1000,
    }


# --- 3. DAG drill -------------------------------------------------------------------------


@dataclass
class DagBook:
    """A generated runbook with its graph: durations, hosts of each step, the bound."""

    doc: dict[str, Any]
    graph: nx.DiGraph
    sleeps: dict[str, float]
    bound_s: float
    critical_path: list[str]
    total_s: float
    host_indexes: dict[str, list[int]]

    def floor_doc(self) -> dict[str, Any]:
        """The DAG for the raw-Paramiko floor (hosts as indexes into its host list)."""
        return {
            "steps": [
                {
                    "id": st["id"],
                    "hosts": self.host_indexes[st["id"]],
                    "run": st["run"],
                    "needs": st.get("needs", []),
                }
                for st in self.doc["steps"]
            ]
        }


def dag_book(steps: int, names: Sequence[str], groups: int, seed: int = 7) -> DagBook:
    """``steps`` steps of ``sleep`` (0.05–0.2 s) in parallel branches over the hosts: each
    needs one or two of the six steps before it; each runs on a group, a host or all hosts."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    graph: nx.DiGraph = nx.DiGraph()
    sleeps: dict[str, float] = {}
    indexes: dict[str, list[int]] = {}
    for i in range(steps):
        sid = f"d{i:02d}"
        window = [f"d{j:02d}" for j in range(max(0, i - 6), i)]
        k = 0 if i < 3 else rng.choice((1, 1, 2))
        needs = sorted(rng.sample(window, min(k, len(window))))
        sleep = rng.choice((0.05, 0.08, 0.1, 0.12, 0.15, 0.2))
        pick = rng.random()
        if pick < 0.5:
            group = rng.randrange(groups)
            hosts = f"g{group}@target"
            indexes[sid] = [j for j in range(len(names)) if j % groups == group]
        elif pick < 0.85:
            one = rng.randrange(len(names))
            hosts = names[one]
            indexes[sid] = [one]
        else:
            hosts = "@target"
            indexes[sid] = list(range(len(names)))
        step: dict[str, Any] = {"id": sid, "hosts": hosts, "run": f"sleep {sleep}"}
        if needs:
            step["needs"] = needs
        out.append(step)
        sleeps[sid] = sleep
        graph.add_node(sid)
        graph.add_edges_from((n, sid) for n in needs)
    # Longest path weighted by the steps' own durations (node weights), in topological order.
    best: dict[str, tuple[float, str | None]] = {}
    for node in nx.topological_sort(graph):
        preds = [(best[p][0], p) for p in graph.predecessors(node)]
        top = max(preds, default=(0.0, None))
        best[node] = (top[0] + sleeps[node], top[1])
    end = max(best, key=lambda s: best[s][0])
    path = [end]
    while (prev := best[path[-1]][1]) is not None:
        path.append(prev)
    path.reverse()
    return DagBook(
        doc={"name": "dag-drill", "steps": out},
        graph=graph,
        sleeps=sleeps,
        bound_s=best[end][0],
        critical_path=path,
        total_s=sum(sleeps.values()),
        host_indexes=indexes,
    )


def dag_playbook(book: DagBook, path: Path) -> Path:
    """The same runbook for ansible-playbook: one play per step, in declaration order (a linear
    tool runs one step after the other)."""
    plays = []
    for step in book.doc["steps"]:
        sel = step["hosts"]
        hosts = "targets" if sel == "@target" else sel.removesuffix("@target")
        plays.append(
            {
                "name": step["id"],
                "hosts": hosts,
                "gather_facts": False,
                "tasks": [{"name": step["id"], "ansible.builtin.command": step["run"]}],
            }
        )
    return write_yaml_list(path, plays)


def dag_drill(world: SshWorld, rounds: int, steps: int, with_ansible: bool) -> Section:
    """drx's measured RTO on the generated DAG vs the critical-path bound and the sum of all
    steps, and the same work through ansible-playbook."""
    sec = Section("dag")
    n = len(world.names)
    base = world.workdir / "dag"
    base.mkdir(parents=True, exist_ok=True)
    book = dag_book(steps, world.names, world.groups)
    inventory = write_yaml(
        base / "inventory.yaml", lab_inventory(world.lab, world.names, world.groups)
    )
    runbook = write_yaml(base / "runbook.yaml", book.doc)
    floor_hosts = hosts_json(world, world.names, base / "hosts.json")
    floor_dag = base / "floor-dag.json"
    floor_dag.write_text(json.dumps(book.floor_doc()))
    rtos: list[float] = []
    floors: list[float] = []
    walls: list[float] = []
    errors: list[str] = []
    measured_paths: list[list[str]] = []
    breakdowns: list[dict[str, Any]] = []

    def drx_round() -> None:
        timed, summary = run_drx(
            world,
            runbook,
            inventory,
            inspect=lambda run_dir: breakdowns.append(critical_breakdown(run_dir, book)),
        )
        if not timed.ok or summary is None:
            errors.append(f"drx: {timed.failure()}")
            return
        walls.append(timed.wall_s)
        rtos.append(summary["rto"]["measured_s"])
        measured_paths.append(summary.get("critical_path") or [])

    def floor_round() -> None:
        timed = timed_run(
            [PYTHON, FLOOR, str(floor_hosts), "--dag", str(floor_dag)], env=base_env()
        )
        if not timed.ok:
            errors.append(f"paramiko floor: {timed.failure()}")
            return
        floors.append(float(json.loads(timed.stdout.strip().splitlines()[-1])["dag_s"]))

    for r in range(rounds):
        for job in (drx_round, floor_round) if r % 2 == 0 else (floor_round, drx_round):
            job()
    floor = median(floors) if floors else None
    cp_steps = len(book.critical_path)
    allowed = book.bound_s * 1.02 + 0.005 * cp_steps
    rto = median(rtos) if rtos else None
    ansible_wall: float | None = None
    ansible_text = "skipped (--quick)" if not with_ansible else ""
    if with_ansible and world.ansible.skipped:
        ansible_text = f"skipped ({world.ansible.skipped})"
    elif with_ansible:
        env = ansible_project(world, base / "ansible", forks=n)
        playbook = dag_playbook(book, base / "ansible" / "playbook.yaml")
        timed = run_ansible(world, playbook, env, base / "ansible" / "cp")
        if timed.ok:
            ansible_wall = timed.wall_s
            ansible_text = f"ansible-playbook {secs(ansible_wall)} (wall, 1 run)"
        else:
            ansible_text = f"ansible failed ({timed.failure()})"
    sec.data = {
        "steps": steps,
        "hosts": n,
        "rounds": rounds,
        "bound_s": book.bound_s,
        "critical_path": book.critical_path,
        "critical_path_steps": cp_steps,
        "sum_of_steps_s": book.total_s,
        "allowed_rto_s": allowed,
        "drx_rto_s": rtos,
        "drx_median_rto_s": rto,
        "drx_overhead_per_cp_step_ms": (
            (rto - book.bound_s) / cp_steps * 1000 if rto is not None else None
        ),
        "drx_walls_s": walls,
        "paramiko_floor_dag_s": floors,
        "paramiko_floor_median_s": floor,
        "paramiko_floor_overhead_per_cp_step_ms": (
            (floor - book.bound_s) / cp_steps * 1000 if floor is not None else None
        ),
        "drx_measured_critical_paths": measured_paths[:1],
        "breakdown": median_breakdown(breakdowns),
        "ansible_wall_s": ansible_wall,
        "errors": errors,
    }
    sec.add(
        Figure(
            key="dag.rto",
            label=f"DAG drill {steps} steps × {n} hosts: RTO vs critical-path bound",
            drx=secs(rto) if rto is not None else f"failed: {errors[:1]}",
            peers=f"bound {secs(book.bound_s)} ({cp_steps} steps)",
            ratio=ratio(rto, book.bound_s),
            target=f"≤ bound×1.02 + 5 ms×{cp_steps} = {secs(allowed)}",
            met=(rto <= allowed) if rto is not None else False,
        )
    )
    sec.add(
        Figure(
            key="dag.floor",
            label="  the same DAG, raw-Paramiko floor (no engine)",
            drx=secs(rto) if rto is not None else "n/a",
            peers=(
                f"floor {secs(floor)} ({'within' if floor <= allowed else 'over'} the target)"
                if floor is not None
                else f"failed: {errors[-1:]}"
            ),
            ratio=ratio(rto, floor),
        )
    )
    bd = sec.data["breakdown"]
    if bd:
        sec.add(
            Figure(
                key="dag.breakdown",
                label=f"  along the run's critical path ({bd['path_steps']} steps)",
                drx=f"sleeps {secs(bd['sleeps_s'])} + beyond sleeps "
                f"{secs(bd['beyond_sleep_s'])} + scheduler gaps {secs(bd['scheduler_gaps_s'])}",
                peers="beyond sleep per step, by hosts: "
                + ", ".join(
                    f"{k} host{'s' if k != '1' else ''} {v:.0f} ms"
                    for k, v in bd["beyond_sleep_ms_by_host_count"].items()
                ),
            )
        )
    sec.add(
        Figure(
            key="dag.linear",
            label="DAG drill: drx RTO vs a linear run",
            drx=secs(rto) if rto is not None else "n/a",
            peers=f"sum of steps {secs(book.total_s)}"
            + (f"; {ansible_text}" if ansible_text else ""),
            ratio=ratio(rto, ansible_wall if ansible_wall is not None else book.total_s),
            target="",
            met=None,
        )
    )
    return sec


def critical_breakdown(run_dir: Path, book: DagBook) -> dict[str, Any]:
    """Where a DAG run's time went along the chain that ended it (from the journal's
    monotonic offsets): the steps' own sleeps, each step's time beyond its sleep (command
    start-up on its hosts, SSH, the step's bookkeeping), and the gaps between a step's last
    need finishing and the step starting (the scheduler's latency)."""
    from orchestrator.record.store import LocalStore

    events = LocalStore(run_dir.parent.parent).read_journal(run_dir.name)
    started = {e["step"]: e["t"] for e in events if e["event"] == "step_started"}
    finished = {e["step"]: e["t"] for e in events if e["event"] == "step_finished"}
    slowest_host: dict[str, float] = {}
    for e in events:
        if e["event"] == "host_finished" and e.get("duration_s") is not None:
            slowest_host[e["step"]] = max(slowest_host.get(e["step"], 0.0), e["duration_s"])
    summary = json.loads((run_dir / "summary.json").read_text())
    path: list[str] = summary.get("critical_path") or []
    if not path or not started:
        return {}
    hosts_of = {s["id"]: len(s.get("hosts", [])) for s in summary["steps"]}
    first = min(started.values())
    over: dict[int, list[float]] = {}
    gaps, beyond, host_beyond = [], [], []
    for i, sid in enumerate(path):
        run = finished[sid] - started[sid]
        beyond.append(run - book.sleeps[sid])
        host_beyond.append(slowest_host.get(sid, run) - book.sleeps[sid])
        over.setdefault(hosts_of.get(sid, 0), []).append((run - book.sleeps[sid]) * 1000)
        if i:
            gaps.append(started[sid] - finished[path[i - 1]])
    return {
        "path_steps": len(path),
        "lead_s": started[path[0]] - first,
        "sleeps_s": sum(book.sleeps[s] for s in path),
        "beyond_sleep_s": sum(beyond),
        "beyond_sleep_slowest_host_s": sum(host_beyond),
        "scheduler_gaps_s": sum(gaps),
        "max_gap_ms": max(gaps, default=0.0) * 1000,
        "end_s": finished[path[-1]] - first,
        "beyond_sleep_ms_by_host_count": {
            str(k): round(sum(v) / len(v), 1) for k, v in sorted(over.items())
        },
    }


def median_breakdown(items: list[dict[str, Any]]) -> dict[str, Any]:
    """The breakdown of the run whose path end is the median one."""
    items = [i for i in items if i]
    if not items:
        return {}
    return sorted(items, key=lambda i: i["end_s"])[len(items) // 2]


# --- 4c. many hosts -----------------------------------------------------------------------


def wide(lab: Lab, workdir: Path, hosts: int, steps: int = 3) -> Section:
    """``hosts`` sshd hosts × ``steps`` steps through drx: every connection must succeed
    (measured by bench_hosts, as the many-host part is)."""
    return bench_hosts.wide_section(bench_hosts.measure(lab, workdir, hosts, steps=steps))


# --- 5b. memory over SSH ------------------------------------------------------------------


def memory_ssh(lab: Lab, workdir: Path, command: str) -> Timed:
    """drx running ``command`` (prints a lot) on one lab host over SSH; the timed process."""
    name = "mem-0"
    lab.add_host(name)
    try:
        lab.start([name])
        base = workdir / "memory-ssh"
        base.mkdir(parents=True, exist_ok=True)
        inventory = write_yaml(base / "inventory.yaml", lab_inventory(lab, [name]))
        runbook = write_yaml(base / "runbook.yaml", chain_runbook(1, command))
        state = base / "state"
        timed = drx_failover(runbook, inventory, state, sample_memory=True, timeout=900)
        summary = latest_summary(state)
        if timed.ok and (summary is None or summary["status"] != "succeeded"):
            timed.returncode = 1
        shutil.rmtree(state, ignore_errors=True)
        return timed
    finally:
        lab.remove(name)
