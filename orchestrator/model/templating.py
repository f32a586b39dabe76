"""The one Jinja2 environment of drx: StrictUndefined, ``quote`` and ``seconds`` filters, and the
template context of SPEC §4 (with placeholders for values known only at run time)."""

from __future__ import annotations

import html
import json
import re
import shlex
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from orchestrator.model.units import parse_duration


class _Jinja:
    """``jinja2``, imported when first used. Text without a brace renders as itself, so a run
    whose runbook has no template (nor secret) never needs Jinja (~25 ms of start-up). The
    engine's modules that name Jinja's exceptions import this object: an ``except`` clause's
    class is looked up only when an exception reaches it, and then Jinja is loaded."""

    def __getattr__(self, name: str) -> Any:
        import jinja2
        import jinja2.meta
        import jinja2.nodes
        import jinja2.runtime
        import jinja2.sandbox

        globals()["jinja2"] = jinja2  # this module's later uses go to Jinja itself
        return getattr(jinja2, name)


if TYPE_CHECKING:
    import jinja2
    import jinja2.meta
    import jinja2.nodes
    import jinja2.runtime
    import jinja2.sandbox
else:
    jinja2 = _Jinja()

SECRET_SUFFIXES = ("_secret", "_password", "_token", "_key")


class Placeholder:
    """A value known only at run time (``steps['x'].value`` in a dry run).

    It renders as ``<output of x>``, survives ``quote`` unchanged, and compares as false, so
    previews and validation can render every template without the run having happened.
    """

    def __init__(self, label: str):
        self._label = label

    def __str__(self) -> str:
        return f"<{self._label}>"

    __repr__ = __str__

    def __getattr__(self, name: str) -> Placeholder:
        if name.startswith("__"):
            raise AttributeError(name)
        return Placeholder(f"{self._label}.{name}")

    def __getitem__(self, key: object) -> Placeholder:
        return Placeholder(f"{self._label}[{key!r}]")

    def __iter__(self) -> Any:
        return iter(())

    def __bool__(self) -> bool:
        return True

    def __eq__(self, other: object) -> bool:
        _strict(other)
        return False

    __hash__ = object.__hash__

    def _cmp(self, other: object) -> bool:
        _strict(other)
        return False

    __lt__ = __le__ = __gt__ = __ge__ = _cmp

    def _arith(self, other: object) -> Placeholder:
        _strict(other)
        return self

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = _arith

    def __float__(self) -> float:
        return 0.0

    def __int__(self) -> int:
        return 0


def _strict(other: object) -> None:
    """Fail on an undefined operand, as a real value would: ``value <= max_lag`` must not pass
    validation just because ``value`` is a placeholder."""
    if isinstance(other, jinja2.Undefined):
        other._fail_with_undefined_error()


def quote(value: Any) -> str:
    """POSIX shell quoting; placeholders pass through so previews stay readable."""
    if isinstance(value, Placeholder):
        return str(value)
    return shlex.quote(str(value))


def seconds(value: Any) -> float:
    if isinstance(value, Placeholder):
        return 0.0
    return parse_duration(value)


if TYPE_CHECKING:

    class StepAccessError(jinja2.exceptions.UndefinedError):
        """A template reads ``steps['x']`` where x is not among the step's transitive needs."""


@lru_cache(maxsize=1)
def _step_access_error() -> type[StepAccessError]:
    """``StepAccessError``, made with Jinja (a kind of its UndefinedError) when first asked."""

    class StepAccessError(jinja2.exceptions.UndefinedError):
        """A template reads ``steps['x']`` where x is not among the step's transitive needs."""

    StepAccessError.__module__ = __name__
    return StepAccessError  # type: ignore[return-value]  # the class type checkers see above


def __getattr__(name: str) -> Any:
    """``StepAccessError`` and ``ENV`` (the environment), made when first asked for."""
    if name == "StepAccessError":
        return _step_access_error()
    if name == "ENV":
        return environment()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class StepsView(Mapping[str, Any]):
    """``steps`` in templates: results of finished steps, limited to the step's ancestors."""

    def __init__(
        self,
        allowed: Iterable[str],
        results: Mapping[str, Any] | None = None,
        *,
        for_step: str | None = None,
    ):
        # a set is kept as it is: a plan may pass a lazily computed set of ancestors
        self._allowed = allowed if isinstance(allowed, AbstractSet) else frozenset(allowed)
        self._results = results or {}
        self._for = for_step

    @property
    def for_step(self) -> str | None:
        return self._for

    def __getitem__(self, key: str) -> Any:
        if key not in self._allowed:
            owner = f"step '{self._for}'" if self._for else "this template"
            raise _step_access_error()(
                f"steps['{key}'] is not available: '{key}' is not among the needs of {owner} "
                f"(add it to needs, directly or through another step)"
            )
        if key in self._results:
            return self._results[key]
        return Placeholder(f"output of {key}")

    def __iter__(self) -> Any:
        return iter(self._allowed)

    def __len__(self) -> int:
        return len(self._allowed)


#: the longest text a template may render, and the largest string or list ``*`` may make: a
#: command or prompt is never megabytes, and ``{{ 'a' * 10**9 }}`` took 4 GB to validate
MAX_RENDERED = 4 * 1024 * 1024
#: the largest integer ``**`` may make, in bits (a 30,000-digit number)
MAX_POWER_BITS = 100_000


@lru_cache(maxsize=1)
def _sandbox() -> type[jinja2.sandbox.ImmutableSandboxedEnvironment]:
    """drx's sandbox class (made when Jinja is first needed)."""

    class _Sandbox(jinja2.sandbox.ImmutableSandboxedEnvironment):
        """The sandbox with bounds on what ``*`` and ``**`` may build (Jinja's own sandbox bounds
        ``range`` only), so a template cannot exhaust memory or CPU at validation."""

        intercepted_binops = frozenset({"*", "**"})

        def call_binop(
            self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any
        ) -> Any:
            if operator == "*":
                for seq, times in ((left, right), (right, left)):
                    sized = isinstance(seq, str | list | tuple) and isinstance(times, int)
                    if sized and len(seq) * times > MAX_RENDERED:
                        raise jinja2.exceptions.SecurityError(
                            f"'*' would make {len(seq) * times:,} items or characters "
                            f"(at most {MAX_RENDERED:,})"
                        )
            integers = isinstance(left, int) and isinstance(right, int)
            if operator == "**" and integers and right > 0 and abs(left) > 1:
                bits = right * abs(left).bit_length()
                if bits > MAX_POWER_BITS:
                    raise jinja2.exceptions.SecurityError(
                        f"'**' would make a number of more than {MAX_POWER_BITS:,} bits"
                    )
            return super().call_binop(context, operator, left, right)

        def call(
            __self,
            __context: jinja2.runtime.Context,
            __obj: Any,
            *args: Any,
            **kwargs: Any,
        ) -> Any:
            # a width past the render bound (``'a'.ljust(10**9)``) would be allocated before the
            # bound could refuse it
            for value in (*args, *kwargs.values()):
                if isinstance(value, int) and not isinstance(value, bool) and value > MAX_RENDERED:
                    raise jinja2.exceptions.SecurityError(
                        f"a call with {value:,} as an argument (at most {MAX_RENDERED:,})"
                    )
            return super().call(__context, __obj, *args, **kwargs)

    return _Sandbox


def _width_bounded(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Filter ``name`` refusing a width past ``MAX_RENDERED`` (``'a' | center(10**9)``)."""

    def bounded(value: Any, *args: Any, **kwargs: Any) -> Any:
        for arg in (*args, *kwargs.values()):
            if isinstance(arg, int) and not isinstance(arg, bool) and arg > MAX_RENDERED:
                raise jinja2.exceptions.SecurityError(
                    f"'{name}' with a width of {arg:,} (at most {MAX_RENDERED:,})"
                )
        return fn(value, *args, **kwargs)

    return bounded


def _bounded(pieces: Iterable[str]) -> str:
    """Join rendered pieces, refusing (``SecurityError``) past ``MAX_RENDERED`` characters."""
    out, total = [], 0
    for piece in pieces:
        total += len(piece)
        if total > MAX_RENDERED:
            raise jinja2.exceptions.SecurityError(
                f"the template renders more than {MAX_RENDERED:,} characters"
            )
        out.append(piece)
    return "".join(out)


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """drx's one Jinja environment (built when first needed)."""
    env = _sandbox()(
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False
    )
    for name in ("center", "indent", "wordwrap", "truncate"):
        env.filters[name] = _width_bounded(name, env.filters[name])
    env.filters["quote"] = quote
    env.filters["seconds"] = seconds
    return env


@lru_cache(maxsize=4096)
def compile_template(source: str) -> jinja2.Template:
    return environment().from_string(source)


@lru_cache(maxsize=4096)
def compile_expression(source: str) -> Callable[..., Any]:
    return environment().compile_expression(source, undefined_to_none=False)


_OUTPUT = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)


@lru_cache(maxsize=65536)
def _split(source: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """The literal texts and ``{{ expression }}`` sources of a template made only of those, or
    None when it uses more of Jinja (blocks, comments, whitespace control, CRs) or when the
    split is in doubt: such templates are compiled whole."""
    if "{%" in source or "{#" in source or "\r" in source:
        return None
    if source.endswith("\n"):
        source = source[:-1]  # as Jinja does without keep_trailing_newline
    literals: list[str] = []
    expressions: list[str] = []
    pos = 0
    for match in _OUTPUT.finditer(source):
        expression = match.group(1)
        if not expression.strip() or expression.startswith("-") or expression.endswith("-"):
            return None
        literals.append(source[pos : match.start()])
        expressions.append(expression)
        pos = match.end()
    literals.append(source[pos:])
    if any("{{" in text for text in literals):
        return None
    return tuple(literals), tuple(expressions)


@lru_cache(maxsize=4096)
def _values_template(expressions: tuple[str, ...]) -> jinja2.Template | None:
    """One template computing the values of all ``expressions`` into ``drx_values``, shared by
    every template with the same expressions whatever its literal text; None if it does not
    compile (a wrong split or a syntax error: the caller then compiles the source as it is,
    which reports the error where the operator wrote it)."""
    if any("%}" in e for e in expressions):
        return None
    source = "".join(f"({e})," for e in expressions)
    try:
        tree = environment().parse("{% set drx_values = (" + source + ") %}")
        if any("steps" in e for e in expressions):
            # parsed once for both questions: a cold plan of 10,000 steps has hundreds of
            # distinct expression sets, and parsing is most of compiling one
            if len(_STEPS_READ) > 4096:  # answers never asked for (the render failed)
                _STEPS_READ.clear()
            _STEPS_READ[expressions] = "steps" in jinja2.meta.find_undeclared_variables(tree)
        return environment().from_string(tree)
    except jinja2.exceptions.TemplateSyntaxError:
        return None


#: whether expressions that compiled into a values template read ``steps`` (see ``_reads_steps``)
_STEPS_READ: dict[tuple[str, ...], bool] = {}


def _values(template: jinja2.Template, context: Mapping[str, Any]) -> tuple[Any, ...]:
    # A shared context over one flat dict: Jinja's default copies the globals' ChainMap into a
    # new dict on every call, which costs more than the expressions themselves.
    module = template.make_module({**environment().globals, **context}, shared=True)
    return module.drx_values  # type: ignore[attr-defined,no-any-return]


@lru_cache(maxsize=4096)
def _reads_steps(expressions: tuple[str, ...]) -> bool:
    """Whether ``expressions`` name ``steps`` (or cannot be parsed: then assume they do)."""
    if not any("steps" in e for e in expressions):
        return False  # the name is nowhere in the text (and they compiled: see ``render``)
    known = _STEPS_READ.pop(expressions, None)
    if known is not None:
        return known
    try:
        tree = environment().parse("".join(f"{{{{ ({e}) }}}}" for e in expressions))
    except jinja2.exceptions.TemplateSyntaxError:
        return True
    return "steps" in jinja2.meta.find_undeclared_variables(tree)


def render(
    source: str,
    context: Mapping[str, Any],
    memo: dict[tuple[Any, ...], tuple[Any, ...]] | None = None,
    scope: Any = None,
) -> str:
    """Render a template (commands, prompts).

    Thousands of commands differ only in their literal text and share a few expressions
    (``{{ site(target).vars.vip | quote }}``); compiling each as a Jinja template would cost a
    millisecond apiece, so a template of text and ``{{ … }}`` only is rendered by evaluating its
    expressions, compiled once per distinct set, with the same environment and semantics.

    With a ``memo``, the values of expressions that do not read ``steps`` are kept per
    ``scope`` (the caller's promise that every context of one scope differs only in
    ``steps``): the plan renders each step's command on the same hosts with the same values.
    """
    if "{" not in source:
        return source
    parts = _split(source)
    template = _values_template(parts[1]) if parts is not None else None
    if parts is None or template is None:
        return _bounded(compile_template(source).generate(context))
    literals = parts[0]
    pieces = [literals[0]]
    key = (parts[1], scope)
    values = memo.get(key) if memo is not None else None
    if values is None:
        values = _values(template, context)
        if memo is not None and not _reads_steps(parts[1]):
            memo[key] = values
    for value, literal in zip(values, literals[1:], strict=True):
        pieces.append(str(value))
        pieces.append(literal)
    # the pieces are already in memory: measure them at once rather than one by one
    if sum(map(len, pieces)) > MAX_RENDERED:
        return _bounded(pieces)  # raises, with the same message
    return "".join(pieces)


def evaluate(source: str, context: Mapping[str, Any]) -> Any:
    """Evaluate an expression (``until``, ``when``); an undefined result is an error, not a
    silently false condition."""
    template = _values_template((source,))
    if template is None:
        result = compile_expression(source)(**context)
    else:
        result = _values(template, context)[0]
    if isinstance(result, jinja2.Undefined):
        result._fail_with_undefined_error()
    return result


_SINGLE_EQUALS = re.compile(r"(?<![=!<>])=(?!=)")


def expression_hint(source: str, message: str) -> str | None:
    """What to write instead, for the usual mistakes in ``until``/``when`` (Jinja expressions,
    not shell or JavaScript), from the expression and Jinja's parser message."""
    if "{{" in source or "{%" in source:
        bare = re.sub(r"\s+", " ", source.replace("{{", "").replace("}}", "")).strip()
        return f"until and when are expressions, written without {{{{ }}}}: {bare}"
    if "&&" in source or "||" in source:
        fixed = source.replace("&&", "and").replace("||", "or")
        return f"write and / or instead of && / ||: {fixed}"
    if "===" in source:
        return f"compare with ==: {source.replace('===', '==')}"
    if _SINGLE_EQUALS.search(source):
        return f"compare with ==, not =: {_SINGLE_EQUALS.sub('==', source)}"
    if re.search(r"!(?!=)", source):
        return f"write not instead of !: {re.sub(r'!(?!=)', 'not ', source)}"
    if " contains " in source:
        left, _, right = source.partition(" contains ")
        return f"test for a substring with in: {right.strip()} in {left.strip()}"
    if source.count("(") != source.count(")"):
        return "the parentheses do not pair up"
    if "end of template" in message:
        return "the expression ends too early (a trailing and, or, or operator?)"
    if re.search(r"\bis\s+-?\d", source):
        return "compare numbers with ==; is tests a kind (value is none, value is number)"
    return None


#: filters after which a value is safe in a shell command: quoted, or a number
_SHELL_SAFE = frozenset({"quote", "int", "float", "seconds", "length", "count", "round", "abs"})


@lru_cache(maxsize=4096)
def unquoted_step_outputs(source: str) -> int:
    """How many ``{{ … }}`` of a command template put a step's result (``steps[…]``: what a
    host printed) into the command without ``| quote``: a compromised host's output would
    then be shell text run on the next host. 0 when the template cannot be parsed (its error
    is reported elsewhere)."""
    if "steps" not in source:
        return 0
    parts = _split(source)
    if parts is not None:  # text and {{ … }} only: counted once per set of expressions
        return _unquoted_in("".join(f"{{{{{e}}}}}" for e in parts[1]))
    return _unquoted_in(source)


@lru_cache(maxsize=4096)
def _unquoted_in(source: str) -> int:
    try:
        tree = environment().parse(source)
    except jinja2.TemplateSyntaxError:
        return 0
    count = 0
    for output in tree.find_all(jinja2.nodes.Output):
        for expr in output.nodes:
            if not isinstance(expr, jinja2.nodes.TemplateData) and not _shell_safe(expr):
                count += 1
    return count


def _shell_safe(expr: jinja2.nodes.Node) -> bool:
    if isinstance(expr, jinja2.nodes.Filter) and expr.name in _SHELL_SAFE:
        return True
    if isinstance(expr, jinja2.nodes.CondExpr):
        return all(_shell_safe(e) for e in (expr.expr1, expr.expr2) if e is not None)
    names = [expr] if isinstance(expr, jinja2.nodes.Name) else expr.find_all(jinja2.nodes.Name)
    return not any(n.name == "steps" for n in names if isinstance(n, jinja2.nodes.Name))


def is_secret_name(name: str) -> bool:
    return name.lower().endswith(SECRET_SUFFIXES)


def rendered_forms(secret: str) -> set[str]:
    """Every form in which a secret can reach text drx writes: as it is, shell-quoted (whole,
    and the inside of a larger quoted word), JSON-escaped (``tojson`` too), URL-encoded,
    HTML-escaped. A value
    with a ``'`` quoted as the docs say (``| quote``) is ``'it'"'"'s'``, no longer the value."""
    forms = {
        secret,
        shlex.quote(secret),
        secret.replace("'", "'\"'\"'"),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        str(jinja2.utils.htmlsafe_json_dumps(secret))[1:-1],  # the ``tojson`` filter
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
        html.escape(secret),
        repr(secret)[1:-1],
    }
    return {form for form in forms if form}


class Redactor:
    """Replaces every secret value, in every rendered form, with ``***`` in text drx writes or
    prints."""

    def __init__(self, secrets: Iterable[str] = ()):
        forms = {form for s in secrets if s for form in rendered_forms(s)}
        values = sorted(forms, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(v) for v in values)) if values else None

    def __call__(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub("***", text)

    def __bool__(self) -> bool:
        return self._pattern is not None

    def deep(self, value: Any) -> Any:
        """Redact strings inside nested JSON-like data."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {k: self.deep(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.deep(v) for v in value]
        return value


def collect_secrets(variables: Mapping[str, Any], extra: Iterable[str] = ()) -> list[str]:
    """Secret values: variables named ``*_secret|_password|_token|_key`` (any depth) + extra.
    A list- or mapping-valued secret gives each of its values (a template can render one
    element alone) and its whole rendered text. A value shared by YAML aliases is walked once."""
    found = [str(v) for v in extra]
    seen: set[int] = set()

    def leaves(value: Any) -> None:
        if isinstance(value, Mapping | list | tuple):
            if id(value) in seen:
                return
            seen.add(id(value))
            found.append(str(value))
            for item in value.values() if isinstance(value, Mapping) else value:
                leaves(item)
        elif value is not None and str(value):
            found.append(str(value))

    def walk(mapping: Mapping[str, Any]) -> None:
        if id(mapping) in seen:
            return
        seen.add(id(mapping))
        for key, value in mapping.items():
            if is_secret_name(str(key)):
                leaves(value)
            elif isinstance(value, Mapping):
                walk(value)

    walk(variables)
    return found
