"""``drx init [DIR]``: a commented starter runbook and inventory that run as they are."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli.app import app
from orchestrator.errors import UsageError

#: the starter's files, from the package's ``starter`` directory
STARTER_FILES = ("runbook.yaml", "inventory.yaml")
#: where the starter's simulated hosts keep their files (its inventory exports it as $WORLD)
WORLD_DIR = ".drx-world"


def write_starter(directory: Path, force: bool = False) -> list[Path]:
    """Write the starter runbook and inventory (and their JSON Schemas, which the files name
    for editors) into ``directory``; refuse to overwrite unless ``force``."""
    from orchestrator.model.schema import SCHEMAS

    texts = {
        name: resources.files("orchestrator.cli").joinpath("starter", name).read_text("utf-8")
        for name in STARTER_FILES
    }
    for name, build in SCHEMAS.items():
        texts[f"{name}.schema.json"] = json.dumps(build(), indent=2) + "\n"
    paths = [directory / name for name in texts]
    existing = [str(p) for p in paths[: len(STARTER_FILES)] if p.exists()]
    if existing and not force:
        raise UsageError(
            f"{' and '.join(existing)} already {'exists' if len(existing) == 1 else 'exist'}; "
            "nothing was written (--force overwrites)"
        )
    (directory / WORLD_DIR).mkdir(parents=True, exist_ok=True)
    for path, text in zip(paths, texts.values(), strict=True):
        path.write_text(text, encoding="utf-8")
    return paths


@app.command()
def init(
    directory: Annotated[
        Path, typer.Argument(help="Where to write the files (created if missing).")
    ] = Path("."),
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
) -> None:
    """Write a commented starter runbook and inventory for two sites (dc1, dc2) whose hosts run
    on this machine, so the whole cycle works at once: validate, plan, failover, failback.

    Example: drx init drill && cd drill && drx failover dc2 --yes && drx failback --yes
    """
    paths = write_starter(directory, force)
    for path in paths:
        typer.echo(f"wrote {path}", err=True)
    where = "" if directory == Path(".") else f"cd {directory} && "
    typer.echo(
        f"next: {where}drx validate && drx plan dc2 && drx failover dc2 "
        "(field reference: docs/reference.md, or drx schema runbook)",
        err=True,
    )
