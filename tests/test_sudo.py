"""``sudo: true`` over real SSH: with the lab's NOPASSWD drop-in for its own user the command
runs as root (and a step without sudo does not); without the drop-in the step fails as sudo
refuses, instead of hanging on a password prompt."""

from __future__ import annotations

import pytest

from tests.drill import World

pytestmark = pytest.mark.parametrize("world", ["ssh"], indirect=True)

RUNBOOK = """
    name: sudo
    steps:
      - {id: plain, hosts: db@target, run: 'id -u > "$DRX_HOST_DIR/plain"', undo: 'true'}
      - id: root
        hosts: db@target
        sudo: true
        timeout: 10s
        run: 'id -u > "$DRX_HOST_DIR/root"; echo "$WHO" >> "$DRX_HOST_DIR/root"'
        env: {WHO: "{{ host.name }}"}
        undo: 'true'
"""


def test_sudo_runs_the_command_as_root_over_ssh(world: World, capsys) -> None:
    """With the drop-in, a sudo step runs as root (env exported inside sudo); others don't."""
    assert world.lab is not None
    dropin = world.lab.install_sudoers(["/usr/bin/sh", "/bin/sh"], purpose="drx sudo test")
    try:
        world.write_runbook(RUNBOOK)
        code, err = world.run(capsys, "failover", "site-b")
        assert code == 0, err
    finally:
        world.lab.remove_sudoers(dropin)
    assert not dropin.exists()
    assert world.host_file("db-b", "plain").read_text().strip() != "0"
    assert world.host_file("db-b", "root").read_text().split() == ["0", "db-b"]


def test_sudo_without_a_rule_fails_at_once(world: World, capsys) -> None:
    """Without a sudoers rule, sudo -n refuses: the step fails quickly with sudo's message."""
    world.write_runbook(RUNBOOK)
    code, _ = world.run(capsys, "failover", "site-b")
    assert code == 1
    step = world.step(world.summary(), "root")
    assert step["status"] == "failed" and step["duration_s"] < 5
    assert "password" in step["hosts"][0]["output_tail"].lower()
