"""`drx check`: the pre-flight alone, over real sshd hosts — a table of every host of both sites
and the health check at the active site; one line per problem naming user, host and port
(hosts that failed the same way share a line); exit 0 or 2; nothing changes."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator

import pytest

from orchestrator.lab.sshd import Lab
from tests.drill import DEFAULT_SITES, World, world_dir

RUNBOOK = """
    name: chk
    health:
      - name: probe
        hosts: control
        run: test -e "ROOT/healthy-{{ active }}" || { echo "503 from {{ active }}"; exit 7; }
        timeout: 5s
    steps:
      - {id: freeze, hosts: app@source, run: 'touch "$DRX_HOST_DIR/frozen"', undo: 'true'}
      - {id: promote, hosts: db@target, run: 'touch "$DRX_HOST_DIR/promoted"', undo: 'true', sudo: SUDO, needs: [freeze]}
"""


def runbook(root: object, sudo: str) -> str:
    return RUNBOOK.replace("ROOT", str(root)).replace("SUDO", sudo)


@pytest.fixture
def own_world(lab: Lab, fresh_host) -> Iterator[World]:
    """A world on sshd hosts of its own, which the test may break."""
    root = world_dir()
    w = World(root, "ssh", lab=lab)
    names = [n for hosts in DEFAULT_SITES.values() for n in hosts]
    w.lab_names = {n: fresh_host().name for n in names}
    w.write_inventory()
    w.write_runbook(runbook(root, "false"))
    (root / "healthy-site-a").touch()
    yield w
    shutil.rmtree(root, ignore_errors=True)


def _rows(stdout: str) -> dict[str, str]:
    """The host table's rows by their first word (the table follows the card)."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("host "))
    return {line.split()[0]: line for line in lines[start + 1 :] if line.strip()}


def test_check_passes_on_healthy_hosts(own_world: World, capsys) -> None:
    """Every host reachable and the health check holding: exit 0, one 'ok' row per host of
    both sites plus control and the health check; no run is recorded."""
    code, err = own_world.run(capsys, "check", "site-b")
    assert code == 0, err
    rows = _rows(own_world.last_stdout)
    assert set(rows) == {"control", "db-a", "app-a", "db-b", "app-b", "health"}
    assert all(row.rstrip().endswith("ok") for row in rows.values()), own_world.last_stdout
    user = own_world.lab.user  # type: ignore[union-attr]
    assert re.search(rf"\b{user}@127\.\S+:\d+\b", rows["db-b"])
    assert "check passed" in err
    assert own_world.run_dirs() == []


def test_check_reports_a_dead_host_and_a_changed_key(own_world: World, lab: Lab, capsys) -> None:
    """A host whose sshd is down and one whose key changed: exit 2, each FAILED in the table,
    one problem line each naming user@address:port, with what to do; the others pass."""
    lab.kill(own_world.lab_names["db-a"])
    original = lab.known_hosts.read_text()
    app_b = lab.host(own_world.lab_names["app-b"])
    other = lab.host(own_world.lab_names["db-b"])
    other_key = next(
        line.split(" ", 1)[1] for line in original.splitlines() if other.known_hosts_name in line
    )
    lab.known_hosts.write_text(
        "".join(
            line
            if app_b.known_hosts_name not in line
            else f"{app_b.known_hosts_name} {other_key}\n"
            for line in original.splitlines(True)
        )
    )
    try:
        code, err = own_world.run(capsys, "check", "site-b")
    finally:
        lab.known_hosts.write_text(original)
    assert code == 2
    rows = _rows(own_world.last_stdout)
    assert "FAILED" in rows["db-a"] and "connection refused" in rows["db-a"]
    assert "FAILED" in rows["app-b"] and "host key changed" in rows["app-b"]
    assert rows["db-b"].rstrip().endswith("ok") and rows["app-a"].rstrip().endswith("ok")
    problems = [line for line in err.splitlines() if line.startswith("problem: ")]
    assert len(problems) == 2, err
    db_a = lab.host(own_world.lab_names["db-a"])
    dead = next(p for p in problems if "db-a" in p)
    assert f"{lab.user}@{db_a.address}:{db_a.port}" in dead and "is sshd running" in dead
    changed = next(p for p in problems if "app-b" in p)
    assert f"{lab.user}@{app_b.address}:{app_b.port}" in changed
    assert f"ssh-keygen -R '[{app_b.address}]:{app_b.port}'" in changed
    assert "a failover now would be refused" in err


def test_identical_failures_share_one_line(own_world: World, lab: Lab, capsys) -> None:
    """Two hosts failing the same way (an unknown key) are one problem line naming both."""
    original = lab.known_hosts.read_text()
    drop = {lab.host(own_world.lab_names[n]).known_hosts_name for n in ("db-b", "app-b")}
    lab.known_hosts.write_text(
        "".join(line for line in original.splitlines(True) if line.split(" ")[0] not in drop)
    )
    try:
        code, err = own_world.run(capsys, "check", "site-b")
    finally:
        lab.known_hosts.write_text(original)
    assert code == 2
    problems = [line for line in err.splitlines() if line.startswith("problem: ")]
    # the key fingerprints differ, so the messages differ: one line per host
    assert len(problems) == 2 and all("unknown host key" in p for p in problems)
    lab.kill(own_world.lab_names["db-b"])
    lab.kill(own_world.lab_names["app-b"])
    code, err = own_world.run(capsys, "check", "site-b")
    assert code == 2
    problems = [line for line in err.splitlines() if line.startswith("problem: ")]
    assert len(problems) == 1, err
    assert "db-b (" in problems[0] and "app-b (" in problems[0]
    assert "connection refused" in problems[0]


def test_check_tries_sudo_where_a_step_needs_it(own_world: World, capsys) -> None:
    """A step with sudo: true on db-b: check runs `sudo -n true` there (the lab user has no
    sudo, so it fails and says so), and only there."""
    own_world.write_runbook(runbook(own_world.root, "true"))
    code, err = own_world.run(capsys, "check", "site-b")
    assert code == 2
    rows = _rows(own_world.last_stdout)
    assert "sudo" in rows["db-b"] and "FAILED" in rows["db-b"]
    assert "sudo" not in rows["db-a"] and rows["db-a"].rstrip().endswith("ok")
    assert "passwordless sudo" in err


def test_check_shows_why_the_health_check_fails(own_world: World, capsys) -> None:
    """The health probe failing at the active site: exit 2, and the problem line carries the
    probe's exit code and the tail of its output."""
    (own_world.root / "healthy-site-a").unlink()
    code, err = own_world.run(capsys, "check", "site-b")
    assert code == 2
    assert "FAILED" in _rows(own_world.last_stdout)["health"]
    assert "health 'probe' on control: exit 7: 503 from site-a" in err
