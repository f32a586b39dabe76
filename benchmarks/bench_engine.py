"""Benchmark sections that need no SSH: validate + plan at scale, the scheduler on the fake
transport, memory while a local step prints a lot, CLI start-up, and report rendering."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_common import (
    BENCH_DIR,
    DRX,
    PYTHON,
    REPO_ROOT,
    Figure,
    Section,
    Timed,
    base_env,
    chain_runbook,
    drx_failover,
    latest_summary,
    median,
    ms,
    secs,
    timed_run,
    write_yaml,
)

FAKE_SCALE = str(BENCH_DIR / "fake_scale.py")
PLAN_SCALE = BENCH_DIR / "plan_scale.py"
SITE_SCALE = BENCH_DIR / "site_scale.py"
VALIDATE_SHAPES = BENCH_DIR / "validate_shapes.py"

#: targets from the brief
SCHEDULER_TARGET_MS = 0.2
#: runs of the scheduler figure (its median is reported)
SCHEDULER_RUNS = 3
MEMORY_TARGET_MB = 150.0
HELP_TARGET_S = 0.2
PLAN_CLI_TARGET_S = 0.4
REPORT_TARGET_S = 2.0
#: plan_scale.py's own stated aim ("well under a second")
PLAN_SCALE_TARGET_S = 1.0
#: a site plan of 100 children x 20 steps, validated and planned (in-process: above start-up)
SITE_SCALE_TARGET_S = 0.5
#: ``drx validate`` of 20,000 steps of any shape: seconds, not minutes
VALIDATE_SHAPE_TARGET_S = 5.0
#: a 100,000-step validate (it peaked at 1.4 GB)
VALIDATE_MEMORY_TARGET_MB = 400.0
#: a step printing this much (1 GiB of 100-column lines)
BIG_OUTPUT = "head -c {size} /dev/zero | tr '\\0' 'x' | fold -w 100"


def _last_json(text: str) -> dict[str, Any]:
    """The last line of ``text`` that is a JSON object."""
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            data: dict[str, Any] = json.loads(line)
            return data
    raise ValueError(f"no JSON result in output: {text[-300:]!r}")


# --- 4a. validate + plan ------------------------------------------------------------------


def validate_shapes(steps: int) -> Section:
    """``drx validate`` of a chain, a fan-out and a random DAG of ``steps`` steps each
    (benchmarks/validate_shapes.py), none with an undo: work that grows faster than the steps
    (a warning list scanned per warning, a cycle search) shows here first."""
    sec = Section("validate_shapes")
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import validate_shapes; "
        "validate_shapes.main(int(sys.argv[2]))"
    )
    timed = timed_run([PYTHON, "-c", code, str(BENCH_DIR), str(steps)], env=base_env())
    if not timed.ok:
        sec.data = {"steps": steps, "error": timed.failure()}
        sec.add(
            Figure(
                key="scale.validate_shapes",
                label=f"drx validate, {steps}-step chain / fan-out / random DAG",
                drx=f"failed: {timed.failure()}",
                met=False,
            )
        )
        return sec
    times = _last_json(timed.stdout)
    sec.data = {"steps": steps, **times}
    for shape, label in (("chain", "chain"), ("fanout", "fan-out"), ("random", "random DAG")):
        sec.add(
            Figure(
                key=f"scale.validate_{shape}",
                label=f"drx validate, {steps}-step {label} without undo",
                drx=secs(times[shape]),
                target=f"< {VALIDATE_SHAPE_TARGET_S:g} s",
                met=times[shape] < VALIDATE_SHAPE_TARGET_S,
            )
        )
    return sec


def validate_memory(steps: int) -> Section:
    """The peak memory (and time) of ``drx validate`` of a ``steps``-step random DAG
    (benchmarks/validate_shapes.py): the memory held per step of a big runbook."""
    sec = Section("validate_memory")
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import validate_shapes; "
        "print(json.dumps(validate_shapes.validate_peak(int(sys.argv[2]))))"
    )
    timed = timed_run([PYTHON, "-c", code, str(BENCH_DIR), str(steps)], env=base_env())
    label = f"drx validate, {steps}-step random DAG: peak memory"
    if not timed.ok:
        sec.data = {"steps": steps, "error": timed.failure()}
        sec.add(Figure("scale.validate_memory", label, f"failed: {timed.failure()}", met=False))
        return sec
    peak = _last_json(timed.stdout)
    sec.data = {"steps": steps, **peak}
    sec.add(
        Figure(
            key="scale.validate_memory",
            label=label,
            drx=f"{peak['peak_mb']:.0f} MB ({secs(peak['seconds'])})",
            target=f"< {VALIDATE_MEMORY_TARGET_MB:g} MB",
            met=peak["peak_mb"] < VALIDATE_MEMORY_TARGET_MB,
        )
    )
    return sec


def plan_scale(steps: int) -> Section:
    """Validate + plan a generated ``steps``-step runbook with benchmarks/plan_scale.py."""
    sec = Section("plan_scale")
    if not PLAN_SCALE.exists():
        sec.notes.append("benchmarks/plan_scale.py is missing: see the fake-transport run's plan")
        return sec
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import plan_scale; "
        "print(json.dumps({'total_s': plan_scale.main(int(sys.argv[2]))}))"
    )
    timed = timed_run([PYTHON, "-c", code, str(BENCH_DIR), str(steps)], env=base_env())
    if not timed.ok:
        sec.data = {"steps": steps, "error": timed.failure()}
        sec.add(
            Figure(
                key="scale.plan",
                label=f"validate + plan {steps} steps (plan_scale.py)",
                drx=f"failed: {timed.failure()}",
                target=f"< {PLAN_SCALE_TARGET_S:g} s",
                met=False,
            )
        )
        return sec
    total = float(_last_json(timed.stdout)["total_s"])
    sec.data = {
        "steps": steps,
        "total_s": total,
        "output": timed.stdout.strip().splitlines()[:-1],
        "peak_rss_mb": timed.maxrss_kb / 1024,
    }
    sec.add(
        Figure(
            key="scale.plan",
            label=f"validate + plan {steps} steps (plan_scale.py)",
            drx=f"{secs(total)} (RSS {timed.maxrss_kb / 1024:.0f} MB)",
            target=f"< {PLAN_SCALE_TARGET_S:g} s",
            met=total < PLAN_SCALE_TARGET_S,
        )
    )
    return sec


def site_scale(children: int = 100, steps: int = 20) -> Section:
    """Validate + plan a generated site plan (``children`` x ``steps``) with site_scale.py."""
    sec = Section("site_scale")
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import site_scale; "
        "print(json.dumps({'total_s': site_scale.main(int(sys.argv[2]), int(sys.argv[3]))}))"
    )
    argv = [PYTHON, "-c", code, str(BENCH_DIR), str(children), str(steps)]
    timed = timed_run(argv, env=base_env())
    label = f"validate + plan a site plan of {children} children x {steps} steps (site_scale.py)"
    if not timed.ok:
        sec.data = {"error": timed.failure()}
        sec.add(
            Figure(
                key="scale.site",
                label=label,
                drx=f"failed: {timed.failure()}",
                target=f"< {SITE_SCALE_TARGET_S:g} s",
                met=False,
            )
        )
        return sec
    total = float(_last_json(timed.stdout)["total_s"])
    sec.data = {
        "children": children,
        "steps": steps,
        "total_s": total,
        "output": timed.stdout.strip().splitlines()[:-1],
    }
    sec.add(
        Figure(
            key="scale.site",
            label=label,
            drx=secs(total),
            target=f"< {SITE_SCALE_TARGET_S:g} s",
            met=total < SITE_SCALE_TARGET_S,
        )
    )
    return sec


# --- 4b. the scheduler on the fake transport ----------------------------------------------


def fake_scale(steps: int, workdir: Path, profile_steps: int | None) -> Section:
    """``steps`` no-op steps through the runner on the fake transport: cost per step. When it
    misses the target and ``profile_steps`` is set, a cProfile run of that size says why."""
    sec = Section("fake_scale")
    # the median of three runs: this figure is one process on a shared machine whose speed
    # varies by ±20 % from minute to minute; the three are kept in the data
    runs = []
    for _ in range(SCHEDULER_RUNS):
        timed = timed_run([PYTHON, FAKE_SCALE, "--steps", str(steps)], env=base_env(), timeout=1800)
        if not timed.ok:
            break
        runs.append((_last_json(timed.stdout), timed))
    if not timed.ok:
        sec.data = {"steps": steps, "error": timed.failure()}
        sec.add(
            Figure(
                key="scale.scheduler",
                label=f"scheduler: {steps} no-op steps, fake transport",
                drx=f"failed: {timed.failure()}",
                target=f"≤ {SCHEDULER_TARGET_MS} ms/step",
                met=False,
            )
        )
        return sec
    runs.sort(key=lambda run: float(run[0]["per_step_ms"]))
    result, timed = runs[len(runs) // 2]
    result["wall_s"] = timed.wall_s
    result["peak_rss_mb"] = timed.maxrss_kb / 1024
    result["per_step_ms_runs"] = [round(float(run[0]["per_step_ms"]), 4) for run in runs]
    per_step = result["per_step_ms"]
    met = per_step <= SCHEDULER_TARGET_MS
    if not met and profile_steps:
        prof_file = workdir / "fake_scale.prof"
        prof = timed_run(
            [
                PYTHON,
                FAKE_SCALE,
                "--steps",
                str(profile_steps),
                "--profile",
                str(prof_file),
            ],
            env=base_env(),
            timeout=1800,
        )
        if prof.ok:
            profiled = _last_json(prof.stdout)
            result["profile"] = {
                "steps": profile_steps,
                "plan_s": profiled["plan_s"],
                "execute_s": profiled["execute_s"],
                **profiled["profile_top"],
            }
        else:
            result["profile"] = {"error": prof.failure()}
    sec.data = result
    sec.add(
        Figure(
            key="scale.scheduler",
            label=f"scheduler: {steps} no-op steps, fake transport",
            drx=f"{per_step:.3f} ms/step (run {secs(result['execute_s'])}; median of "
            + ", ".join(f"{ms:.3f}" for ms in result["per_step_ms_runs"])
            + ")",
            target=f"≤ {SCHEDULER_TARGET_MS} ms/step",
            met=met,
        )
    )
    sec.add(
        Figure(
            key="scale.fake_plan",
            label=f"  load + plan of that {steps}-step runbook",
            drx=f"{secs(result['load_s'] + result['plan_s'])} "
            f"(whole process RSS {result['peak_rss_mb']:.0f} MB)",
        )
    )
    return sec


# --- 5. memory -------------------------------------------------------------------------------


def memory_figure(label: str, key: str, timed: Timed, size: str) -> tuple[Figure, dict[str, Any]]:
    """The table row and the data of a big-output run: peak RSS of the drx process."""
    rss_mb = timed.maxrss_kb / 1024
    hwm_mb = timed.vmhwm_kb / 1024 if timed.vmhwm_kb is not None else None
    peak = max(rss_mb, hwm_mb or 0.0)
    data = {
        "output": size,
        "wall_s": timed.wall_s,
        "exit_code": timed.returncode,
        "maxrss_mb": rss_mb,
        "vmhwm_sampled_mb": hwm_mb,
        "error": None if timed.ok else timed.failure(),
    }
    if not timed.ok:
        return Figure(key, label, f"failed: {timed.failure()}", met=False), data
    return (
        Figure(
            key,
            label,
            f"{peak:.0f} MB peak RSS ({secs(timed.wall_s)})",
            target=f"< {MEMORY_TARGET_MB:g} MB",
            met=peak < MEMORY_TARGET_MB,
        ),
        data,
    )


def memory_local(workdir: Path, size: str) -> Section:
    """drx running a step that prints ``size`` bytes on a local-transport host."""
    sec = Section("memory")
    base = workdir / "memory-local"
    base.mkdir(parents=True, exist_ok=True)
    inventory = write_yaml(
        base / "inventory.yaml",
        {
            "active": "site-a",
            "defaults": {"transport": "local"},
            "sites": {
                "site-a": {"hosts": {"src-0": {"address": "127.0.0.1"}}},
                "site-b": {"hosts": {"big-0": {"address": "127.0.0.1", "roles": ["node"]}}},
            },
        },
    )
    runbook = write_yaml(
        base / "runbook.yaml", chain_runbook(1, BIG_OUTPUT.format(size=size), "big-0")
    )
    state = base / "state"
    timed = drx_failover(runbook, inventory, state, sample_memory=True, timeout=900)
    summary = latest_summary(state)
    if timed.ok and (summary is None or summary["status"] != "succeeded"):
        timed.returncode = 1
    log_bytes = sum(p.stat().st_size for p in state.rglob("*.log"))
    shutil.rmtree(state, ignore_errors=True)
    figure, data = memory_figure(
        f"memory: a local step printing {size}B", "memory.local", timed, size
    )
    data["log_bytes"] = log_bytes
    sec.add(figure)
    sec.data["local"] = data
    return sec


# --- 6. start-up -------------------------------------------------------------------------------


def startup(runs: int) -> Section:
    """``drx --help`` and ``drx plan site-b`` (the repo's sample, from the repo root)."""
    sec = Section("startup")
    with tempfile.TemporaryDirectory(prefix="drx-bench-startup-") as tmp:
        env = base_env()
        env["DRX_STATE_DIR"] = tmp  # the repo's own .drx is neither read nor written
        env.pop("DRX_RUNBOOK", None)
        env.pop("DRX_INVENTORY", None)
        commands: list[tuple[str, list[str], float]] = [
            ("help", [DRX, "--help"], HELP_TARGET_S),
            ("plan", [DRX, "plan", "site-b"], PLAN_CLI_TARGET_S),
        ]
        for name, argv, target in commands:
            timed_run(argv, env=env, cwd=REPO_ROOT)  # warm the page cache, not measured
            results = [timed_run(argv, env=env, cwd=REPO_ROOT) for _ in range(runs)]
            failures = [r.failure() for r in results if not r.ok]
            walls = [r.wall_s for r in results if r.ok]
            med = median(walls) if walls and not failures else None
            sec.data[name] = {"argv": argv[1:], "walls_s": walls, "median_s": med}
            sec.add(
                Figure(
                    key=f"startup.{name}",
                    label=f"start-up: drx {' '.join(argv[1:])} (median of {runs})",
                    drx=ms(med, 0) if med is not None else f"failed: {failures[:1]}",
                    target=f"< {target * 1000:.0f} ms",
                    met=(med < target) if med is not None else False,
                )
            )
    return sec


# --- 7. reports --------------------------------------------------------------------------------


def reports(steps: int, workdir: Path) -> Section:
    """Render a real ``steps``-step run's summary (made on the fake transport) in each format."""
    sec = Section("reports")
    try:
        from orchestrator.report import FORMATS, render
    except ImportError as exc:
        sec.notes.append(f"orchestrator.report is not importable: {exc}")
        sec.add(Figure("reports", "reports", f"skipped ({exc})"))
        return sec
    summary_file = workdir / "summary-reports.json"
    timed = timed_run(
        [PYTHON, FAKE_SCALE, "--steps", str(steps), "--summary-out", str(summary_file)],
        env=base_env(),
    )
    if not timed.ok:
        sec.add(Figure("reports", "reports", f"failed to make a summary: {timed.failure()}"))
        return sec
    summary = json.loads(summary_file.read_text())
    for fmt in FORMATS:
        start = time.perf_counter()
        error = None
        try:
            text = render(summary, fmt)
        except Exception as exc:  # a renderer that breaks is a figure too
            error, text = repr(exc), ""
        wall = time.perf_counter() - start
        sec.data[fmt] = {"render_s": wall, "bytes": len(text.encode()), "error": error}
        sec.add(
            Figure(
                key=f"reports.{fmt}",
                label=f"report {fmt}, {steps}-step run",
                drx=ms(wall, 0) if error is None else f"failed: {error[:120]}",
                target=f"< {REPORT_TARGET_S:g} s",
                met=error is None and wall < REPORT_TARGET_S,
            )
        )
    return sec
