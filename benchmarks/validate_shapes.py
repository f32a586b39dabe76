"""How long ``drx validate`` takes on three DAG shapes of many steps: a chain, a fan-out and a
random DAG. Steps have no ``undo`` (every step draws a warning), which is where repeated work on
lists of warnings used to show.

``python benchmarks/validate_shapes.py [STEPS]`` prints one line per shape and, last, a JSON
object ``{"chain": s, "fanout": s, "random": s}`` (wall seconds of the ``drx validate`` process).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

INVENTORY = """\
active: site-a
defaults: {transport: local}
sites:
  site-a: {hosts: {app-a: {address: 127.0.0.1, roles: [app]}}}
  site-b: {hosts: {app-b: {address: 127.0.0.1, roles: [app]}}}
"""


def chain(i: int, rng: random.Random) -> list[int]:
    return [i - 1] if i else []


def fanout(i: int, rng: random.Random) -> list[int]:
    return [0] if i else []


def random_dag(i: int, rng: random.Random) -> list[int]:
    """Up to three needs among the earlier steps, biased towards recent ones."""
    if not i:
        return []
    return sorted({max(0, i - 1 - int(rng.expovariate(1 / 50))) for _ in range(rng.randint(1, 3))})


SHAPES: dict[str, Callable[[int, random.Random], list[int]]] = {
    "chain": chain,
    "fanout": fanout,
    "random": random_dag,
}


def runbook_text(shape: str, steps: int) -> str:
    rng = random.Random(7)
    needs_of = SHAPES[shape]
    out = ["name: shape", "steps:"]
    for i in range(steps):
        needs = needs_of(i, rng)
        line = f"  - {{id: s{i}, hosts: app@target, run: 'step {i} {{{{ target }}}}'"
        if needs:
            line += ", needs: [" + ", ".join(f"s{n}" for n in needs) + "]"
        out.append(line + "}")
    return "\n".join(out) + "\n"


def time_validate(shape: str, steps: int, workdir: Path) -> float:
    rb = workdir / f"{shape}.yaml"
    inv = workdir / "inventory.yaml"
    rb.write_text(runbook_text(shape, steps), encoding="utf-8")
    inv.write_text(INVENTORY, encoding="utf-8")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "validate", "-r", str(rb), "-i", str(inv)],
        capture_output=True,
        text=True,
        check=False,
    )
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"validate {shape} failed ({proc.returncode}): {proc.stderr[-500:]}")
    return took


#: runs ``drx ARGV`` in this child and prints its own peak RSS (KB) last: VmHWM, which starts
#: afresh at exec (``ru_maxrss`` keeps the high-water mark of the process that spawned it)
PEAK_SCRIPT = (
    "import re, sys\n"
    "from orchestrator.cli import main\n"
    "try:\n    main(sys.argv[1:])\n"
    "except SystemExit as exc:\n    assert not exc.code, exc.code\n"
    "status = open('/proc/self/status').read()\n"
    "print(re.search(r'VmHWM:\\s*(\\d+)', status).group(1))\n"
)


def validate_peak(steps: int) -> dict[str, float]:
    """``drx validate`` of a ``steps``-step random DAG: wall seconds and the process's own peak
    RSS in MB (``{"seconds": s, "peak_mb": mb}``)."""
    with tempfile.TemporaryDirectory() as tmp:
        rb, inv = Path(tmp) / "random.yaml", Path(tmp) / "inventory.yaml"
        rb.write_text(runbook_text("random", steps), encoding="utf-8")
        inv.write_text(INVENTORY, encoding="utf-8")
        state = Path(tmp) / "state"
        argv = ["validate", "-r", str(rb), "-i", str(inv), "--state-dir", str(state)]
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", PEAK_SCRIPT, *argv],
            capture_output=True,
            text=True,
            check=False,
        )
        took = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"validate failed ({proc.returncode}): {proc.stderr[-500:]}")
    return {"seconds": took, "peak_mb": int(proc.stdout.split()[-1]) / 1024}


def main(steps: int = 20_000) -> dict[str, float]:
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for shape in SHAPES:
            times[shape] = time_validate(shape, steps, Path(tmp))
            print(f"  drx validate, {steps}-step {shape:<7} {times[shape]:.2f}s")
    print(json.dumps(times))
    return times


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
