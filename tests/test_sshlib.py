"""Paramiko without invoke (orchestrator/transport/sshlib.py): a run over real sshd hosts
imports neither invoke nor what it drags in (unittest.mock, asyncio), and an ssh_config with
a ``Match exec`` line still works — it gets invoke when it is read."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.drill import World

RUNBOOK = """
    name: lean
    steps:
      - {id: a, hosts: db@target, run: 'printf ok > "$DRX_HOST_DIR/ran"'}
"""


def _fresh(script: str) -> list[str]:
    """Run ``script`` in a fresh interpreter; its stdout's words."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.mark.sshd
@pytest.mark.parametrize("world", ["ssh"], indirect=True)
def test_a_run_over_sshd_does_not_import_invoke(world: World) -> None:
    world.write_runbook(RUNBOOK)
    args = ["failover", "site-b", "--yes", *world.args()]
    out = _fresh(
        f"""
        import sys
        from orchestrator.cli import main
        try:
            main({args!r})
        except SystemExit as exc:
            print(exc.code, "paramiko" in sys.modules, "invoke" in sys.modules)
        """
    )
    assert out == ["0", "True", "False"]
    assert world.summary()["status"] == "succeeded"


def test_match_exec_in_an_ssh_config_still_resolves(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text(
        'Match exec "test 1 = 1" host web\n  HostName 10.1.2.3\n  User deploy\n'
        "Host db\n  HostName 10.9.9.9\n"
    )
    plain = tmp_path / "plain"
    plain.write_text("Host db\n  HostName 10.9.9.9\n")
    out = _fresh(
        f"""
        import sys
        from pathlib import Path
        from orchestrator.model import ssh_config
        found = ssh_config.resolve(ssh_config.load(Path({str(plain)!r}), required=True), "db")
        print(found.hostname, "invoke" in sys.modules)
        found = ssh_config.resolve(ssh_config.load(Path({str(config)!r}), required=True), "web")
        print(found.hostname, found.user, "invoke" in sys.modules)
        """
    )
    assert out == ["10.9.9.9", "False", "10.1.2.3", "deploy", "True"]
