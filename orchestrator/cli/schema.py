"""``drx schema``: the JSON Schema of a runbook or an inventory, for editors."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from orchestrator.cli.app import app
from orchestrator.errors import UsageError


@app.command()
def schema(
    what: Annotated[str, typer.Argument(help="runbook or inventory")],
) -> None:
    """Print the JSON Schema (draft 2020-12) of a runbook or an inventory.

    Save it and name it on the first line of a YAML file, and editors with the YAML language
    server complete fields and flag typos as you write:

        drx schema runbook > .drx-runbook.schema.json

        # yaml-language-server: $schema=.drx-runbook.schema.json

    Example: drx schema inventory > inventory.schema.json
    """
    from orchestrator.model.schema import SCHEMAS

    if what not in SCHEMAS:
        raise UsageError(f"unknown schema '{what}' (choose from {', '.join(SCHEMAS)})")
    typer.echo(json.dumps(SCHEMAS[what](), indent=2))
