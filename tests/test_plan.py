"""The plan: waves, determinism, the predicted critical path and RTO, host selectors, template
variables and filters, secrets and run-time placeholders in previews, and the four renderings."""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import networkx as nx
import pytest

from orchestrator.errors import ValidationError
from orchestrator.model.inventory import Inventory, select
from orchestrator.model.loading import load_both
from orchestrator.plan.build import Plan, build_plan
from orchestrator.plan.preview import plan_document, render_plan
from tests.cli import drx

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_RUNBOOK = ROOT / "runbooks" / "webapp.yaml"
SAMPLE_INVENTORY = ROOT / "inventory" / "local.yaml"

INVENTORY = """\
active: site-a
defaults:
  transport: local
vars: {b: inv, c: inv, d: inv, e: inv}
sites:
  site-a:
    vars: {vip: 10.0.1.10, c: site-a, d: site-a, e: site-a}
    hosts:
      db-a: {address: 10.0.1.21, roles: [db]}
      app-a1: {address: 10.0.1.31, roles: [app, web]}
      app-a2: {address: 10.0.1.32, roles: [app]}
  site-b:
    vars: {vip: 10.0.2.10, c: site-b, d: site-b, e: site-b}
    hosts:
      db-b: {address: 10.0.2.21, roles: [db], vars: {d: host, e: host}}
      app-b1: {address: 10.0.2.31, roles: [app, web]}
      app-b2: {address: 10.0.2.32, roles: [app]}
"""


def write(tmp_path: Path, runbook: str, inventory: str = INVENTORY) -> tuple[Path, Path]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    rb, inv = tmp_path / "runbook.yaml", tmp_path / "inventory.yaml"
    rb.write_text(runbook, encoding="utf-8")
    inv.write_text(inventory, encoding="utf-8")
    return rb, inv


def make_plan(
    tmp_path: Path, runbook: str, inventory: str = INVENTORY, target: str = "site-b", **kw: Any
) -> Plan:
    rb, inv = write(tmp_path, runbook, inventory)
    loaded_runbook, loaded_inventory = load_both(str(rb), str(inv))
    return build_plan(loaded_runbook, loaded_inventory, target, **kw)


def steps_yaml(*steps: tuple[str, list[str], str | None]) -> str:
    """A runbook of command steps on ``control``: (id, needs, expect)."""
    lines = ["name: shape", "steps:"]
    for step_id, needs, expect in steps:
        lines += [f"  - id: {step_id}", "    hosts: control", "    run: echo", "    undo: echo"]
        if needs:
            lines.append(f"    needs: [{', '.join(needs)}]")
        if expect:
            lines.append(f"    expect: {expect}")
    return "\n".join(lines) + "\n"


# -- waves and determinism --------------------------------------------------------------------


def test_waves_are_topological_generations_in_declaration_order(tmp_path: Path) -> None:
    """Each wave holds the steps whose longest chain of needs has that length, as declared."""
    plan = make_plan(
        tmp_path,
        steps_yaml(
            ("zeta", [], None),
            ("alpha", [], None),
            ("mid", ["zeta"], None),
            ("late", ["mid", "alpha"], None),
            ("beta", ["alpha"], None),
            ("also-late", ["beta", "zeta"], None),
            ("last", ["late"], None),
        ),
    )
    assert plan.waves == [["zeta", "alpha"], ["mid", "beta"], ["late", "also-late"], ["last"]]
    assert {sid: ps.wave for sid, ps in plan.steps.items()} == {
        "zeta": 0,
        "alpha": 0,
        "mid": 1,
        "late": 2,
        "beta": 1,
        "also-late": 2,
        "last": 3,
    }


def test_waves_match_networkx_generations_on_a_random_dag(tmp_path: Path) -> None:
    """On a random 300-step DAG, waves equal networkx's topological generations."""
    rng = random.Random(7)
    ids = [f"s{i}" for i in range(300)]
    rng.shuffle(ids)  # declaration order unrelated to the names
    steps = []
    for i, step_id in enumerate(ids):
        needs = sorted(rng.sample(ids[:i], k=min(i, rng.randint(0, 3))))
        steps.append((step_id, needs, None))
    plan = make_plan(tmp_path, steps_yaml(*steps))
    graph = nx.DiGraph()
    graph.add_nodes_from(ids)
    graph.add_edges_from((need, sid) for sid, needs, _ in steps for need in needs)
    expected = [sorted(g, key=ids.index) for g in nx.topological_generations(graph)]
    assert plan.waves == expected


def _reverse_mappings(text: str) -> str:
    """The same YAML document with the keys of every mapping in reverse order, except the
    order of sites and hosts (the inventory order, which the plan follows on purpose)."""
    import yaml

    def rev(value: Any, ordered: bool = False) -> Any:
        if isinstance(value, dict):
            keys = list(value) if ordered else list(reversed(value))
            return {k: rev(value[k], ordered=k in ("sites", "hosts")) for k in keys}
        if isinstance(value, list):
            return [rev(v) for v in value]
        return value

    return yaml.safe_dump(rev(yaml.safe_load(text)), sort_keys=False, allow_unicode=True)


def test_plan_json_is_identical_across_builds_and_key_orders(tmp_path: Path) -> None:
    """Two builds, or files with every mapping's keys reversed, give byte-identical plan JSON."""
    runbook = SAMPLE_RUNBOOK.read_text("utf-8")
    inventory = SAMPLE_INVENTORY.read_text("utf-8")
    reversed_runbook = _reverse_mappings(runbook)
    assert reversed_runbook.startswith("steps:")  # the reversal did happen
    first = render_plan(make_plan(tmp_path / "a", runbook, inventory), "json")
    again = render_plan(make_plan(tmp_path / "a", runbook, inventory), "json")
    reordered = render_plan(
        make_plan(tmp_path / "b", reversed_runbook, _reverse_mappings(inventory)),
        "json",
    )
    assert first == again == reordered


def test_plan_json_does_not_depend_on_hash_seed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A `drx plan` in a process with another string-hash seed prints the same JSON."""
    args = ["plan", "site-b", "-f", "json", "-r", str(SAMPLE_RUNBOOK), "-i", str(SAMPLE_INVENTORY)]
    state = str(tmp_path / "state")
    _, here, _ = drx(capsys, *args, "--state-dir", state)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRX_")}
    env["PYTHONHASHSEED"] = "12345"
    other = subprocess.run(
        [sys.executable, "-c", "from orchestrator.cli import main; main()", *args],
        cwd=tmp_path,
        env={**env, "DRX_STATE_DIR": state},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert other.stdout == here


# -- predictions and critical path ------------------------------------------------------------


def test_critical_path_is_the_longest_weighted_path(tmp_path: Path) -> None:
    """The critical path is the heaviest source-to-sink chain; the predicted RTO is its length."""
    plan = make_plan(
        tmp_path,
        steps_yaml(
            ("a", [], "1s"),
            ("b", ["a"], "10s"),
            ("c", ["a"], "2s"),
            ("d", ["b", "c"], "1s"),
            ("e", ["c"], "5s"),
            ("f", [], "11s"),
        ),
    )
    assert plan.critical_path == ["a", "b", "d"]
    assert plan.predicted_rto_s == 12.0
    assert plan.predicted_rto_is_lower_bound is False


def test_critical_path_ties_go_to_the_path_with_more_steps(tmp_path: Path) -> None:
    """Of two equally long paths, the one with more steps wins, even if declared later."""
    plan = make_plan(
        tmp_path,
        steps_yaml(
            ("solo", [], "4s"),
            ("first", [], "3s"),
            ("second", ["first"], "1s"),
            ("third", ["second"], None),
        ),
    )
    assert plan.critical_path == ["first", "second", "third"]
    assert plan.predicted_rto_s == 4.0


def test_unknown_duration_makes_the_rto_a_lower_bound(tmp_path: Path) -> None:
    """A step with no expect (and no history) counts as 0 and marks the RTO a lower bound."""
    plan = make_plan(tmp_path, steps_yaml(("a", [], "2s"), ("b", ["a"], None)))
    doc = plan_document(plan)
    assert doc["predicted_rto_s"] == 2.0
    assert doc["predicted_rto_is_lower_bound"] is True
    b = next(s for s in doc["steps"] if s["id"] == "b")
    assert (b["predicted_s"], b["prediction_source"]) == (None, "unknown")


def test_history_beats_expect_and_health_adds_to_the_rto(tmp_path: Path) -> None:
    """History beats expect, a wait counts its duration, and predicted health adds to the RTO."""
    runbook = steps_yaml(("a", [], "2s"), ("b", ["a"], "3s")) + (
        "  - id: settle\n    kind: wait\n    duration: 4s\n    needs: [b]\n"
        "health:\n  - name: up\n    hosts: control\n    run: probe\n"
    )
    plan = make_plan(tmp_path, runbook, predictions={"b": 7.5}, predicted_health_s=1.5)
    doc = plan_document(plan)
    by_id = {s["id"]: s for s in doc["steps"]}
    assert (by_id["a"]["predicted_s"], by_id["a"]["prediction_source"]) == (2.0, "expect")
    assert (by_id["b"]["predicted_s"], by_id["b"]["prediction_source"]) == (7.5, "history")
    assert (by_id["settle"]["predicted_s"], by_id["settle"]["prediction_source"]) == (
        4.0,
        "expect",
    )
    assert doc["predicted_rto_s"] == 2.0 + 7.5 + 4.0 + 1.5
    assert doc["predicted_rto_is_lower_bound"] is False


# -- selectors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "hosts"),
    [
        ("app@source", ["app-a1", "app-a2"]),
        ("app@target", ["app-b1", "app-b2"]),
        ("db@active", ["db-a"]),
        ("web@site-b", ["app-b1"]),
        ("@target", ["db-b", "app-b1", "app-b2"]),
        ("@site-a", ["db-a", "app-a1", "app-a2"]),
        ("app-b2", ["app-b2"]),
        ("control", ["control"]),
        ("[app-b2, db@target, web@target]", ["db-b", "app-b1", "app-b2"]),
    ],
)
def test_selectors_resolve_to_hosts_in_inventory_order(
    tmp_path: Path, selector: str, hosts: list[str]
) -> None:
    """ROLE@SITE, @SITE, host names and control select each right host once, in inventory order."""
    quoted = selector if selector.startswith("[") else f"'{selector}'"
    plan = make_plan(
        tmp_path, f"name: sel\nsteps:\n  - id: s\n    hosts: {quoted}\n    run: x\n    undo: y\n"
    )
    assert [h.name for h in plan.steps["s"].hosts] == hosts


def test_active_means_the_serving_site_before_the_run(tmp_path: Path) -> None:
    """``active`` in steps is the site serving before the run: the source of the move."""
    rb, inv = write(tmp_path, steps_yaml(("a", [], None)))
    runbook, inventory = load_both(str(rb), str(inv))
    assert [h.name for h in select(inventory, "db@active", {"active": "site-b"})] == ["db-b"]
    plan = build_plan(runbook, inventory, "site-a", source="site-b")
    assert plan.context()["active"] == "site-b"


def test_select_reports_unknown_names_with_a_hint(tmp_path: Path) -> None:
    """A misspelt host name is refused with a "did you mean" hint."""
    from orchestrator.model.inventory import SelectorError

    rb, inv = write(tmp_path, steps_yaml(("a", [], None)))
    _, inventory = load_both(str(rb), str(inv))
    assert isinstance(inventory, Inventory)
    with pytest.raises(SelectorError) as err:
        select(inventory, "db-bb", {})
    assert str(err.value) == "selector 'db-bb' matches no host"
    assert err.value.hint == "did you mean 'db-b'?"


# -- template variables and filters -------------------------------------------------------------


VARS_RUNBOOK = """\
name: vars
vars: {a: runbook, b: runbook, c: runbook, d: runbook, e: runbook}
steps:
  - id: show
    hosts: [db@target, control]
    run: echo {{ vars.a }} {{ vars.b }} {{ vars.c }} {{ vars.d }} {{ vars.e }}
    undo: echo
"""


def test_vars_precedence_runbook_inventory_site_host_cli(tmp_path: Path) -> None:
    """vars merge runbook < inventory < site < host < --var; control has no site or host vars."""
    plan = make_plan(tmp_path, VARS_RUNBOOK, cli_vars={"e": "cli"})
    assert plan.steps["show"].preview == {
        "control": "echo runbook inv inv inv cli",
        "db-b": "echo runbook inv site-b host cli",
    }


def test_steps_sharing_expressions_preview_each_hosts_own_values(tmp_path: Path) -> None:
    """Steps whose commands share expressions still preview each host's values, and a command
    reading ``steps`` previews the placeholder of the step it names, not another's."""
    runbook = (
        "name: shared\nsteps:\n"
        "  - {id: a, hosts: [db@target, control], run: 'a {{ host.name }} {{ vars.e }}', undo: x}\n"
        "  - {id: b, hosts: [db@target, control], run: 'b {{ host.name }} {{ vars.e }}', undo: x,"
        " needs: [a]}\n"
        "  - {id: c, hosts: control, run: 'c {{ steps.a.value }}', undo: x, needs: [a]}\n"
        "  - {id: d, hosts: control, run: 'c {{ steps.b.value }}', undo: x, needs: [b]}\n"
    )
    plan = make_plan(tmp_path, runbook, cli_vars={"e": "cli"})
    assert plan.steps["a"].preview == {"control": "a control cli", "db-b": "a db-b cli"}
    assert plan.steps["b"].preview == {"control": "b control cli", "db-b": "b db-b cli"}
    assert plan.steps["c"].preview == {"control": "c <output of a.value>"}
    assert plan.steps["d"].preview == {"control": "c <output of b.value>"}
    # the same expression, read by a step that does not need ``a``, is still refused
    wrong = runbook + "  - {id: e, hosts: control, run: 'c {{ steps.a.value }}', undo: x}\n"
    with pytest.raises(ValidationError) as refused:
        make_plan(tmp_path, wrong)
    assert [p.step for p in refused.value.problems] == ["e"]


def test_host_and_site_objects_in_templates(tmp_path: Path) -> None:
    """host, site(), hosts(), source, target and direction render as documented."""
    runbook = (
        "name: ctx\nsteps:\n  - id: s\n    hosts: web@target\n"
        "    run: >-\n      {{ direction }} {{ source }}>{{ target }} {{ host.name }}@{{ host.address }}"
        ":{{ host.port }} {{ host.roles | join(',') }} {{ host.site }}"
        " {{ site(target).vars.vip }} {{ hosts('app@source') | map(attribute='name') | join(',') }}\n"
        "    undo: echo\n"
    )
    plan = make_plan(tmp_path, runbook)
    assert plan.steps["s"].preview == {
        "app-b1": "failover site-a>site-b app-b1@10.0.2.31:22 app,web site-b 10.0.2.10 app-a1,app-a2"
    }


@pytest.mark.parametrize(
    "value",
    ["plain", "two words", "a;rm -rf /", "$(reboot)", "it's", "`id`", "x > /etc/passwd", ""],
)
def test_quote_filter_makes_any_value_one_shell_word(tmp_path: Path, value: str) -> None:
    """``| quote`` turns any value, shell metacharacters included, into exactly one word."""
    runbook = (
        "name: q\nsteps:\n  - id: s\n    hosts: control\n"
        "    run: echo {{ vars.v | quote }}\n    undo: echo\n"
    )
    plan = make_plan(tmp_path, runbook, cli_vars={"v": value})
    rendered = plan.steps["s"].preview["control"]
    assert shlex.split(rendered) == ["echo", value]
    if value == "plain":
        assert rendered == "echo plain"


def test_seconds_filter_turns_durations_into_seconds(tmp_path: Path) -> None:
    """``| seconds`` reads a duration (or a number) as a float number of seconds."""
    runbook = (
        "name: s\nvars: {grace: 1m30s}\nsteps:\n  - id: s\n    hosts: control\n"
        "    run: sleep {{ vars.grace | seconds }} {{ '500ms' | seconds }} {{ 5 | seconds }}\n"
        "    undo: echo\n"
    )
    plan = make_plan(tmp_path, runbook)
    assert plan.steps["s"].preview["control"] == "sleep 90.0 0.5 5.0"


# -- secrets and placeholders ------------------------------------------------------------------


SECRET_RUNBOOK = """\
name: secrets
vars: {db_password: hunter2-pw}
steps:
  - id: login
    hosts: db@target
    run: >-
      dbctl login --password {{ vars.db_password | quote }}
      --api {{ vars.api | default('none') | quote }} --token {{ vars.token | default('none') | quote }}
    undo: dbctl logout
"""


def test_secret_named_variable_is_masked_in_text_and_json_plans(tmp_path: Path) -> None:
    """A variable named ``*_password`` shows as *** in the text and JSON previews."""
    plan = make_plan(tmp_path, SECRET_RUNBOOK)
    for fmt in ("text", "json"):
        output = render_plan(plan, fmt)
        assert "hunter2-pw" not in output
        assert "--password ***" in output
    doc = plan_document(plan)
    assert doc["steps"][0]["commands"]["db-b"].startswith("dbctl login --password *** --api none")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_secret_var_and_environment_secrets_are_masked_by_drx_plan(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    fmt: str,
) -> None:
    """``--secret-var`` values and ``DRX_SECRET_<NAME>`` (as ``vars.<name>``) print as ***."""
    rb, inv = write(tmp_path, SECRET_RUNBOOK)
    monkeypatch.setenv("DRX_SECRET_TOKEN", "tok-from-env-42")
    code, out, err = drx(
        capsys,
        "plan",
        "site-b",
        "-f",
        fmt,
        "--secret-var",
        "api=api-key-from-cli-7",
        "-r",
        str(rb),
        "-i",
        str(inv),
        "--state-dir",
        str(tmp_path / "state"),
    )
    assert code == 0, err
    for secret in ("hunter2-pw", "api-key-from-cli-7", "tok-from-env-42"):
        assert secret not in out + err
    assert "--password *** --api *** --token ***" in out


def test_preview_shows_placeholders_for_values_known_at_run_time(tmp_path: Path) -> None:
    """``steps['check-lag'].value`` previews as ``<output of check-lag.value>``, even quoted."""
    runbook = """\
name: ph
steps:
  - id: check-lag
    kind: check
    hosts: db@target
    run: dbctl lag
    capture: number
  - id: promote
    hosts: db@target
    run: dbctl promote --lag {{ steps['check-lag'].value | quote }} --rc {{ steps['check-lag'].rc }}
    undo: dbctl demote
    when: "steps['check-lag'].value < 5"
    needs: [check-lag]
"""
    plan = make_plan(tmp_path, runbook)
    assert plan.steps["promote"].preview == {
        "db-b": "dbctl promote --lag <output of check-lag.value> --rc <output of check-lag.rc>"
    }
    assert "<output of check-lag.value>" in render_plan(plan, "text")


# -- the renderings ----------------------------------------------------------------------------


def sample_plan(tmp_path: Path) -> Plan:
    runbook, inventory = load_both(str(SAMPLE_RUNBOOK), str(SAMPLE_INVENTORY))
    return build_plan(runbook, inventory, "site-b")


def test_plan_json_has_every_field_of_the_contract(tmp_path: Path) -> None:
    """The JSON plan carries every field of SPEC §6, with the sample's expected values."""
    doc = json.loads(render_plan(sample_plan(tmp_path), "json"))
    assert {
        "runbook",
        "direction",
        "source",
        "target",
        "waves",
        "steps",
        "predicted_rto_s",
        "predicted_rto_is_lower_bound",
        "critical_path",
    } <= set(doc)
    assert (doc["runbook"], doc["direction"], doc["source"], doc["target"]) == (
        "webapp",
        "failover",
        "site-a",
        "site-b",
    )
    assert doc["waves"] == [
        ["announce", "freeze-writes"],
        ["fence-source-db", "check-lag"],
        ["promote-db"],
        ["follow-new-primary", "start-app", "approve-dns"],
        ["warm-cache", "switch-dns"],
    ]
    step_fields = {
        "id",
        "kind",
        "needs",
        "wave",
        "hosts",
        "commands",
        "predicted_s",
        "prediction_source",
        "undo_of",
    }
    for step in doc["steps"]:
        assert step_fields <= set(step), step["id"]
    promote = next(s for s in doc["steps"] if s["id"] == "promote-db")
    assert {k: promote[k] for k in step_fields} == {
        "id": "promote-db",
        "kind": "command",
        "needs": ["check-lag", "fence-source-db"],
        "wave": 2,
        "hosts": ["db-b"],
        "commands": {"db-b": "dbctl promote"},
        "predicted_s": 1.0,
        "prediction_source": "expect",
        "undo_of": None,
    }
    assert doc["critical_path"] == [
        "freeze-writes",
        "check-lag",
        "promote-db",
        "start-app",
        "warm-cache",
    ]
    assert doc["predicted_rto_s"] == 6.0
    assert doc["predicted_rto_is_lower_bound"] is True  # approve-dns has no expect


def test_dot_output_has_every_step_and_edge(tmp_path: Path) -> None:
    """The Graphviz rendering declares every step and draws every need as an edge."""
    plan = sample_plan(tmp_path)
    dot = render_plan(plan, "dot")
    assert dot.startswith("digraph ")
    nodes = set(re.findall(r'^  "([^"]+)" \[label=', dot, re.MULTILINE))
    edges = set(re.findall(r'^  "([^"]+)" -> "([^"]+)"', dot, re.MULTILINE))
    assert nodes == set(plan.steps)
    assert edges == {(need, sid) for sid, ps in plan.steps.items() for need in ps.needs}


def test_dot_highlights_only_the_edges_of_the_critical_path(tmp_path: Path) -> None:
    """In dot, the critical path's own edges are red; a shortcut between two of its steps is not."""
    plan = make_plan(
        tmp_path,
        steps_yaml(("a", [], "1s"), ("b", ["a"], "5s"), ("d", ["a", "b"], "1s")),
    )
    assert plan.critical_path == ["a", "b", "d"]
    red = set(
        re.findall(r'^  "(\w)" -> "(\w)" \[color="red"', render_plan(plan, "dot"), re.MULTILINE)
    )
    assert red == {("a", "b"), ("b", "d")}


def test_mermaid_output_has_every_step_and_edge(tmp_path: Path) -> None:
    """The Mermaid rendering declares every step and draws every need as an edge."""
    plan = sample_plan(tmp_path)
    text = render_plan(plan, "mermaid")
    assert text.startswith("flowchart LR\n")
    names = dict(re.findall(r'^  (s\d+)[\[{]"([a-z0-9_-]+)<br/>', text, re.MULTILINE))
    edges = {(names[a], names[b]) for a, b in re.findall(r"^  (s\d+) --> (s\d+)$", text, re.M)}
    assert set(names.values()) == set(plan.steps)
    assert edges == {(need, sid) for sid, ps in plan.steps.items() for need in ps.needs}


def test_text_plan_lists_waves_hosts_commands_and_the_rto(tmp_path: Path) -> None:
    """The text preview shows each wave, each host's rendered command and the predicted RTO."""
    text = render_plan(sample_plan(tmp_path), "text")
    assert text.startswith("Plan: webapp — failover site-a → site-b\n")
    assert "Wave 0\n" in text and "Wave 4\n" in text
    assert "      db-b: dbctl promote\n" in text
    assert "      control: dnsctl set www 127.0.2.10\n" in text
    assert "Predicted RTO: 6 s vs target 900 s (15m) (lower bound" in text
    assert "Critical path: freeze-writes → check-lag → promote-db → start-app → warm-cache" in text


def test_a_command_string_undo_runs_like_its_step(tmp_path: Path) -> None:
    """A string undo of a sudo step runs with that sudo; a mapping undo says for itself (no
    sudo unless it asks)."""
    rb, inv = write(
        tmp_path,
        "name: u\nsteps:\n"
        "  - {id: a, hosts: control, run: x, sudo: postgres, undo: y}\n"
        "  - {id: b, hosts: control, run: x, sudo: true, undo: {run: y}}\n",
    )
    runbook, _ = load_both(str(rb), str(inv))
    a, b = runbook.by_id["a"].undo, runbook.by_id["b"].undo
    assert a is not None and a.sudo == "postgres"
    assert b is not None and not b.sudo
