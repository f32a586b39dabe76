"""A small world for engine tests: a runbook and an inventory written to a temp dir, whose hosts
are either local ("transport: local") or real lab sshd hosts, each with its own state directory;
``run()`` invokes the real CLI in-process and returns its exit code and stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.cli import main
from orchestrator.lab.sshd import Lab

DEFAULT_SITES = {"site-a": ["db-a", "app-a"], "site-b": ["db-b", "app-b"]}


def world_dir() -> Path:
    """A temp dir every lab user can write (pytest's own are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="drx-world-"))
    path.chmod(0o777)
    return path


@dataclass
class World:
    root: Path
    transport: str
    lab: Lab | None = None
    sites: dict[str, list[str]] = field(default_factory=lambda: dict(DEFAULT_SITES))
    host_dirs: dict[str, Path] = field(default_factory=dict)
    lab_names: dict[str, str] = field(default_factory=dict)

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def runbook(self) -> Path:
        return self.root / "runbook.yaml"

    @property
    def inventory(self) -> Path:
        return self.root / "inventory.yaml"

    def write_inventory(self, *, extra_defaults: dict[str, Any] | None = None, roles=None) -> None:
        sites: dict[str, Any] = {}
        for site, names in self.sites.items():
            hosts = {}
            for name in names:
                hdir = self.root / "hosts" / name
                hdir.mkdir(parents=True, exist_ok=True)
                hdir.chmod(0o777)
                self.host_dirs[name] = hdir
                role = (roles or {}).get(name, [name.split("-")[0]])
                entry: dict[str, Any] = {"roles": role, "env": {"DRX_HOST_DIR": str(hdir)}}
                if self.transport == "ssh":
                    assert self.lab is not None
                    lh = self.lab.host(self.lab_names[name])
                    entry.update(address=lh.address, port=lh.port)
                else:
                    entry["address"] = "127.0.0.1"
                hosts[name] = entry
            sites[site] = {"vars": {"vip": f"vip-{site}"}, "hosts": hosts}
        defaults: dict[str, Any] = {"transport": self.transport, "connect_timeout": "3s"}
        if self.transport == "ssh":
            assert self.lab is not None
            defaults.update(
                user=self.lab.user,
                identity_file=str(self.lab.identity_file),
                known_hosts=str(self.lab.known_hosts),
                host_key_policy="strict",
            )
        defaults.update(extra_defaults or {})
        doc = {"active": next(iter(self.sites)), "defaults": defaults, "sites": sites}
        self.inventory.write_text(yaml.safe_dump(doc, sort_keys=False))

    def write_runbook(self, text: str) -> None:
        self.runbook.write_text(textwrap.dedent(text))

    def args(self) -> list[str]:
        return ["-r", str(self.runbook), "-i", str(self.inventory), "--state-dir", str(self.state)]

    def run(self, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
        """Run ``drx ARGV`` in-process; (exit code, stderr)."""
        command, rest = argv[0], list(argv[1:])
        opts = [] if command in ("runs", "report", "status", "logs", "bundle") else self.args()[:4]
        code = 0
        try:
            main([command, *rest, *opts, "--state-dir", str(self.state)])
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        self.last_stdout = captured.out
        return code, captured.err

    def spawn(self, *argv: str, **kwargs: Any) -> subprocess.Popen[str]:
        """Start ``drx ARGV`` as a real process in its own process group (for signals)."""
        command, rest = argv[0], list(argv[1:])
        return subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", command, *rest, *self.args()],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env={**os.environ, "NO_COLOR": "1"},
            **kwargs,
        )

    def summaries(self) -> list[dict[str, Any]]:
        runs = sorted((self.state / "runs").iterdir()) if (self.state / "runs").is_dir() else []
        return [
            json.loads((r / "summary.json").read_text())
            for r in runs
            if (r / "summary.json").exists()
        ]

    def summary(self) -> dict[str, Any]:
        return self.summaries()[-1]

    def run_dirs(self) -> list[Path]:
        base = self.state / "runs"
        return sorted(base.iterdir()) if base.is_dir() else []

    def journal(self, run_dir: Path | None = None) -> list[dict[str, Any]]:
        run_dir = run_dir or self.run_dirs()[-1]
        return [json.loads(line) for line in (run_dir / "journal.jsonl").read_text().splitlines()]

    def host_file(self, host: str, name: str) -> Path:
        return self.host_dirs[host] / name

    def step(self, summary: dict[str, Any], step_id: str) -> dict[str, Any]:
        return next(s for s in summary["steps"] if s["id"] == step_id)
