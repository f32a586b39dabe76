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
    tls_cert: Annotated[
        str | None, typer.Option("--tls-cert", help="Serve HTTPS with this certificate (PEM).")
    ] = None,
    tls_key: Annotated[
        str | None, typer.Option("--tls-key", help="The certificate's private key (PEM).")
    ] = None,
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
    if (tls_cert is None) != (tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    for given in (tls_cert, tls_key):
        if given is not None and not Path(given).is_file():
            raise UsageError(f"{given}: no such file")
    if not loopback and tls_cert is None:
        from orchestrator.cli import say

        say.warning(
            f"--bind {bind} without --tls-cert: bearer tokens cross the network in clear "
            "(serve HTTPS, or behind a TLS proxy)"
        )
    from orchestrator.serve.tokens import load_tokens

    known = load_tokens(Path(tokens)) if tokens else {}
    store = store_for(state_dir, state_url)

    import uvicorn

    from orchestrator.serve.app import build_app

    scheme = "https" if tls_cert else "http"
    typer.echo(f"drx serve: {scheme}://{bind}/ ({store.location})", err=True)
    uvicorn.run(
        build_app(store, known),
        host=host,
        port=int(port),
        log_level="warning",
        ssl_certfile=tls_cert,
        ssl_keyfile=tls_key,
    )
