"""Several runbooks in one state directory: each has its own active site and history (the lock
stays one per directory); runs, report and status filter by the runbook given with -r."""

from __future__ import annotations

import json
import textwrap

import pytest

from orchestrator.cli import main
from tests.drill import World

pytestmark = pytest.mark.parametrize("world", ["local"], indirect=True)


def drx(world: World, capsys, runbook: str, *argv: str) -> tuple[int, str, str]:
    """``drx ARGV -r <runbook>.yaml -i inventory --state-dir state``: (code, stdout, stderr)."""
    path = world.root / f"{runbook}.yaml"
    args = [*argv, "-r", str(path), "-i", str(world.inventory), "--state-dir", str(world.state)]
    code = 0
    try:
        main(args)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_two_runbooks_fail_over_independently(world: World, capsys) -> None:
    """The db tier at site-b leaves the web tier at site-a: web can fail over, be failed back
    on its own, and runs/report/status -r show one runbook each."""
    for name in ("db", "web"):
        (world.root / f"{name}.yaml").write_text(
            textwrap.dedent(f"""
                name: {name}
                steps:
                  - {{id: move, hosts: db@target, run: 'echo {name} >> "$DRX_HOST_DIR/moves"',
                      undo: 'echo undo-{name} >> "$DRX_HOST_DIR/moves"'}}
            """)
        )
    assert drx(world, capsys, "db", "failover", "site-b")[0] == 0
    code, _, err = drx(world, capsys, "web", "failover", "site-b", "--dry-run")
    assert code == 0, err
    code, _, err = drx(world, capsys, "web", "failover", "site-b")
    assert code == 0, err  # not "already active": that was the db tier
    assert drx(world, capsys, "db", "failover", "site-b")[0] == 2
    code, _, err = drx(world, capsys, "web", "failback", "--yes")
    assert code == 0, err
    assert world.host_file("db-b", "moves").read_text().split() == ["db", "web", "undo-web"]
    state = json.loads((world.state / "state.json").read_text())
    assert state["runbooks"]["db"]["active"] == "site-b"
    assert state["runbooks"]["web"]["active"] == "site-a"
    _, out, _ = drx(world, capsys, "web", "runs")
    rows = out.splitlines()[1:]
    assert len(rows) == 2 and all(" web " in row for row in rows)
    _, out, _ = drx(world, capsys, "db", "runs", "--format", "json")
    assert [r["runbook"] for r in json.loads(out)] == ["db"]
    _, out, _ = drx(world, capsys, "db", "report", "--format", "json")
    assert json.loads(out)["runbook"] == "db"
    _, out, _ = drx(world, capsys, "db", "status")
    assert "active site: site-b (runbook db)" in out
    _, out, _ = drx(world, capsys, "web", "status")
    assert "active site: site-a (runbook web)" in out and "failback" in out
    code, _, err = drx(world, capsys, "db", "failback", "--yes")
    assert code == 0, err
    assert world.host_file("db-b", "moves").read_text().split()[-1] == "undo-db"
