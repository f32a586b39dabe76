"""An application server of the site lab: one per site, behind HAProxy, serving requests that
read and write the PostgreSQL cluster of its own site.

Each request writes a row (``site_requests``) and reads back how many rows the cluster holds, so
it succeeds only where that cluster is the primary: before a failover at site-a, after it at
site-b. (The PostgreSQL lab's row writer, :mod:`orchestrator.lab.rowapp`, is the database tier's
own client; this is what the site's users reach through the load balancer.)

HTTP on the configured address:

- ``POST /order``: one write and one read at this site's cluster: 200 with JSON ``{site, n,
  rows}``, else 503 with the error;
- ``GET /health?site=S``: 200 when this server is at site S (default: its own) and a write
  succeeds now, else 503 — what the runbooks' health checks and drx steps poll.

Run as ``python -m orchestrator.lab.siteapp CONFIG.json`` (written by the lab: ``listen``,
``site``, ``dsn``: a libpq conninfo).
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg

from orchestrator.lab.rowapp import JsonHandler


class Store:
    """One connection to the site's cluster, shared under a lock, opened again after an error
    (a promoted replica, a restarted server)."""

    def __init__(self, site: str, dsn: str) -> None:
        self.site = site
        self.dsn = dsn
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None

    def order(self) -> tuple[bool, dict[str, Any]]:
        with self._lock:
            try:
                if self._conn is None:
                    self._conn = psycopg.connect(self.dsn, autocommit=True)
                row = self._conn.execute(
                    "INSERT INTO site_requests (site) VALUES (%s) RETURNING n", (self.site,)
                ).fetchone()
                count = self._conn.execute("SELECT count(*) FROM site_requests").fetchone()
                return True, {
                    "site": self.site,
                    "n": row[0] if row else None,
                    "rows": count[0] if count else None,
                }
            except psycopg.Error as exc:
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                return False, {"site": self.site, "error": f"{type(exc).__name__}: {exc}".strip()}


def _handler(store: Store) -> type[BaseHTTPRequestHandler]:
    class Handler(JsonHandler):
        def _serve(self, route: dict[str, Callable[[], None]]) -> None:
            action = route.get(urlsplit(self.path).path)
            if action is None:
                self._reply(404, {"error": "not found"})
            else:
                action()

        def _order(self) -> None:
            ok, body = store.order()
            self._reply(200 if ok else 503, body)

        def _health(self) -> None:
            site = parse_qs(urlsplit(self.path).query).get("site", [store.site])[0]
            if site != store.site:
                self._reply(503, {"site": store.site, "error": f"not at {site}"})
                return
            self._order()

        def do_GET(self) -> None:
            self._serve({"/health": self._health})

        def do_POST(self) -> None:
            self._serve({"/order": self._order})

    return Handler


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m orchestrator.lab.siteapp CONFIG.json", file=sys.stderr)
        return 2
    raw = json.loads(Path(args[0]).read_text())
    store = Store(raw["site"], raw["dsn"])
    host, _, port = raw["listen"].rpartition(":")
    server = ThreadingHTTPServer((host, int(port)), _handler(store))
    server.daemon_threads = True

    def on_signal(signum: int, frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
