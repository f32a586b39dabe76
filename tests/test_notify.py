"""Notifications through Apprise to a real HTTP receiver on loopback (json:// webhooks): run
started, gate waiting, RTO at risk, run finished — secrets masked, dead endpoints harmless."""

from __future__ import annotations

import json
import re
import socket
import time
from typing import Any

import yaml

from tests.conftest import Receiver
from tests.drill import World

SECRET_TOKEN = "tok3n-s3cret"
SECRET_PASSWORD = "pa55-w0rd-x"

RUNBOOK = """
    name: notified
    rto_target: 2s
    vars: {db_password: "SECRET_PASSWORD"}
    notify:
      - "json://{{ vars.hook_host }}/{{ vars.hook_token }}"
    steps:
      - {id: prep, hosts: db@target, run: 'sleep 0.5', expect: 5s, undo: 'true'}
      - id: approve
        kind: manual
        prompt: "Promote with {{ vars.db_password }} to {{ target }}?"
        needs: [prep]
      - {id: promote, hosts: db@target, run: 'touch "$DRX_HOST_DIR/promoted"', needs: [approve], undo: 'true'}
""".replace("SECRET_PASSWORD", SECRET_PASSWORD)


def _messages(receiver: Receiver, path: str) -> list[dict[str, Any]]:
    return [json.loads(r["body"]) for r in receiver.requests() if r["path"] == path]


def _wait_for(receiver: Receiver, path: str, count: int, timeout: float = 10.0) -> list[Any]:
    deadline = time.monotonic() + timeout
    while len(_messages(receiver, path)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return _messages(receiver, path)


def test_a_drill_under_yes_notifies_start_rto_risk_and_end_with_secrets_masked(
    world: World, http_receiver, capsys
) -> None:
    """--notify and the runbook's templated `notify:` URL (its token a secret variable) each get
    run started, RTO at risk and run finished (status, RTO vs target, the report command), in
    that order — no "gate waiting": --yes approved it, nobody waited; no message carries a
    secret value."""
    receiver = http_receiver()
    world.write_runbook(RUNBOOK.replace("vars: {", f"vars: {{hook_host: '{receiver.base}', "))
    code, err = world.run(
        capsys,
        "failover",
        "site-b",
        "--yes",
        "--notify",
        f"json://{receiver.base}/cli-hook",
        "--secret-var",
        f"hook_token={SECRET_TOKEN}",
    )
    assert code == 0, err
    run_id = world.summary()["run_id"]
    for path in ("/cli-hook", f"/{SECRET_TOKEN}"):
        messages = _wait_for(receiver, path, 3)
        titles = [m["title"] for m in messages]
        assert len(titles) == 3, titles
        assert "started" in titles[0] and "notified" in titles[0]
        assert "RTO target at risk" in titles[1]  # prep is expected to take 5s of 2s
        assert run_id in titles[2] and "succeeded" in titles[2]
        end = messages[2]["message"]
        assert re.search(r"measured RTO [0-9.]+ ?m?s \(target 2(\.0)? ?s: met\)", end), end
        assert f"report: drx report {run_id}" in end
        assert [m["type"] for m in messages] == ["info", "warning", "success"]
    for r in receiver.requests():
        assert SECRET_PASSWORD.encode() not in r["body"]
        assert SECRET_TOKEN.encode() not in r["body"]
    assert SECRET_TOKEN not in err and SECRET_PASSWORD not in err


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_dead_and_hanging_endpoints_never_fail_or_slow_the_drill(
    world: World, http_receiver, capsys
) -> None:
    """A refused endpoint and one that never answers: the drill succeeds with its usual RTO,
    each failure is a warning in the log, and drx ends within the bounded drain time."""
    from orchestrator.run.notify import DRAIN_S

    hanging = http_receiver(delay=60)
    world.write_runbook("""
        name: quiet
        steps:
          - {id: promote, hosts: db@target, run: 'touch "$DRX_HOST_DIR/promoted"', undo: 'true'}
    """)
    started = time.monotonic()
    code, err = world.run(
        capsys,
        "failover",
        "site-b",
        "--notify",
        f"json://127.0.0.1:{_closed_port()}/dead",
        "--notify",
        f"json://{hanging.base}/hang",
        "--notify",
        "no-such-scheme://x",
    )
    elapsed = time.monotonic() - started
    assert code == 0, err
    assert world.host_file("db-b", "promoted").exists()
    assert world.summary()["rto"]["measured_s"] < 1.0
    assert elapsed < DRAIN_S + 3.0
    assert "/dead failed" in err
    assert "not a notification URL" in err and "no-such-scheme" in err
    assert "not waiting for them" in err


def test_drx_notify_env_and_inventory_notify_list(
    world: World, http_receiver, capsys, monkeypatch
) -> None:
    """DRX_NOTIFY (space-separated URLs) and the inventory's `notify:` list are all notified."""
    receiver = http_receiver()
    monkeypatch.setenv("DRX_NOTIFY", f"json://{receiver.base}/env-1 json://{receiver.base}/env-2")
    doc = yaml.safe_load(world.inventory.read_text())
    doc["notify"] = [f"json://{receiver.base}/inventory"]
    world.inventory.write_text(yaml.safe_dump(doc))
    world.write_runbook("""
        name: quiet
        steps:
          - {id: promote, hosts: db@target, run: 'true', undo: 'true'}
    """)
    code, err = world.run(capsys, "failover", "site-b")
    assert code == 0, err
    for path in ("/env-1", "/env-2", "/inventory"):
        assert len(_wait_for(receiver, path, 2)) == 2, path


def test_a_notify_template_with_an_unknown_name_is_refused(world: World, capsys) -> None:
    """A `notify:` URL naming an undefined variable: exit 2 naming file and line; nothing ran."""
    world.write_runbook("""
        name: bad
        notify: ["json://127.0.0.1:9/{{ vars.nope }}"]
        steps:
          - {id: promote, hosts: db@target, run: 'touch "$DRX_HOST_DIR/promoted"', undo: 'true'}
    """)
    code, err = world.run(capsys, "failover", "site-b")
    assert code == 2
    assert f"{world.runbook}:3:" in err and "notify" in err and "nope" in err
    assert not world.host_file("db-b", "promoted").exists()


def test_a_gate_on_a_terminal_notifies_that_it_waits_with_secrets_masked(
    world: World, http_receiver
) -> None:
    """Without --yes, a gate asking on the terminal sends "gate waiting" (its prompt with the
    secret masked) before the operator answers."""
    from tests.test_live_view import Terminal

    receiver = http_receiver()
    world.write_runbook(RUNBOOK.replace("vars: {", f"vars: {{hook_host: '{receiver.base}', "))
    term = Terminal(
        world, ["failover", "site-b", "--secret-var", f"hook_token={SECRET_TOKEN}"], cols=120
    )
    term.wait_for(lambda s: "? approve:" in s)
    waiting = [m for m in _wait_for(receiver, f"/{SECRET_TOKEN}", 3) if "gate" in m["title"]]
    term.send("y\r")
    assert term.exit_code() == 0, term.text()
    assert len(waiting) == 1 and "gate 'approve' is waiting" in waiting[0]["title"]
    assert waiting[0]["message"] == "Promote with *** to site-b?"
    assert waiting[0]["type"] == "warning"
    for r in receiver.requests():
        assert SECRET_PASSWORD.encode() not in r["body"]
