"""Small helpers shared by the runbook and inventory loaders: field checks that collect problems
(with a "did you mean" hint) instead of stopping at the first."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import Problem
from orchestrator.model.units import parse_duration
from orchestrator.model.yaml_source import LList, LMap, load_yaml


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice ``word`` most likely misspells, or None. Case first: 'DC2' means 'dc2'."""
    options = list(choices)
    same = [c for c in options if c.lower() == word.lower()]
    if same:
        return same[0]
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return close[0] if close else None


def suggest(word: str, choices: Iterable[str]) -> str | None:
    """A "did you mean" hint for a misspelt name, or None."""
    close = closest(word, choices)
    return f"did you mean '{close}'?" if close else None


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


@dataclass
class Where:
    """Where a mapping came from: its file, and the step id to name in problems (if any)."""

    file: str
    step: str | None = None

    def problem(
        self, line: int | None, message: str, hint: str | None = None, severity: str = "error"
    ) -> Problem:
        return Problem(self.file, line, message, step=self.step, hint=hint, severity=severity)


@dataclass(frozen=True)
class Located:
    """A string of a YAML file with its line (e.g. a ``notify`` URL template)."""

    text: str
    line: int


class Fields:
    """Reads typed fields out of one YAML mapping, recording a problem for each bad one."""

    def __init__(self, data: LMap, where: Where, problems: list[Problem], what: str):
        self.data = data
        self.where = where
        self.problems = problems
        self.what = what

    def line(self, key: str | None = None) -> int:
        return self.data.line_of(key) if key is not None else self.data.line

    def error(self, key: str | None, message: str, hint: str | None = None) -> None:
        self.problems.append(self.where.problem(self.line(key), message, hint))

    def check_known(self, allowed: Iterable[str]) -> None:
        allowed = list(allowed)
        for key in self.data:
            if key not in allowed:
                self.error(key, f"unknown field '{key}' in {self.what}", suggest(key, allowed))

    def require(self, key: str) -> bool:
        if key not in self.data or self.data[key] is None:
            self.error(None, f"missing required field '{key}' in {self.what}")
            return False
        return True

    def _typed(self, key: str, ok: Callable[[Any], bool], expected: str, default: Any) -> Any:
        if key not in self.data or self.data[key] is None:
            return default
        value = self.data[key]
        if not ok(value):
            self.error(key, f"field '{key}' must be {expected}, not {type_name(value)}")
            return default
        return value

    # The readers below answer the common cases (field absent, or a plain string) before the
    # general check: a 10,000-step runbook reads each of some thirty fields of every step.

    def string(self, key: str, default: Any = None) -> Any:
        value = self.data.get(key)
        if value is None:
            return default
        if type(value) is str:
            return value
        return self._typed(key, lambda v: isinstance(v, str), "a string", default)

    def text(self, key: str, default: Any = None) -> Any:
        """A string, also accepting numbers (written as text in commands)."""
        value = self.data.get(key)
        if value is None:
            return default
        if type(value) is str:
            return value
        value = self._typed(
            key,
            lambda v: isinstance(v, str | int | float) and not isinstance(v, bool),
            "a string",
            default,
        )
        return str(value) if value is not None and value is not default else value

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.data.get(key)
        if value is None:
            return bool(default)
        return bool(self._typed(key, lambda v: isinstance(v, bool), "true or false", default))

    def integer(self, key: str, default: Any = None, minimum: int = 0) -> Any:
        if self.data.get(key) is None:
            return default
        value = self._typed(
            key, lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer", default
        )
        if isinstance(value, int) and value < minimum:
            self.error(key, f"field '{key}' must be at least {minimum}")
            return default
        return value

    def mapping(self, key: str) -> LMap:
        value = self.data.get(key)
        if type(value) is LMap:
            return value
        value = self._typed(key, lambda v: isinstance(v, dict), "a mapping", None)
        if value is None:
            empty = LMap()
            empty.line, empty.column, empty.key_lines = self.line(key), 0, {}
            return empty
        return value  # type: ignore[no-any-return]

    def str_list(self, key: str) -> list[str]:
        """A list of strings; a single string is accepted as a one-item list."""
        value = self.data.get(key)
        if value is None:
            return []
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.error(key, f"field '{key}' must be a string or a list of strings")
            return []
        return list(value)

    def located_list(self, key: str) -> list[Located]:
        """A string or list of strings, each with its line."""
        value = self.data.get(key)
        items = self.str_list(key)
        if isinstance(value, LList):
            return [Located(text, value.line_of(i)) for i, text in enumerate(items)]
        return [Located(text, self.line(key)) for text in items]

    def duration(self, key: str, default: float | None = None) -> float | None:
        value = self.data.get(key)
        if value is None:
            return default
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.error(key, f"field '{key}': {exc}")
            return default

    def env(self, key: str = "env") -> dict[str, str]:
        if self.data.get(key) is None:
            return {}
        value = self.mapping(key)
        env: dict[str, str] = {}
        for name, item in value.items():
            if not isinstance(item, str | int | float) or isinstance(item, bool):
                self.error(key, f"env '{name}' must be a string")
                continue
            env[str(name)] = str(item)
        return env


def as_mapping(value: Any, where: Where, line: int, what: str, problems: list[Problem]) -> LMap:
    """``value`` if it is a mapping; otherwise record a problem and return an empty one."""
    if isinstance(value, LMap):
        return value
    problems.append(where.problem(line, f"{what} must be a mapping, not {type_name(value)}"))
    empty = LMap()
    empty.line, empty.column, empty.key_lines = line, 0, {}
    return empty


def load_document(path: str | Path, what: str) -> tuple[Fields | None, Where, list[Problem]]:
    """Load a runbook or inventory file (``what`` names it): the fields of its top-level
    mapping to check (None when the file is empty), where problems point, and the problems of
    reading it so far."""
    loaded = load_yaml(path)
    problems = list(loaded.problems)
    where = Where(loaded.path)
    if loaded.data is None:
        if not problems:
            problems.append(where.problem(1, f"the {what} is empty"))
        return None, where, problems
    top = as_mapping(loaded.data, where, 1, f"the {what}", problems)
    return Fields(top, where, problems, f"the {what}"), where, problems


def as_list(value: Any, where: Where, line: int, what: str, problems: list[Problem]) -> LList:
    if isinstance(value, LList):
        return value
    problems.append(where.problem(line, f"{what} must be a list, not {type_name(value)}"))
    empty = LList()
    empty.line, empty.column, empty.item_lines = line, 0, []
    return empty
