"""Messages that say what to do: unknown --var names, which active site drx trusts when it has
no state, the report format from -o's extension, a step's full output with `drx logs`."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.cli.status import describe
from orchestrator.record.store import open_store
from tests.drill import World, world_dir

RUNBOOK = """
    name: msg
    vars: {app_port: 8080}
    steps:
      - id: noisy
        hosts: app@target
        run: 'for i in $(seq 1 3000); do echo "line $i of {{ vars.app_port }}"; done'
        undo: 'true'
"""


@pytest.fixture
def local_world() -> Iterator[World]:
    """A two-site world of local hosts."""
    root = world_dir()
    w = World(root, "local")
    w.write_inventory()
    w.write_runbook(RUNBOOK)
    yield w
    shutil.rmtree(root, ignore_errors=True)


def test_an_unknown_var_is_a_warning_with_a_suggestion(local_world: World, capsys) -> None:
    """`--var app_prot=1` warns and suggests app_port; a used name gives no warning."""
    code, err = local_world.run(capsys, "plan", "site-b", "--var", "app_prot=1")
    assert code == 0
    assert "warning: --var app_prot is not used" in err and "did you mean 'app_port'?" in err
    code, err = local_world.run(capsys, "plan", "site-b", "--var", "app_port=9")
    assert code == 0 and "warning" not in err


def test_without_state_drx_says_which_active_site_it_trusts(local_world: World, capsys) -> None:
    """The first failover (no state.json yet) names the inventory's active site and the state
    directory it looked in; once a run has recorded state, the note is gone."""
    code, err = local_world.run(capsys, "failover", "site-b", "--yes")
    assert code == 0, err
    assert f"no drx state in {local_world.state.resolve()} yet" in err
    assert "trusting the inventory's active site 'site-a'" in err
    code, err = local_world.run(capsys, "failback", "--yes")
    assert code == 0 and "no drx state" not in err
    elsewhere = local_world.root / "elsewhere"
    assert f"none recorded in {elsewhere.resolve()}," in describe(open_store(elsewhere))


def test_nothing_to_fail_back_names_where_drx_looked(
    local_world: World, capsys, tmp_path: Path
) -> None:
    """`drx failback` from a state dir with no failover says which directory it looked in."""
    code, err = local_world.run(capsys, "failback", "--yes")
    assert code == 2
    assert str(local_world.state.resolve()) in err and "--state-dir" in err


@pytest.mark.parametrize(
    ("name", "marker"),
    [
        ("drill.html", "<!DOCTYPE html>"),
        ("drill.md", "# "),
        ("drill.json", '"run_id"'),
        ("drill.xml", "<testsuite"),
        ("drill.txt", "Outcome"),
    ],
)
def test_report_format_follows_the_output_extension(
    local_world: World, capsys, tmp_path: Path, name: str, marker: str
) -> None:
    """`drx report -o FILE` writes html/md/json/junit/text as FILE's extension says."""
    assert local_world.run(capsys, "failover", "site-b", "--yes")[0] == 0
    out = tmp_path / name
    code, err = local_world.run(capsys, "report", "-o", str(out))
    assert code == 0, err
    assert marker in out.read_text(encoding="utf-8")[:4000]


def test_logs_prints_a_steps_full_output(local_world: World, capsys) -> None:
    """`drx logs RUN STEP HOST` prints every line the step wrote (the journal keeps a tail);
    an unknown step gets a suggestion."""
    assert local_world.run(capsys, "failover", "site-b", "--yes")[0] == 0
    run_id = local_world.summary()["run_id"]
    code, err = local_world.run(capsys, "logs", run_id, "noisy", "app-b")
    assert code == 0, err
    lines = local_world.last_stdout.splitlines()
    assert lines[0] == "line 1 of 8080" and lines[-1] == "line 3000 of 8080"
    assert len(lines) == 3000
    code, err = local_world.run(capsys, "logs", "latest", "noisy", "app-b")
    assert code == 0 and local_world.last_stdout.count("\n") == 3000
    code, err = local_world.run(capsys, "logs", run_id[-10:], "nosy")
    assert code == 2 and "did you mean 'noisy'?" in err


UNHEALTHY = """
    name: sick
    health:
      - name: http
        hosts: control
        run: 'echo "connecting to {{ site(active).vars.vip }}"; echo "HTTP 503 from {{ active }}"; exit 22'
        timeout: 2s
    steps:
      - {id: noisy, hosts: app@target, run: 'true', undo: 'true'}
"""


def test_a_failed_health_check_shows_the_exit_code_and_output(local_world: World, capsys) -> None:
    """A failover refused because the source is unhealthy says which probe failed where, its
    exit code and the last lines of its output — not only "not healthy"."""
    local_world.write_runbook(UNHEALTHY)
    code, err = local_world.run(capsys, "failover", "site-b")
    assert code == 2
    assert "not healthy at site-a" in err
    assert (
        "health 'http' on control: exit 22: connecting to vip-site-a | HTTP 503 from site-a" in err
    )
    assert local_world.run_dirs() == []


@pytest.mark.parametrize(
    ("typed", "answer"),
    [
        (["y"], True),
        (["YES "], True),
        (["no"], False),
        (["N"], False),
        (["ok", "sure", "n"], False),
    ],
)
def test_gates_on_a_plain_terminal_take_y_yes_n_no(
    monkeypatch: pytest.MonkeyPatch, capsys, typed: list[str], answer: bool
) -> None:
    """Without the live view a gate asks line by line: y/yes/n/no in any case; anything else
    is asked again with a hint."""
    from orchestrator.run.live import ask_line

    replies = iter(typed)
    monkeypatch.setattr("builtins.input", lambda prompt: next(replies))
    assert ask_line("approve: go?") is answer
    hints = capsys.readouterr().err.count("answer y, yes, n or no")
    assert hints == len(typed) - 1
