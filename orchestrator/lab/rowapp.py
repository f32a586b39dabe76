"""A tiny application for the PostgreSQL lab: it writes rows, and says over HTTP where.

It inserts one row after another (``drill_rows(id, site)``) into the primary of the site it
points at, and appends the id of every row whose COMMIT PostgreSQL acknowledged to a file: the
ledger against which the lab counts rows lost (acknowledged ids missing from the final primary).
A row whose insert failed, even one whose outcome is unknown (connection lost before the
acknowledgement), is never in the ledger.

HTTP on ``--listen``:

- ``GET /health?site=S``: 200 when the app writes at site S and committed a row there within
  the last second, else 503; the body is JSON (site, writing, rows, last error).
- ``POST /drain``: stop writing; returns once no insert is in flight.
- ``POST /point?site=S``: write at site S from now on (and resume writing).
- ``POST /write``: one probe write (a row of ``drill_probe``) through the app's own path — at
  the site it writes at, refused while it is drained: 200 once PostgreSQL acknowledged the
  commit, else 503. What a client that writes sees, for a runbook's write probe.

Each ledger line is ``ID UNIX-TIME`` (when the commit was acknowledged), so the longest gap
between acknowledged commits — the downtime the application saw — can be read back.

Run as ``python -m orchestrator.lab.rowapp CONFIG.json`` (written by the lab: listen address,
a libpq conninfo per site, the site to start at, the ledger path, rows per second).
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg

#: A commit older than this no longer counts as "writing" for /health.
FRESH_S = 1.0


@dataclass
class AppConfig:
    """What the lab tells the app."""

    listen: str
    sites: dict[str, str]  # site -> libpq conninfo of its cluster
    site: str
    ledger: Path
    rate: float = 200.0  # rows per second at most

    @classmethod
    def load(cls, path: Path) -> AppConfig:
        raw = json.loads(path.read_text())
        return cls(
            listen=raw["listen"],
            sites=dict(raw["sites"]),
            site=raw["site"],
            ledger=Path(raw["ledger"]),
            rate=float(raw.get("rate", 200.0)),
        )


@dataclass
class Writer:
    """The write loop and its state; the HTTP handlers steer it."""

    config: AppConfig
    site: str = ""
    writing: bool = True
    rows: int = 0
    last_commit_at: float = 0.0
    last_commit_site: str = ""
    last_error: str | None = None
    _in_flight: bool = False
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.site = self.site or self.config.site
        self._probe_lock = threading.Lock()
        self._probe_conn: psycopg.Connection[Any] | None = None
        self._probe_site = ""
        self._ledger = self.config.ledger.open("a", encoding="utf-8")
        self._next_id = 1

    def run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        conn_site = ""
        pause = 1.0 / self.config.rate
        while not self._stop.is_set():
            with self._cond:
                while not self.writing and not self._stop.is_set():
                    self._cond.wait()
                if self._stop.is_set():
                    break
                site = self.site
                self._in_flight = True
            try:
                if conn is None or conn_site != site:
                    if conn is not None:
                        conn.close()
                    conn, conn_site = None, site
                    conn = psycopg.connect(self.config.sites[site], autocommit=True)
                    row = conn.execute("SELECT coalesce(max(id), 0) FROM drill_rows").fetchone()
                    self._next_id = max(self._next_id, (row[0] if row else 0) + 1)
                row_id = self._next_id
                self._next_id += 1
                conn.execute("INSERT INTO drill_rows (id, site) VALUES (%s, %s)", (row_id, site))
                # Acknowledged: only now is the row committed as far as the app knows.
                self._ledger.write(f"{row_id} {time.time():.6f}\n")
                self._ledger.flush()
                with self._cond:
                    self.rows += 1
                    self.last_commit_at = time.monotonic()
                    self.last_commit_site = site
                    self.last_error = None
            except psycopg.Error as exc:
                with self._cond:
                    self.last_error = f"{type(exc).__name__}: {str(exc).strip()}"
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.05)
            finally:
                with self._cond:
                    self._in_flight = False
                    self._cond.notify_all()
            time.sleep(pause)
        if conn is not None:
            conn.close()
        self._ledger.close()

    def drain(self) -> None:
        with self._cond:
            self.writing = False
            self._cond.notify_all()
            while self._in_flight:
                self._cond.wait()

    def point(self, site: str) -> None:
        with self._cond:
            self.site = site
            self.writing = True
            self._cond.notify_all()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    def status(self) -> dict[str, Any]:
        with self._cond:
            age = time.monotonic() - self.last_commit_at if self.last_commit_at else None
            return {
                "site": self.site,
                "writing": self.writing,
                "rows": self.rows,
                "last_commit_site": self.last_commit_site or None,
                "last_commit_age_s": round(age, 3) if age is not None else None,
                "last_error": self.last_error,
            }

    def probe_write(self) -> tuple[bool, str | None]:
        """One probe write at the site the app writes at (refused while drained): whether
        PostgreSQL acknowledged it, and why not."""
        with self._probe_lock:
            with self._cond:
                writing, site = self.writing, self.site
            if not writing:
                return False, "drained: not writing"
            try:
                if self._probe_conn is None or self._probe_site != site:
                    if self._probe_conn is not None:
                        self._probe_conn.close()
                    self._probe_conn = None
                    self._probe_conn = psycopg.connect(self.config.sites[site], autocommit=True)
                    self._probe_site = site
                self._probe_conn.execute("INSERT INTO drill_probe (site) VALUES (%s)", (site,))
                return True, None
            except psycopg.Error as exc:
                if self._probe_conn is not None:
                    self._probe_conn.close()
                self._probe_conn = None
                return False, f"{type(exc).__name__}: {str(exc).strip()}"

    def healthy_at(self, site: str) -> bool:
        with self._cond:
            return (
                self.writing
                and self.site == site
                and self.last_commit_site == site
                and time.monotonic() - self.last_commit_at <= FRESH_S
            )


class JsonHandler(BaseHTTPRequestHandler):
    """Replies in JSON and logs nothing (the drill's output stays clean)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, code: int, body: dict[str, Any]) -> None:
        data = (json.dumps(body) + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _handler(writer: Writer) -> type[BaseHTTPRequestHandler]:
    class Handler(JsonHandler):
        def _site(self) -> str | None:
            return parse_qs(urlsplit(self.path).query).get("site", [None])[0]

        def do_GET(self) -> None:
            if urlsplit(self.path).path != "/health":
                self._reply(404, {"error": "not found"})
                return
            site = self._site() or writer.site
            self._reply(200 if writer.healthy_at(site) else 503, writer.status())

        def do_POST(self) -> None:
            path = urlsplit(self.path).path
            if path == "/drain":
                writer.drain()
                self._reply(200, writer.status())
            elif path == "/point":
                site = self._site()
                if site not in writer.config.sites:
                    self._reply(400, {"error": f"unknown site {site!r}"})
                    return
                writer.point(site)
                self._reply(200, writer.status())
            elif path == "/write":
                ok, why = writer.probe_write()
                self._reply(200 if ok else 503, {"ok": ok, "error": why})
            else:
                self._reply(404, {"error": "not found"})

    return Handler


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m orchestrator.lab.rowapp CONFIG.json", file=sys.stderr)
        return 2
    config = AppConfig.load(Path(args[0]))
    writer = Writer(config)
    host, _, port = config.listen.rpartition(":")
    server = ThreadingHTTPServer((host, int(port)), _handler(writer))
    server.daemon_threads = True

    def on_signal(signum: int, frame: Any) -> None:
        writer.stop()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    loop = threading.Thread(target=writer.run, name="writer")
    loop.start()
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        writer.stop()
        loop.join(timeout=5)
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
