"""How long validate + plan take for a 10,000-step runbook (the target is well under a second).

The runbook mixes long chains, fan-outs and fan-ins; every step has a templated command and
reaches its hosts through selectors. Run it with ``python benchmarks/plan_scale.py [STEPS]``;
it prints the time of each stage and the total.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from orchestrator.model.loading import load_both
from orchestrator.plan.build import build_plan

BLOCK = 50  # steps per block: one hub, then a chain and a fan-out hanging off it
SELECTORS = ("app@target", "db@target", "@target", "control", "db@source", "app-b-3")

INVENTORY = """\
active: site-a
defaults:
  transport: local
vars:
  port: 8080
sites:
  site-a:
    vars: {vip: 10.0.1.10}
    hosts:
%s
  site-b:
    vars: {vip: 10.0.2.10}
    hosts:
%s
"""


def _hosts(site: str, net: int) -> str:
    lines = []
    for i in range(8):
        role = ("app", "db", "web")[i % 3]
        lines.append(f"      {role}-{site}-{i}: {{address: 10.0.{net}.{20 + i}, roles: [{role}]}}")
    return "\n".join(lines)


def runbook_text(steps: int) -> str:
    """A runbook of ``steps`` steps in blocks: hub → chain and hub → fan-out, blocks chained."""
    out = [
        "name: scale",
        "rto_target: 1h",
        "vars: {batch: 100}",
        "health:",
        "  - name: http",
        "    hosts: control",
        "    run: probe {{ site(active).vars.vip | quote }} {{ vars.port | quote }}",
        "steps:",
    ]
    for i in range(steps):
        pos = i % BLOCK
        if pos == 0:
            # the hub of a block needs the whole previous block's last chain step and fan-out
            needs = [f"s{i - 1}", f"s{i - BLOCK + 1}"] if i else []
        elif pos < BLOCK // 2:
            needs = [f"s{i - 1}"]  # a chain
        else:
            needs = [f"s{i - pos}"]  # a fan-out from the hub
        selector = SELECTORS[i % len(SELECTORS)]
        run = (
            f"svc-{i} --vip {{{{ site(target).vars.vip | quote }}}} "
            f"--port {{{{ vars.port | quote }}}} --on {{{{ host.name | quote }}}}"
        )
        if needs and pos == 1:
            run += f" --after {{{{ steps['{needs[0]}'].value | quote }}}}"
        out += [
            f"  - id: s{i}",
            f"    hosts: '{selector}'",
            f'    run: "{run}"',
            f"    undo: undo-{i} {{{{ source | quote }}}}",
            f"    expect: {1 + i % 7}s",
        ]
        if needs:
            out.append(f"    needs: [{', '.join(dict.fromkeys(needs))}]")
    return "\n".join(out) + "\n"


def main(steps: int = 10_000, rounds: int = 3) -> float:
    """Time load+validate and plan ``rounds`` times; print the best round and return its total."""
    best: tuple[float, float] | None = None
    with tempfile.TemporaryDirectory() as tmp:
        rb = Path(tmp, "runbook.yaml")
        inv = Path(tmp, "inventory.yaml")
        rb.write_text(runbook_text(steps), encoding="utf-8")
        inv.write_text(INVENTORY % (_hosts("a", 1), _hosts("b", 2)), encoding="utf-8")
        for _ in range(rounds):
            start = time.perf_counter()
            runbook, inventory = load_both(str(rb), str(inv))
            loaded = time.perf_counter()
            plan = build_plan(runbook, inventory, "site-b")
            done = time.perf_counter()
            if best is None or done - start < sum(best):
                best = (loaded - start, done - loaded)
    assert best is not None
    print(
        f"{len(plan.steps)} steps, {plan.graph.number_of_edges()} needs, {len(plan.waves)} "
        f"waves, {len(plan.hosts())} hosts; best of {rounds}:"
    )
    print(f"  load + validate the files:                        {best[0]:.3f}s")
    print(f"  plan (DAG, selectors, templates, critical path):   {best[1]:.3f}s")
    print(f"  total:                                             {sum(best):.3f}s (target < 1s)")
    return sum(best)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
