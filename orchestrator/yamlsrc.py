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

from orchestrator.errors import Problem


class LMap(dict[str, Any]):
    """A mapping that knows the line and column of itself and of each of its keys."""

    line: int = 0
    column: int = 0
    key_lines: dict[str, tuple[int, int]]

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, (self.line, self.column))[0]


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


#: libyaml's parser when PyYAML was built with it: ten times faster on big runbooks
_BASE_LOADER: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _make_loader(path: str, problems: list[Problem]) -> type[yaml.SafeLoader]:
    class Loader(_BASE_LOADER):  # type: ignore[valid-type,misc]
        pass

    def construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> LMap:
        loader.flatten_mapping(node)
        result = LMap()
        result.line, result.column = node.start_mark.line + 1, node.start_mark.column + 1
        result.key_lines = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                key = str(key)
            if key in result:
                first = result.key_lines[key][0]
                problems.append(
                    Problem(path, line, f"duplicate key '{key}' (first defined on line {first})")
                )
                continue
            result[key] = loader.construct_object(value_node, deep=True)
            result.key_lines[key] = (line, key_node.start_mark.column + 1)
        return result

    def construct_sequence(loader: yaml.SafeLoader, node: yaml.SequenceNode) -> LList:
        result = LList(loader.construct_object(child, deep=True) for child in node.value)
        result.line, result.column = node.start_mark.line + 1, node.start_mark.column + 1
        result.item_lines = [child.start_mark.line + 1 for child in node.value]
        return result

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, construct_sequence)
    return Loader


def load_yaml(path: str | Path) -> Loaded:
    """Load one YAML file; syntax errors and duplicate keys become problems, never exceptions."""
    name = str(path)
    problems: list[Problem] = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        return Loaded(name, None, [Problem(name, None, f"cannot read file: {exc.strerror}")])
    try:
        data = yaml.load(text, Loader=_make_loader(name, problems))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        column = mark.column + 1 if mark else None
        what = exc.problem or exc.context or "invalid YAML"
        return Loaded(
            name, None, [Problem(name, line, f"YAML syntax error: {what}", column=column)]
        )
    except yaml.YAMLError as exc:
        return Loaded(name, None, [Problem(name, None, f"YAML error: {exc}")])
    return Loaded(name, data, problems)
