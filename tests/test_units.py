"""Small building blocks: durations, sizes, captured values, the YAML loader's data and lines,
template rendering (the fast path against Jinja itself) and redaction."""

from __future__ import annotations

import datetime
import math
import re
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

from orchestrator.model.templating import (
    ENV,
    Placeholder,
    Redactor,
    StepAccessError,
    StepsView,
    collect_secrets,
    evaluate,
    render,
)
from orchestrator.model.units import format_duration, is_size, parse_duration, parse_size
from orchestrator.model.yaml_source import LList, LMap, load_yaml
from orchestrator.run.executor import capture_value

# -- durations and sizes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1m30s", 90.0),
        ("2h0m5s", 7205.0),
        ("1.5s", 1.5),
        ("1d", 86400.0),
        ("90", 90.0),
        ("0.25", 0.25),
        (" 45s ", 45.0),
        (90, 90.0),
        (2.5, 2.5),
        (0, 0.0),
    ],
)
def test_parse_duration_accepts_the_documented_forms(text: object, seconds: float) -> None:
    """Durations are 500ms, 30s, 5m, 1h, 1h30m or a plain number of seconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["5 minutes", "", "abc", "5x", "m5", "5m30", "1h 30m", "30 s", "-5", "-1s", -1, True, None],
)
def test_parse_duration_refuses_anything_else(text: object) -> None:
    """Anything else is refused with a readable reason (never read as 0)."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["nan", "inf", "infinity"])
def test_parse_duration_refuses_nan_and_infinity(text: str) -> None:
    """'nan' and 'inf' are not durations: a timeout of nan or inf seconds means nothing."""
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0B", 0),
        ("512KB", 512 * 1024),
        ("16MB", 16 * 1024**2),
        ("1GB", 1024**3),
        ("1.5KB", 1536),
        ("16mb", 16 * 1024**2),
        ("16 MB", 16 * 1024**2),
    ],
)
def test_parse_size_reads_bytes_with_binary_units(text: str, size: int) -> None:
    """Sizes are 0B, 512KB, 16MB... with 1 KB = 1024 B."""
    assert is_size(text)
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["16", "30s", "16XB", "MB", "-1KB", ""])
def test_non_sizes_are_not_sizes(text: str) -> None:
    """A duration or a bare number is not a size (so rpo_target picks seconds for them)."""
    assert not is_size(text)
    with pytest.raises(ValueError, match="bad size"):
        parse_size(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "—"),
        (0.85, "0.85 s"),
        (12.34, "12.3 s"),
        (245, "245 s (4m 05s)"),
        (3720, "3,720 s (1h 02m)"),
    ],
)
def test_format_duration_is_the_one_form_everywhere(seconds: float | None, text: str) -> None:
    """Durations print as seconds (the clock form added from two minutes on), the same in the
    terminal, plans and reports."""
    assert format_duration(seconds) == text


# -- captured values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "stdout", "value"),
    [
        ("text", "  caught up \n", "caught up"),
        ("number", "lag: 3 s\n", 3),
        ("number", "-2 behind", -2),
        ("number", "1.50", 1.5),
        ("number", "1e3", 1000.0),
        ("number", "replica at v2.5", 2.5),
        ("number", "no number here", None),
        ("json", '{"lag": [1, 2]}', {"lag": [1, 2]}),
        ("json", "not json", None),
        (r"lag=(\d+)s", "x lag=12s y", "12"),
        (r"lag=(\d+)s", "nothing", None),
        (None, "5", None),
    ],
)
def test_capture_value(kind: str | None, stdout: str, value: Any) -> None:
    """capture: text, first number, json or a regex's first group; nothing found is None."""
    got = capture_value(kind, stdout)
    assert got == value
    assert type(got) is type(value)


def test_number_capture_is_int_unless_written_with_fraction_or_exponent() -> None:
    """``number`` gives an int for 7 and a float for 7.0 and 7e0."""
    assert isinstance(capture_value("number", "7"), int)
    assert isinstance(capture_value("number", "7.0"), float)
    assert isinstance(capture_value("number", "7e0"), float)


# -- the YAML loader ---------------------------------------------------------------------------

YAML_DOC = """\
ints: [1, -3, +4, 0x1F, 1_000]
floats: [2.5, .inf, 1e3]
other: [true, No, null, ~, "x", '', 2020-01-02]
text: !!str 5
base: &base {k: v}
alias: *base
merged: {<<: *base, z: 1}
empty:
5: an int key
"""


def test_load_yaml_reads_what_pyyaml_reads(tmp_path: Path) -> None:
    """The line-aware loader returns the same values as yaml.safe_load (keys as strings)."""
    path = tmp_path / "doc.yaml"
    path.write_text(YAML_DOC, encoding="utf-8")
    loaded = load_yaml(path)
    assert loaded.problems == []
    expected = {str(k): v for k, v in yaml.safe_load(YAML_DOC).items()}
    assert loaded.data == expected
    assert loaded.data["other"][-1] == datetime.date(2020, 1, 2)
    assert math.isinf(loaded.data["floats"][1])


def test_load_yaml_remembers_lines(tmp_path: Path) -> None:
    """Mappings know the line of each key, lists the line of each item."""
    path = tmp_path / "doc.yaml"
    path.write_text("a: 1\nsteps:\n  - id: x\n    run: y\n  - id: z\n", encoding="utf-8")
    data = load_yaml(path).data
    assert isinstance(data, LMap)
    assert (data.line_of("a"), data.line_of("steps")) == (1, 2)
    steps = data["steps"]
    assert isinstance(steps, LList)
    assert [steps.line_of(0), steps.line_of(1)] == [3, 5]
    assert (steps[0].line, steps[0].line_of("run"), steps[0].line_of("missing")) == (3, 4, 3)


def test_load_yaml_reports_every_duplicate_key(tmp_path: Path) -> None:
    """Each repeated key is a problem at its own line; the first value is kept."""
    path = tmp_path / "doc.yaml"
    path.write_text("a: 1\nb: {c: 1, c: 2}\na: 3\n", encoding="utf-8")
    loaded = load_yaml(path)
    assert [(p.line, p.message) for p in loaded.problems] == [
        (2, "duplicate key 'c' (first defined on line 2)"),
        (3, "duplicate key 'a' (first defined on line 1)"),
    ]
    assert loaded.data == {"a": 1, "b": {"c": 1}}


@pytest.mark.parametrize(
    ("text", "line", "column", "message"),
    [
        (
            "a: 1\nb: c: d\n",
            2,
            5,
            "line 2 ('b: c: d') has a ': ' inside a value: put the value in quotes (or, if it "
            "is a new field, start it on a line of its own)",
        ),
        ("a:\n\t- b\n", 2, 1, "found character '\\t' that cannot start any token"),
        (
            "a: [1, 2\nb: 3\n",
            1,
            4,
            "the '[' opened here is never closed (expected ',' or ']', but got ':' on line 2, "
            "column 2)",
        ),
        ("a: !custom 1\n", 1, 4, "could not determine a constructor for the tag '!custom'"),
    ],
)
def test_load_yaml_syntax_errors_name_line_column_and_culprit(
    tmp_path: Path, text: str, line: int, column: int, message: str
) -> None:
    """A YAML error is one problem with its line, column and what is wrong, in the operator's
    words where the parser's would puzzle them."""
    path = tmp_path / "doc.yaml"
    path.write_text(text, encoding="utf-8")
    loaded = load_yaml(path)
    assert loaded.data is None
    [problem] = loaded.problems
    assert (problem.line, problem.column) == (line, column)
    assert problem.message == f"YAML syntax error: {message}"


def test_load_yaml_of_a_missing_file_is_a_problem(tmp_path: Path) -> None:
    """An unreadable file is reported, not raised."""
    [problem] = load_yaml(tmp_path / "absent.yaml").problems
    assert problem.message.startswith("cannot read file")


def test_load_yaml_of_a_non_utf8_file_is_a_problem(tmp_path: Path) -> None:
    """A file that is not UTF-8 is reported as such, not raised as an internal error."""
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    [problem] = load_yaml(path).problems
    assert problem.message.startswith("cannot read file: not UTF-8")


# -- templates ---------------------------------------------------------------------------------


def _context() -> dict[str, Any]:
    return {
        "vars": {"a": "x y", "n": 5, "none": None, "grace": "1m"},
        "host": {"name": "db-b", "roles": ["db"]},
        "steps": StepsView(["check-lag"]),
        "target": "site-b",
    }


@pytest.mark.parametrize(
    "source",
    [
        "plain text, no template",
        "a {{ vars.a | quote }} b {{ vars.n }}",
        "trailing newline {{ vars.n }}\n",
        "two\nlines {{ vars.n }}\n\n",
        "{{ vars.none }} {{ vars.n * 2 }}{{ vars.n ~ 'x' }}",
        "{{ range(3) | list }} {{ dict(a=1) }}",
        "{{ vars.a, vars.n }}",
        "{{ {'a': {'b': 1}} }}",
        "x {{ '}}' }} y {{ '{{' }} {{ '%}' }}",
        "{{- vars.a -}} z",
        "{% if vars.n > 3 %}big{% endif %} {# note #}",
        "{{ host.roles | join(',') }}@{{ target }} {{ vars.grace | seconds }}",
        "{{ steps['check-lag'].value | quote }}",
    ],
)
def test_render_matches_jinja(source: str) -> None:
    """Rendering a command gives exactly what Jinja gives for the same template and context."""
    ctx = _context()
    assert render(source, ctx) == (ENV.from_string(source).render(ctx) if "{" in source else source)


@pytest.mark.parametrize(
    ("source", "error", "message"),
    [
        ("{{ nope }}", jinja2.exceptions.UndefinedError, "'nope' is undefined"),
        ("x {{ vars.zz }}", jinja2.exceptions.UndefinedError, "has no attribute 'zz'"),
        ("{{ steps['promote'] }}", StepAccessError, "steps['promote'] is not available"),
        ("{{ x", jinja2.exceptions.TemplateSyntaxError, "unexpected end of template"),
        ("{{ }}", jinja2.exceptions.TemplateSyntaxError, "Expected an expression"),
        ("a {{ b }", jinja2.exceptions.TemplateSyntaxError, "unexpected '}'"),
    ],
)
def test_render_fails_like_jinja(source: str, error: type[Exception], message: str) -> None:
    """Undefined names, unreadable steps and syntax errors raise what Jinja raises."""
    ctx = _context()
    for attempt in (lambda: render(source, ctx), lambda: ENV.from_string(source).render(ctx)):
        with pytest.raises(error, match=re.escape(message)):
            attempt()


def test_render_is_sandboxed() -> None:
    """Templates cannot reach Python internals or change the context."""
    ctx = _context()
    with pytest.raises(jinja2.exceptions.SecurityError):
        render("{{ vars.a.__class__.__mro__ }}", ctx)
    with pytest.raises(jinja2.exceptions.SecurityError):
        render("{{ host.roles.append('x') }}", ctx)
    assert ctx["host"]["roles"] == ["db"]


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("rc == 0", True),
        ("value <= 5", False),  # a placeholder: never true, never an error
        ("vars.n > 3", True),
        ("namespace(a=1).a", 1),
    ],
)
def test_evaluate_conditions(expression: str, value: Any) -> None:
    """``until``/``when`` expressions evaluate over the context; placeholders compare false."""
    ctx = {**_context(), "rc": 0, "value": Placeholder("value")}
    assert evaluate(expression, ctx) == value


@pytest.mark.parametrize(
    "expression", ["vars.missing", "value <= max_lag", "value + nope", "value == nope"]
)
def test_evaluate_refuses_undefined_names(expression: str) -> None:
    """An undefined name in a condition is an error, even next to a run-time placeholder."""
    ctx = {**_context(), "value": Placeholder("value")}
    with pytest.raises(jinja2.exceptions.UndefinedError):
        evaluate(expression, ctx)


def test_placeholder_renders_its_label_and_survives_quote() -> None:
    """A run-time value previews as <output of step.attr>, left as it is by quote."""
    ctx = {"steps": StepsView(["check-lag"])}
    assert render("x {{ steps['check-lag'].stdout | quote }}", ctx) == (
        "x <output of check-lag.stdout>"
    )


# -- secrets -----------------------------------------------------------------------------------


def test_secret_names_are_collected_at_any_depth() -> None:
    """Variables named *_secret, *_password, *_token, *_key are secret; others are not."""
    variables = {
        "db_password": "pw1",
        "api_token": "tok1",
        "site:a": {"ssh_key": "key1", "vip": "10.0.0.1"},
        "client_secret": "sec1",
        "name": "visible",
    }
    assert sorted(collect_secrets(variables, ["extra"])) == [
        "extra",
        "key1",
        "pw1",
        "sec1",
        "tok1",
    ]


def test_redactor_masks_longest_secrets_first_and_deep() -> None:
    """Every secret becomes ***, a longer one containing a shorter one included, in nested data."""
    redact = Redactor(["abc", "abcdef", ""])
    assert redact("x abcdef y abc z") == "x *** y *** z"
    assert redact.deep({"a": ["abc", 1], "b": "abcdefabc"}) == {"a": ["***", 1], "b": "******"}
    assert not Redactor([])
    assert Redactor([])("abc") == "abc"
