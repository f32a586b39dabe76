"""~/.ssh/config: drills over real sshd hosts named only by their SSH config aliases; inventory
fields win; host keys are checked under the resolved name; ProxyJump aliases; encrypted keys
through ssh-agent."""

from __future__ import annotations

import os
import pty
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from orchestrator.lab.sshd import Lab, LabHost
from tests.drill import World, world_dir

pytestmark = pytest.mark.sshd

RUNBOOK = """
    name: aliases
    steps:
      - {id: freeze, hosts: app@source, run: 'touch "$DRX_HOST_DIR/frozen"', undo: 'true'}
      - id: promote
        hosts: db@target
        run: 'printf "%s" "$USER" > "$DRX_HOST_DIR/promoted"'
        undo: 'true'
        needs: [freeze]
"""
HOSTS = {"site-a": ["db-a", "app-a"], "site-b": ["db-b", "app-b"]}


def _ssh_config_entry(alias: str, h: LabHost, lab: Lab, **extra: str) -> str:
    lines = [
        f"Host {alias}",
        f"  HostName {h.address}",
        f"  Port {h.port}",
        f"  User {h.user}",
        f"  IdentityFile {extra.pop('identity', lab.identity_file)}",
        f"  UserKnownHostsFile {extra.pop('known_hosts', lab.known_hosts)}",
        "  ConnectTimeout 3",
    ]
    lines += [f"  {k} {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


class AliasWorld:
    """A two-site world whose inventory names hosts only by SSH config aliases."""

    def __init__(self, lab: Lab, hosts: list[LabHost], home: Path) -> None:
        self.lab, self.home = lab, home
        self.world = World(world_dir(), "ssh", lab=lab, sites=dict(HOSTS))
        names = [n for ns in HOSTS.values() for n in ns]
        self.world.lab_names = {n: h.name for n, h in zip(names, hosts, strict=True)}
        self.world.write_runbook(RUNBOOK)
        self.lab_host = {n: lab.host(self.world.lab_names[n]) for n in names}

    def write(
        self,
        *,
        config: str | None = None,
        host_extra: dict[str, dict[str, object]] | None = None,
        defaults: dict[str, object] | None = None,
    ) -> None:
        """Write ~/.ssh/config (every host an alias ``alias-NAME``; db-a by its bare name) and
        an inventory with no address, port, user, key or known_hosts of its own."""
        if config is None:
            config = "".join(
                _ssh_config_entry(self.alias(n), h, self.lab) for n, h in self.lab_host.items()
            )
        ssh = self.home / ".ssh"
        ssh.mkdir(exist_ok=True)
        (ssh / "config").write_text(config)
        sites: dict[str, object] = {}
        for site, names in HOSTS.items():
            hosts: dict[str, object] = {}
            for n in names:
                hdir = self.world.root / "hosts" / n
                hdir.mkdir(parents=True, exist_ok=True)
                hdir.chmod(0o777)
                self.world.host_dirs[n] = hdir
                entry: dict[str, object] = {"roles": [n.split("-")[0]]}
                entry["env"] = {"DRX_HOST_DIR": str(hdir)}
                if n != "db-a":
                    entry["address"] = self.alias(n)
                entry.update((host_extra or {}).get(n, {}))
                hosts[n] = entry
            sites[site] = {"hosts": hosts}
        doc = {"active": "site-a", "defaults": {"transport": "ssh", **(defaults or {})}}
        doc["sites"] = sites
        self.world.inventory.write_text(yaml.safe_dump(doc, sort_keys=False))

    @staticmethod
    def alias(name: str) -> str:
        return name if name == "db-a" else f"alias-{name}"


@pytest.fixture
def aliases(
    lab: Lab, lab_hosts: Callable[[int], list[LabHost]], _isolated_ssh_home: Path
) -> Iterator[AliasWorld]:
    """Four shared lab hosts reached through aliases in ~/.ssh/config under a temporary HOME."""
    w = AliasWorld(lab, lab_hosts(4), _isolated_ssh_home)
    yield w
    shutil.rmtree(w.world.root, ignore_errors=True)


def test_drill_runs_over_hosts_named_only_by_ssh_config_aliases(
    aliases: AliasWorld, capsys
) -> None:
    """Hosts whose address (or, without one, name) is a Host of ~/.ssh/config get HostName, Port,
    User, IdentityFile, UserKnownHostsFile from it: validate passes and the drill succeeds."""
    aliases.write()
    code, err = aliases.world.run(capsys, "validate")
    assert code == 0, err
    code, err = aliases.world.run(capsys, "failover", "site-b", "--yes")
    assert code == 0, err
    assert aliases.world.host_file("app-a", "frozen").exists()
    assert aliases.world.host_file("db-b", "promoted").read_text() == aliases.lab.user
    plan = aliases.world.run_dirs()[-1] / "plan.json"
    assert plan.exists()


def test_inventory_fields_win_over_the_ssh_config(aliases: AliasWorld, capsys) -> None:
    """A Port and User in the inventory beat the config's (which here point nowhere)."""
    entries = []
    for n, h in aliases.lab_host.items():
        entries.append(
            _ssh_config_entry(aliases.alias(n), h, aliases.lab).replace(f"Port {h.port}", "Port 1")
        )
    config = "".join(entries).replace(f"User {aliases.lab.user}", "User nobody-here")
    extra = {n: {"port": h.port} for n, h in aliases.lab_host.items()}
    aliases.write(config=config, host_extra=extra, defaults={"user": aliases.lab.user})
    code, err = aliases.world.run(capsys, "failover", "site-b", "--yes")
    assert code == 0, err
    assert aliases.world.host_file("db-b", "promoted").read_text() == aliases.lab.user


def test_host_keys_are_checked_under_the_resolved_name_and_port(
    aliases: AliasWorld, tmp_path: Path, capsys
) -> None:
    """A known_hosts that lists the keys under the aliases (not HostName:Port) refuses the run
    under strict checking, as OpenSSH would: the alias is not what the key is checked under."""
    lines = []
    for n, h in aliases.lab_host.items():
        key = aliases.lab.known_hosts.read_text().splitlines()
        mine = next(line for line in key if line.startswith(h.known_hosts_name + " "))
        lines.append(f"{aliases.alias(n)} {mine.split(' ', 1)[1]}\n")
    by_alias = tmp_path / "known_by_alias"
    by_alias.write_text("".join(lines))
    config = "".join(
        _ssh_config_entry(aliases.alias(n), h, aliases.lab, known_hosts=str(by_alias))
        for n, h in aliases.lab_host.items()
    )
    aliases.write(config=config)
    code, err = aliases.world.run(capsys, "failover", "site-b", "--yes")
    assert code == 2 and "unknown host key" in err, err
    assert not aliases.world.host_file("app-a", "frozen").exists()


def test_proxy_jump_alias_from_the_ssh_config(
    aliases: AliasWorld, lab: Lab, fresh_host, capsys
) -> None:
    """ProxyJump naming another alias goes through that bastion: with the bastion down, the
    pre-flight refuses although every target sshd is up."""
    bastion = fresh_host()
    config = _ssh_config_entry("the-bastion", bastion, lab) + "".join(
        _ssh_config_entry(aliases.alias(n), h, lab, ProxyJump="the-bastion")
        for n, h in aliases.lab_host.items()
    )
    aliases.write(config=config)
    code, err = aliases.world.run(capsys, "failover", "site-b", "--yes")
    assert code == 0, err
    lab.kill(bastion.name)
    aliases.world.host_file("app-a", "frozen").unlink()
    code, err = aliases.world.run(capsys, "failover", "site-b", "--yes", "--force")
    assert code == 2 and "bastion" in err, err
    assert not aliases.world.host_file("app-a", "frozen").exists()


def test_ssh_config_field_names_the_file_and_a_missing_one_is_an_error(
    aliases: AliasWorld, tmp_path: Path, capsys
) -> None:
    """`ssh_config:` in the inventory replaces ~/.ssh/config; naming a file that does not exist
    is a validation error with file and line (exit 2)."""
    aliases.write()
    other = tmp_path / "drill_ssh_config"
    shutil.move(aliases.home / ".ssh" / "config", other)
    aliases.write(config="", defaults={"ssh_config": str(other)})
    code, err = aliases.world.run(capsys, "failover", "site-b", "--yes")
    assert code == 0, err
    aliases.world.host_file("app-a", "frozen").unlink()
    aliases.write(config="", defaults={"ssh_config": str(tmp_path / "missing")})
    code, err = aliases.world.run(capsys, "validate")
    assert code == 2
    assert f"{aliases.world.inventory}:" in err and "missing" in err


def _encrypted_copy(lab: Lab, dest: Path) -> Path:
    """The lab's client key, encrypted with a passphrase, with its .pub beside it."""
    key = serialization.load_ssh_private_key(lab.identity_file.read_bytes(), password=None)
    dest.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.BestAvailableEncryption(b"correct horse"),
        )
    )
    dest.chmod(0o600)
    pub = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    dest.with_suffix(".pub").write_bytes(pub + b" drx-test\n")
    return dest


@pytest.fixture
def agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A real ssh-agent on a socket of the test's own (stopped by pid)."""
    sock = tmp_path / "agent.sock"
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 5
    while not sock.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
    yield sock
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(5)


def test_encrypted_identity_file_is_used_through_the_agent(
    aliases: AliasWorld, agent: Path, tmp_path: Path, capsys
) -> None:
    """An encrypted IdentityFile: without an agent holding it and without a terminal the run is
    refused naming the file; once the agent holds the key, the same drill runs."""
    key = _encrypted_copy(aliases.lab, tmp_path / "id_enc")
    config = "".join(
        _ssh_config_entry(aliases.alias(n), h, aliases.lab, identity=str(key))
        for n, h in aliases.lab_host.items()
    )
    aliases.write(config=config)
    code, err = aliases.world.run(capsys, "failover", "site-b", "--yes")
    assert code == 2 and "id_enc is encrypted" in err, err
    added = subprocess.run(
        ["ssh-add", str(aliases.lab.identity_file)],
        env={**os.environ, "SSH_AUTH_SOCK": str(agent)},
        capture_output=True,
        text=True,
    )
    assert added.returncode == 0, added.stderr
    code, err = aliases.world.run(capsys, "failover", "site-b", "--yes")
    assert code == 0, err
    assert aliases.world.host_file("db-b", "promoted").read_text() == aliases.lab.user


def test_encrypted_identity_file_asks_its_passphrase_once_on_a_terminal(
    aliases: AliasWorld, tmp_path: Path
) -> None:
    """With no agent, drx on a terminal asks an encrypted key's passphrase once (four hosts
    share the key) and the drill runs with it."""
    from tests.test_gates import _read_until, _wait

    key = _encrypted_copy(aliases.lab, tmp_path / "id_enc")
    config = "".join(
        _ssh_config_entry(aliases.alias(n), h, aliases.lab, identity=str(key))
        for n, h in aliases.lab_host.items()
    )
    aliases.write(config=config)
    pid, fd = pty.fork()
    if pid == 0:  # the child: drx on the pty, as an operator would run it
        argv = [sys.executable, "-m", "orchestrator.cli", "failover", "site-b", "--yes"]
        os.execv(sys.executable, [*argv, *aliases.world.args()])
    seen = _read_until(fd, "Passphrase for")
    os.write(fd, b"correct horse\r")
    seen += _read_until(fd, "report: drx report")
    assert _wait(pid, fd) == 0
    assert seen.count("Passphrase for") == 1, seen
    assert aliases.world.host_file("db-b", "promoted").read_text() == aliases.lab.user
