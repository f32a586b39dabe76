"""How long validate + plan take for a generated site plan of 100 children × 20 steps (2,000
steps, target under 0.5 s above start-up), the children's JSON blocks included.

Each child has its own vars, health and a chain-and-fan-out of steps with templated commands;
children are chained in groups of ten. Run it with ``python benchmarks/site_scale.py [CHILDREN
[STEPS]]``; it prints the time of each stage and the total.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from orchestrator.model.loading import load_both
from orchestrator.plan.build import build_plan
from orchestrator.plan.preview import plan_document

INVENTORY = """\
active: site-a
defaults:
  transport: local
sites:
  site-a:
    vars: {vip: 10.0.1.10}
    hosts:
      app-a: {address: 10.0.1.21, roles: [app]}
      db-a: {address: 10.0.1.22, roles: [db]}
  site-b:
    vars: {vip: 10.0.2.10}
    hosts:
      app-b: {address: 10.0.2.21, roles: [app]}
      db-b: {address: 10.0.2.22, roles: [db]}
"""


def child_text(n: int, steps: int) -> str:
    out = [
        f"name: svc{n}",
        "rto_target: 5m",
        f"vars: {{port: {8000 + n}}}",
        "health:",
        "  - name: up",
        "    hosts: app@active",
        "    run: probe {{ site(active).vars.vip | quote }} {{ vars.port | quote }}",
        "steps:",
    ]
    for s in range(steps):
        needs = f"[s{s - 1}]" if s % 5 else ("[s0]" if s else "[]")
        host = "db@target" if s % 2 else "app@target"
        out.append(
            f"  - {{id: s{s}, hosts: '{host}', run: 'svc{n}-{s} {{{{ vars.port | quote }}}}', "
            f"undo: 'undo-{s}', expect: {1 + s % 3}s, needs: {needs}}}"
        )
    return "\n".join(out) + "\n"


def site_text(children: int) -> str:
    out = ["name: site", "rto_target: 1h", "steps:"]
    for c in range(children):
        out += [f"  - id: c{c}", "    kind: runbook", f"    runbook: svc{c}.yaml"]
        if c % 10:
            out.append(f"    needs: [c{c - 1}]")
    return "\n".join(out) + "\n"


def main(children: int = 100, steps: int = 20, rounds: int = 3) -> float:
    """Time load+validate and plan ``rounds`` times; print the best round and return its total."""
    best: tuple[float, float] | None = None
    with tempfile.TemporaryDirectory() as tmp:
        for c in range(children):
            Path(tmp, f"svc{c}.yaml").write_text(child_text(c, steps), encoding="utf-8")
        rb = Path(tmp, "site.yaml")
        inv = Path(tmp, "inventory.yaml")
        rb.write_text(site_text(children), encoding="utf-8")
        inv.write_text(INVENTORY, encoding="utf-8")
        for _ in range(rounds):
            start = time.perf_counter()
            runbook, inventory = load_both(str(rb), str(inv))
            loaded = time.perf_counter()
            plan = build_plan(runbook, inventory, "site-b")
            doc = plan_document(plan)
            done = time.perf_counter()
            if best is None or done - start < sum(best):
                best = (loaded - start, done - loaded)
    assert best is not None
    print(
        f"{children} children, {len(plan.steps)} steps, {plan.graph.number_of_edges()} needs, "
        f"{len(doc['children'])} child blocks; best of {rounds}:"
    )
    print(f"  load + validate the files (expanded):             {best[0]:.3f}s")
    print(f"  plan + the plan document (child blocks):          {best[1]:.3f}s")
    print(f"  total:                                            {sum(best):.3f}s (target < 0.5s)")
    return sum(best)


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    main(*args)
