"""The format reference (docs/reference.md), the JSON Schemas and the starter files: generated
from the loaders' own field lists, so the documentation cannot drift from what drx accepts."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from orchestrator.cli import docs
from orchestrator.model import inventory as inventory_model
from orchestrator.model import reference
from orchestrator.model import runbook as runbook_model
from orchestrator.model.inventory import parse_inventory
from orchestrator.model.runbook import parse_runbook
from orchestrator.model.schema import inventory_schema, runbook_schema
from tests.cli import drx

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SAMPLE_INVENTORIES = sorted((ROOT / "inventory").glob("*.yaml"))
STARTER = ROOT / "orchestrator" / "cli" / "starter"


def documented(table: str) -> set[str]:
    return {d.name for d in reference.all_docs()[table]}


@pytest.mark.parametrize(
    ("table", "accepted"),
    [
        ("runbook", runbook_model.RUNBOOK_FIELDS),
        ("step", runbook_model.STEP_FIELDS),
        ("health", runbook_model.HEALTH_FIELDS),
        ("readiness", runbook_model.READINESS_FIELDS),
        ("rpo-probe", runbook_model.RPO_PROBE_FIELDS),
        ("inventory", inventory_model.INVENTORY_FIELDS),
        ("connection", inventory_model.CONNECTION_FIELDS),
        (
            "site",
            tuple(f for f in inventory_model.SITE_FIELDS if f not in documented("connection")),
        ),
        (
            "host",
            tuple(f for f in inventory_model.HOST_FIELDS if f not in documented("connection")),
        ),
    ],
)
def test_the_reference_documents_exactly_the_fields_the_loaders_accept(
    table: str, accepted: tuple[str, ...]
) -> None:
    """Each field table of the reference names exactly the fields its loader accepts."""
    assert documented(table) == set(accepted)


def test_the_checked_in_reference_and_schemas_are_up_to_date() -> None:
    """docs/reference.md's generated tables and docs/schema/*.json match the models (make docs)."""
    text = (DOCS / "reference.md").read_text(encoding="utf-8")
    assert docs.update_reference(text) == text, "run make docs"
    assert sorted(docs.block_names(text)) == sorted(docs.generated_blocks())
    for name, build in (("runbook", runbook_schema), ("inventory", inventory_schema)):
        on_disk = json.loads((DOCS / "schema" / f"{name}.json").read_text(encoding="utf-8"))
        assert on_disk == build(), f"docs/schema/{name}.json is stale: run make docs"


def test_the_commands_table_lists_every_command_the_cli_has() -> None:
    """Every command click would run, sub-commands of a group (drx state push) included, has a
    row in the reference's commands table."""
    import typer.main

    from orchestrator.cli import app

    def names(command: Any, prefix: str) -> list[str]:
        # typer ships its own click: a group is whatever has sub-commands
        subs = getattr(command, "commands", None)
        if not subs:
            return [prefix]
        return [
            name for sub_name, sub in subs.items() for name in names(sub, f"{prefix} {sub_name}")
        ]

    table = docs.commands_table()
    rows = {line.split("`")[1] for line in table.splitlines()[2:]}
    every = names(typer.main.get_command(app), "drx")
    assert "drx state push" in every
    missing = [n for n in every if not any(r == n or r.startswith(n + " ") for r in rows)]
    assert missing == []


def test_every_loader_field_appears_in_a_table_of_the_reference() -> None:
    """Every accepted field name is written in the reference as a table row."""
    text = (DOCS / "reference.md").read_text(encoding="utf-8")
    every = {
        *runbook_model.RUNBOOK_FIELDS,
        *runbook_model.STEP_FIELDS,
        *runbook_model.HEALTH_FIELDS,
        *inventory_model.INVENTORY_FIELDS,
        *inventory_model.SITE_FIELDS,
        *inventory_model.HOST_FIELDS,
    }
    missing = [f for f in sorted(every) if f"| `{f}` |" not in text]
    assert missing == []


def _write(tmp_path: Path, name: str, data: Any) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


BASE_STEP = {"id": "x", "hosts": "control", "run": "true"}
BASE_INVENTORY: dict[str, Any] = {
    "active": "a",
    "sites": {
        "a": {"hosts": {"h1": {"address": "127.0.0.1"}}},
        "b": {"hosts": {"h2": {"address": "127.0.0.1"}}},
    },
}


@pytest.mark.parametrize("doc", reference.STEP_DOC, ids=lambda d: d.name)
def test_every_documented_step_field_loads_with_its_example(tmp_path: Path, doc: Any) -> None:
    """A step setting a documented field to the reference's example loads without a problem
    about that field (the reference documents nothing the loader refuses)."""
    step = {**BASE_STEP, doc.name: yaml.safe_load(doc.example)}
    if doc.name == "kind" and step["kind"] == "check":
        step["until"] = "rc == 0"
    if doc.name in ("runbook", "vars"):  # fields of a kind: runbook step only
        step = {"id": "x", "kind": "runbook", "runbook": "c.yaml", doc.name: step[doc.name]}
    if doc.name == "candidates":  # they bound hosts decided at run time
        step["hosts"] = "{{ steps['y'].value }}"
    path = _write(tmp_path, "rb.yaml", {"name": "t", "steps": [step]})
    _, problems = parse_runbook(path)
    assert [str(p) for p in problems if p.severity == "error"] == []


@pytest.mark.parametrize(
    "doc", [*reference.CONNECTION_DOC, *reference.HOST_DOC], ids=lambda d: d.name
)
def test_every_documented_host_field_loads_with_its_example(tmp_path: Path, doc: Any) -> None:
    """A host setting a documented field to the reference's example loads without a problem."""
    inv = json.loads(json.dumps(BASE_INVENTORY))
    inv["sites"]["a"]["hosts"]["h1"][doc.name] = yaml.safe_load(doc.example)
    if doc.name == "ssh_config":  # a file the example names must exist
        (tmp_path / doc.example).parent.mkdir(parents=True)
        (tmp_path / doc.example).write_text("Host other\n  Port 2222\n")
    _, problems = parse_inventory(_write(tmp_path, "inv.yaml", inv))
    assert [str(p) for p in problems if p.severity == "error"] == []


def _validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


@pytest.mark.parametrize(
    "path",
    [*sorted((ROOT / "runbooks").glob("*.yaml")), STARTER / "runbook.yaml"],
    ids=lambda p: p.parent.name + "/" + p.name,
)
def test_the_runbook_schema_accepts_the_shipped_runbooks(path: Path) -> None:
    """The sample and starter runbooks validate against `drx schema runbook`."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert list(_validator(runbook_schema()).iter_errors(data)) == []


@pytest.mark.parametrize(
    "path", [*SAMPLE_INVENTORIES, STARTER / "inventory.yaml"], ids=lambda p: p.name
)
def test_the_inventory_schema_accepts_the_shipped_inventories(path: Path) -> None:
    """The sample and starter inventories validate against `drx schema inventory`."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert list(_validator(inventory_schema()).iter_errors(data)) == []


@pytest.mark.parametrize(
    ("change", "bad_path"),
    [
        ({"neds": ["a"]}, ["steps", 0]),  # a misspelt field
        ({"kind": "comand"}, ["steps", 0, "kind"]),  # a misspelt kind
        ({"timeout": "5 minutes"}, ["steps", 0, "timeout"]),  # not a duration
        ({"retries": "two"}, ["steps", 0, "retries"]),
        ({"undo": {"kind": "check", "hots": "db@source", "run": "x"}}, ["steps", 0, "undo"]),
        ({"kind": "wait"}, ["steps", 0]),  # wait without duration
    ],
)
def test_the_runbook_schema_rejects_typos(change: dict[str, Any], bad_path: list[Any]) -> None:
    """Misspelt fields and kinds, bad durations and a wait without duration are schema errors
    at the place the editor should underline."""
    step = {**BASE_STEP, **change}
    errors = list(_validator(runbook_schema()).iter_errors({"name": "t", "steps": [step]}))
    assert errors
    assert any(list(e.absolute_path)[: len(bad_path)] == bad_path for e in errors), errors


@pytest.mark.parametrize(
    "change",
    [
        {"adress": "10.0.0.1"},
        {"host_key_policy": "accept_new"},
        {"port": 70000},
        {"transport": "telnet"},
    ],
)
def test_the_inventory_schema_rejects_typos(change: dict[str, Any]) -> None:
    """A misspelt host field or a wrong connection value is a schema error."""
    inv = json.loads(json.dumps(BASE_INVENTORY))
    inv["sites"]["a"]["hosts"]["h1"].update(change)
    assert list(_validator(inventory_schema()).iter_errors(inv))


def test_drx_schema_prints_the_schemas(capsys: pytest.CaptureFixture[str]) -> None:
    """`drx schema runbook|inventory` prints the JSON Schemas; another name exits 2."""
    for name, build in (("runbook", runbook_schema), ("inventory", inventory_schema)):
        code, out, _ = drx(capsys, "schema", name)
        assert code == 0
        assert json.loads(out) == build()
    code, _, err = drx(capsys, "schema", "runboook")
    assert code == 2 and "unknown schema 'runboook'" in err


def test_help_points_to_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    """`drx --help` names docs/reference.md and the schema command."""
    code, out, _ = drx(capsys, "--help")
    assert code == 0
    assert "docs/reference.md" in out and "drx schema runbook" in out


def test_readme_links_the_reference() -> None:
    """The README links the reference."""
    assert "(docs/reference.md)" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_init_writes_a_starter_that_fails_over_and_back(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`drx init DIR` writes a runbook and inventory that validate, whose failover and failback
    run on local hosts (traffic moves to dc2 and back), and refuses to overwrite them, naming
    the files that exist."""
    target = tmp_path / "drill"
    code, _, err = drx(capsys, "init", str(target))
    assert code == 0, err
    assert {p.name for p in target.iterdir()} >= {
        "runbook.yaml",
        "inventory.yaml",
        "runbook.schema.json",
        "inventory.schema.json",
    }
    first_line = (target / "runbook.yaml").read_text(encoding="utf-8").splitlines()[0]
    assert first_line == "# yaml-language-server: $schema=./runbook.schema.json"
    monkeypatch.chdir(target)
    assert drx(capsys, "validate")[0] == 0
    code, _, err = drx(capsys, "failover", "dc2", "--yes")
    assert code == 0, err
    assert (target / ".drx-world" / "traffic").read_text().strip() == "198.51.100.10"
    code, _, err = drx(capsys, "failback", "--yes")
    assert code == 0, err
    assert (target / ".drx-world" / "traffic").read_text().strip() == "192.0.2.10"
    assert not (target / ".drx-world" / "db2.primary").exists()
    code, _, err = drx(capsys, "init", str(target))
    assert code == 2
    assert f"{target / 'runbook.yaml'} and {target / 'inventory.yaml'} already exist;" in err
    (target / "inventory.yaml").unlink()
    code, _, err = drx(capsys, "init", str(target))
    assert code == 2 and f"{target / 'runbook.yaml'} already exists;" in err
    assert not (target / "inventory.yaml").exists()


def test_the_state_url_examples_of_the_reference_parse() -> None:
    """Every etcd URL written in the reference is one the store's parser accepts (and the
    parameters it names are the parser's)."""
    from orchestrator.record.etcd_store import StateURL

    text = (DOCS / "reference.md").read_text(encoding="utf-8")
    section = text.split("## Shared state in etcd", 1)[1].split("\n## ", 1)[0]
    urls = re.findall(r"etcds?://[^'`\s]+", section)
    assert any("?ttl=" in u for u in urls)
    for url in urls:
        if "HOST:PORT" not in url:
            assert StateURL.parse(url).prefix
    params = set(re.findall(r"`(\w+)=`", section))
    assert params == {"ttl", "ca", "cert", "key", "user"}
    for name in params:  # each documented parameter is one the parser knows
        scheme = "etcds" if name in ("ca", "cert", "key") else "etcd"
        extra = "&cert=c&key=k" if name in ("cert", "key") else ""
        value = "5s" if name == "ttl" else "x"
        StateURL.parse(f"{scheme}://127.0.0.1:2379/p?{name}={value}{extra}")
