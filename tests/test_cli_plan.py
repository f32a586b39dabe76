"""The command line around planning: `drx plan` and `drx failover --dry-run` on the samples,
refusals (unknown site, site already active), --version, --help, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator import __version__
from orchestrator.cli import app
from tests.cli import drx

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_RUNBOOK = ROOT / "runbooks" / "webapp.yaml"
SAMPLE_INVENTORY = ROOT / "inventory" / "local.yaml"
FORMATS = ("text", "json", "dot", "mermaid")
COMMANDS = [c.name or c.callback.__name__ for c in app.registered_commands if c.callback]


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """An empty state directory (no history, no state.json)."""
    return tmp_path / "state"


def on_samples(state: Path) -> list[str]:
    return ["-r", str(SAMPLE_RUNBOOK), "-i", str(SAMPLE_INVENTORY), "--state-dir", str(state)]


def test_sample_files_are_valid(capsys: pytest.CaptureFixture[str], state: Path) -> None:
    """`drx validate` on the sample runbook and inventory exits 0 with no warning."""
    code, _, err = drx(capsys, "validate", *on_samples(state))
    assert (code, err) == (0, "ok: 0 warning(s)\n")


@pytest.mark.parametrize("fmt", FORMATS)
def test_plan_on_the_samples_succeeds_in_every_format(
    capsys: pytest.CaptureFixture[str], state: Path, fmt: str
) -> None:
    """`drx plan site-b -f FMT` exits 0 and prints a plan naming every sample step."""
    code, out, err = drx(capsys, "plan", "site-b", "-f", fmt, *on_samples(state))
    assert code == 0, err
    assert err == ""
    for step in ("announce", "freeze-writes", "check-lag", "promote-db", "switch-dns"):
        assert step in out
    if fmt == "json":
        assert json.loads(out)["target"] == "site-b"
    assert not (state / "runs").exists()


def test_plan_finds_the_samples_from_the_project_root(
    capsys: pytest.CaptureFixture[str], state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From the project's root, `drx plan site-b` needs no -r/-i: the defaults find the samples."""
    monkeypatch.chdir(ROOT)
    code, out, err = drx(capsys, "plan", "site-b", "--state-dir", str(state))
    assert code == 0, err
    assert out.startswith("Plan: webapp — failover site-a → site-b\n")


@pytest.mark.parametrize("fmt", FORMATS)
def test_failover_dry_run_prints_the_same_as_plan(
    capsys: pytest.CaptureFixture[str], state: Path, fmt: str
) -> None:
    """`drx failover site-b --dry-run` prints exactly what `drx plan site-b` prints."""
    _, planned, _ = drx(capsys, "plan", "site-b", "-f", fmt, *on_samples(state))
    code, dry, err = drx(capsys, "failover", "site-b", "--dry-run", "-f", fmt, *on_samples(state))
    assert code == 0, err
    assert dry == planned
    assert not (state / "runs").exists()
    assert not (state / "state.json").exists()


@pytest.mark.parametrize("command", [["plan"], ["failover", "--dry-run"], ["failover", "--yes"]])
def test_unknown_site_is_refused_listing_the_sites(
    capsys: pytest.CaptureFixture[str], state: Path, command: list[str]
) -> None:
    """An unknown site exits 2 with one line listing the inventory's sites and a suggestion."""
    code, out, err = drx(capsys, command[0], "site-bb", *command[1:], *on_samples(state))
    assert code == 2
    assert out == ""
    assert err == (
        "error: unknown site 'site-bb' (sites: site-a, site-b); did you mean 'site-b'?\n"
    )
    assert not (state / "runs").exists()


@pytest.mark.parametrize("command", [["plan"], ["failover", "--dry-run"], ["failover", "--yes"]])
def test_active_site_is_refused_without_force(
    capsys: pytest.CaptureFixture[str], state: Path, command: list[str]
) -> None:
    """Planning or failing over to the site that is already active exits 2."""
    code, _, err = drx(capsys, command[0], "site-a", *command[1:], *on_samples(state))
    assert code == 2
    assert err == "error: site 'site-a' is already active (use --force to run anyway)\n"
    assert not (state / "runs").exists()


def test_force_plans_a_move_to_the_active_site(
    capsys: pytest.CaptureFixture[str], state: Path
) -> None:
    """With --force, a plan to the active site is made (from another site)."""
    code, out, err = drx(capsys, "plan", "site-a", "--force", "-f", "json", *on_samples(state))
    assert code == 0, err
    doc = json.loads(out)
    assert (doc["source"], doc["target"]) == ("site-b", "site-a")


def test_state_json_decides_which_site_is_active(
    capsys: pytest.CaptureFixture[str], state: Path
) -> None:
    """state.json's active site wins: it is refused as a target and is the source of a plan."""
    state.mkdir()
    (state / "state.json").write_text('{"active": "site-b"}\n', encoding="utf-8")
    code, _, err = drx(capsys, "plan", "site-b", *on_samples(state))
    assert code == 2
    assert "site 'site-b' is already active" in err
    code, out, err = drx(capsys, "plan", "site-a", "-f", "json", *on_samples(state))
    assert code == 0, err
    assert json.loads(out)["source"] == "site-b"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`drx --version` prints the package version and exits 0."""
    code, out, _ = drx(capsys, "--version")
    assert (code, out) == (0, f"drx {__version__}\n")


def _help_params() -> list[object]:
    return [pytest.param([c], id=c) for c in COMMANDS] + [pytest.param([], id="drx")]


@pytest.mark.parametrize("command", _help_params())
def test_help_of_every_command_shows_an_example(
    capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    """`drx COMMAND --help` exits 0 and includes an example invocation."""
    code, out, _ = drx(capsys, *command, "--help")
    assert code == 0
    assert "Example: drx" in out


def test_every_command_is_covered_by_the_help_test() -> None:
    """The help test sees all the commands of the contract."""
    assert set(COMMANDS) >= {
        "validate",
        "plan",
        "failover",
        "failback",
        "resume",
        "runs",
        "report",
        "status",
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["plan", "site-b", "-f", "yaml"], "error: unknown format 'yaml' (choose from "),
        (["plan", "site-b", "--var", "novalue"], "error: --var expects NAME=VALUE, got 'novalue'"),
        (["plan", "site-b", "--secret-var", "x"], "error: --secret-var expects NAME=VALUE"),
        (["plan", "site-b", "--log-format", "xml"], "error: unknown log format 'xml'"),
        (["report"], "error: no runs in "),
        (["failback", "--dry-run"], "error: nothing to fail back"),
    ],
)
def test_expected_errors_are_one_line_without_traceback(
    capsys: pytest.CaptureFixture[str], state: Path, args: list[str], message: str
) -> None:
    """Operator mistakes exit 2 with a single ``error:`` line on stderr, no traceback."""
    common = on_samples(state) if args[0] != "report" else ["--state-dir", str(state)]
    code, out, err = drx(capsys, *args, *common)
    assert code == 2
    assert out == ""
    assert err.startswith(message)
    assert err.count("\n") == 1
    assert "Traceback" not in err
    assert not (state / "debug.log").exists()


def test_missing_files_name_the_options_to_use(
    capsys: pytest.CaptureFixture[str], state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside a project, with no -r and no DRX_RUNBOOK, drx says how to name the runbook."""
    monkeypatch.chdir(tmp_path)
    code, _, err = drx(capsys, "plan", "site-b", "--state-dir", str(state))
    assert code == 2
    assert err.startswith("error: no runbook given and none found here")
    assert "--runbook FILE or set DRX_RUNBOOK" in err
    assert err.count("\n") == 1


def test_environment_names_the_files(
    capsys: pytest.CaptureFixture[str], state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DRX_RUNBOOK, DRX_INVENTORY and DRX_STATE_DIR stand in for -r, -i and --state-dir."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DRX_RUNBOOK", str(SAMPLE_RUNBOOK))
    monkeypatch.setenv("DRX_INVENTORY", str(SAMPLE_INVENTORY))
    monkeypatch.setenv("DRX_STATE_DIR", str(state))
    code, out, err = drx(capsys, "plan", "site-b", "-f", "json")
    assert code == 0, err
    assert json.loads(out)["runbook"] == "webapp"


def test_help_imports_no_engine_modules() -> None:
    """`drx --help` stays fast: importing the CLI loads no YAML, Jinja2, networkx, SSH, model,
    plan, run or store code (each command imports what it needs when it runs)."""
    import subprocess
    import sys

    code = (
        "import sys, orchestrator.cli; "
        "print(' '.join(m for m in sys.modules if m.split('.')[0] in "
        "('yaml', 'jinja2', 'networkx', 'paramiko', 'fabric', 'rich') or m.startswith("
        "('orchestrator.model', 'orchestrator.plan', 'orchestrator.run', 'orchestrator.record'))))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert loaded == []
