"""``drx serve``: the war-room page (docs/reference.md, "drx serve")."""

from __future__ import annotations

from typing import Annotated

import typer

from orchestrator.cli.app import StateDirOpt, StateUrlOpt, app, store_for


@app.command()
def serve(
    bind: Annotated[
        str, typer.Option("--bind", help="HOST:PORT to listen on (loopback unless --tokens).")
    ] = "127.0.0.1:8765",
    tokens: Annotated[
        str | None,
        typer.Option("--tokens", help="File of 'NAME SHA256-OF-TOKEN' lines: who may act."),
    ] = None,
    state_dir: StateDirOpt = None,
    state_url: StateUrlOpt = None,
) -> None:
    """Serve the runs, each run live, the reports, /api and /metrics; with --tokens, a token
    holder may approve or deny gates and abort runs from the page.

    Example: drx serve --bind 0.0.0.0:8765 --tokens /etc/drx/tokens
    """
    import ipaddress
    from pathlib import Path

    from orchestrator.errors import UsageError

    host, _, port = bind.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--bind {bind!r}: expected HOST:PORT")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and tokens is None:
        raise UsageError(
            f"--bind {bind}: serving beyond loopback needs --tokens (who may act on runs)"
        )
    from orchestrator.serve.tokens import load_tokens

    known = load_tokens(Path(tokens)) if tokens else {}
    store = store_for(state_dir, state_url)

    import uvicorn

    from orchestrator.serve.app import build_app

    typer.echo(f"drx serve: http://{bind}/ ({store.location})", err=True)
    uvicorn.run(build_app(store, known), host=host, port=int(port), log_level="warning")
