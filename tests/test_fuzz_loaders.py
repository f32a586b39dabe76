"""Property-based tests of the loaders: generated runbooks and inventories, valid and broken,
go through the real ``drx validate``. Whatever the input, drx either accepts it (exit 0) or
refuses it (exit 2) with at least one ``FILE:LINE: error:`` line naming one of the two files —
never an internal error (exit 70) and never a traceback.

A small profile runs with the test suite; ``make fuzz`` runs the ``fuzz`` profile (10,000
examples each, its example database under build/hypothesis).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from orchestrator.cli import main

settings.register_profile(
    "default",
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "fuzz",
    max_examples=10_000,
    deadline=None,
    database=DirectoryBasedExampleDatabase(
        str(Path(__file__).resolve().parents[1] / "build" / "hypothesis")
    ),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("probe", parent=settings.get_profile("fuzz"), max_examples=600)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

#: one refusal line: ``FILE:LINE[:COL]: error: …``
REFUSAL = re.compile(r"^(?P<file>[^\n]+?):(?P<line>\d+)(?::\d+)?: error: ", re.M)

# -- building blocks -----------------------------------------------------------------------------

NAMES = st.sampled_from(["a", "b", "db", "app", "x-1", "promote", "check_2", "s.3"])
ODD_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    ODD_TEXT,
    NAMES,
    st.sampled_from(["1s", "250ms", "2m", "-1s", "0s", "1h", "nonsense", "{{ vars.x }}", "{{"]),
)
ANY = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.one_of(NAMES, ODD_TEXT), inner, max_size=3)
    ),
    max_leaves=8,
)
SELECTORS = st.sampled_from(
    ["db@target", "app@source", "control", "db", "all@target", "db-a", "nope@nowhere", "@"]
)
DURATIONS = st.sampled_from(["1s", "200ms", "30s", "2m", "0s", "-5s", "1x", "10"])
KINDS = st.sampled_from(["command", "check", "manual", "wait", "bogus"])


@st.composite
def steps(draw: st.DrawFn, ids: list[str]) -> list[dict[str, Any]]:
    """A list of steps, mostly well formed, with needs pointing at earlier (or any) ids."""
    out: list[dict[str, Any]] = []
    for i, sid in enumerate(ids):
        kind = draw(KINDS)
        step: dict[str, Any] = {"id": sid, "kind": kind}
        if kind in ("command", "check", "bogus"):
            step["hosts"] = draw(SELECTORS)
            step["run"] = draw(st.sampled_from(["echo hi", "true", "echo {{ vars.x }}", "{{", ""]))
        if kind == "wait":
            step["duration"] = draw(DURATIONS)
        if kind == "manual":
            step["prompt"] = draw(st.sampled_from(["Go?", "", "{{ active }}"]))
        if kind == "command" and draw(st.booleans()):
            step["undo"] = draw(st.sampled_from(["true", {"run": "true"}, {"hosts": "db"}, 5]))
        if kind == "check" and draw(st.booleans()):
            step["until"] = draw(st.sampled_from(["value > 1", "value >", "rc == 0"]))
            step["capture"] = draw(st.sampled_from(["number", "json", "line", "weird"]))
        if i and draw(st.booleans()):
            pool = ids if draw(st.integers(0, 9)) == 0 else ids[:i]
            step["needs"] = draw(st.lists(st.sampled_from(pool), max_size=2))
        for field in draw(
            st.lists(
                st.sampled_from(["timeout", "retries", "interval", "expect", "sudo", "env"]),
                max_size=2,
            )
        ):
            step[field] = draw(ANY)
        out.append(step)
    return out


@st.composite
def runbooks(draw: st.DrawFn) -> Any:
    """A runbook document: usually shaped like one, sometimes damaged at any level."""
    ids = draw(st.lists(NAMES, min_size=1, max_size=6))
    doc: dict[str, Any] = {"name": draw(st.one_of(NAMES, ANY)), "steps": draw(steps(ids))}
    if draw(st.booleans()):
        doc["vars"] = draw(st.dictionaries(NAMES, ANY, max_size=3))
    if draw(st.booleans()):
        doc["rto_target"] = draw(st.one_of(DURATIONS, ANY))
    if draw(st.booleans()):
        doc["health"] = [{"name": "h", "hosts": draw(SELECTORS), "run": "true"}]
    if draw(st.integers(0, 3)) == 0:
        doc[draw(st.one_of(NAMES, ODD_TEXT))] = draw(ANY)  # an unknown or clobbered key
    if draw(st.integers(0, 5)) == 0:
        return draw(ANY)  # not a runbook at all
    return doc


@st.composite
def inventories(draw: st.DrawFn) -> Any:
    """An inventory document: two sites of local hosts, sometimes damaged."""
    sites: dict[str, Any] = {}
    for site in ("site-a", "site-b"):
        hosts = {}
        for role in draw(
            st.lists(st.sampled_from(["db", "app"]), min_size=1, max_size=2, unique=True)
        ):
            host: dict[str, Any] = {"address": "127.0.0.1", "roles": [role]}
            if draw(st.integers(0, 4)) == 0:
                host[draw(st.sampled_from(["port", "user", "transport", "vars", "roles"]))] = draw(
                    ANY
                )
            hosts[f"{role}-{site[-1]}"] = host
        sites[site] = {"hosts": hosts}
    doc: dict[str, Any] = {
        "active": draw(st.sampled_from(["site-a", "site-b", "site-c"])),
        "defaults": {"transport": "local"},
        "sites": sites,
    }
    if draw(st.integers(0, 4)) == 0:
        doc[draw(st.sampled_from(["defaults", "sites", "active", "control", "extra"]))] = draw(ANY)
    if draw(st.integers(0, 6)) == 0:
        return draw(ANY)
    return doc


TEXT_DAMAGE = st.sampled_from(["", ":", "- [", "a: &x [*x]", "\t- x", "a: b: c", "{", "\x00"])


def _write(path: Path, doc: Any, damage: str | None) -> None:
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    if damage is not None:
        lines = text.splitlines()
        lines.insert(len(lines) // 2, damage)
        text = "\n".join(lines) + "\n"
    path.write_text(text, encoding="utf-8")


def _validate(runbook: Any, inventory: Any, damage: tuple[str | None, str | None]) -> None:
    """Run ``drx validate`` on the two documents and check the property."""
    with tempfile.TemporaryDirectory(prefix="drx-fuzz-") as tmp:
        rb, inv = Path(tmp) / "runbook.yaml", Path(tmp) / "inventory.yaml"
        _write(rb, runbook, damage[0])
        _write(inv, inventory, damage[1])
        err = io.StringIO()
        code: Any = 0
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                main(["validate", "-r", str(rb), "-i", str(inv), "--state-dir", f"{tmp}/state"])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 0
        text = err.getvalue()
        assert code in (0, 2), f"exit {code}:\n{text}"
        assert "Traceback" not in text, text
        if code == 2:
            refusals = [m for m in REFUSAL.finditer(text) if m.group("file") in (str(rb), str(inv))]
            assert refusals, f"a refusal without file:line:\n{text}"
            assert all(int(m.group("line")) >= 1 for m in refusals), text


@given(
    runbooks(), inventories(), st.one_of(st.none(), TEXT_DAMAGE), st.one_of(st.none(), TEXT_DAMAGE)
)
def test_generated_inputs_are_accepted_or_refused_with_file_and_line(
    runbook: Any, inventory: Any, rb_damage: str | None, inv_damage: str | None
) -> None:
    """Generated runbooks and inventories (valid, damaged, or not YAML mappings at all): exit 0
    or exit 2 with FILE:LINE for one of them; never exit 70."""
    _validate(runbook, inventory, (rb_damage, inv_damage))


@given(inventories())
def test_generated_inventories_with_the_sample_runbook(inventory: Any) -> None:
    """A well-formed runbook with generated inventories: the same property, so the inventory
    loader is reached every time."""
    runbook = {
        "name": "fuzz",
        "steps": [
            {"id": "one", "hosts": "db@target", "run": "true", "undo": "true"},
            {"id": "two", "kind": "check", "hosts": "app@source", "run": "true", "needs": ["one"]},
        ],
    }
    _validate(runbook, inventory, (None, None))


def test_what_the_fuzzer_found_is_refused_with_a_line() -> None:
    """A NUL byte in a runbook (Hypothesis found it: the refusal had no line) and a byte that
    is not UTF-8 are refused with the line they are on."""
    runbook = {"name": "x", "steps": [{"id": "a", "hosts": "db@target", "run": "true"}]}
    inventory = {
        "active": "site-a",
        "defaults": {"transport": "local"},
        "sites": {"site-a": {"hosts": {"db-a": {"address": "127.0.0.1", "roles": ["db"]}}}},
    }
    _validate(runbook, inventory, ("\x00", None))
    with tempfile.TemporaryDirectory(prefix="drx-fuzz-") as tmp:
        rb, inv = Path(tmp) / "runbook.yaml", Path(tmp) / "inventory.yaml"
        rb.write_bytes(b"name: x\nsteps: \xff\n")
        _write(inv, inventory, None)
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.suppress(SystemExit):
            main(["validate", "-r", str(rb), "-i", str(inv), "--state-dir", f"{tmp}/state"])
        assert f"{rb}:2: error: cannot read file: not UTF-8" in err.getvalue()
