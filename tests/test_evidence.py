"""Evidence an auditor accepts: reports show each step's rendered command (secrets masked) and
its output per host, and the sha256 of the runbook and inventory; a resumed run keeps the
original gate approvals."""

from __future__ import annotations

import hashlib
import re

from orchestrator.run.runner import operator_identity
from tests.drill import World

SECRET = "pa55-evidence-9"

RUNBOOK = """
    name: audited
    steps:
      - id: promote
        hosts: '@target'
        run: 'echo "promoting {{ host.name }} with {{ vars.db_password }}"'
        undo: 'true'
      - {id: approve, kind: manual, prompt: "Switch?", needs: [promote]}
      - id: switch
        hosts: db@target
        run: 'test -e "$DRX_HOST_DIR/ready" && echo switched'
        undo: 'true'
        needs: [approve]
"""


def _sha256(path: object) -> str:
    with open(str(path), "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def test_reports_show_commands_and_output_per_host_and_file_hashes(world: World, capsys) -> None:
    """md and html reports list every host's rendered command (the secret as ***) and the tail
    of its output in the page itself, and the sha256 of the runbook and inventory that ran."""
    world.write_runbook(RUNBOOK)
    world.host_file("db-b", "ready").touch()
    code, err = world.run(
        capsys, "failover", "site-b", "--yes", "--secret-var", f"db_password={SECRET}"
    )
    assert code == 0, err
    summary = world.summary()
    assert summary["runbook_sha256"] == _sha256(world.runbook)
    assert summary["inventory_sha256"] == _sha256(world.inventory)
    code, _ = world.run(capsys, "report", "--format", "md")
    md = world.last_stdout
    code, _ = world.run(capsys, "report", "--format", "html")
    html = world.last_stdout
    for text in (md, html):
        assert SECRET not in text
        assert summary["runbook_sha256"] in text and summary["inventory_sha256"] in text
    section = md[md.index("## Commands and output") :]
    for host in ("db-b", "app-b"):
        assert f'echo "promoting {host} with ***"' in section
        assert f"promoting {host} with ***" in section.split(f"**{host}**", 1)[1]
    # in the page body, not only in a tooltip: a <pre> per command and per output
    commands = re.findall(r'<pre class="command">(.*?)</pre>', html, re.S)
    assert any("promoting db-b with ***" in c for c in commands)
    outputs = re.findall(r'<pre class="output">(.*?)</pre>', html, re.S)
    assert any("switched" in o for o in outputs)


def test_a_resumed_run_keeps_the_original_gate_approval(world: World, capsys) -> None:
    """A gate approved (with --comment) in a run that then failed shows the same approver, way
    and comment in the run that resumes it, where the gate is carried, not asked again."""
    world.write_runbook(RUNBOOK)
    code, err = world.run(
        capsys, "failover", "site-b", "--yes", "--comment", "CAB-1234", "--var", "db_password=x"
    )
    assert code == 1, err  # switch fails: the host is not ready
    first = world.summary()
    gate = world.step(first, "approve")
    assert (gate["approved_by"], gate["approved_via"], gate["approval_comment"]) == (
        operator_identity(),
        "--yes",
        "CAB-1234",
    )
    world.host_file("db-b", "ready").touch()
    code, err = world.run(capsys, "resume", "--yes", "--var", "db_password=x")
    assert code == 0, err
    resumed = world.summary()
    assert resumed["parent_run"] == first["run_id"]
    carried = world.step(resumed, "approve")
    assert carried["carried_from"] == first["run_id"]
    assert (carried["approved_by"], carried["approved_via"], carried["approval_comment"]) == (
        operator_identity(),
        "--yes",
        "CAB-1234",
    )
