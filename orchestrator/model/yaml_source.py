"""YAML loading that keeps line numbers and refuses duplicate keys.

PyYAML's safe loader silently keeps the last of two equal keys and forgets where values came
from; operators need ``file:line`` in every error, so mappings and lists come back as ``LMap`` and
``LList``: plain ``dict``/``list`` subclasses that also remember the line (1-based) and column of
each key/item.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from orchestrator.bulk import paused_gc
from orchestrator.errors import Problem


class LMap(dict[str, Any]):
    """A mapping that knows the line and column of itself and the line of each of its keys
    (a line only: a 100,000-step runbook has half a million keys)."""

    line: int = 0
    column: int = 0
    key_lines: dict[str, int]

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


class LList(list[Any]):
    """A list that knows the line of itself and of each item."""

    line: int = 0
    column: int = 0
    item_lines: list[int]

    def line_of(self, index: int) -> int:
        return self.item_lines[index] if index < len(self.item_lines) else self.line


@dataclass
class Loaded:
    """The result of loading one YAML file: the document (or None) and any problems."""

    path: str
    data: Any
    problems: list[Problem] = field(default_factory=list)


#: libyaml's parser when PyYAML was built with it: several times faster on big runbooks
_FAST = getattr(yaml, "CSafeLoader", None)
_MAP_TAG = yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG
_SEQ_TAG = yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG
_STR_TAG = "tag:yaml.org,2002:str"
#: deeper nesting than this is refused: no runbook needs it, and deeper still would exhaust
#: the parser's (recursive) stack
MAX_DEPTH = 100
#: the most values YAML aliases may add when expanded: a few anchors repeated into each other
#: (9 levels of 9 aliases) stand for hundreds of millions of values that every later walk of
#: the document (templates, secrets) would visit; no runbook needs a million
MAX_ALIAS_EXPANSION = 1_000_000


def _loader_class() -> type[Any]:
    """The safe loader, libyaml-backed when possible. Tag resolution is called from the parser
    for every node: it is reduced to the safe loader's implicit resolvers (no path resolvers, no
    wildcards), which gives the same tags at a fraction of the cost."""
    base: type[Any] = _FAST or yaml.SafeLoader
    implicit_resolvers = base.yaml_implicit_resolvers
    if None in implicit_resolvers or base.yaml_path_resolvers:
        return base
    scalar, sequence = yaml.ScalarNode, yaml.SequenceNode

    class Loader(base):  # type: ignore[misc]
        def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
            if kind is scalar:
                if implicit[0]:
                    for tag, regexp in implicit_resolvers.get(value[:1], ()):
                        if regexp.match(value):
                            return tag
                return _STR_TAG
            return _SEQ_TAG if kind is sequence else _MAP_TAG

        def descend_resolver(self, current_node: Any, current_index: Any) -> None:
            pass

        def ascend_resolver(self) -> None:
            pass

    return Loader


_Loader = _loader_class()
#: the first characters some implicit resolver may claim (null, bool, int, float, merge, ...):
#: a plain scalar starting with any other character is a string. With a loader whose
#: resolution was not reduced, every first character goes the long way.
_IMPLICIT_FIRST: Any = (
    frozenset(_Loader.yaml_implicit_resolvers)
    if _Loader is not (_FAST or yaml.SafeLoader)
    else type("_Everything", (), {"__contains__": lambda self, item: True})()
)


class _Builder:
    """Turns composed YAML nodes into LMap/LList/scalars, recording duplicate keys as problems.

    Plain strings (nearly every scalar of a runbook) are taken as they are; other scalars and
    unusual tags go through PyYAML's safe constructor, so their meaning is unchanged."""

    def __init__(self, loader: Any, path: str, problems: list[Problem]):
        self.loader = loader
        self.path = path
        self.problems = problems
        self.made: dict[int, Any] = {}  # aliases: one object per node
        self.sizes: dict[int, int] = {}  # id(node) → how many values it holds, aliases expanded
        self.expanded = 0  # values added by aliases so far

    def size(self, node: yaml.Node) -> int:
        return self.sizes.get(id(node), 1)

    def build(self, node: yaml.Node, depth: int = 0) -> Any:
        if isinstance(node, yaml.ScalarNode):
            if node.tag == _STR_TAG:
                return node.value
            return self.loader.construct_object(node, deep=True)
        done = self.made.get(id(node))
        if done is not None:
            # an alias: the object is shared, but whoever walks the document visits it again
            self.expanded += self.size(node)
            if self.expanded > MAX_ALIAS_EXPANSION:
                raise AliasBomb(node.start_mark)
            return done
        if depth > MAX_DEPTH:
            raise TooDeep(node.start_mark)
        if isinstance(node, yaml.MappingNode) and node.tag == _MAP_TAG:
            return self._mapping(node, depth)
        if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ_TAG:
            result = LList()
            self.made[id(node)] = result
            result.line, result.column = node.start_mark.line + 1, node.start_mark.column + 1
            result.item_lines = [child.start_mark.line + 1 for child in node.value]
            result.extend(self.build(child, depth + 1) for child in node.value)
            self.sizes[id(node)] = 1 + sum(self.size(child) for child in node.value)
            return result
        return self.loader.construct_object(node, deep=True)

    def _mapping(self, node: yaml.MappingNode, depth: int) -> LMap:
        self.loader.flatten_mapping(node)
        result = LMap()
        self.made[id(node)] = result
        result.line, result.column = node.start_mark.line + 1, node.start_mark.column + 1
        result.key_lines = {}
        for key_node, value_node in node.value:
            key = self.build(key_node)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                key = str(key)
            if key in result:
                first = result.key_lines[key]
                self.problems.append(
                    Problem(
                        self.path, line, f"duplicate key '{key}' (first defined on line {first})"
                    )
                )
                continue
            result[key] = self.build(value_node, depth + 1)
            result.key_lines[key] = line
        self.sizes[id(node)] = 1 + sum(self.size(v) for _, v in node.value)
        return result


def _at(mark: Any) -> tuple[int, int]:
    """A parser mark as (line, column), 1-based."""
    return mark.line + 1, mark.column + 1


class _Unusual(Exception):
    """A construct the event builder leaves to the node builder (tags on collections,
    non-scalar keys, several documents)."""


class _EventBuilder:
    """Builds LMap/LList straight from the parser's events, never holding the document's node
    tree: for a 100,000-step runbook the tree was most of the load's peak memory. The same
    objects, lines, duplicate-key problems and bounds as ``_Builder``, which still takes any
    document using what this one leaves out (``_Unusual``)."""

    def __init__(self, loader: Any, path: str, problems: list[Problem]):
        self.loader = loader
        self.path = path
        self.problems = problems
        self.anchors: dict[str, tuple[Any, int]] = {}  # anchor → (object, values it holds)
        self.expanded = 0
        # (value, tag, implicit) of a key → the key as a string, or None for a merge ('<<'):
        # a runbook repeats a dozen keys thousands of times, each resolved once
        self.keys: dict[tuple[Any, ...], str | None] = {}

    def build(self) -> Any:
        loader = self.loader
        loader.get_event()  # StreamStart
        if loader.check_event(yaml.StreamEndEvent):
            return None
        loader.get_event()  # DocumentStart
        value, _ = self._value(loader.get_event(), 0)
        loader.get_event()  # DocumentEnd
        if not loader.check_event(yaml.StreamEndEvent):
            raise _Unusual  # several documents: the node builder says so
        return value

    def _value(self, event: Any, depth: int) -> tuple[Any, int]:
        """The value an event starts, and how many values it holds with aliases expanded."""
        if isinstance(event, yaml.ScalarEvent):
            value = self._scalar(event)
            size = 1
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in self.anchors:
                raise _Unusual  # the node builder reports the unknown alias
            value, size = self.anchors[event.anchor]
            self.expanded += size
            if self.expanded > MAX_ALIAS_EXPANSION:
                raise AliasBomb(event.start_mark)
            return value, size
        elif depth > MAX_DEPTH:
            raise TooDeep(event.start_mark)
        elif isinstance(event, yaml.MappingStartEvent):
            if event.tag not in (None, "!", _MAP_TAG):
                raise _Unusual
            value, size = self._mapping(event, depth)
        elif isinstance(event, yaml.SequenceStartEvent):
            if event.tag not in (None, "!", _SEQ_TAG):
                raise _Unusual
            value = LList()
            value.line, value.column = _at(event.start_mark)
            value.item_lines = []
            if event.anchor is not None:
                self.anchors[event.anchor] = (value, 1)
            size = 1
            while not self.loader.check_event(yaml.SequenceEndEvent):
                item_event: Any = self.loader.get_event()
                value.item_lines.append(item_event.start_mark.line + 1)
                item, item_size = self._value(item_event, depth + 1)
                value.append(item)
                size += item_size
            self.loader.get_event()
        else:
            raise _Unusual
        if event.anchor is not None:
            self.anchors[event.anchor] = (value, size)
        return value, size

    def _scalar(self, event: Any) -> Any:
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.loader.resolve(yaml.ScalarNode, event.value, event.implicit)
        if tag == _STR_TAG:
            return event.value
        return self._constructed(event, tag)

    def _constructed(self, event: Any, tag: str) -> Any:
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
        return self.loader.construct_object(node, deep=True)

    def _mapping(self, event: Any, depth: int) -> tuple[LMap, int]:
        result = LMap()
        result.line, result.column = _at(event.start_mark)
        result.key_lines = {}
        if event.anchor is not None:
            self.anchors[event.anchor] = (result, 1)
        size = 1
        merges: list[tuple[Any, int, int]] = []
        loader = self.loader
        keys = self.keys
        check_event, get_event = loader.check_event, loader.get_event
        key_lines = result.key_lines
        scalar_event, resolve, scalar_node = yaml.ScalarEvent, loader.resolve, yaml.ScalarNode
        while not check_event(yaml.MappingEndEvent):
            key_event: Any = get_event()
            if type(key_event) is not scalar_event:
                raise _Unusual  # a collection or alias as a key
            mark: Any = key_event.start_mark
            where = mark.line + 1
            cached = (key_event.value, key_event.tag, key_event.implicit)
            if cached in keys:
                key = keys[cached]
            else:
                key_tag = key_event.tag or resolve(scalar_node, key_event.value, key_event.implicit)
                key = None if key_tag == "tag:yaml.org,2002:merge" else self._scalar(key_event)
                if key is not None and not isinstance(key, str):
                    key = str(key)
                keys[cached] = key
            if key is None:
                merged, merged_size = self._value(get_event(), depth + 1)
                merges.append((merged, merged_size, where))
                continue
            if key in result:
                first = result.key_lines[key]
                self.problems.append(
                    Problem(
                        self.path,
                        where,
                        f"duplicate key '{key}' (first defined on line {first})",
                    )
                )
                self._value(get_event(), depth + 1)  # skipped, as the node builder does
                continue
            value_event: Any = get_event()
            if (
                type(value_event) is scalar_event
                and value_event.anchor is None
                and value_event.tag is None
                and value_event.value[:1] not in _IMPLICIT_FIRST
            ):
                # a plain scalar no implicit resolver claims (most of a runbook): a string
                result[key] = value_event.value
                size += 1
            else:
                result[key], value_size = self._value(value_event, depth + 1)
                size += value_size
            key_lines[key] = where
        loader.get_event()
        for merged, merged_size, where in merges:  # explicit keys win, then earlier merges
            sources = merged if isinstance(merged, list) else [merged]
            if not all(isinstance(m, dict) for m in sources):
                raise _Unusual  # the node builder reports a bad merge
            for source in sources:
                for key, value in source.items():
                    if key not in result:
                        result[key] = value
                        result.key_lines[key] = where
            size += merged_size
        return result, size


class TooDeep(Exception):
    """A document nested deeper than ``MAX_DEPTH``, at ``mark``."""

    def __init__(self, mark: Any):
        super().__init__(mark)
        self.mark = mark


class AliasBomb(Exception):
    """YAML aliases that expand past ``MAX_ALIAS_EXPANSION`` values; ``mark`` is where the
    bound was passed (the alias, or the anchor it repeats)."""

    def __init__(self, mark: Any):
        super().__init__(mark)
        self.mark = mark


def _too_deep(path: str, text: str, mark: Any = None) -> Problem:
    """The problem of a document nested too deeply, at the first node past ``MAX_DEPTH`` (found
    with the event stream, which keeps no stack, when the composer ran out of it)."""
    if mark is None:
        depth = 0
        starts = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
        ends = (yaml.MappingEndEvent, yaml.SequenceEndEvent)
        try:
            for event in yaml.parse(text, Loader=yaml.SafeLoader):
                if isinstance(event, starts):
                    depth += 1
                    if depth > MAX_DEPTH + 1:
                        mark = event.start_mark
                        break
                elif isinstance(event, ends):
                    depth -= 1
        except yaml.YAMLError:
            pass
    line = mark.line + 1 if mark is not None else None
    column = mark.column + 1 if mark is not None else None
    return Problem(path, line, f"YAML nested more than {MAX_DEPTH} levels deep", column=column)


def _syntax_problem(path: str, text: str, exc: yaml.MarkedYAMLError) -> Problem:
    if _FAST is not None:
        # libyaml's messages are terser ("found character that cannot start any token"): the
        # pure-Python parser names the culprit, and errors are rare enough to parse twice.
        try:
            yaml.SafeLoader(text).get_single_node()
        except yaml.MarkedYAMLError as detailed:
            exc = detailed
        except RecursionError:  # libyaml's own depth limit: the pure parser runs out of stack
            return _too_deep(path, text)
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark else None
    column = mark.column + 1 if mark else None
    what = exc.problem or exc.context or "invalid YAML"
    opener = _OPENERS.get(exc.context or "")
    opened = exc.context_mark
    if opener and opened is not None and mark is not None and opened.line != mark.line:
        # the parser gives up where it noticed (often the end of the file): point at the
        # bracket or quote left open, and say where the parser stopped
        return Problem(
            path,
            opened.line + 1,
            f"YAML syntax error: {opener} opened here is never closed "
            f"({what} on line {line}, column {column})",
            column=opened.column + 1,
        )
    if line is not None:
        plain = _in_operator_words(text.splitlines(), exc, line)
        if plain is not None:
            return Problem(path, line, f"YAML syntax error: {plain}", column=column)
    return Problem(path, line, f"YAML syntax error: {what}", column=column)


def _in_operator_words(lines: list[str], exc: yaml.MarkedYAMLError, line: int) -> str | None:
    """The two indentation mistakes the parser words in its own terms ("expected <block end>",
    "mapping values are not allowed here"), said as what the line looks like and what drx
    expected instead; None for any other error."""

    def indent(text: str) -> int:
        return len(text) - len(text.lstrip(" "))

    if not 0 < line <= len(lines):
        return None
    here = lines[line - 1]
    shown = here.strip()
    opened = exc.context_mark
    if (exc.problem or "").startswith("expected <block end>") and opened is not None:
        # the blocks open above this line, innermost first: (indentation, line number)
        levels: list[tuple[int, int]] = []
        for n in range(line - 1, 0, -1):
            text = lines[n - 1]
            comment = text.lstrip().startswith("#")
            if text.strip() and not comment and (not levels or indent(text) < levels[-1][0]):
                levels.append((indent(text), n))
        shown_levels = " or ".join(f"{i} (line {n})" for i, n in levels[:3])
        spaces = "space" if indent(here) == 1 else "spaces"
        return (
            f"line {line} ({shown!r}) is indented {indent(here)} {spaces}, but the lines above "
            f"it are indented {shown_levels}: YAML cannot tell which block it belongs to; "
            "indent it exactly like the lines it goes with"
        )
    if exc.problem == "mapping values are not allowed here":
        above = next(
            (n for n in range(line - 1, 0, -1) if lines[n - 1].strip() and n != line), None
        )
        if above is not None and indent(here) > indent(lines[above - 1]):
            value = lines[above - 1].partition(":")[2]
            if value.strip():
                return (
                    f"line {line} ({shown!r}) is indented more than line {above} "
                    f"({lines[above - 1].strip()!r}), which already has its value, so YAML "
                    f"reads line {line} as more of that value: indent it like line {above}"
                )
        return (
            f"line {line} ({shown!r}) has a ': ' inside a value: put the value in quotes "
            "(or, if it is a new field, start it on a line of its own)"
        )
    return None


#: parser contexts that name a construct opened earlier, and how to call it
_OPENERS = {
    "while parsing a flow sequence": "the '['",
    "while parsing a flow mapping": "the '{'",
    "while scanning a quoted scalar": "the quote",
}


def load_yaml(path: str | Path) -> Loaded:
    """Load one YAML file; syntax errors and duplicate keys become problems, never exceptions."""
    name = str(path)
    problems: list[Problem] = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        return Loaded(name, None, [Problem(name, None, f"cannot read file: {exc.strerror}")])
    except UnicodeDecodeError as exc:
        # the line of the first bad byte: a refusal always says where
        line = exc.object[: exc.start].count(b"\n") + 1
        return Loaded(name, None, [Problem(name, line, f"cannot read file: not UTF-8 ({exc})")])
    loader = _Loader(text)
    try:
        with paused_gc():
            try:
                data = _EventBuilder(loader, name, problems).build()
            except _Unusual:
                loader.dispose()
                loader, problems = _Loader(text), []
                node = loader.get_single_node()
                data = _Builder(loader, name, problems).build(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        return Loaded(name, None, [_syntax_problem(name, text, exc)])
    except TooDeep as exc:
        return Loaded(name, None, [_too_deep(name, text, exc.mark)])
    except AliasBomb as exc:
        message = (
            f"YAML aliases expand to more than {MAX_ALIAS_EXPANSION:,} values "
            "(anchors repeated into one another)"
        )
        return Loaded(name, None, [Problem(name, exc.mark.line + 1, message)])
    except RecursionError:
        return Loaded(name, None, [_too_deep(name, text)])
    except yaml.reader.ReaderError as exc:
        # a character YAML does not allow (NUL, other control characters): its line
        line = text[: exc.position].count("\n") + 1
        return Loaded(name, None, [Problem(name, line, f"YAML error: {exc}")])
    except yaml.YAMLError as exc:
        return Loaded(name, None, [Problem(name, None, f"YAML error: {exc}")])
    finally:
        loader.dispose()
    return Loaded(name, data, problems)
