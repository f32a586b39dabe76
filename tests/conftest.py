"""Shared fixtures: a lab of real sshd hosts, and isolation from the user's SSH settings."""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.lab.etcd import EtcdCluster
from orchestrator.lab.sshd import Lab, LabHost


@pytest.fixture(autouse=True)
def _no_drx_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the caller's DRX_* variables (state dir, files, secrets) out of every test."""
    for name in list(os.environ):
        if name.startswith("DRX_"):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _isolated_ssh_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Point HOME at an empty directory and drop the SSH agent, so that nothing a developer
    has in ~/.ssh (config, known_hosts, keys, agent) changes what a test sees."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return home


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """The session's lab of sshd hosts (none started until asked for). Fails — never skips —
    when sshd cannot run here: the SSH tests are the point of the suite."""
    # Not under pytest's tmp dirs: those are 0700, and the lab user must reach its files.
    root = Path(tempfile.mkdtemp(prefix="drx-lab-"))
    lab = Lab(root)
    try:
        yield lab
    finally:
        lab.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def lab_hosts(lab: Lab) -> Callable[[int], list[LabHost]]:
    """``lab_hosts(n)``: n shared, running hosts (started on first need). Tests must not break
    them; a test that kills, pauses or re-keys a host takes a ``fresh_host`` instead."""

    def get(n: int) -> list[LabHost]:
        names = [f"shared-{i}" for i in range(n)]
        for name in names:
            if name not in lab.hosts:
                lab.add_host(name)
        return lab.start(names)

    return get


@pytest.fixture
def fresh_host(lab: Lab) -> Iterator[Callable[[], LabHost]]:
    """``fresh_host()``: a newly started host of the test's own, removed after the test."""
    made: list[str] = []
    counter = itertools.count()

    def make() -> LabHost:
        name = f"fresh-{id(made):x}-{next(counter)}"
        lab.add_host(name)
        made.append(name)
        return lab.start([name])[0]

    yield make
    for name in made:
        lab.remove(name)


@pytest.fixture(params=["local", "ssh"])
def world(request: pytest.FixtureRequest) -> Iterator[object]:
    """A two-site world (db-a, app-a | db-b, app-b) on local hosts and on real sshd hosts."""
    from tests.drill import DEFAULT_SITES, World, world_dir

    root = world_dir()
    w = World(root, request.param)
    if request.param == "ssh":
        lab = request.getfixturevalue("lab")
        get = request.getfixturevalue("lab_hosts")
        names = [n for hosts in DEFAULT_SITES.values() for n in hosts]
        lab_hosts = get(len(names))
        w.lab = lab
        w.lab_names = {n: h.name for n, h in zip(names, lab_hosts, strict=True)}
    w.write_inventory()
    try:
        yield w
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def etcd() -> Iterator[EtcdCluster]:
    """A 3-member etcd cluster on loopback shared by the session (started on first need); tests
    keep to prefixes of their own and never break it. Fails — never skips — when etcd cannot
    run here."""
    root = Path(tempfile.mkdtemp(prefix="drx-etcd-"))
    cluster = EtcdCluster(root, first_address=1)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def fresh_etcd() -> Iterator[EtcdCluster]:
    """A 3-member cluster of the test's own (site-a, site-b, witness), for tests that kill,
    pause or restart members; removed after the test."""
    root = Path(tempfile.mkdtemp(prefix="drx-etcd-"))
    cluster = EtcdCluster(root, names=("site-a", "site-b", "witness"), first_address=11)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def etcd_prefix(request: pytest.FixtureRequest) -> str:
    """A store prefix no other test uses."""
    return f"t-{request.node.name[:40]}-{next(_prefixes)}".replace("[", "-").replace("]", "")


_prefixes = itertools.count()


class Receiver:
    """A loopback HTTP receiver process (tests/http_receiver.py) and what it was sent."""

    def __init__(self, record: Path, *, status: int = 200, delay: float = 0.0) -> None:
        self.record = record
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("http_receiver.py")),
                str(record),
                "--status",
                str(status),
                "--delay",
                str(delay),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    @property
    def base(self) -> str:
        return f"127.0.0.1:{self.port}"

    def requests(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        out = []
        for line in self.record.read_text().splitlines():
            entry = json.loads(line)
            entry["body"] = base64.b64decode(entry["body"])
            out.append(entry)
        return out

    def stop(self) -> None:
        os.kill(self.proc.pid, signal.SIGTERM)
        self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def http_receiver(tmp_path: Path) -> Iterator[Callable[..., Receiver]]:
    """``http_receiver(status=200, delay=0)``: a started loopback HTTP receiver process,
    stopped by pid after the test."""
    started: list[Receiver] = []

    def start(**kwargs: Any) -> Receiver:
        r = Receiver(tmp_path / f"received-{len(started)}.jsonl", **kwargs)
        started.append(r)
        return r

    yield start
    for r in started:
        r.stop()
