"""The pre-flight over real sshd: a host that is down, hung, refuses our key or presents an
unknown or changed host key refuses the run (exit 2) before anything changes — except source
hosts under --emergency."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from orchestrator.lab.sshd import Lab
from tests.drill import DEFAULT_SITES, World, world_dir

RUNBOOK = """
    name: pre
    steps:
      - {id: freeze, hosts: app@source, run: 'touch "$DRX_HOST_DIR/frozen"', undo: 'true'}
      - {id: promote, hosts: db@target, run: 'touch "$DRX_HOST_DIR/promoted"', undo: 'true', needs: [freeze]}
"""


@pytest.fixture
def own_world(lab: Lab, fresh_host) -> Iterator[World]:
    """A world on hosts of its own, which the test may break."""
    root = world_dir()
    w = World(root, "ssh", lab=lab)
    names = [n for hosts in DEFAULT_SITES.values() for n in hosts]
    w.lab_names = {n: fresh_host().name for n in names}
    w.write_inventory()
    w.write_runbook(RUNBOOK)
    yield w
    shutil.rmtree(root, ignore_errors=True)


def _nothing_ran(w: World) -> bool:
    return w.run_dirs() == [] and not any(
        w.host_file(h, f).exists() for h in w.host_dirs for f in ("frozen", "promoted")
    )


def test_a_host_down_refuses_the_run(own_world: World, lab: Lab, capsys) -> None:
    """A target host whose sshd is dead: exit 2 naming it, nothing changed anywhere."""
    lab.kill(own_world.lab_names["db-b"])
    code, err = own_world.run(capsys, "failover", "site-b")
    assert code == 2 and "db-b" in err and "pre-flight" in err
    assert _nothing_ran(own_world)


def test_a_hung_host_refuses_within_connect_timeout(own_world: World, lab: Lab, capsys) -> None:
    """A host that accepts TCP but never answers (SIGSTOPped sshd) refuses the run."""
    lab.pause(own_world.lab_names["db-b"])
    try:
        code, err = own_world.run(capsys, "failover", "site-b")
    finally:
        lab.resume(own_world.lab_names["db-b"])
    assert code == 2 and "db-b" in err
    assert _nothing_ran(own_world)


def test_unknown_and_changed_host_keys_are_refused_under_strict(
    own_world: World, lab: Lab, capsys
) -> None:
    """strict: a host missing from known_hosts, or with a different key, refuses the run."""
    original = lab.known_hosts.read_text()
    db_b = lab.host(own_world.lab_names["db-b"])
    try:
        lab.known_hosts.write_text(
            "".join(line for line in original.splitlines(True) if db_b.known_hosts_name not in line)
        )
        code, err = own_world.run(capsys, "failover", "site-b")
        assert code == 2 and "db-b" in err and "unknown host key" in err
        assert _nothing_ran(own_world)
        other = lab.host(own_world.lab_names["app-a"])
        other_key = next(
            line.split(" ", 1)[1]
            for line in original.splitlines()
            if other.known_hosts_name in line
        )
        lab.known_hosts.write_text(
            "".join(
                line
                if db_b.known_hosts_name not in line
                else f"{db_b.known_hosts_name} {other_key}\n"
                for line in original.splitlines(True)
            )
        )
        code, err = own_world.run(capsys, "failover", "site-b")
        assert code == 2 and "db-b" in err and "changed" in err
        assert _nothing_ran(own_world)
    finally:
        lab.known_hosts.write_text(original)


def test_emergency_tolerates_dead_source_hosts(own_world: World, lab: Lab, capsys) -> None:
    """--emergency: a dead source host does not refuse the pre-flight; its step is recorded as
    failed with error 'unreachable', dependents proceed, and the run succeeds."""
    lab.kill(own_world.lab_names["app-a"])
    code, err = own_world.run(capsys, "failover", "site-b")
    assert code == 2 and "app-a" in err
    code, err = own_world.run(capsys, "failover", "site-b", "--emergency")
    assert code == 0, err
    summary = own_world.summary()
    freeze = own_world.step(summary, "freeze")
    assert freeze["status"] == "failed"
    assert freeze["hosts"][0]["error"] == "unreachable"
    assert own_world.step(summary, "promote")["status"] == "succeeded"
    assert own_world.host_file("db-b", "promoted").exists()
    assert summary["status"] == "succeeded" and summary["emergency"] is True


def test_emergency_does_not_excuse_dead_target_hosts(own_world: World, lab: Lab, capsys) -> None:
    """--emergency still refuses when a host of the target site is down."""
    lab.kill(own_world.lab_names["db-b"])
    code, err = own_world.run(capsys, "failover", "site-b", "--emergency")
    assert code == 2 and "db-b" in err
    assert _nothing_ran(own_world)


def test_proxy_jump_from_the_inventory_reaches_hosts_through_the_bastion(
    own_world: World, lab: Lab, fresh_host, capsys
) -> None:
    """`proxy_jump` in the inventory's defaults: the drill runs through the bastion, and with
    the bastion down the pre-flight refuses although every target sshd is up."""
    bastion = fresh_host()
    own_world.write_inventory(
        extra_defaults={"proxy_jump": f"{bastion.user}@{bastion.address}:{bastion.port}"}
    )
    code, err = own_world.run(capsys, "failover", "site-b")
    assert code == 0, err
    assert own_world.host_file("db-b", "promoted").exists()
    own_world.host_file("db-b", "promoted").unlink()
    lab.kill(bastion.name)
    code, err = own_world.run(capsys, "failover", "site-b", "--force")
    assert code == 2 and "pre-flight" in err
    assert not own_world.host_file("db-b", "promoted").exists()
