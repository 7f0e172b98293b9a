"""Strict reading of the YAML files a user hands wva (demo scenarios, backtest and explain model files).

:func:`parse` and :func:`read` return plain data whose mappings are :class:`LineMap` and whose
sequences are :class:`LineList`: ordinary ``dict`` and ``list`` objects that also remember the line
each key or item was written on, so a problem can be reported as ``FILE: line N: ...``.
:func:`check_keys` rejects a key the format does not know and names the nearest valid one.
Syntax errors, duplicate keys and unreadable files are :class:`YamlFileError`, one line that names
the file and, where known, the line; never a traceback about ``<unicode string>``.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = ["LineList", "LineMap", "YamlFileError", "at", "check_keys", "line_of", "parse", "read"]

_NO_KEY: Any = object()


class YamlFileError(ValueError):
    """A file that cannot be used; the message is one line naming the file and, where known, the line."""


class LineMap(dict[Any, Any]):
    """A mapping read from YAML: ``line`` is where it starts, ``key_lines[key]`` where each key is (1-based)."""

    __slots__ = ("key_lines", "line")

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.key_lines: dict[Any, int] = {}


class LineList(list[Any]):
    """A sequence read from YAML: ``line`` is where it starts, ``item_lines[i]`` where item ``i`` starts."""

    __slots__ = ("item_lines", "line")

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.item_lines: list[int] = []


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, building :class:`LineMap` / :class:`LineList` and refusing duplicate keys."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        # PyYAML's scalar constructors raise plain exceptions for values their tag cannot hold: KeyError for
        # `!!bool x`, IndexError for `!!int ""`, AttributeError for `!!timestamp x`, ValueError for `!!int ::`,
        # `2026-99-99` or an integer of more than 4300 digits. Report them like any other YAML error, at the
        # value's line.
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, LookupError, AttributeError, TypeError, OverflowError):
            kind = str(node.tag).rsplit(":", 1)[-1]
            shown = node.value if isinstance(node.value, str) else ""
            shown = shown if len(shown) <= 40 else f"{shown[:40]}... ({len(shown)} characters)"
            raise yaml.constructor.ConstructorError(
                None, None, f"{shown!r} is not a valid {kind}", node.start_mark
            ) from None


_KINDS: dict[type, str] = {LineMap: "mapping", LineList: "list"}


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LineMap:
    explicit = sum(1 for key_node, _ in node.value if key_node.tag != "tag:yaml.org,2002:merge")
    loader.flatten_mapping(node)  # `<<: *anchor` merges go first; an explicit key may override them
    merged = len(node.value) - explicit
    result = LineMap(node.start_mark.line + 1)
    explicit_keys: set[Any] = set()
    for index, (key_node, value_node) in enumerate(node.value):
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            kind = _KINDS.get(type(key), type(key).__name__)
            raise yaml.constructor.ConstructorError(
                None, None, f"a key must be a plain value, not a {kind}", key_node.start_mark
            ) from None
        if index >= merged:
            if key in explicit_keys:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {result.key_lines[key]})", key_node.start_mark
                )
            explicit_keys.add(key)
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = key_node.start_mark.line + 1
    return result


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> LineList:
    result = LineList(node.start_mark.line + 1)
    for child in node.value:
        result.append(loader.construct_object(child, deep=True))
        result.item_lines.append(child.start_mark.line + 1)
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def parse(text: str, where: str) -> Any:
    """The data of one YAML document; ``where`` (a file name) starts every error message."""
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where_line = f"{where}: line {mark.line + 1}" if mark is not None else where
        detail = _one_line(exc.problem or exc.context or "syntax error")
        if exc.problem and exc.context:
            context_mark = exc.context_mark
            on = f", line {context_mark.line + 1}" if context_mark is not None and context_mark is not mark else ""
            detail += f" ({_one_line(exc.context)}{on})"
        raise YamlFileError(f"{where_line}: invalid YAML: {detail}") from None
    except yaml.reader.ReaderError as exc:
        if isinstance(exc.position, int):
            where_line = f"{where}: line {text[: exc.position].count(chr(10)) + 1}"
        else:
            where_line = where
        char = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        reason = _one_line(exc.reason)
        raise YamlFileError(f"{where_line}: invalid YAML: unacceptable character {char}: {reason}") from None
    except yaml.YAMLError as exc:
        raise YamlFileError(f"{where}: invalid YAML: {_one_line(str(exc))}") from None
    except RecursionError:  # PyYAML's composer recurses once per nesting level
        raise YamlFileError(f"{where}: invalid YAML: nested too deeply") from None


def read(path: str | Path) -> Any:
    """:func:`parse` the file at ``path`` (UTF-8); its name as given starts every error message."""
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise YamlFileError(f"{where}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise YamlFileError(f"{where}: cannot read: {exc.strerror or exc}") from None
    return parse(text, where)


def line_of(node: Any, key: Any = _NO_KEY) -> int | None:
    """The line of ``node[key]`` (a mapping key or a sequence index), else of ``node``; None when unknown."""
    if key is not _NO_KEY:
        if isinstance(node, LineMap) and key in node.key_lines:
            return node.key_lines[key]
        if isinstance(node, LineList) and isinstance(key, int) and 0 <= key < len(node.item_lines):
            return node.item_lines[key]
    line = getattr(node, "line", None)
    return line if isinstance(line, int) else None


def at(where: str, node: Any = None, key: Any = _NO_KEY) -> str:
    """``where: line N`` for ``node`` (or its ``key``), or just ``where`` when the line is unknown."""
    line = line_of(node, key)
    return f"{where}: line {line}" if line is not None else where


def check_keys(mapping: Mapping[Any, Any], allowed: Iterable[str], where: str, context: str = "") -> None:
    """Reject the first key of ``mapping`` that is not ``allowed``, naming its line and the nearest valid key.

    ``context`` prefixes the key in the message (``variants[0].``), so the user sees where it sits.
    """
    valid = list(allowed)
    for key in mapping:
        if key in valid:
            continue
        near = difflib.get_close_matches(str(key), valid, n=1)
        if not near:  # a different case is the same typo: `Load` for `load`
            near = [v for v in valid if v.lower() == str(key).lower()][:1]
        hint = f" (did you mean {near[0]!r}?)" if near else f" (valid keys: {', '.join(valid)})"
        raise YamlFileError(f"{at(where, mapping, key)}: unknown key {context + str(key)!r}{hint}")


def finite_number(value: Any) -> bool:
    """A number from a file (not a bool) that is finite as a float: NaN, the infinities and integers
    beyond the float range (a value of 400 digits) are not."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False
