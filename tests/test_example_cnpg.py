"""runbooks/cnpg-replica-cluster.yaml (CloudNativePG's documented demotion/promotion of a
replica cluster): it validates, and plans both ways — the switchover, and its mirrored failback
with the reprotect phase first — with every command rendered for the right Kubernetes cluster."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from orchestrator.cli import main
from orchestrator.model.loading import load_both
from orchestrator.plan.failback import build_mirror_plan

RUNBOOK = Path(__file__).resolve().parents[1] / "runbooks" / "cnpg-replica-cluster.yaml"

INVENTORY = """
    active: {active}
    defaults: {{transport: local}}
    sites:
      eu-south:
        vars: {{kube_context: k8s-eu-south, cluster: cluster-eu-south, namespace: db}}
        hosts: {{k8s-south: {{address: 127.0.0.1}}}}
      eu-central:
        vars: {{kube_context: k8s-eu-central, cluster: cluster-eu-central, namespace: db}}
        hosts: {{k8s-central: {{address: 127.0.0.1}}}}
"""


def _drx(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def _inventory(tmp_path: Path, active: str) -> Path:
    path = tmp_path / f"inventory-{active}.yaml"
    path.write_text(textwrap.dedent(INVENTORY.format(active=active)))
    return path


def test_the_cnpg_example_validates_and_plans_both_ways(tmp_path: Path, capsys) -> None:
    """drx validate passes with no warning; the plan from either site demotes the active
    cluster, waits for its token, promotes the other with it, in that order."""
    for active, other in (("eu-south", "eu-central"), ("eu-central", "eu-south")):
        inv = _inventory(tmp_path, active)
        common = ["-r", str(RUNBOOK), "-i", str(inv), "--state-dir", str(tmp_path / "state")]
        code, out, err = _drx(capsys, "validate", *common)
        assert code == 0, err
        assert "ok: 0 warning(s)" in out + err
        code, out, err = _drx(capsys, "plan", other, "--format", "json", *common)
        assert code == 0, err
        plan = json.loads(out)
        assert plan["waves"] == [
            ["replica-ready"],
            ["demote-source"],
            ["demotion-token"],
            ["promote-target"],
            ["target-primary"],
        ]
        commands = {s["id"]: s["commands"]["control"] for s in plan["steps"]}
        assert f"--context k8s-{active}" in commands["demote-source"]
        assert f'"primary": "cluster-{other}"' in commands["demote-source"]
        assert f"--context k8s-{other}" in commands["promote-target"]
        assert "promotionToken" in commands["promote-target"]


def test_the_cnpg_example_fails_back_mirrored_after_its_reprotect_check(tmp_path: Path) -> None:
    """The mirrored failback of a switchover to eu-central first checks that cluster-eu-south
    follows cluster-eu-central, then demotes eu-central and promotes eu-south."""
    runbook, inventory = load_both(str(RUNBOOK), str(_inventory(tmp_path, "eu-south")))
    plan = build_mirror_plan(
        runbook,
        inventory,
        failover_source="eu-south",
        failover_target="eu-central",
        reverses="20261205T000000.000Z-failover-eu-central",
    )
    assert plan.waves[0] == ["old-primary-replicates"]
    assert plan.steps["replica-ready"].needs == ["old-primary-replicates"]
    assert plan.critical_path[0] == "replica-ready"  # the reprotect is outside the RTO
    assert "--context k8s-eu-south" in plan.steps["old-primary-replicates"].preview["control"]
    assert "--context k8s-eu-central" in plan.steps["demote-source"].preview["control"]
    assert '"primary": "cluster-eu-south"' in plan.steps["demote-source"].preview["control"]
    assert "--context k8s-eu-south" in plan.steps["promote-target"].preview["control"]
