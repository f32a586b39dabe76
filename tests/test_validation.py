"""Bad runbooks and inventories are refused before anything runs, with file, line and step.

The cases live in tests/cases/cases.yaml (one row per kind of mistake) next to the small files
they name; every row goes through the real command line, ``drx validate``, and again through
``drx failover`` to show that an invalid input never starts a run.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cli import drx

CASES_DIR = Path(__file__).parent / "cases"
RUNBOOK = CASES_DIR / "runbook.yaml"
INVENTORY = CASES_DIR / "inventory.yaml"
NO_UNDO = CASES_DIR / "rb-no-undo.yaml"  # valid, with one warning
CASES: list[dict[str, Any]] = yaml.safe_load((CASES_DIR / "cases.yaml").read_text("utf-8"))

#: one problem as ``drx`` prints it: ``FILE:LINE[:COL]: error: [step 'ID': ]MESSAGE``
PROBLEM = re.compile(
    r"^(?P<file>[^:\n]+):(?P<line>\d+)(?::\d+)?: (?P<severity>error|warning): "
    r"(?:step '(?P<step>[^']*)': )?(?P<message>.*)$"
)


def problems(stderr: str) -> list[dict[str, Any]]:
    """The problems printed on stderr, parsed (file reduced to its name)."""
    found = []
    for text in stderr.splitlines():
        match = PROBLEM.match(text)
        if match:
            item: dict[str, Any] = match.groupdict()
            item["file"] = Path(item["file"]).name
            item["line"] = int(item["line"])
            found.append(item)
    return found


def matches(found: dict[str, Any], expected: dict[str, Any]) -> bool:
    return (
        found["severity"] == "error"
        and found["file"] == expected["file"]
        and found["line"] == expected["line"]
        and expected["message"] in found["message"]
        and ("step" not in expected or found["step"] == expected["step"])
    )


def files_of(case: dict[str, Any]) -> tuple[str, str]:
    runbook = CASES_DIR / case["runbook"] if "runbook" in case else RUNBOOK
    inventory = CASES_DIR / case["inventory"] if "inventory" in case else INVENTORY
    return str(runbook), str(inventory)


def params() -> list[Any]:
    marked = []
    for case in CASES:
        marks = [pytest.mark.xfail(reason=case["xfail"], strict=True)] if "xfail" in case else []
        marked.append(pytest.param(case, id=case["case"], marks=marks))
    return marked


def test_the_base_files_of_the_cases_are_valid(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The runbook and inventory that stand in for a case's other file validate cleanly."""
    code, _, err = drx(
        capsys, "validate", "-r", str(RUNBOOK), "-i", str(INVENTORY), "--state-dir", str(tmp_path)
    )
    assert code == 0, err
    assert err.strip() == "ok: 0 warning(s)"


def test_every_case_file_is_used_by_a_case() -> None:
    """No case file lies around unused (a renamed case would silently stop being tested)."""
    used = {"cases.yaml", RUNBOOK.name, INVENTORY.name, NO_UNDO.name}
    for case in CASES:
        used.update(case[key] for key in ("runbook", "inventory") if key in case)
    assert sorted(p.name for p in CASES_DIR.glob("*.yaml") if p.name not in used) == []


@pytest.mark.parametrize("case", params())
def test_validate_reports_each_problem_with_file_line_and_step(
    case: dict[str, Any], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`drx validate` exits 2 and prints every expected problem at its file, line and step."""
    runbook, inventory = files_of(case)
    state = tmp_path / "state"
    code, out, err = drx(
        capsys, "validate", "-r", runbook, "-i", inventory, "--state-dir", str(state)
    )
    assert code == 2, err
    assert out == ""
    found = problems(err)
    for expected in case["problems"]:
        assert any(matches(p, expected) for p in found), f"{expected} not in:\n{err}"
    errors = [p for p in found if p["severity"] == "error"]
    count = case.get("errors", len(case["problems"]))
    assert len(errors) == count, err
    assert err.splitlines()[-1] == f"error: {count} error(s); nothing was run"
    assert "Traceback" not in err
    assert not (state / "runs").exists()


@pytest.mark.parametrize("case", [c for c in params() if not c.marks])
def test_failover_with_invalid_input_runs_nothing(
    case: dict[str, Any], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`drx failover site-b --yes` on an invalid input exits 2 and starts no run at all."""
    runbook, inventory = files_of(case)
    state = tmp_path / "state"
    code, _, err = drx(
        capsys,
        "failover",
        "site-b",
        "--yes",
        "-r",
        runbook,
        "-i",
        inventory,
        "--state-dir",
        str(state),
    )
    assert code == 2, err
    assert "nothing was run" in err
    assert not (state / "runs").exists()
    assert not (state / "state.json").exists()


def test_command_step_without_undo_is_a_warning_not_an_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A command step with no undo passes validation (exit 0) with a warning at its file:line."""
    code, _, err = drx(
        capsys, "validate", "-r", str(NO_UNDO), "-i", str(INVENTORY), "--state-dir", str(tmp_path)
    )
    assert code == 0, err
    [warning] = problems(err)
    assert warning == {
        "file": "rb-no-undo.yaml",
        "line": 7,
        "severity": "warning",
        "step": "promote",
        "message": "command step has no 'undo': failback will leave it out",
    }
    assert err.splitlines()[-1] == "ok: 1 warning(s)"


def test_undo_template_error_names_the_step_in_the_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """An undefined name in an undo is reported under the id of the step that owns the undo."""
    runbook = CASES_DIR / "rb-undefined-undo.yaml"
    _, _, err = drx(
        capsys, "validate", "-r", str(runbook), "-i", str(INVENTORY), "--state-dir", str(tmp_path)
    )
    [problem] = problems(err)
    assert problem["step"] == "start-app"


def test_missing_file_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A runbook path that does not exist is reported as such, without a traceback."""
    code, _, err = drx(
        capsys,
        "validate",
        "-r",
        str(tmp_path / "nope.yaml"),
        "-i",
        str(INVENTORY),
        "--state-dir",
        str(tmp_path),
    )
    assert code == 2
    assert "nope.yaml: error: cannot read file" in err
    assert "Traceback" not in err


def test_validate_checks_the_plan_to_every_other_site(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """With three sites, a selector that fails only for the third site is still reported."""
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(
        INVENTORY.read_text("utf-8")
        + "  site-c:\n    vars: {vip: 10.0.3.10}\n    hosts:\n"
        + "      app-c: {address: 10.0.3.31, roles: [app]}\n",
        encoding="utf-8",
    )
    code, _, err = drx(
        capsys, "validate", "-r", str(RUNBOOK), "-i", str(inventory), "--state-dir", str(tmp_path)
    )
    assert code == 2
    found = problems(err)
    assert {(p["step"], p["line"]) for p in found} == {("check-lag", 21), ("promote", 27)}
    assert all("no role 'db' at site 'site-c'" in p["message"] for p in found)


@pytest.mark.parametrize("opener", ["[", "{a: "])
def test_yaml_nested_thousands_deep_is_a_problem_not_a_crash(
    opener: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """YAML nested 5,000 levels deep (past libyaml's own limit) is exit 2 with file:line."""
    closer = "]" if opener == "[" else "}"
    runbook = tmp_path / "deep.yaml"
    runbook.write_text(
        "name: deep\nvars:\n  x: " + opener * 5000 + "1" + closer * 5000 + "\nsteps: []\n"
    )
    code, _, err = drx(
        capsys, "validate", "-r", str(runbook), "-i", str(INVENTORY), "--state-dir", str(tmp_path)
    )
    assert code == 2, err
    assert "internal error" not in err
    [problem] = problems(err)
    assert (problem["file"], problem["line"]) == ("deep.yaml", 3)
    assert "nested more than 100 levels deep" in problem["message"]


@pytest.mark.parametrize("shape", ["chain", "fanout"])
def test_validating_twelve_thousand_steps_without_undo_takes_seconds(
    shape: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`drx validate` of 12,000 steps, each drawing a warning, stays linear (was quadratic:
    ~13 s for a chain)."""
    import sys
    import time

    sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
    import validate_shapes

    runbook = tmp_path / "shape.yaml"
    runbook.write_text(validate_shapes.runbook_text(shape, 12_000))
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(validate_shapes.INVENTORY)
    start = time.perf_counter()
    code, _, err = drx(
        capsys, "validate", "-r", str(runbook), "-i", str(inventory), "--state-dir", str(tmp_path)
    )
    took = time.perf_counter() - start
    assert code == 0, err[-500:]
    assert err.splitlines()[-1] == "ok: 12000 warning(s)"
    assert took < 6.0, f"{took:.1f}s"
