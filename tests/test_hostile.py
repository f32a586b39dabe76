"""Hostile input: names that try to be paths, a state directory others can write, secrets in
every rendered form, templates and YAML that try to exhaust the machine, oversized output and
terminal escapes. Each test is a reproduction of an attack and pins that it no longer works."""

from __future__ import annotations

import json
import shutil
import stat
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli import drx
from tests.drill import World, world_dir

RUNBOOK = """
    name: hostile
    steps:
      - {id: a, hosts: db@target, run: 'echo out', undo: 'true'}
"""


@pytest.fixture
def local() -> Iterator[World]:
    """A two-site world of local hosts in a fresh directory."""
    root = world_dir()
    w = World(root, "local")
    w.write_inventory()
    w.write_runbook(RUNBOOK)
    try:
        yield w
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _inventory_text(site_b: str, host_b: str) -> str:
    """A local inventory whose second site and its host have the given names; the site is on
    line 6, the host on line 8."""
    return textwrap.dedent(f"""\
        active: site-a
        defaults: {{transport: local}}
        sites:
          site-a:
            hosts: {{db-a: {{address: 127.0.0.1, roles: [db]}}}}
          {json.dumps(site_b)}:
            hosts:
              {json.dumps(host_b)}: {{address: 127.0.0.1, roles: [db]}}
        """)


# -- 1. names are not paths -------------------------------------------------------------------

BAD_NAMES = [
    ("site", "/../../../../../../../../tmp/x/SITE_ESCAPE"),
    ("site", "../../x/SITE_ESCAPE"),
    ("host", "/some/dir/ABS_ESCAPE"),
    ("host", "../../../../x/REL_ESCAPE"),
    ("host", "db\n1.0 run_finished status=succeeded"),
    ("host", ".."),
    ("host", "db\x1b[2Kb"),
]


@pytest.mark.parametrize(("kind", "name"), BAD_NAMES)
def test_a_host_or_site_name_that_is_not_a_plain_name_is_refused_with_its_line(
    kind: str, name: str, local: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """Host and site names with '/', '..' or control characters fail validation (exit 2) at
    their file:line, and a failover with them runs nothing and writes nothing outside."""
    site, host = (name, "db-b") if kind == "site" else ("site-b", name)
    local.inventory.write_text(_inventory_text(site, host))
    code, _, err = drx(capsys, "validate", *local.args())
    assert code == 2, err
    line = 6 if kind == "site" else 8
    assert f"inventory.yaml:{line}: error: invalid {kind} name" in err, err
    target = "site-b" if kind == "host" else name
    code, err = local.run(capsys, "failover", target, "--yes")
    assert code == 2, err
    assert not local.state.exists() or not list(local.state.rglob("journal.jsonl"))
    assert not Path("/tmp/x").exists() and not Path("/some").exists()


def test_a_health_name_that_walks_out_is_refused(
    local: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """A health check named ``x/../../../../y`` fails validation at its line; no directory of
    that name is created by a failover."""
    local.write_runbook("""\
        name: hostile
        steps:
          - {id: a, hosts: db@target, run: 'true', undo: 'true'}
        health:
          - name: "x/../../../../y"
            hosts: db@target
            run: 'true'
    """)
    code, _, err = drx(capsys, "validate", *local.args())
    assert code == 2
    assert "runbook.yaml:5: error: invalid health name 'x/../../../../y'" in err, err
    assert local.run(capsys, "failover", "site-b", "--yes")[0] == 2
    assert not list(local.root.rglob("y"))


def test_private_dir_refuses_a_path_leaving_its_base_and_chmods_nothing_it_did_not_create(
    tmp_path: Path,
) -> None:
    """``private_dir`` of ``runs/<id>-/../../../outside`` (the run id of a site named with
    ``..``) raises and leaves every directory above the state dir at its mode; of a new path
    below an existing 0755 directory it makes the new ones 0700 and leaves the old one be."""
    from orchestrator.errors import StateDirError
    from orchestrator.record.store import private_dir

    top = tmp_path / "top"
    state = top / "state"
    (state / "runs").mkdir(parents=True)
    for d in (tmp_path, top, state, state / "runs"):
        d.chmod(0o755)
    before = {p: stat.S_IMODE(p.stat().st_mode) for p in [state, *state.parents]}
    escape = state / "runs" / "20260101T000000.000Z-failover-" / ".." / ".." / ".." / "outside"
    with pytest.raises(StateDirError, match="outside the state directory"):
        private_dir(escape / "output", state)
    after = {p: stat.S_IMODE(p.stat().st_mode) for p in [state, *state.parents]}
    assert after == before
    assert not (top / "outside").exists()
    assert not (state / "runs" / "20260101T000000.000Z-failover-").exists()
    private_dir(state / "runs" / "r1" / "output", state)
    assert stat.S_IMODE((state / "runs").stat().st_mode) == 0o755
    assert stat.S_IMODE((state / "runs" / "r1").stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "runs" / "r1" / "output").stat().st_mode) == 0o700
