"""``drx state push``: copy a local state directory's history into a shared store."""

from __future__ import annotations

from typing import Annotated

import typer

from orchestrator.cli.app import StateDirOpt, StateUrlOpt, app, state_dir_path

state_app = typer.Typer(
    name="state",
    help="Move history between a local state directory and a shared store.",
    no_args_is_help=True,
)
app.add_typer(state_app)


@state_app.command("push")
def push(
    state_dir: StateDirOpt = None,
    state_url: StateUrlOpt = None,
    replace_state: Annotated[
        bool,
        typer.Option(
            "--replace-state",
            help="Overwrite the store's active site and last run with the local ones.",
        ),
    ] = False,
) -> None:
    """Copy the runs and state of --state-dir into --state-url (runs already there are kept).

    Example: drx state push --state-dir .drx --state-url etcd://h1:2379,h2:2379,h3:2379/drx
    """
    from orchestrator.errors import UsageError
    from orchestrator.record.store import LocalStore, open_store
    from orchestrator.record.transfer import push_history

    if not state_url:
        raise UsageError("drx state push needs --state-url (or DRX_STATE_URL): where to copy to")
    local = state_dir_path(state_dir)
    source = LocalStore(local)
    if not source.exists():
        raise UsageError(f"nothing to push: {local} holds no state and no runs")
    target = open_store(local, state_url)
    result = push_history(source, target, replace_state=replace_state)
    lines = [f"copied {len(result.copied)} run(s) from {local} to {target.location}"]
    if result.skipped:
        lines.append(f"skipped {len(result.skipped)} run(s) already there")
    lines.append(
        {
            "copied": "state (active site, last run) copied",
            "kept": "the store's own state kept (--replace-state overwrites it)",
            "unchanged": "no local state to copy",
        }[result.state]
    )
    typer.echo("\n".join(lines))
