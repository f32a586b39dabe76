"""`drx check site-b` on the PostgreSQL lab (runbooks/postgres.yaml, real clusters behind real
sshd hosts, commands through `sudo: postgres`): the readiness checks (replica streaming, slot
active) and the RPO exposure in WAL bytes — ready while replication streams, not ready (with
the exposure still measured, from the slot) once the replica is down."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.lab.postgres import PostgresLab
from tests.test_lab_postgres import lab_root  # noqa: F401  (the lab directory fixture)

pytestmark = [pytest.mark.postgres, pytest.mark.sshd]

RUNBOOK = Path(__file__).resolve().parents[1] / "runbooks" / "postgres.yaml"


@pytest.fixture
def pg(request: pytest.FixtureRequest) -> Iterator[PostgresLab]:
    """A started PostgreSQL lab (fails under CI=true without PostgreSQL, else skips)."""
    with PostgresLab(request.getfixturevalue("lab_root")) as lab:
        lab.start()
        yield lab


def _check(pg: PostgresLab) -> tuple[int, dict[str, Any]]:
    args = ["-r", str(RUNBOOK), "-i", str(pg.inventory), "--state-dir", str(pg.state_dir)]
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "check", "site-b", "--format", "json", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode, json.loads(proc.stdout)


@pytest.mark.timeout(300)
def test_check_reads_replication_readiness_and_wal_exposure(pg: PostgresLab) -> None:
    """Streaming: exit 0, replica-streaming on db-b ('streaming') and slot-active on db-a
    ('t') pass, the RPO exposure is a byte count read at db-a, the card took well under the
    1 s it is meant to. Replica stopped: exit 2, both readiness checks fail, and the exposure
    is still measured (from the slot's restart point)."""
    code, doc = _check(pg)
    assert code == 0, doc["problems"]
    got = {(r["name"], r["host"]): r for r in doc["readiness"]}
    assert got["replica-streaming", "db-b"]["value"] == "streaming"
    assert got["slot-active", "db-a"]["value"] == "t"
    assert all(r["rc"] == 0 and r["ok"] for r in got.values())
    rpo = doc["card"]["rpo_exposure"]
    assert (rpo["unit"], rpo["host"], rpo["target"]) == ("bytes", "db-a", 0)
    assert isinstance(rpo["value"], int) and rpo["value"] >= 0
    assert doc["card"]["verdict"].startswith("ready: expect ")
    assert doc["seconds"] < 5  # measured ~0.3 s; generous for a loaded machine
    PostgresLab._stop_cluster(pg.nodes["db-b"])  # the replica goes down
    code, doc = _check(pg)
    assert code == 2
    got = {(r["name"], r["host"]): r for r in doc["readiness"]}
    assert not got["replica-streaming", "db-b"]["ok"]
    assert not got["slot-active", "db-a"]["ok"] and got["slot-active", "db-a"]["value"] == "f"
    assert doc["card"]["verdict"].startswith("NOT READY: ")
    assert isinstance(doc["card"]["rpo_exposure"]["value"], int)
