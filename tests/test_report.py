"""Reports rendered from summary.json documents: every format, wording, escaping, charts, speed."""

from __future__ import annotations

import copy
import json
import re
import time
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from orchestrator.report import FORMATS, render
from orchestrator.report.charts import LABEL_CHAR_PX, LABEL_GAP_PX, trend
from orchestrator.report.facts import HistoryPoint, target_verdict
from orchestrator.report.units import clean_output, delta, nbytes, nbytes_exact, secs

DATA = Path(__file__).parent / "data" / "summaries"
FIXTURES = sorted(p.stem for p in DATA.glob("*.json"))


def load(name: str) -> dict[str, Any]:
    """A fixture summary by file stem."""
    return json.loads((DATA / f"{name}.json").read_text(encoding="utf-8"))


class _Elements(HTMLParser):
    """Collects (tag, attributes) of every start tag of an HTML/SVG document."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))

    handle_startendtag = handle_starttag


def elements(html: str, tag: str, css: str | None = None) -> list[dict[str, str]]:
    """Attributes of every ``tag`` element, optionally only those having class ``css``."""
    parser = _Elements()
    parser.feed(html)
    return [
        attrs
        for name, attrs in parser.elements
        if name == tag and (css is None or css in attrs.get("class", "").split())
    ]


def expected_bars(summary: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(step, host, attempt) of every host attempt that ran in this run, from the raw summary."""
    bars = set()
    for step in summary["steps"]:
        if step.get("carried_from") or step.get("start_offset_s") is None:
            continue
        if not step.get("hosts"):
            bars.add((step["id"], "", "1"))
        for host in step.get("hosts") or []:
            for attempt in host.get("attempts") or [{"n": 1}]:
                bars.add((step["id"], host["host"], str(attempt["n"])))
    return bars


def big_summary(steps: int = 1000, hosts_per_step: int = 3) -> dict[str, Any]:
    """A generated run of ``steps`` steps in waves of 25, with retries, checks and a gate."""
    out = []
    offset = 0.0
    for i in range(steps):
        wave = i // 25
        kind = "check" if i % 7 == 0 else ("manual" if i == 500 else "command")
        start = wave * 6.0 + (i % 25) * 0.01
        duration = 1.0 + (i % 5)
        hosts = []
        if kind != "manual":
            for h in range(hosts_per_step):
                attempts = [
                    {
                        "n": 1,
                        "start_offset_s": start,
                        "duration_s": duration,
                        "rc": 1 if (i % 50 == 3 and h == 0) else 0,
                        "error": None,
                        "polls": [
                            {"start_offset_s": start + p, "duration_s": 0.1, "ok": p == 2}
                            for p in range(3)
                        ]
                        if kind == "check"
                        else [],
                    }
                ]
                if i % 50 == 3 and h == 0:
                    attempts.append(
                        {
                            "n": 2,
                            "start_offset_s": start + duration + 1,
                            "duration_s": 1.0,
                            "rc": 0,
                            "error": None,
                            "polls": [],
                        }
                    )
                hosts.append(
                    {
                        "host": f"host-{h:02d}",
                        "rc": 0,
                        "duration_s": duration,
                        "error": None,
                        "status": "succeeded",
                        "output_tail": f"step {i} ok\n" * 5,
                        "attempts": attempts,
                    }
                )
        offset = max(offset, start + duration + 2)
        out.append(
            {
                "id": f"step-{i:04d}",
                "name": f"Step number {i}",
                "kind": kind,
                "status": "succeeded",
                "start_offset_s": start,
                "duration_s": duration,
                "attempts": max((len(h["attempts"]) for h in hosts), default=1),
                "needs": [f"step-{i - 25:04d}"] if i >= 25 else [],
                "undo_of": None,
                "wave": wave,
                "error": None,
                "carried_from": None,
                "outcome_unknown": False,
                "manual_wait_s": duration if kind == "manual" else None,
                "approved_by": "operator" if kind == "manual" else None,
                "value": None,
                "hosts": hosts,
            }
        )
    return {
        "run_id": "20261201T000000.000Z-failover-site-b",
        "runbook": "big",
        "direction": "failover",
        "source": "site-a",
        "target": "site-b",
        "parent_run": None,
        "status": "succeeded",
        "started_at": "2026-12-01T00:00:00.000Z",
        "finished_at": "2026-12-01T00:04:10.000Z",
        "rto_started_at": "2026-12-01T00:00:00.000Z",
        "rto": {"measured_s": offset, "target_s": 900.0, "met": True},
        "rpo": None,
        "manual_wait_s": 3.0,
        "critical_path": [f"step-{i:04d}" for i in range(24, steps, 25)],
        "health": {
            "held_at": "2026-12-01T00:04:05.000Z",
            "polls": 4,
            "held_offset_s": offset,
            "timed_out": False,
        },
        "exit_code": 0,
        "yes": False,
        "steps": out,
    }


# --------------------------------------------------------------------------- every format


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", FIXTURES)
def test_every_format_renders_every_fixture(name: str, fmt: str) -> None:
    """Each format renders each realistic fixture and names the run."""
    summary = load(name)
    out = render(summary, fmt)
    assert isinstance(out, str) and out
    assert summary["run_id"] in out


def test_unknown_format_is_rejected() -> None:
    """An unknown format is a ValueError naming the valid ones, not an empty report."""
    with pytest.raises(ValueError, match="html"):
        render(load("failover_succeeded"), "pdf")


def test_json_format_is_the_summary_itself() -> None:
    """The json format is exactly json.dumps(summary, indent=2)."""
    summary = load("failover_resumed")
    assert render(summary, "json") == json.dumps(summary, indent=2)


def _strip(summary: dict[str, Any], keys: tuple[str, ...], step_keys: tuple[str, ...]) -> None:
    for key in keys:
        summary.pop(key, None)
    for step in summary.get("steps") or []:
        for key in step_keys:
            step.pop(key, None)
        for host in step.get("hosts") or []:
            host.pop("attempts", None)
            host.pop("status", None)


EXTENSIONS = (
    "runbook_file",
    "inventory_file",
    "rto_started_at",
    "manual_wait_s",
    "critical_path",
    "health",
    "exit_code",
    "yes",
)
STEP_EXTENSIONS = (
    "name",
    "start_offset_s",
    "wave",
    "error",
    "carried_from",
    "outcome_unknown",
    "manual_wait_s",
    "approved_by",
    "value",
)


def _nulled(summary: dict[str, Any]) -> dict[str, Any]:
    for key in (*EXTENSIONS, "rpo", "parent_run", "started_at", "finished_at"):
        summary[key] = None
    summary["rto"] = {
        "measured_s": None,
        "target_s": None,
        "met": None,
        "start_step": None,
        "end_to_end_s": None,
        "predicted_s": None,
    }
    for step in summary["steps"]:
        for key in (*STEP_EXTENSIONS, "duration_s", "started_at", "finished_at", "attempts"):
            step[key] = None
        step["hosts"] = None
    return summary


DEGENERATE: list[tuple[str, dict[str, Any]]] = [
    ("empty document", {}),
    ("only a run id", {"run_id": "r1"}),
    (
        "null collections",
        {
            "run_id": "r2",
            "steps": None,
            "rto": None,
            "rpo": None,
            "health": None,
            "critical_path": None,
        },
    ),
    (
        "mistyped fields",
        {
            "run_id": 7,
            "steps": [{"id": 3, "hosts": "db-b", "duration_s": "4", "needs": "x"}, "not-a-step"],
            "rto": {"measured_s": "fast", "target_s": True},
            "critical_path": ["missing-step"],
            "health": {"polls": "3"},
        },
    ),
    (
        "crashed, unknown step",
        {
            "run_id": "r3",
            "status": "crashed",
            "direction": "failover",
            "steps": [
                {
                    "id": "a",
                    "status": "unknown",
                    "outcome_unknown": True,
                    "start_offset_s": 0.0,
                    "hosts": [{"host": "h", "rc": None, "attempts": [{"n": 1}]}],
                }
            ],
        },
    ),
]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("label", "summary"),
    [
        *DEGENERATE,
        ("minimal fixture without extensions", load("failover_minimal")),
        (
            "succeeded fixture with extensions removed",
            (lambda s: (_strip(s, EXTENSIONS, STEP_EXTENSIONS), s)[1])(load("failover_succeeded")),
        ),
        ("succeeded fixture with extensions null", _nulled(load("failover_succeeded"))),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_missing_or_null_fields_never_crash(label: str, summary: dict[str, Any], fmt: str) -> None:
    """Old, partial or malformed summaries still render in every format."""
    assert render(summary, fmt, compare=summary, history=[summary, {}])


# --------------------------------------------------------------------------- wording


@pytest.mark.parametrize(
    ("measured", "target", "state", "text"),
    [
        (61.2, 900.0, "met", "61.2 s of 900 s (15m) target — met with 838.8 s (13m 59s) to spare"),
        (187.4, 120.0, "missed", "187.4 s (3m 07s) of 120 s (2m) target — missed by 67.4 s"),
        (120.0, 120.0, "met", "120 s (2m) of 120 s (2m) target — met with 0 s to spare"),
        (
            None,
            900.0,
            "unmeasured",
            "not measured — health never held; the 900 s (15m) target was not met",
        ),
        (70.0, None, "no-target", "70 s (no target set)"),
    ],
)
def test_rto_verdict_wording(
    measured: float | None, target: float | None, state: str, text: str
) -> None:
    """An RTO against its target reads 'X of Y target — met with Z to spare / missed by Z'."""
    verdict = target_verdict(measured, target, unmeasured="health never held")
    assert (verdict.state, verdict.text) == (state, text)


@pytest.mark.parametrize("fmt", ["text", "md", "html"])
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "failover_succeeded",
            "61.2 s of 900 s (15m) target — met with 838.8 s (13m 59s) to spare",
        ),
        ("failover_rpo_bytes", "187.4 s (3m 07s) of 120 s (2m) target — missed by 67.4 s"),
        (
            "failover_failed_timeout",
            "not measured — the run failed before the service was restored",
        ),
    ],
)
def test_reports_state_rto_against_target(name: str, expected: str, fmt: str) -> None:
    """Human formats say whether the RTO target was met or missed, and by how much."""
    assert expected in render(load(name), fmt)


@pytest.mark.parametrize("fmt", ["text", "md", "html"])
def test_resumed_run_reports_both_rto_figures_labelled(fmt: str) -> None:
    """A resumed run shows the end-to-end RTO first, judged against the target (the miss), then
    its own part, labelled and not judged."""
    out = render(load("failover_resumed"), fmt)
    assert "RTO of this run" in out or "RTO (run)" in out
    assert "45.6 s: the part after the resume (the target is judged end to end)" in out
    assert "End-to-end RTO" in out or "RTO (e2e)" in out
    missed = "1,675.3 s (27m 55s) of 900 s (15m) target — missed by 775.3 s (12m 55s)"
    assert missed in out and out.index(missed) < out.index("the part after the resume")
    assert "20261127T090000.250Z-failover-site-b" in out


@pytest.mark.parametrize("fmt", ["text", "md", "html", "junit"])
def test_rpo_in_bytes_is_reported_in_binary_units(fmt: str) -> None:
    """An RPO measured in bytes reads in KB/MB (1 KB = 1024 B) with the exact count."""
    out = render(load("failover_rpo_bytes"), fmt)
    assert "1.5 MB (1,572,864 B) of 16 MB target — met with 14.5 MB to spare" in out


@pytest.mark.parametrize("fmt", ["text", "md", "html"])
def test_manual_gate_time_is_reported_apart_from_automated_time(fmt: str) -> None:
    """Time waiting at gates is given on its own, with its share of the RTO and the rest."""
    out = render(load("failover_succeeded"), fmt)
    assert "12 s waiting at 1 manual gate" in out
    assert "19.6% of the RTO" in out
    assert "Automated time: 49.2 s (80.4%)" in out
    assert "approved by the operator" in out


@pytest.mark.parametrize("fmt", ["text", "md"])
def test_critical_path_lists_each_step_with_its_share(fmt: str) -> None:
    """The measured critical path gives each step's duration and share of the RTO."""
    out = render(load("failover_succeeded"), fmt)
    lines = out.splitlines()
    for step, duration, share in [
        ("check-lag", "10.4 s", "17.0%"),
        ("approve-dns", "12 s", "19.6%"),
        ("dns-propagation", "30 s", "49.0%"),
    ]:
        assert any(step in line and duration in line and share in line for line in lines), step
    assert "health checks until held" in out


def test_failed_run_shows_the_last_lines_of_the_failing_output() -> None:
    """A failure shows its cause and the last 20 lines of the host's output, nothing earlier."""
    out = render(load("failover_failed_timeout"), "text")
    assert "promote-db timed out on db-b" in out
    assert "last 20 of 37 recorded lines" in out
    assert "dbctl: giving up after 60s" in out
    assert "at 0/300011" in out
    assert "at 0/300010" not in out
    assert "\x1b" not in out and "\x07" not in out


@pytest.mark.parametrize("fmt", ["text", "md", "html"])
def test_failback_names_the_failover_it_reversed(fmt: str) -> None:
    """A failback report names the failover run it reverses and what each step undoes."""
    out = render(load("failback"), fmt)
    assert "20261126T174500.123Z-failover-site-b" in out
    assert "reverses" in out.lower()
    assert "site-b → site-a" in out
    assert "undoes" in out.lower() or "Undoes" in out
    assert "promote-db" in out


@pytest.mark.parametrize("fmt", ["text", "md", "html"])
def test_health_polls_and_holding_moment_are_reported(fmt: str) -> None:
    """The report says when health held at the target and after how many polls."""
    out = render(load("failover_succeeded"), fmt)
    assert "Held at site-b at 2026-11-26 17:46:01.700 UTC (+61.2 s) after 2 polls." in out


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("cancelled", "was cancelled by the operator"),
        ("crashed", "the controller stopped mid-run"),
    ],
)
def test_interrupted_runs_are_described_as_such(status: str, expected: str) -> None:
    """Cancelled and crashed runs say so, and list steps whose outcome is unknown."""
    summary = load("failover_failed_timeout")
    summary["status"] = status
    step = summary["steps"][2]
    step["status"], step["outcome_unknown"], step["error"] = "cancelled", True, None
    out = render(summary, "text")
    assert expected in out
    assert "promote-db" in out.split("Outcome", 1)[1].split("Objectives", 1)[0]


def test_text_is_plain_unless_colour_is_requested() -> None:
    """The text format has ANSI codes only with color=True."""
    summary = load("failover_rpo_bytes")
    assert "\x1b[" not in render(summary, "text")
    assert "\x1b[" in render(summary, "text", color=True)


def test_comparison_shows_deltas_and_critical_path_change() -> None:
    """Comparing two runs gives per-step and RTO deltas and how the critical path changed."""
    out = render(load("failover_resumed"), "md", compare=load("failover_succeeded"))
    assert "## Compared with `20261126T174500.123Z-failover-site-b`" in out
    assert "RTO 45.6 s against 61.2 s" in out and "-15.6 s (faster)" in out
    assert "The critical path changed" in out
    assert "Joined: start-app. Left: approve-dns." in out
    assert "| `start-app` | 11.2 s | 3.1 s | -8.1 s |" in out


def test_comparison_with_the_same_path_says_unchanged() -> None:
    """When the critical path is the same in both runs, the report says it is unchanged."""
    out = render(load("failover_succeeded"), "text", compare=load("failover_succeeded"))
    assert "The critical path is unchanged" in out
    assert "±0 s" in out


@pytest.mark.parametrize("fmt", ["text", "md", "html"])
def test_history_summarises_earlier_runs(fmt: str) -> None:
    """With history, the report summarises the RTO over the runs and marks this one."""
    history = [
        load("failover_minimal"),
        load("failover_succeeded"),
        load("failover_failed_timeout"),
    ]
    out = render(load("failover_resumed"), fmt, history=history)
    assert "4 runs of this runbook: RTO median 61.2 s, best 45.6 s, worst 70 s" in out
    assert "3 of 4 met the target" in out


# --------------------------------------------------------------------------- markdown


def test_markdown_escapes_names_that_would_break_tables_or_inject_html() -> None:
    """Pipes, HTML and emphasis in names cannot break the Markdown tables or inject markup."""
    summary = load("failover_succeeded")
    summary["steps"][0]["name"] = "Drain | <b>all</b> *writers*"
    summary["steps"][0]["hosts"][0]["host"] = "app|a1"
    out = render(summary, "md")
    assert "<b>" not in out
    assert r"Drain \| &lt;b&gt;all&lt;/b&gt; \*writers\*" in out
    header = next(line for line in out.splitlines() if line.startswith("| # | Step"))
    row = next(line for line in out.splitlines() if line.startswith("| 1 |"))
    assert len(re.findall(r"(?<!\\)\|", row)) == len(re.findall(r"(?<!\\)\|", header))


def test_markdown_output_fence_outlasts_backticks_in_output() -> None:
    """Output containing ``` cannot close its code fence early."""
    summary = load("failover_failed_timeout")
    summary["steps"][2]["hosts"][0]["output_tail"] = "before\n```\nafter ````x\n"
    out = render(summary, "md")
    assert "`````text\nbefore\n```\nafter ````x\n`````" in out


# --------------------------------------------------------------------------- junit


@pytest.mark.parametrize(
    ("name", "tests", "failures", "errors", "skipped", "rto_failed"),
    [
        ("failover_succeeded", 9, 0, 0, 0, False),
        ("failover_failed_timeout", 9, 2, 0, 4, True),
        ("failback", 6, 0, 0, 1, False),
        ("failover_resumed", 9, 1, 0, 0, True),  # judged end to end: 1675 s of 900
        ("failover_rpo_bytes", 8, 1, 0, 1, True),
        ("failover_minimal", 5, 0, 0, 0, False),
    ],
)
def test_junit_counts_and_rto_target(
    name: str, tests: int, failures: int, errors: int, skipped: int, rto_failed: bool
) -> None:
    """JUnit has a testcase per step plus rto/rpo-target, with consistent counts."""
    summary = load(name)
    root = ET.fromstring(render(summary, "junit"))
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    assert suite.get("name") == f"{summary['runbook']}.{summary['direction']}." + (
        summary["source"] if summary["direction"] == "failback" else summary["target"]
    )
    counts = {k: int(suite.get(k, "-1")) for k in ("tests", "failures", "errors", "skipped")}
    assert counts == {"tests": tests, "failures": failures, "errors": errors, "skipped": skipped}
    cases = suite.findall("testcase")
    assert len(cases) == tests
    assert [c.get("name") for c in cases] == [s["id"] for s in summary["steps"]] + [
        "rto-target",
        "rpo-target",
    ]
    assert {c.get("classname") for c in cases} == {f"{summary['runbook']}.{summary['direction']}"}
    rto = cases[-2]
    assert (rto.find("failure") is not None) is rto_failed
    if summary.get("rpo") is None:
        assert cases[-1].find("skipped") is not None


def test_junit_failure_carries_the_output_tail() -> None:
    """A failed step's <failure> names the cause and holds its output tail, escaped."""
    xml = render(load("failover_failed_timeout"), "junit")
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp;" in xml
    root = ET.fromstring(xml)
    failure = root.find(".//testcase[@name='promote-db']/failure")
    assert failure is not None
    assert failure.get("message") == "promote-db timed out on db-b"
    assert failure.get("type") == "error"
    assert "dbctl: giving up after 60s" in (failure.text or "")


def test_junit_strips_characters_illegal_in_xml() -> None:
    """Control characters in output, names or ids never make the XML unparseable."""
    summary = load("failover_failed_timeout")
    summary["steps"][2]["hosts"][0]["output_tail"] = (
        "nul\x00 bell\x07 esc\x1b[31mred\x1b[0m \ufffe end"
    )
    summary["steps"][2]["name"] = "bad\x01name"
    summary["runbook"] = "web\x0bapp"
    xml = render(summary, "junit")
    failure = ET.fromstring(xml).find(".//testcase[@name='promote-db']/failure")
    assert failure is not None and "nul bell escred  end" in (failure.text or "")


# --------------------------------------------------------------------------- html


HOSTILE = "<script>alert(1)</script> & \"quoted\" 'single'"


def test_html_escapes_output_and_names() -> None:
    """Output, names, hosts and ids appear HTML-escaped in text and attributes, never raw."""
    summary = load("failover_failed_timeout")
    summary["steps"][0]["name"] = HOSTILE
    summary["steps"][0]["hosts"][0]["host"] = "<img src=x onerror=alert(2)>"
    summary["runbook"] = "<b>webapp</b>"
    html = render(summary, "html")
    assert "<script" not in html
    assert "<img" not in html and "<b>webapp" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp;" in html
    assert "&lt;img src=x onerror=alert(2)&gt;" in html
    hosts = {bar["data-host"] for bar in elements(html, "rect", "bar")}
    assert "<img src=x onerror=alert(2)>" in hosts  # the attribute round-trips, escaped


def test_html_has_no_external_resources_or_scripts() -> None:
    """The html report is self-contained: no links, no scripts, no remote src/href/url()."""
    history = [load("failover_minimal"), load("failover_succeeded")]
    for name in FIXTURES:
        html = render(load(name), "html", compare=load("failover_succeeded"), history=history)
        assert "<script" not in html.lower()
        assert "<link" not in html.lower()
        assert "@import" not in html
        assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
        assert not re.search(r"url\(\s*['\"]?(https?:)?//", html, re.I)


@pytest.mark.parametrize("name", FIXTURES)
def test_html_draws_one_bar_per_host_attempt(name: str) -> None:
    """The Gantt chart has exactly one rect.bar per host attempt, identified by data attributes."""
    summary = load(name)
    bars = elements(render(summary, "html"), "rect", "bar")
    drawn = [(b["data-step"], b["data-host"], b["data-attempt"]) for b in bars]
    assert len(drawn) == len(set(drawn))
    if name == "failover_minimal":
        # No offsets or attempts recorded: one bar per host, placed from the timestamps.
        assert len(drawn) == 3
    else:
        assert set(drawn) == expected_bars(summary)


def test_html_gantt_marks_retries_failures_polls_and_critical_path() -> None:
    """Retries are separate bars, failures and timeouts are classed, polls and critical lanes show."""
    html = render(load("failover_succeeded"), "html")
    retry = [
        b
        for b in elements(html, "rect", "bar")
        if b["data-step"] == "start-app" and b["data-host"] == "app-b1"
    ]
    assert [b["data-attempt"] for b in retry] == ["1", "2"]
    assert "failed" in retry[0]["class"].split() and "ok" in retry[1]["class"].split()
    assert len(elements(html, "line", "poll")) == 3
    critical = {g["data-step"] for g in elements(html, "g", "critical")}
    assert critical == set(load("failover_succeeded")["critical_path"])
    manual = [b for b in elements(html, "rect", "bar") if b["data-step"] == "approve-dns"]
    assert "manual" in manual[0]["class"].split()
    assert elements(html, "line", "rto-target") and elements(html, "line", "health-held")

    failed = render(load("failover_failed_timeout"), "html")
    (timeout,) = [b for b in elements(failed, "rect", "bar") if b["data-step"] == "promote-db"]
    assert "timeout" in timeout["class"].split()


def test_html_draws_the_rto_target_even_far_beyond_the_run() -> None:
    """A target far past the run's end is still drawn, right of the last bar, on a broken axis."""
    html = render(load("failover_succeeded"), "html")  # 61 s run, 900 s target
    (target,) = elements(html, "line", "rto-target")
    last = max(float(b["x"]) + float(b["width"]) for b in elements(html, "rect", "bar"))
    assert float(target["x1"]) > last
    assert "axis-break" in html
    assert "RTO target 900 s (15m)" in html


def test_html_trend_chart_only_with_history() -> None:
    """The RTO trend chart appears with history: a point per measured run (a failed run with
    no measured RTO is left out), this run marked and plotted at its end-to-end RTO."""
    summary = load("failover_resumed")
    assert 'class="trend"' not in render(summary, "html")
    history = [
        load("failover_minimal"),
        load("failover_succeeded"),
        load("failover_failed_timeout"),
    ]
    html = render(summary, "html", history=history)
    points = [c for c in elements(html, "circle") if "point" in c.get("class", "").split()]
    assert len(points) == 3
    assert sum("current" in p["class"].split() for p in points) == 1
    assert "end to end" in html.split('point missed current"', 1)[1].split("</circle>", 1)[0]


def _history_point(i: int, **changes: Any) -> HistoryPoint:
    fields: dict[str, Any] = {
        "run_id": f"run-{i}",
        "started_at": f"2026-11-26T17:{i:02d}:00.000Z",
        "status": "succeeded",
        "measured_s": 10.0 + i,
        "target_s": 60.0,
        "met": True,
        "current": False,
    }
    return HistoryPoint(**(fields | changes))


def test_trend_plots_only_comparable_measured_runs() -> None:
    """Runs of another runbook or direction, and runs without a measured RTO, are not plotted;
    a resumed run is plotted at its end-to-end RTO."""
    points = [
        _history_point(0),
        _history_point(1, comparable=False),
        _history_point(2, measured_s=None, status="failed"),
        _history_point(3, measured_s=5.0, end_to_end_s=50.0, current=True),
    ]
    chart = trend(points)
    assert chart is not None
    assert [p.title.split(":")[0] for p in chart.points] == ["run-0", "run-3"]
    assert "RTO 50 s end to end" in chart.points[1].title


@pytest.mark.parametrize("count", [2, 5, 12, 20, 40])
def test_trend_labels_never_overlap(count: int) -> None:
    """However many drills (a minute apart), the x labels kept are at least a gap apart and
    this run's label is always among them."""
    points = [_history_point(i % 60, current=i == count - 1) for i in range(count)]
    chart = trend(points)
    assert chart is not None
    spans = sorted(
        (x - len(label) * LABEL_CHAR_PX / 2, x + len(label) * LABEL_CHAR_PX / 2)
        for x, label in chart.x_labels
    )
    for (_, right), (left, _) in pairwise(spans):
        assert left - right >= LABEL_GAP_PX
    current_x = next(p.x for p in chart.points if "current" in p.css)
    assert current_x in [x for x, _ in chart.x_labels]


# --------------------------------------------------------------------------- units and speed


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "—"),
        (0.0, "0 s"),
        (0.04, "0.04 s"),
        (61.2, "61.2 s"),
        (900.0, "900 s (15m)"),
        (1675.3, "1,675.3 s (27m 55s)"),
        (3725.0, "3,725 s (1h 02m 05s)"),
    ],
)
def test_seconds_are_human_readable(value: float | None, text: str) -> None:
    """Durations read in seconds, with the clock form from two minutes on."""
    assert secs(value) == text


@pytest.mark.parametrize(
    ("fn", "value", "text"),
    [
        (nbytes, 0, "0 B"),
        (nbytes, 524288, "512 KB"),
        (nbytes, 16777216, "16 MB"),
        (nbytes_exact, 1572864, "1.5 MB (1,572,864 B)"),
        (delta, 3.21, "+3.2 s"),
        (delta, -1.0, "-1 s"),
        (delta, 0.01, "±0 s"),
    ],
)
def test_sizes_and_deltas_are_human_readable(fn: Any, value: float, text: str) -> None:
    """Sizes use binary units (1 KB = 1024 B); deltas carry their sign."""
    assert fn(value) == text


def test_output_cleaning_removes_terminal_control_sequences() -> None:
    """ANSI codes, carriage-return redraws and control characters are removed from output."""
    raw = "\x1b[1;31mred\x1b[0m\n10%\r50%\r100%\x07\r\nok\x00\n\x1b]0;title\x07done"
    assert clean_output(raw) == "red\n100%\nok\ndone"


def test_rendering_a_thousand_step_run_is_fast() -> None:
    """Every format renders a 1,000-step, 3-host run in well under the 2 s budget each."""
    summary = big_summary()
    other = copy.deepcopy(summary)
    timings = {}
    for fmt in FORMATS:
        start = time.perf_counter()
        out = render(summary, fmt, compare=other, history=[other])
        timings[fmt] = time.perf_counter() - start
        assert "step-0999" in out
    print("1,000-step render times:", {k: f"{v:.3f}s" for k, v in timings.items()})
    html = render(summary, "html")
    assert len(elements(html, "rect", "bar")) == len(expected_bars(summary))
    # Generous: a loaded CI machine must not make this flaky; the budget is 2 s per format.
    assert max(timings.values()) < 10


@pytest.mark.parametrize("fmt", ["text", "md", "html"])
def test_a_plan_without_any_prediction_is_not_reported_as_predicting_0_s(fmt: str) -> None:
    """A run whose plan predicted 0 s (no step had history or expect) says the plan had no
    prediction, not "The plan predicted 0 s; the run took 1 s more"."""
    summary = load("failover_succeeded")
    summary["rto"]["predicted_s"] = 0.0
    out = render(summary, fmt)
    assert "The plan had no prediction" in out
    assert "The plan predicted" not in out
