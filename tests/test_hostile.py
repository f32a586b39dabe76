"""Hostile input: names that try to be paths, a state directory others can write, secrets in
every rendered form, templates and YAML that try to exhaust the machine, oversized output and
terminal escapes. Each test is a reproduction of an attack and pins that it no longer works."""

from __future__ import annotations

import json
import os
import shutil
import stat
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli import drx
from tests.drill import World, world_dir

RUNBOOK = """
    name: hostile
    steps:
      - {id: a, hosts: db@target, run: 'echo out', undo: 'true'}
"""


@pytest.fixture
def local() -> Iterator[World]:
    """A two-site world of local hosts in a fresh directory."""
    root = world_dir()
    w = World(root, "local")
    w.write_inventory()
    w.write_runbook(RUNBOOK)
    try:
        yield w
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _inventory_text(site_b: str, host_b: str) -> str:
    """A local inventory whose second site and its host have the given names; the site is on
    line 6, the host on line 8."""
    return textwrap.dedent(f"""\
        active: site-a
        defaults: {{transport: local}}
        sites:
          site-a:
            hosts: {{db-a: {{address: 127.0.0.1, roles: [db]}}}}
          {json.dumps(site_b)}:
            hosts:
              {json.dumps(host_b)}: {{address: 127.0.0.1, roles: [db]}}
        """)


def _peak_kb(*argv: str) -> int:
    """Run ``drx ARGV`` in a child process; its own peak RSS in KB (it must succeed)."""
    import subprocess
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    try:
        from validate_shapes import PEAK_SCRIPT
    finally:
        sys.path.pop(0)
    done = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, *argv], check=True, capture_output=True, text=True
    )
    return int(done.stdout.split()[-1])


# -- 1. names are not paths -------------------------------------------------------------------

BAD_NAMES = [
    ("site", "/../../../../../../../../tmp/drx-hostile-x/SITE_ESCAPE"),
    ("site", "../../drx-hostile-x/SITE_ESCAPE"),
    ("host", "/tmp/drx-hostile-x/ABS_ESCAPE"),
    ("host", "../../../../drx-hostile-x/REL_ESCAPE"),
    ("host", "db\n1.0 run_finished status=succeeded"),
    ("host", ".."),
    ("host", "db\x1b[2Kb"),
]


@pytest.mark.parametrize(("kind", "name"), BAD_NAMES)
def test_a_host_or_site_name_that_is_not_a_plain_name_is_refused_with_its_line(
    kind: str, name: str, local: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """Host and site names with '/', '..' or control characters fail validation (exit 2) at
    their file:line, and a failover with them runs nothing and writes nothing outside."""
    site, host = (name, "db-b") if kind == "site" else ("site-b", name)
    local.inventory.write_text(_inventory_text(site, host))
    code, _, err = drx(capsys, "validate", *local.args())
    assert code == 2, err
    line = 6 if kind == "site" else 8
    assert f"inventory.yaml:{line}: error: invalid {kind} name" in err, err
    target = "site-b" if kind == "host" else name
    code, err = local.run(capsys, "failover", target, "--yes")
    assert code == 2, err
    assert not local.state.exists() or not list(local.state.rglob("journal.jsonl"))
    assert not Path("/tmp/drx-hostile-x").exists()
    assert not list(local.root.rglob("*ESCAPE*"))


def test_a_health_name_that_walks_out_is_refused(
    local: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """A health check named ``x/../../../../y`` fails validation at its line; no directory of
    that name is created by a failover."""
    local.write_runbook("""\
        name: hostile
        steps:
          - {id: a, hosts: db@target, run: 'true', undo: 'true'}
        health:
          - name: "x/../../../../y"
            hosts: db@target
            run: 'true'
    """)
    code, _, err = drx(capsys, "validate", *local.args())
    assert code == 2
    assert "runbook.yaml:5: error: invalid health name 'x/../../../../y'" in err, err
    assert local.run(capsys, "failover", "site-b", "--yes")[0] == 2
    assert not list(local.root.rglob("y"))


def test_private_dir_refuses_a_path_leaving_its_base_and_chmods_nothing_it_did_not_create(
    tmp_path: Path,
) -> None:
    """``private_dir`` of ``runs/<id>-/../../../outside`` (the run id of a site named with
    ``..``) raises and leaves every directory above the state dir at its mode; of a new path
    below an existing 0755 directory it makes the new ones 0700 and leaves the old one be."""
    from orchestrator.errors import StateDirError
    from orchestrator.record.store import private_dir

    top = tmp_path / "top"
    state = top / "state"
    (state / "runs").mkdir(parents=True)
    for d in (tmp_path, top, state, state / "runs"):
        d.chmod(0o755)
    before = {p: stat.S_IMODE(p.stat().st_mode) for p in [state, *state.parents]}
    escape = state / "runs" / "20260101T000000.000Z-failover-" / ".." / ".." / ".." / "outside"
    with pytest.raises(StateDirError, match="outside the state directory"):
        private_dir(escape / "output", state)
    after = {p: stat.S_IMODE(p.stat().st_mode) for p in [state, *state.parents]}
    assert after == before
    assert not (top / "outside").exists()
    assert not (state / "runs" / "20260101T000000.000Z-failover-").exists()
    private_dir(state / "runs" / "r1" / "output", state)
    assert stat.S_IMODE((state / "runs").stat().st_mode) == 0o755
    assert stat.S_IMODE((state / "runs" / "r1").stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "runs" / "r1" / "output").stat().st_mode) == 0o700


# -- 4. symlinks and neighbours in the state directory ----------------------------------------


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702])
def test_a_state_dir_others_can_write_is_refused(
    mode: int, local: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """A state directory writable by group or others makes failover (and runs) exit 2 naming
    it and the fix; nothing is written in it."""
    local.state.mkdir()
    local.state.chmod(mode)
    code, err = local.run(capsys, "failover", "site-b", "--yes")
    assert code == 2
    assert f"writable by others (mode {oct(mode)[2:]}): chmod 700 {local.state}" in err
    assert list(local.state.iterdir()) == []
    assert local.run(capsys, "runs")[0] == 2


def test_a_state_dir_owned_by_another_user_is_refused(
    local: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """A state directory another user owns is refused (exit 2) even at mode 0700."""
    if os.geteuid() != 0 and not os.environ.get("CI"):
        pytest.skip("needs root to give the directory to another user")
    local.state.mkdir(mode=0o700)
    os.chown(local.state, 65534, 65534)
    code, err = local.run(capsys, "failover", "site-b", "--yes")
    assert code == 2 and "owned by another user (uid 65534)" in err


def test_a_symlinked_lock_or_temp_file_is_not_written_through(
    local: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """``.drx/lock -> VICTIM`` makes the run exit 2 with VICTIM untouched; a planted
    ``state.json.tmp -> VICTIM2`` is not written through (the temp file is a new one)."""
    victim, victim2 = local.root / "VICTIM", local.root / "VICTIM2"
    victim.write_text("precious\n")
    victim2.write_text("precious too\n")
    local.state.mkdir(mode=0o700)
    (local.state / "lock").symlink_to(victim)
    (local.state / "state.json.tmp").symlink_to(victim2)
    code, err = local.run(capsys, "failover", "site-b", "--yes")
    assert code == 2 and "lock is a symbolic link" in err, err
    assert victim.read_text() == "precious\n"
    (local.state / "lock").unlink()
    assert local.run(capsys, "failover", "site-b", "--yes")[0] == 0
    assert victim2.read_text() == "precious too\n"
    assert (local.state / "state.json.tmp").is_symlink()
    assert not list(local.state.glob(".state.json.*"))  # no temp file left behind


def test_a_symlinked_output_log_is_neither_printed_nor_bundled(
    local: World, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """An output log replaced by a symlink to a file outside (``/etc/passwd``-like) is not
    printed by ``drx logs`` nor put in the bundle or its SHA256SUMS."""
    import tarfile

    secret = local.root / "passwd"
    secret.write_text("root:SECRETHASH:0:0\n")
    assert local.run(capsys, "failover", "site-b", "--yes")[0] == 0
    log = next(local.state.rglob("db-b.log"))
    log.unlink()
    log.symlink_to(secret)
    _, err = local.run(capsys, "logs", "latest", "a", "db-b")
    assert "SECRETHASH" not in local.last_stdout and "(db-b: no output)" in err
    target = tmp_path / "b.tar.gz"
    assert local.run(capsys, "bundle", "-o", str(target))[0] == 0
    with tarfile.open(target) as tar:
        names = tar.getnames()
        sums = next(n for n in names if n.endswith("SHA256SUMS"))
        manifest = tar.extractfile(sums).read().decode()  # type: ignore[union-attr]
        blob = b"".join(
            tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        )
    assert not any(n.endswith("db-b.log") for n in names)
    assert "db-b.log" not in manifest and b"SECRETHASH" not in blob


def test_drx_logs_step_must_be_a_step_of_the_run(
    local: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """``drx logs latest /some/path`` (or ``../..``) is refused (exit 2), printing nothing
    from outside the state directory."""
    outside = local.root / "outside"
    outside.mkdir()
    (outside / "x.log").write_text("OUTSIDE\n")
    assert local.run(capsys, "failover", "site-b", "--yes")[0] == 0
    for step in (str(outside), "../../../outside", "health:../../../outside"):
        code, err = local.run(capsys, "logs", "latest", step, "x")
        assert code == 2, (step, err)
        assert "OUTSIDE" not in local.last_stdout
        code, err = local.run(capsys, "logs", "latest", step)
        assert code == 2 and "OUTSIDE" not in local.last_stdout


def test_a_symlinked_run_directory_is_not_a_run(
    local: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ``runs/<id>`` symlink to a run directory elsewhere is not listed nor taken as the
    latest run."""
    assert local.run(capsys, "failover", "site-b", "--yes")[0] == 0
    real = local.run_dirs()[-1]
    elsewhere = local.root / "elsewhere"
    fake = "29990101T000000.000Z-failover-site-b"
    shutil.copytree(real, elsewhere / "run")
    for path in (elsewhere / "run").glob("*.json*"):
        path.write_text(path.read_text().replace(real.name, fake))
    (local.state / "runs" / fake).symlink_to(elsewhere / "run")
    assert local.run(capsys, "runs")[0] == 0
    assert "2999" not in local.last_stdout and real.name in local.last_stdout
    assert local.run(capsys, "report")[0] == 0
    assert real.name in local.last_stdout and "2999" not in local.last_stdout


# -- 3. every rendered form of a secret -------------------------------------------------------


def _everything_written(world: World, capsys: pytest.CaptureFixture[str], tmp: Path) -> str:
    """Every text drx writes or prints about the latest run: state files, logs, the bundle,
    every report format, the plan preview."""
    import tarfile

    texts = [p.read_text(errors="replace") for p in world.state.rglob("*") if p.is_file()]
    for fmt in ("text", "md", "html", "json", "junit", "otlp"):
        assert world.run(capsys, "report", "--format", fmt)[0] == 0
        texts.append(world.last_stdout)
    target = tmp / "bundle.tar.gz"
    assert world.run(capsys, "bundle", "-o", str(target))[0] == 0
    with tarfile.open(target) as tar:
        for member in tar.getmembers():
            data = tar.extractfile(member)
            texts.append(data.read().decode(errors="replace") if data else "")
    return "\n".join(texts)


def test_a_secret_is_masked_in_every_rendered_form(
    local: World, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A ``--secret-var`` holding ``'``, ``"``, ``&`` and a space, rendered raw, with ``| quote``,
    inside a larger quoted word, JSON-encoded and URL-encoded, never appears in any form in
    the journal, plan, summary, logs, reports, bundle, the plan preview or ``-vv`` output."""
    secret = """it's "Q&UOTED" x"""
    local.write_runbook("""\
        name: hostile
        steps:
          - id: a
            hosts: db@target
            run: >-
              echo {{ vars.qsec | quote }};
              echo {{ ('user:' ~ vars.qsec) | quote }};
              echo {{ vars.qsec | tojson | quote }};
              echo {{ vars.qsec | urlencode | quote }}
            undo: 'true'
    """)
    args = ("--secret-var", f"qsec={secret}")
    assert local.run(capsys, "plan", "site-b", *args)[0] == 0
    preview = local.last_stdout
    code, err = local.run(capsys, "failover", "site-b", "--yes", "-vv", *args)
    assert code == 0, err
    text = "\n".join([preview, err, _everything_written(local, capsys, tmp_path)])
    assert "***" in text
    for needle in ("QUOTED", "UOTED", "Q%26", "Q&amp;"):
        assert needle not in text, needle


def test_list_and_mapping_valued_secrets_are_masked_element_by_element(
    local: World, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``list_password: [A, B]`` and ``db_secret: {primary: P}``: each element rendered alone is
    masked in the plan preview and everything the run writes."""
    local.write_runbook("""\
        name: hostile
        vars:
          list_password: [ELEMENTALPHA, ELEMENTBRAVO]
          db_secret: {primary: MAPPEDCHARLIE, replica: {deep: NESTEDDELTA}}
        steps:
          - id: a
            hosts: db@target
            run: >-
              echo {{ vars.list_password[0] }} {{ vars.list_password[1] | quote }}
              {{ vars.db_secret.primary }} {{ vars.db_secret.replica.deep }}
              {{ vars.list_password | join(',') }}
            undo: 'true'
    """)
    assert local.run(capsys, "plan", "site-b")[0] == 0
    preview = local.last_stdout
    code, err = local.run(capsys, "failover", "site-b", "--yes")
    assert code == 0, err
    text = "\n".join([preview, err, _everything_written(local, capsys, tmp_path)])
    for needle in ("ELEMENTALPHA", "ELEMENTBRAVO", "MAPPEDCHARLIE", "NESTEDDELTA"):
        assert needle not in text, needle


# -- 5. unbounded expansion -------------------------------------------------------------------

EXPANSIONS = [
    "{{ 'a' * 10**9 }}",
    "{{ [1] * 10**9 }}",
    "{{ 10**9 * 'ab' }}",
    "{{ 7 ** 1000000 }}",
    "{{ 'a' | center(10**9) }}",
    "{{ 'a'.ljust(10**9) }}",
    "{% for i in range(100000) %}{% for j in range(100000) %}xx{% endfor %}{% endfor %}",
]


@pytest.mark.parametrize("expression", EXPANSIONS)
def test_a_template_that_would_expand_without_bound_is_refused_with_its_line(
    expression: str, local: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """``drx validate`` of a run template that would build gigabytes (or a number of millions
    of digits) exits 2 naming the file, line and step, without building it."""
    local.write_runbook(f"""\
        name: hostile
        steps:
          - id: a
            hosts: db@target
            run: "echo {expression}"
            undo: 'true'
    """)
    code, _, err = drx(capsys, "validate", *local.args())
    assert code == 2, err
    assert "runbook.yaml:5: error: step 'a': run: " in err, err
    assert "at most" in err or "more than" in err


def test_yaml_aliases_that_expand_past_the_bound_are_refused_at_the_anchor(
    local: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nine levels of nine aliases (387 million values) make ``drx validate`` exit 2 naming
    the line of the alias that passed the bound; a few aliases are fine."""
    lines = ["name: hostile", "vars:", "  l0: &l0 {a: x, b: x, c: x, d: x, e: x, f: x, g: x}"]
    keys = "abcdefghi"
    for level in range(1, 10):
        body = ", ".join(f"{k}: *l{level - 1}" for k in keys)
        lines.append(f"  l{level}: &l{level} {{{body}}}")
    lines += ["steps:", "  - {id: a, hosts: db@target, run: 'true', undo: 'true'}"]
    local.runbook.write_text("\n".join(lines) + "\n")
    code, _, err = drx(capsys, "validate", *local.args())
    assert code == 2
    assert "runbook.yaml:9: error: YAML aliases expand to more than 1,000,000 values" in err, err
    local.runbook.write_text("\n".join(lines[:5] + lines[-2:]) + "\n")
    code, _, err = drx(capsys, "validate", *local.args())
    assert code == 0, err


# -- 6. output logs are capped per host and attempt -------------------------------------------


def test_an_output_log_is_cut_at_the_limit_per_attempt_and_the_cut_is_said(
    local: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """A check polling a command that prints 2 MB a poll, under ``output_limit: 1MB``, leaves
    a log of about 1 MB per attempt (two attempts: two cuts), each cut said in the log; the
    journal counts the bytes not kept and the md report says so beside the log's path."""
    local.write_runbook("""\
        name: hostile
        output_limit: 1MB
        steps:
          - id: flood
            kind: check
            hosts: db@target
            run: "head -c 2000000 /dev/zero | tr '\\\\0' x; echo"
            until: rc == 7
            interval: 50ms
            timeout: 2s
            retries: 1
            retry_delay: 10ms
    """)
    code, err = local.run(capsys, "failover", "site-b", "--yes")
    assert code == 1, err
    log = next(local.state.rglob("flood/db-b.log"))
    text = log.read_text()
    assert text.count("[drx: output cut here:") == 2
    assert 2 * 1024 * 1024 <= log.stat().st_size < 2 * 1024 * 1024 + 4096
    finished = [e for e in local.journal() if e.get("event") == "host_finished"]
    # one poll prints 2,000,001 bytes, 1 MiB is kept: at least ~0.95 MB cut per attempt
    assert finished and all(e["output_cut"] > 900_000 for e in finished)
    assert local.run(capsys, "report", "--format", "md")[0] == 0
    assert "bytes not kept" in local.last_stdout
    assert local.run(capsys, "report")[0] == 0
    assert "cut at the runbook's output_limit" in local.last_stdout


def test_output_limit_must_be_a_size(local: World, capsys: pytest.CaptureFixture[str]) -> None:
    """``output_limit: lots`` fails validation at its line (exit 2)."""
    local.write_runbook("""\
        name: hostile
        output_limit: lots
        steps:
          - {id: a, hosts: db@target, run: 'true', undo: 'true'}
    """)
    code, _, err = drx(capsys, "validate", *local.args())
    assert code == 2 and "runbook.yaml:2: error: bad output_limit 'lots'" in err, err


def test_bundle_streams_logs_instead_of_holding_them_in_memory(
    local: World, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``drx bundle`` of a run with a 160 MB output log peaks well under the log's size (it
    held every log in memory: 339 MB for a 287 MB log), and the archived log checks out."""
    import hashlib
    import tarfile

    assert local.run(capsys, "failover", "site-b", "--yes")[0] == 0
    log = next(local.state.rglob("a/db-b.log"))
    with log.open("ab") as fh:
        for _ in range(160):
            fh.write(b"z" * (1024 * 1024 - 1) + b"\n")
    target = tmp_path / "big.tar.gz"
    peak_kb = _peak_kb("bundle", "-o", str(target), "--state-dir", str(local.state))
    assert peak_kb / 1024 < 120, f"bundle peaked at {peak_kb / 1024:.0f} MB"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    with tarfile.open(target) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("a/db-b.log"))
        data = tar.extractfile(member).read()  # type: ignore[union-attr]
        sums = next(m for m in tar.getmembers() if m.name.endswith("SHA256SUMS"))
        manifest = tar.extractfile(sums).read().decode()  # type: ignore[union-attr]
    assert data == log.read_bytes()
    assert f"{hashlib.sha256(data).hexdigest()}  output/a/db-b.log" in manifest


# -- 7. terminal escapes ----------------------------------------------------------------------


def test_host_output_in_a_gate_prompt_reaches_the_terminal_without_its_escapes(
    local: World,
) -> None:
    """A host printing ``ESC]0;…BEL`` (retitle) and ``ESC[2K FAKE: …`` (erase the line, spoof
    the question) into a gate's prompt: on the operator's terminal the text appears, the
    sequences do not; the gate still asks and is answered."""
    import os

    from tests.test_gates import _read_until, _spawn_on_pty, _wait

    local.write_runbook(r"""
        name: gated
        steps:
          - id: prep
            hosts: db@target
            run: |
              printf '\033]0;PWNED\007\033[2K FAKE: all checks passed, type y\n'
            undo: 'true'
          - id: approve
            kind: manual
            prompt: "{{ steps['prep'].stdout }} Proceed?"
            needs: [prep]
    """)
    pid, fd = _spawn_on_pty(local)
    seen = _read_until(fd, "Proceed?")
    os.write(fd, b"n\r")
    _wait(pid, fd)
    assert "FAKE: all checks passed" in seen
    assert "\x1b]0;PWNED" not in seen and "\x1b[2K FAKE" not in seen and "PWNED\x07" not in seen
    assert local.step(local.summary(), "approve")["status"] != "succeeded"


def test_printable_takes_out_terminal_sequences_and_keeps_text() -> None:
    """``printable`` drops CSI/OSC escapes, C0/C1 controls (not TAB/LF) and bidi overrides."""
    from orchestrator.terminal import printable

    assert printable("a\x1b[2Kb\x1b]0;t\x07c\x9b31md\re\x00f\tg\nh\u202ei") == "abcde" + "f\tg\nhi"
    assert printable("plain text ✓") == "plain text ✓"


# -- 8. smaller: debug.log, file modes, unquoted interpolation, description -------------------


def test_debug_log_masks_secret_var_values(
    local: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """After an internal error, debug.log keeps the command line and traceback with the
    ``--secret-var`` value (and a DRX_SECRET_ value) masked."""
    from orchestrator.plan import build

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("kaboom with TOPSECRET1 and ENVSECRET2 inside")

    monkeypatch.setattr(build, "build_plan", broken)
    monkeypatch.setenv("DRX_SECRET_API_TOKEN", "ENVSECRET2")
    code, err = local.run(capsys, "plan", "site-b", "--secret-var", "db_password=TOPSECRET1")
    assert code == 70, err
    text = (local.state / "debug.log").read_text()
    assert "kaboom" in text and "db_password=***" in text
    assert "TOPSECRET1" not in text and "ENVSECRET2" not in text


def test_report_file_is_created_owner_only(
    local: World, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``drx report -o FILE`` creates FILE 0600 (it holds command output), even under umask 0;
    a file the operator made keeps its mode."""
    assert local.run(capsys, "failover", "site-b", "--yes")[0] == 0
    old = os.umask(0)
    try:
        assert local.run(capsys, "report", "-o", str(tmp_path / "r.html"))[0] == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r.html").stat().st_mode) == 0o600
    shared = tmp_path / "shared.md"
    shared.write_text("")
    shared.chmod(0o644)
    assert local.run(capsys, "report", "-o", str(shared))[0] == 0
    assert stat.S_IMODE(shared.stat().st_mode) == 0o644 and shared.read_text()


@pytest.mark.parametrize(
    ("run", "warned"),
    [
        ("echo {{ steps['a'].stdout }}", True),
        ("ssh {{ steps['a'].hosts['db-b'].stdout | trim }} x", True),
        ("echo {{ steps['a'].value if steps['a'].rc == 0 else 'none' }}", True),
        ("echo {{ steps['a'].stdout | quote }}", False),
        ("sleep {{ steps['a'].value | int }}", False),
        ("echo {{ host.name | quote }} {{ vars.x }}", False),
    ],
)
def test_validate_warns_when_a_step_output_reaches_run_unquoted(
    run: str, warned: bool, local: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ``run`` that interpolates ``steps[…]`` (what a host printed) without ``| quote`` (or a
    number filter) draws a warning at its line naming the fix; a quoted one does not."""
    local.write_runbook(f"""\
        name: hostile
        vars: {{x: 1}}
        steps:
          - {{id: a, hosts: db@target, run: 'echo 1', undo: 'true'}}
          - id: b
            hosts: db@target
            needs: [a]
            run: "{run}"
            undo: 'true'
    """)
    code, _, err = drx(capsys, "validate", *local.args())
    assert code == 0, err
    message = "runbook.yaml:8: warning: step 'b': run interpolates a step's output without"
    assert (message in err) is warned, err


def test_the_runbook_description_is_in_every_report(
    local: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """The runbook's ``description`` is recorded with the run and shown by the text, md, html
    (escaped) and json reports."""
    local.write_runbook("""\
        name: hostile
        description: "Move the <b>web</b> tier between sites"
        steps:
          - {id: a, hosts: db@target, run: 'true', undo: 'true'}
    """)
    assert local.run(capsys, "failover", "site-b", "--yes")[0] == 0
    plain = "Move the <b>web</b> tier between sites"
    for fmt, shown in (
        ("text", plain),
        ("md", "Move the &lt;b&gt;web&lt;/b&gt; tier"),
        ("html", "Move the &lt;b&gt;web&lt;/b&gt; tier"),
        ("json", plain),
    ):
        assert local.run(capsys, "report", "--format", fmt)[0] == 0
        assert shown in local.last_stdout, (fmt, local.last_stdout[:2000])


# -- 9. input scale ---------------------------------------------------------------------------


def test_validating_a_big_runbook_holds_memory_per_step_not_per_pair_of_steps() -> None:
    """``drx validate`` of a 20,000-step random DAG peaks under 160 MB (it took 204 MB: every
    step's ancestors were held, growing with the square of the steps, and the YAML node tree
    of the whole file was held while it was built); ``make bench`` measures 100,000 steps."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    try:
        import validate_shapes
    finally:
        sys.path.pop(0)
    figures = validate_shapes.validate_peak(20_000)
    assert figures["peak_mb"] < 160, figures
