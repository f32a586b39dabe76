"""A record dataclass as a JSON document and back, driven by its fields alone.

The summary's records (``record/summary.py``) declare their fields in the document's order; the
writer emits them in that order, and the reader takes each back by its type — tolerantly, since
summaries are written by other versions of drx and by hand: a missing, null or mistyped value
becomes the field's default (or what ``missing`` derives from the document), never an exception.
So a new summary field is one declaration; ``doc()`` says only where a field departs from the rule
(another key, left out when empty, present only beside another field).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any, TypeVar

T = TypeVar("T")

#: leave the key out when the value is None / falsy
NONE = "none"
FALSY = "falsy"


def doc(
    *,
    key: str | None = None,
    omit: str | None = None,
    beside: str | None = None,
    missing: Callable[[Mapping[str, Any]], Any] | None = None,
    listed: bool = False,
) -> dict[str, Any]:
    """A field's metadata: its document ``key`` (default: its name); ``omit`` it when NONE or
    FALSY; write it only ``beside`` another field that is not None; what a document without it
    means (``missing``, from the whole document); ``listed``: filled in when runs are listed
    together, written but never read back."""
    return {
        "doc": {"key": key, "omit": omit, "beside": beside, "missing": missing, "listed": listed}
    }


def _rule(f: dataclasses.Field[Any]) -> dict[str, Any]:
    rule: dict[str, Any] = f.metadata.get("doc") or {}
    return rule


def to_doc(record: Any) -> dict[str, Any]:
    """The record as its document: fields in declaration order, nested records as documents."""
    return _writer(typing.cast(Any, type(record)))(record)


@functools.cache
def _writer(cls: type[Any]) -> Callable[[Any], dict[str, Any]]:
    """The class's writer, compiled once from its fields (as dataclasses compiles __init__):
    a summary of thousands of steps is written as fast as by hand."""
    hints = typing.get_type_hints(cls)
    head, tail = [], []
    for f in dataclasses.fields(cls):
        rule = _rule(f)
        key, value = rule.get("key") or f.name, f"r.{f.name}"
        shape = _shape(hints[f.name])
        if shape == _RECORD:
            value = f"(None if {value} is None else {value}.to_dict())"
        elif shape == _RECORDS:
            value = f"[x.to_dict() for x in {value}]"
        elif shape == _LISTS:
            value = f"[list(x) for x in {value}]"
        if rule.get("omit") == NONE:
            tail.append(f"    if r.{f.name} is not None: d[{key!r}] = {value}")
        elif rule.get("omit") == FALSY:
            tail.append(f"    if r.{f.name}: d[{key!r}] = {value}")
        elif rule.get("beside"):
            tail.append(f"    if r.{rule['beside']} is not None: d[{key!r}] = {value}")
        elif tail:
            tail.append(f"    d[{key!r}] = {value}")
        else:
            head.append(f"{key!r}: {value}, ")
    source = (
        "def write(r):\n    d = {" + "".join(head) + "}\n" + "\n".join(tail) + "\n    return d\n"
    )
    namespace: dict[str, Any] = {}
    exec(source, namespace)  # the source is built from the field names alone
    writer: Callable[[Any], dict[str, Any]] = namespace["write"]
    return writer


# how a field's value is written: as is, a record, a list of records, a list of lists
_PLAIN, _RECORD, _RECORDS, _LISTS = range(4)


def _shape(hint: Any) -> int:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in args if a is not type(None)]
        return _shape(inner[0]) if len(inner) == 1 else _PLAIN
    if origin is list:
        if typing.get_origin(args[0]) is list:
            return _LISTS
        return _RECORDS if hasattr(args[0], "to_dict") else _PLAIN
    return _RECORD if hasattr(hint, "to_dict") else _PLAIN


def from_doc(cls: type[T], document: Any) -> T:
    """A record read back from a document (anything not a mapping reads as an empty one)."""
    data: Mapping[str, Any] = document if isinstance(document, Mapping) else {}
    readers = _readers(typing.cast(Any, cls))
    return cls(**{name: read(data) for name, read in readers})


@functools.cache
def _readers(cls: type[Any]) -> tuple[tuple[str, Callable[[Mapping[str, Any]], Any]], ...]:
    hints = typing.get_type_hints(cls)
    readers = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        rule = _rule(f)
        readers.append((f.name, _field_reader(f, hints[f.name], rule)))
    return tuple(readers)


_ZERO: dict[Any, Any] = {str: "", int: 0, float: 0.0, bool: False}


def _default(f: dataclasses.Field[Any], hint: Any) -> Any:
    """The field's default; a required field's zero value (``""``, ``0``) or None."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return _ZERO.get(hint)


def _field_reader(
    f: dataclasses.Field[Any], hint: Any, rule: Mapping[str, Any]
) -> Callable[[Mapping[str, Any]], Any]:
    key = rule.get("key") or f.name
    convert = _converter(hint)
    missing = rule.get("missing")

    def read(data: Mapping[str, Any]) -> Any:
        if rule.get("listed"):
            return _default(f, hint)
        value = convert(data.get(key))
        if value is not None:
            return value
        if missing is not None:
            return missing(data)
        return _default(f, hint)

    return read


def _converter(hint: Any) -> Callable[[Any], Any]:
    """value -> the typed value, or None when it does not fit (the caller takes the default)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in args if a is not type(None)]
        return _converter(inner[0]) if len(inner) == 1 else _raw
    if origin is list:
        item = _converter(args[0])
        if typing.get_origin(args[0]) in (types.UnionType, typing.Union):
            # optional items keep their places: a probe window's end is null while still down
            return lambda v: [item(x) for x in v] if isinstance(v, list | tuple) else None
        return lambda v: (
            [y for y in map(item, v) if y is not None] if isinstance(v, list | tuple) else None
        )
    if origin is dict:
        return lambda v: dict(v) if isinstance(v, Mapping) else None
    if hint is Any:
        return _raw
    if isinstance(hint, type) and issubclass(hint, StrEnum):
        return functools.partial(_member, hint)
    if hint is str:
        return as_text
    if hint is bool:
        return lambda v: v if isinstance(v, bool) else None
    if hint is int:
        return as_int
    if hint is float:
        return as_number
    if isinstance(hint, type) and hasattr(hint, "from_dict"):
        return lambda v: hint.from_dict(v) if isinstance(v, Mapping) and v else None
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        record: type[Any] = hint
        return lambda v: from_doc(record, v) if isinstance(v, Mapping) else None
    return _raw


def _raw(value: Any) -> Any:
    return value


def _member(kind: type[StrEnum], value: Any) -> StrEnum | None:
    try:
        return kind(value)
    except ValueError:
        return None


def as_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def as_int(value: Any) -> int | None:
    number = as_number(value)
    return int(number) if number is not None else None


def as_text(value: Any) -> str | None:
    """A non-empty string; numbers are accepted as text (e.g. a host named 1)."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None
