"""--var values are YAML scalars: a flag given as false is false in templates, numbers are
numbers, a quoted value stays text, and a secret stays text."""

from __future__ import annotations

import pytest

from orchestrator.plan.build import cli_value, parse_cli_vars
from tests.drill import World


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True),
        ("false", False),
        ("3", 3),
        ("1.5", 1.5),
        ("null", None),
        ('"true"', "true"),
        ("'3'", "3"),
        ("site-b", "site-b"),
        ("", ""),
        ("a: b", "a: b"),
        ("[1, 2]", "[1, 2]"),
        ("2026-12-05", "2026-12-05"),
        ("{{ x", "{{ x"),
    ],
)
def test_cli_values_are_yaml_scalars(text: str, value: object) -> None:
    """Each --var value is read as YAML when it is a scalar; other YAML stays the text given."""
    assert cli_value(text) == value
    assert type(cli_value(text)) is type(value)


def test_secret_named_vars_stay_text() -> None:
    """A --var whose name marks a secret keeps its text (a password 0123 is not the number 83)."""
    assert parse_cli_vars(["db_password=0123", "n=0123"], typed=True) == {
        "db_password": "0123",
        "n": 123,  # YAML 1.2: decimal, not octal
    }


def test_a_false_flag_is_false_in_templates(world: World, capsys) -> None:
    """--var skip_drain=false runs the step guarded by 'not vars.skip_drain' (the string
    "false" was truthy and skipped it), and --var 'skip_drain="false"' is that string again."""
    world.write_runbook("""
        name: typed
        vars: {skip_drain: true, batch: 1}
        steps:
          - id: drain
            hosts: db@target
            when: not vars.skip_drain
            run: 'echo {{ vars.batch + 1 }} > "$DRX_HOST_DIR/drained"'
    """)
    code, err = world.run(
        capsys, "failover", "site-b", "--yes", "--var", "skip_drain=false", "--var", "batch=4"
    )
    assert code == 0, err
    assert world.host_file("db-b", "drained").read_text().strip() == "5"
    world.host_file("db-b", "drained").unlink()
    assert world.run(capsys, "failback", "--yes")[0] in (0, 2)
    code, err = world.run(
        capsys, "failover", "site-b", "--yes", "--force", "--var", 'skip_drain="false"'
    )
    assert code == 0, err
    assert not world.host_file("db-b", "drained").exists()


@pytest.mark.parametrize("text", ["on", "no", "yes", "0x1f", "1_000", ".inf"])
def test_yaml_1_1_words_stay_text(text: str) -> None:
    """Words YAML 1.1 would turn into booleans or odd numbers stay the text given."""
    assert cli_value(text) == text
