"""drx serve: the API's security rules, and the live page in a real browser (Playwright driving
Debian's Chromium, nothing downloaded) over a drill on real sshd hosts: a step turns from
running to succeeded without a reload, and a gate approved from the page lets the run go on,
recorded with the token's NAME."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.lab.sshd import free_port
from tests.drill import World

pytestmark = pytest.mark.chromium

TOKEN = "s3cret-token-of-dana"

RUNBOOK = """
    name: warroom
    rto_target: 5m
    steps:
      - {id: prep, hosts: db@target, run: 'sleep {{ vars.prep }}; echo prepped {{ vars.db_password | default("-") }}', undo: 'true'}
      - {id: promote, kind: manual, prompt: "Promote {{ target }}?", needs: [prep]}
      - {id: after, hosts: db@target, run: 'touch "$DRX_HOST_DIR/after"', needs: [promote], undo: 'true'}
"""


class Served:
    def __init__(self, base: str, proc: subprocess.Popen[str]) -> None:
        self.base = base
        self.proc = proc

    def call(
        self, path: str, *, body: bytes | None = None, token: str | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(
            self.base + path, data=body, method="POST" if body is not None else "GET"
        )
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=20) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()


def serve_cmd(state: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator.cli", "serve", *args, "--state-dir", str(state)]


@pytest.fixture
def served(world: World, tmp_path: Path) -> Iterator[Served]:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# who may act\ndana {hashlib.sha256(TOKEN.encode()).hexdigest()}\n")
    port = free_port("127.0.0.1")
    proc = subprocess.Popen(
        serve_cmd(world.state, "--bind", f"127.0.0.1:{port}", "--tokens", str(tokens)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    s = Served(f"http://127.0.0.1:{port}", proc)
    deadline = time.monotonic() + 30
    while True:
        try:
            if s.call("/api/runs")[0] == 200:
                break
        except OSError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
        time.sleep(0.1)
    try:
        yield s
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def wait_for(check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def running_run(world: World) -> str:
    wait_for(lambda: bool(world.run_dirs()) and (world.run_dirs()[-1] / "journal.jsonl").exists())
    return world.run_dirs()[-1].name


@pytest.mark.parametrize("world", ["local"], indirect=True)
def test_bind_and_tokens_are_checked(world: World, tmp_path: Path) -> None:
    """Binding beyond loopback without --tokens, and a malformed tokens file (file:line), are
    refused with exit 2 before anything listens."""
    out = subprocess.run(
        serve_cmd(world.state, "--bind", "0.0.0.0:1"), capture_output=True, text=True
    )
    assert out.returncode == 2 and "--tokens" in out.stderr
    bad = tmp_path / "tokens"
    bad.write_text(f"ok {'a' * 64}\nplain-token-here\n")
    out = subprocess.run(
        serve_cmd(world.state, "--tokens", str(bad)), capture_output=True, text=True
    )
    assert out.returncode == 2 and f"{bad}:2" in out.stderr


@pytest.mark.parametrize("world", ["local"], indirect=True)
def test_posts_need_a_token_and_bad_requests_change_nothing(world: World, served: Served) -> None:
    """Every POST without a valid bearer token is 401; an unknown action 404 and a body too
    large 400, and the gate still waits; every response carries a strict CSP; a token's
    approval is recorded as 'NAME via web'."""
    world.write_runbook(RUNBOOK)
    secret = "hunter2-of-the-db"
    proc = world.spawn(
        "failover", "site-b", "--var", "prep=0", "--secret-var", f"db_password={secret}"
    )
    try:
        run_id = running_run(world)
        wait_for(lambda: any(e["event"] == "gate_waiting" for e in world.journal()))
        path = f"/api/runs/{run_id}"
        assert served.call(path + "/approve", body=b"{}")[0] == 401
        assert served.call(path + "/approve", body=b"{}", token="wrong")[0] == 401
        assert served.call(path + "/launch", body=b"{}", token=TOKEN)[0] == 404
        assert served.call(path + "/approve", body=b"x" * 5000, token=TOKEN)[0] == 400
        assert served.call(path + "/approve", body=b"[1]", token=TOKEN)[0] == 400
        code, headers, body = served.call(path)
        assert code == 200 and json.loads(body)["waiting_gates"] == ["promote"]
        assert "default-src 'none'" in headers["content-security-policy"]
        code, _, body = served.call(path + "/approve", body=b'{"comment": "lgtm"}', token=TOKEN)
        assert code == 200, body
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()  # close its pipes, also when the test failed half-way
    assert proc.returncode == 0
    gate = world.step(world.summary(), "promote")
    assert gate["approved_by"] == "dana" and gate["approved_via"] == "web"
    code, headers, body = served.call("/metrics")
    assert code == 200 and b"drx_last_run_succeeded" in body
    code, _, body = served.call(f"/api/runs/{run_id}/events")
    lines = [
        json.loads(line[6:]) for line in body.decode().splitlines() if line.startswith("data: ")
    ]
    assert lines[0]["event"] == "run_started" and lines[-1]["event"] == "run_finished"
    assert len(lines) == len(world.journal())  # one SSE event per journal event
    req = urllib.request.Request(served.base + f"/api/runs/{run_id}/events")
    req.add_header("Last-Event-ID", "3")
    with urllib.request.urlopen(req, timeout=20) as resp:
        ids = [line for line in resp.read().decode().splitlines() if line.startswith("id: ")]
    assert ids[0] == "id: 4" and len(ids) == len(lines) - 3  # resumed after the third
    for page in ("/events", "", "/report.html", "/report.json"):
        where = f"/runs/{run_id}{page}" if page.startswith("/report") else f"{path}{page}"
        code, _, body = served.call(where)
        assert code == 200 and secret.encode() not in body, where
    assert b"prepped ***" in served.call(f"{path}/events")[2]


@pytest.mark.parametrize("world", ["local"], indirect=True)
def test_stream_of_a_crashed_run_ends(world: World, served: Served) -> None:
    """The event stream of a run whose controller died (no run_finished line, nobody holds
    the lock) gives what the journal has and ends, instead of hanging its watchers."""
    world.write_runbook(RUNBOOK)
    proc = world.spawn("failover", "site-b", "--var", "prep=0")
    try:
        run_id = running_run(world)
        wait_for(lambda: any(e["event"] == "gate_waiting" for e in world.journal()))
    finally:
        proc.kill()
        proc.communicate()
    code, _, body = served.call(f"/api/runs/{run_id}/events")
    events = [json.loads(x[6:]) for x in body.decode().splitlines() if x.startswith("data: ")]
    assert code == 200 and events[-1]["event"] == "gate_waiting"


@pytest.mark.parametrize("world", ["ssh"], indirect=True)
def test_live_page_in_chromium_over_sshd(world: World, served: Served, tmp_path: Path) -> None:
    """The page of a drill on real sshd hosts shows prep turning from running to succeeded
    without a reload; the gate's Approve button (with the token) lets the run go on, and the
    summary names the token's NAME."""
    from playwright.sync_api import sync_playwright

    world.write_runbook(RUNBOOK)
    proc = world.spawn("failover", "site-b", "--var", "prep=4")
    try:
        run_id = running_run(world)
        wait_for(lambda: any(e["event"] == "host_started" for e in world.journal()))
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"]
            )
            try:
                page = browser.new_page()
                errors: list[str] = []
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.goto(f"{served.base}/runs/{run_id}")
                page.wait_for_selector("#step-prep[data-status=running]", timeout=20000)
                loaded = time.time()
                page.evaluate("window.sameLoad = true")  # gone if the page were reloaded
                page.wait_for_selector("#step-prep[data-status=succeeded]", timeout=20000)
                assert page.get_attribute("#step-prep", "data-seen") == "running succeeded"
                assert page.evaluate("window.sameLoad === true")
                page.wait_for_selector("#approve-promote", timeout=20000)
                page.screenshot(path=str(Path("/tmp") / "drx-serve-gate.png"), full_page=True)
                page.fill("#token", TOKEN)
                page.fill("#comment", "from the war room")
                page.click("#approve-promote")
                page.wait_for_selector("#step-after[data-status=succeeded]", timeout=30000)
                # a selector, not wait_for_function: the page's CSP forbids the eval it polls with
                page.wait_for_selector("#status:text-is('succeeded')", timeout=30000)
                page.screenshot(path=str(Path("/tmp") / "drx-serve-done.png"), full_page=True)
                page.goto(served.base + "/")  # the runs list: this run, its RTO in the trend
                page.wait_for_selector(f"a[href='/runs/{run_id}']")
                assert page.locator("table.trend meter").count() == 1
                page.screenshot(path=str(Path("/tmp") / "drx-serve-runs.png"), full_page=True)
                assert not [e for e in errors if "Content Security Policy" in e], errors
            finally:
                browser.close()
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()  # close its pipes, also when the test failed half-way
    assert proc.returncode == 0
    gate = world.step(world.summary(), "promote")
    assert gate["approved_by"] == "dana" and gate["approved_via"] == "web"
    assert gate["approval_comment"] == "from the war room"
    assert world.host_file("db-b", "after").exists()
    prep_end = next(
        e for e in world.journal() if e["event"] == "step_finished" and e["step"] == "prep"
    )
    started = next(e for e in world.journal() if e["event"] == "run_started")
    assert started["wall0"] + prep_end["t"] > loaded  # it turned while the page watched


def test_served_from_etcd_a_token_approves_a_run_of_the_other_controller(
    etcd: Any, etcd_prefix: str, tmp_path: Path
) -> None:
    """drx serve on controller B over the etcd store lists the run controller A is running,
    streams its events, and a token holder's approve reaches A (through the store), recorded
    as NAME via web."""
    from tests.drill import world_dir

    root = world_dir()
    w = World(root, "local")
    w.write_inventory()
    w.write_runbook(RUNBOOK)
    url = etcd.url(etcd_prefix, ttl="2s")
    tokens = tmp_path / "tokens"
    tokens.write_text(f"dana {hashlib.sha256(TOKEN.encode()).hexdigest()}\n")
    port = free_port("127.0.0.1")
    base = [sys.executable, "-m", "orchestrator.cli"]
    server = subprocess.Popen(
        [
            *base,
            "serve",
            "--bind",
            f"127.0.0.1:{port}",
            "--tokens",
            str(tokens),
            "--state-dir",
            str(root / "b"),
            "--state-url",
            url,
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    run = subprocess.Popen(
        [
            *base,
            "failover",
            "site-b",
            "--var",
            "prep=0",
            "-r",
            str(w.runbook),
            "-i",
            str(w.inventory),
            "--state-dir",
            str(root / "a"),
            "--state-url",
            url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    s = Served(f"http://127.0.0.1:{port}", server)
    try:

        def waiting() -> bool:
            try:
                code, _, body = s.call("/api/runs")
                runs = json.loads(body) if code == 200 else []
                if not runs:
                    return False
                code, _, body = s.call(f"/api/runs/{runs[-1]['run_id']}")
                return json.loads(body).get("waiting_gates") == ["promote"]
            except OSError:
                return False

        wait_for(waiting, 40)
        run_id = json.loads(s.call("/api/runs")[2])[-1]["run_id"]
        code, _, body = s.call(
            f"/api/runs/{run_id}/approve", body=b'{"gate": "promote"}', token=TOKEN
        )
        assert code == 200, body
        _, err = run.communicate(timeout=60)
        assert run.returncode == 0, err
        code, _, body = s.call(f"/api/runs/{run_id}/events")
        events = [json.loads(x[6:]) for x in body.decode().splitlines() if x.startswith("data: ")]
        answered = next(e for e in events if e["event"] == "gate_answered")
        assert answered["by"] == "dana" and answered["via"] == "web"
        assert events[-1]["event"] == "run_finished"
    finally:
        for proc in (run, server):
            if proc.poll() is None:
                proc.terminate()
                proc.communicate(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("world", ["local"], indirect=True)
def test_abort_from_the_page_cancels_the_run(world: World, served: Served) -> None:
    """POST abort with a token acts as a first Ctrl-C: the run ends cancelled (exit 130) and
    its message names the token's NAME via web and the comment."""
    world.write_runbook(RUNBOOK)
    proc = world.spawn("failover", "site-b", "--var", "prep=0")
    try:
        run_id = running_run(world)
        wait_for(lambda: any(e["event"] == "gate_waiting" for e in world.journal()))
        body = b'{"comment": "wrong window"}'
        code, _, answer = served.call(f"/api/runs/{run_id}/abort", body=body, token=TOKEN)
        assert code == 200, answer
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()  # close its pipes, also when the test failed half-way
    assert proc.returncode == 130
    summary = world.summary()
    assert summary["message"] == 'cancelled by dana via web: "wrong window"'
    code, _, answer = served.call(f"/api/runs/{run_id}/abort", body=b"{}", token=TOKEN)
    assert code == 409 and b"is not running" in answer  # the run has ended


@pytest.mark.parametrize("world", ["local"], indirect=True)
def test_serves_https_with_a_certificate(world: World, tmp_path: Path) -> None:
    """With --tls-cert/--tls-key the page and API are served over HTTPS (a client trusting the
    CA reads /api/runs); binding beyond loopback without them warns that tokens cross in
    clear."""
    import ssl

    from orchestrator.lab.etcd import make_tls

    tls = make_tls(tmp_path / "tls", ["127.0.0.1"])
    tokens = tmp_path / "tokens"
    tokens.write_text(f"dana {hashlib.sha256(TOKEN.encode()).hexdigest()}\n")
    port = free_port("127.0.0.1")
    args = ["--tls-cert", str(tls.server_cert), "--tls-key", str(tls.server_key)]
    proc = subprocess.Popen(
        serve_cmd(world.state, "--bind", f"127.0.0.1:{port}", "--tokens", str(tokens), *args),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        context = ssl.create_default_context(cafile=str(tls.ca))

        def up() -> bool:
            try:
                with urllib.request.urlopen(
                    f"https://127.0.0.1:{port}/api/runs", timeout=5, context=context
                ) as resp:
                    return resp.status == 200 and json.loads(resp.read()) == []
            except OSError:
                return False

        wait_for(up)
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    out = subprocess.run(
        serve_cmd(world.state, "--bind", "192.0.2.1:8765", "--tokens", str(tokens)),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "in clear" in out.stderr
