"""The generated parts of docs/reference.md and docs/schema/*.json: field tables from the models
(:mod:`orchestrator.model.reference`), and the commands with their options from this typer
app, so the reference cannot drift from what drx accepts. ``make docs`` runs this module;
a test checks that the files in the repository are up to date."""

from __future__ import annotations

import inspect
import json
import re
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import typer.models

_BLOCK = re.compile(
    r"(<!-- generated: (?P<name>[a-z-]+) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S
)
#: options every command that reads files shares; the reference lists them once
COMMON = {"--runbook", "--inventory", "--state-dir", "--state-url", "--log-format", "--verbose"}


def _params(callback: Callable[..., Any]) -> tuple[list[str], list[str]]:
    """A command's arguments (as usage words) and its long options, read from the typer
    annotations of its function."""
    import typer.models

    hints = typing.get_type_hints(callback, include_extras=True)
    arguments: list[str] = []
    options: list[str] = []
    for name, param in inspect.signature(callback).parameters.items():
        infos = [
            a
            for a in (*getattr(hints.get(name), "__metadata__", ()), param.default)
            if isinstance(a, typer.models.OptionInfo | typer.models.ArgumentInfo)
        ]
        if not infos:
            continue
        info = infos[0]
        if isinstance(info, typer.models.ArgumentInfo):
            word = info.metavar or name.upper()
            optional = param.default is not inspect.Parameter.empty
            arguments.append(f"[{word}]" if optional else word)
            continue
        first = info.default if isinstance(info.default, str) else None
        decls = [d for d in (first, *(info.param_decls or ())) if d and d.startswith("-")]
        long = [d for d in decls if d.startswith("--")] or ["--" + name.replace("_", "-")]
        options.extend(o.split("/")[0] for o in long)
    return arguments, options


def _group_name(group: typer.models.TyperInfo) -> str:
    """The name a group of commands is typed as: given to ``add_typer`` or to its ``Typer``."""
    if isinstance(group.name, str):
        return group.name
    assert group.typer_instance is not None
    name = group.typer_instance.info.name
    assert isinstance(name, str)
    return name


def commands_table() -> str:
    """Every command: its usage, what it does (the first sentence of its help), its options
    (those every command shares are listed once, below the table)."""
    from orchestrator.cli import app
    from orchestrator.model.reference import cell

    rows = ["| command | does | options |", "|---|---|---|"]
    # A group's commands (``drx state push``) are listed under the group's name.
    commands = [("", info) for info in app.registered_commands] + [
        (f"{_group_name(group)} ", info)
        for group in app.registered_groups
        if group.typer_instance is not None
        for info in group.typer_instance.registered_commands
    ]
    for prefix, info in commands:
        callback = info.callback
        assert callback is not None
        name = prefix + (info.name or callback.__name__.replace("_", "-"))
        arguments, options = _params(callback)
        doc = inspect.getdoc(callback) or ""
        first = " ".join(doc.split("\n\n")[0].split())
        first = first.split(". ")[0].rstrip(".") + "."
        shown = " ".join(f"`{o}`" for o in options if o not in COMMON)
        usage = " ".join([f"drx {name}", *arguments])
        rows.append(f"| `{usage}` | {cell(first)} | {shown} |")
    return "\n".join(rows)


def generated_blocks() -> dict[str, str]:
    """The text of every generated block of docs/reference.md, by block name."""
    from orchestrator.model.reference import field_blocks

    return {**field_blocks(), "commands": commands_table()}


def update_reference(text: str) -> str:
    """``text`` (docs/reference.md) with every generated block rewritten; raise KeyError for a
    block name that is not generated."""
    blocks = generated_blocks()
    return _BLOCK.sub(lambda m: m.group(1) + blocks[m.group("name")] + "\n" + m.group(4), text)


def block_names(text: str) -> list[str]:
    return [m.group("name") for m in _BLOCK.finditer(text)]


def write_docs(docs_dir: Path) -> list[Path]:
    """Regenerate docs/reference.md's tables and docs/schema/*.json; return what changed."""
    from orchestrator.model.schema import SCHEMAS

    outputs = {
        docs_dir / "schema" / f"{name}.json": json.dumps(build(), indent=2) + "\n"
        for name, build in SCHEMAS.items()
    }
    reference = docs_dir / "reference.md"
    outputs[reference] = update_reference(reference.read_text(encoding="utf-8"))
    changed: list[Path] = []
    for path, text in outputs.items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    return changed


if __name__ == "__main__":  # make docs
    for changed_path in write_docs(Path(sys.argv[1] if len(sys.argv) > 1 else "docs")):
        print(f"updated {changed_path}")
