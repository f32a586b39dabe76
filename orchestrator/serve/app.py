"""The ASGI app of ``drx serve`` (Starlette): the runs, each run live by Server-Sent Events, the
reports, the API, /metrics, and the gate buttons for token holders (docs/reference.md,
"drx serve").

Everything is read from the store on request; nothing about a run is kept between requests, so
the server's memory does not grow with the runs or the watchers. An event stream follows a run's
journal from a byte offset (a state directory) or from a line count (etcd) and ends with the run.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from orchestrator.record.store import LocalStore, Store
from orchestrator.serve.tokens import holder
from orchestrator.vocab import RunStatus

#: a POST body larger than this is refused (400) before it is read
MAX_BODY = 4096
#: how often an event stream looks for new journal lines
TAIL_PAUSE_S = 0.05
#: how much of a journal an event stream reads at a time (bounded: 50 watchers hold a few MB)
CHUNK = 1 << 16
ACTIONS = ("approve", "deny", "abort")
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_STATIC = {"app.js": "text/javascript", "app.css": "text/css"}


def _static(name: str) -> str:
    return resources.files("orchestrator.serve").joinpath("static", name).read_text("utf-8")


_PAGES = jinja2.Environment(
    loader=jinja2.FunctionLoader(lambda name: _static(name)),
    autoescape=True,
)


class Server:
    """The app's state: the store and the tokens (sha256 → NAME; empty: no POST is allowed)."""

    def __init__(self, store: Store, tokens: dict[str, str]) -> None:
        self.store = store
        self.tokens = tokens

    # -- pages -----------------------------------------------------------------------------------
    async def index(self, request: Request) -> Response:
        runs = await asyncio.to_thread(self._runs)
        page = _PAGES.get_template("index.html").render(runs=runs, trend=_trend(runs))
        return _html(page)

    async def run_page(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        if not await asyncio.to_thread(self.store.has_run, run_id):
            return _not_found(f"no run '{run_id}'")
        page = _PAGES.get_template("run.html").render(run_id=run_id, tokens=bool(self.tokens))
        return _html(page)

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _STATIC:
            return _not_found("no such file")
        return Response(_static(name), media_type=_STATIC[name], headers=SECURITY_HEADERS)

    async def report(self, request: Request) -> Response:
        from orchestrator.record.runs import load_summary
        from orchestrator.report.render import FORMATS, render

        run_id, fmt = request.path_params["run_id"], request.path_params["fmt"]
        if fmt not in FORMATS:
            return _not_found(f"no format '{fmt}' (formats: {', '.join(FORMATS)})")
        if not await asyncio.to_thread(self.store.has_run, run_id):
            return _not_found(f"no run '{run_id}'")
        summary = await asyncio.to_thread(load_summary, self.store, run_id)
        text = await asyncio.to_thread(render, summary, fmt)
        kind = {
            "html": "text/html",
            "json": "application/json",
            "junit": "application/xml",
            "otlp": "application/json",
        }.get(fmt, "text/plain")
        return Response(text, media_type=f"{kind}; charset=utf-8", headers=SECURITY_HEADERS)

    # -- the API ---------------------------------------------------------------------------------
    def _runs(self) -> list[dict[str, Any]]:
        from orchestrator.record.runs import load_summaries

        return [s.to_dict() for s in load_summaries(self.store)]

    async def api_runs(self, request: Request) -> Response:
        return _json(await asyncio.to_thread(self._runs))

    async def api_run(self, request: Request) -> Response:
        from orchestrator.cli.control import waiting_gates
        from orchestrator.record.runs import load_summary

        run_id = request.path_params["run_id"]
        if not await asyncio.to_thread(self.store.has_run, run_id):
            return _not_found(f"no run '{run_id}'")
        summary = (await asyncio.to_thread(load_summary, self.store, run_id)).to_dict()
        if summary.get("status") == RunStatus.RUNNING:
            events = await asyncio.to_thread(self.store.read_events, run_id)
            summary["waiting_gates"] = waiting_gates(events)
        return _json(summary)

    async def events(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        if not await asyncio.to_thread(self.store.has_run, run_id):
            return _not_found(f"no run '{run_id}'")
        try:
            after = int(request.headers.get("last-event-id") or 0)
        except ValueError:
            after = 0
        return StreamingResponse(
            self._stream(request, run_id, max(after, 0)),
            media_type="text/event-stream",
            headers={**SECURITY_HEADERS, "X-Accel-Buffering": "no"},
        )

    async def _stream(self, request: Request, run_id: str, after: int) -> AsyncIterator[str]:
        """One SSE message per journal event (``id`` = its line number), from line
        ``after + 1``, until the run finishes or the client goes."""
        tail = _tail_for(self.store, run_id)
        seen = 0
        idle_since = time.monotonic()
        last_pass = False
        yield "retry: 1000\n\n"
        while True:
            events = await asyncio.to_thread(tail.more)
            finished = False
            for line in events:
                seen += 1
                if seen <= after:
                    continue
                # the journal line is already one JSON object: passed on as is, never parsed
                finished = finished or b'"run_finished"' in line[:80]
                yield f"id: {seen}\ndata: {line.decode('utf-8', 'replace')}\n\n"
            if finished or last_pass or await request.is_disconnected():
                return
            if events:
                idle_since = time.monotonic()
            else:
                # a run that ended without its last line (crashed) must not hold the stream
                # open: once quiet for a second, a run nobody holds gets one last read
                if time.monotonic() - idle_since > 1.0:
                    idle_since = time.monotonic()
                    last_pass = not await asyncio.to_thread(_is_running, self.store, run_id)
                    if last_pass:
                        continue
                await asyncio.sleep(tail.pause)

    async def act(self, request: Request) -> Response:
        """POST /api/runs/{id}/{action}: a token holder answers a gate or aborts the run."""
        from orchestrator.cli.control import ANSWER_WAIT_S, running_run
        from orchestrator.errors import DrxError
        from orchestrator.record.control import Request as Ask
        from orchestrator.record.control import channel_for, new_request_id

        name = holder(self.tokens, request.headers.get("authorization"))
        if name is None:
            return _json({"error": "a valid bearer token is required"}, 401)
        run_id, action = request.path_params["run_id"], request.path_params["action"]
        if action not in ACTIONS:
            return _not_found(f"no action '{action}' (actions: {', '.join(ACTIONS)})")
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
            return _json({"error": f"the body is over {MAX_BODY} bytes"}, 400)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return _json({"error": f"the body is over {MAX_BODY} bytes"}, 400)
        try:
            data = json.loads(body) if body.strip() else {}
            if not isinstance(data, dict):
                raise ValueError("not an object")
            gate, comment = data.get("gate"), data.get("comment")
            if not all(v is None or isinstance(v, str) for v in (gate, comment)):
                raise ValueError("gate and comment are strings")
        except ValueError as exc:
            return _json({"error": f"the body is not a JSON object: {exc}"}, 400)
        if not await asyncio.to_thread(self.store.has_run, run_id):
            return _not_found(f"no run '{run_id}'")
        try:  # a run that has ended is refused at once (as drx approve refuses it)
            await asyncio.to_thread(running_run, self.store, run_id)
        except DrxError as exc:
            return _json({"ok": False, "message": str(exc)}, 409)
        ask = Ask(new_request_id(), action, gate, name, "web", comment)
        channel = channel_for(self.store)
        await asyncio.to_thread(channel.send, run_id, ask)
        answer = await asyncio.to_thread(channel.wait_answer, run_id, ask.id, ANSWER_WAIT_S)
        if answer is None:
            return _json({"error": "the run's controller did not answer"}, 409)
        return _json(answer, 200 if answer.get("ok") else 409)

    async def metrics(self, request: Request) -> Response:
        from orchestrator.serve.metrics import exposition

        text, kind = await asyncio.to_thread(exposition, self.store)
        return Response(text, media_type=kind)


def build_app(store: Store, tokens: dict[str, str]) -> Starlette:
    """The ASGI app over ``store``."""
    s = Server(store, tokens)
    routes = [
        Route("/", s.index),
        Route("/runs/{run_id}", s.run_page),
        Route("/runs/{run_id}/report.{fmt}", s.report),
        Route("/static/{name}", s.static),
        Route("/api/runs", s.api_runs),
        Route("/api/runs/{run_id}", s.api_run),
        Route("/api/runs/{run_id}/events", s.events),
        Route("/api/runs/{run_id}/{action}", s.act, methods=["POST"]),
        Route("/metrics", s.metrics),
    ]
    return Starlette(routes=routes, middleware=[Middleware(SecureHeaders)])


class SecureHeaders:
    """Every response carries the CSP and the other security headers, Starlette's own 404 and
    405 answers too."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def secured(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for key, value in SECURITY_HEADERS.items():
                    if key not in headers:
                        headers[key] = value
            await send(message)

        await self.app(scope, receive, secured)


class _Tail:
    """New journal events of a run since the last call."""

    #: the rest between two looks when nothing was new
    pause = TAIL_PAUSE_S

    def more(self) -> list[bytes]:
        raise NotImplementedError


class _FileTail(_Tail):
    """A local journal read from the byte after the last complete line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def more(self) -> list[bytes]:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                data = fh.read(CHUNK)
                # a line longer than a chunk (run_started of a 10,000-step run lists every
                # step): read on to its end, once
                while data and b"\n" not in data:
                    more = fh.read(CHUNK)
                    if not more:
                        break
                    data += more
        except OSError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        return [line for line in data[: end + 1].splitlines() if line.strip()]


class _StoreTail(_Tail):
    """Any store: the whole journal read again, the lines already given skipped (a range
    request to etcd: four a second per watcher, not twenty)."""

    pause = 0.25

    def __init__(self, store: Store, run_id: str) -> None:
        self.store = store
        self.run_id = run_id
        self.given = 0

    def more(self) -> list[bytes]:
        events = self.store.read_journal(self.run_id)[self.given :]
        self.given += len(events)
        return [json.dumps(e).encode() for e in events]


def _tail_for(store: Store, run_id: str) -> _Tail:
    if isinstance(store, LocalStore):
        return _FileTail(store.state_dir / "runs" / run_id / "journal.jsonl")
    return _StoreTail(store, run_id)


def _is_running(store: Store, run_id: str) -> bool:
    holder = store.lock_holder() or ""
    return holder.split(" ", 1)[0] == run_id


def _trend(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Bars of the RTO trend: each finished run's measured RTO against the longest."""
    points = [(r["run_id"], (r.get("rto") or {}).get("measured_s")) for r in runs]
    longest = max((v for _, v in points if isinstance(v, int | float)), default=0) or 1
    return [
        {"run_id": rid, "rto": v, "pct": round(100 * v / longest, 1)}
        for rid, v in points
        if isinstance(v, int | float)
    ]


def _html(page: str) -> Response:
    return Response(page, media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)


def _json(data: Any, status: int = 200) -> Response:
    return JSONResponse(data, status_code=status, headers=SECURITY_HEADERS)


def _not_found(message: str) -> Response:
    return PlainTextResponse(message, status_code=404, headers=SECURITY_HEADERS)
