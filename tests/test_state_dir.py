"""The state directory is private: created 0700, every file drx writes in it 0600 (command
output can hold what nobody declared secret), and a directory others can read gets a warning."""

from __future__ import annotations

import stat

from tests.drill import World


def test_state_dir_and_everything_in_it_are_owner_only(world: World, capsys) -> None:
    """After a failover, its report and a failback: the state dir and every directory in it are
    0700, every file 0600 (journal, plan, summary, state, lock, output logs)."""
    world.write_runbook("""
        name: private
        steps:
          - {id: a, hosts: db@target, run: 'echo out; echo err >&2', undo: 'echo undone'}
    """)
    assert world.run(capsys, "failover", "site-b")[0] == 0
    assert world.run(capsys, "failback", "--yes")[0] == 0
    paths = [world.state, *world.state.rglob("*")]
    names = {p.name for p in paths}
    assert {"journal.jsonl", "summary.json", "plan.json", "state.json", "lock", "db-b.log"} <= names
    for path in paths:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), f"{path}: {oct(mode)}"
    _, err = world.run(capsys, "status")
    assert "readable by others" not in err


def test_a_state_dir_readable_by_others_gets_a_warning(world: World, capsys) -> None:
    """A state directory with group/other access draws one warning naming it and the fix."""
    world.write_runbook("""
        name: private
        steps:
          - {id: a, hosts: db@target, run: 'true', undo: 'true'}
    """)
    world.state.mkdir()
    world.state.chmod(0o755)
    code, err = world.run(capsys, "failover", "site-b")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "readable by others" in line]
    assert len(warnings) == 1 and f"chmod 700 {world.state}" in warnings[0]
    journal = next(world.state.rglob("journal.jsonl"))
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600
