"""One typed reader for parsed TOML and JSON: getters that take a key path and collect problems.

Every file envparity reads as data (the spec, fingerprints and captures, reference metadata,
the compatibility table) goes through a ``Reader``. Its getters, modelled on packaging's
``pylock.py`` (``_get(d, expected_type, key)`` and friends,
https://github.com/pypa/packaging/blob/main/src/packaging/pylock.py), check a value's type and
shape and name its key path in every problem (``environment.gpus[0].sm_count``). Unlike
``pylock.py``, which raises at the first problem, a ``Reader`` records each problem and goes on,
so a file's every problem is reported at once; the caller raises its own error with
``Reader.problems`` when it is done.

Nested values bubble up as in ``pylock.py``, where each ``_get_object`` adds its key to the
error's context: a table or array item is read by a function given a reader of its own and
key paths relative to that value; its problems come back to the parent with the parent's key
path chained in front, and the value is dropped when it has any.

One wording for types, in every message: ``expected an integer, got a string 'a'``, for the
types of ``TYPE_WORDS`` (``a string``, ``an integer``, ``a number``, ``a boolean``, ``an array``,
``a table``, ``null``) and their containers (``an array of strings``, ``a table of strings``,
``an array of tables``). A value of the right type in the wrong shape reads
``'x' is not WHAT``; a missing one ``missing (expected WHAT)``.

Stdlib only (with ``orchestrator.errors`` and ``orchestrator.messages``, stdlib-only too): the
probe reads fingerprints with it inside bare target environments, and ``envparity check``
imports it on its light path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from orchestrator.errors import Problem
from orchestrator.messages import quote

T = TypeVar("T")

Check = Callable[[T], "str | None"]  # a message when the value is wrong, None when it is right

# The one wording of each TOML/JSON type, in "expected ..." and "got ...".
TYPE_WORDS: dict[type, str] = {
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",  # an integer is accepted where a number is expected
    list: "an array",
    dict: "a table",
    type(None): "null",
}
_PLURAL: dict[type, str] = {
    str: "strings",
    bool: "booleans",
    int: "integers",
    float: "numbers",
    list: "arrays",
    dict: "tables",
}
# tomllib's other value types, by name (no import of datetime on the light path).
_OTHER_WORDS = {"datetime": "a date-time", "date": "a date", "time": "a time"}
# Types a getter takes: one type, or a tuple of them (``SCALAR``).
Types = type | tuple[type, ...]
SCALAR: tuple[type, ...] = (str, int, float, bool, type(None))  # a JSON value that is no container
# TOML keys shown bare in key paths; any other key is shown quoted (and shortened).
_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,64}\Z", re.ASCII)


# --------------------------------------------------------------------------- wording


def type_word(value: object) -> str:
    """The type of a parsed value in the one wording: ``"an integer"``, ``"a table"``."""
    for typ, word in TYPE_WORDS.items():  # bool before int: True is no integer here
        if isinstance(value, typ):
            return word
    return _OTHER_WORDS.get(type(value).__name__, f"a {type(value).__name__}")


def words(typ: Types) -> str:
    """What a getter expects: ``str`` -> ``"a string"``; ``(str, type(None))`` ->
    ``"a string or null"``; ``SCALAR`` -> ``"a string, a number, a boolean or null"``."""
    types = typ if isinstance(typ, tuple) else (typ,)
    if int in types and float in types:  # a number covers an integer
        types = tuple(t for t in types if t is not int)
    said = [TYPE_WORDS[t] for t in types]
    return said[0] if len(said) == 1 else f"{', '.join(said[:-1])} or {said[-1]}"


def shown(value: object) -> str:
    """A value as a message shows what it got: ``a string 'a'``, ``an array [1, 2]``, ``null``."""
    return "null" if value is None else f"{type_word(value)} {quote(value)}"


def expected(what: str, value: object) -> str:
    """The one message of a wrong type: ``expected an integer, got a string 'a'``."""
    return f"expected {what}, got {shown(value)}"


def missing(what: str) -> str:
    """The one message of a missing required key: ``missing (expected a string)``."""
    return f"missing (expected {what})"


def shape(regex: re.Pattern[str], what: str) -> Check[str]:
    """A check that a string matches ``regex`` whole: ``'x' is not WHAT`` when it does not."""

    def check(value: str) -> str | None:
        return None if regex.fullmatch(value) else f"{quote(value)} is not {what}"

    return check


def between(low: int, high: int) -> Check[int]:
    """A check that an integer is in ``low..high``: ``0 is not between 1 and 100``."""
    return lambda n: None if low <= n <= high else f"{quote(n)} is not between {low} and {high}"


def at_least(low: int) -> Check[int]:
    """A check that an integer is ``low`` or more: ``0 is less than 1``."""
    return lambda n: None if n >= low else f"{quote(n)} is less than {low}"


# --------------------------------------------------------------------------- key paths


def join(path: str, key: str) -> str:
    """``path.key``; a key that is not a plain word is shown quoted (``variables."A\\n"``,
    ``environment.packages."zope.interface"``), so that the path reads back unambiguously and
    no control character of a key reaches a terminal."""
    shown_key = key if _BARE_KEY_RE.fullmatch(key) else _quoted_key(key)
    return f"{path}.{shown_key}" if path else shown_key


def index(path: str, i: int) -> str:
    """``path[i]``: an array item's key path."""
    return f"{path}[{i}]"


def _chain(path: str, key: str) -> str:
    """A parent's key path in front of a key path relative to one of its values (``key`` is
    ``""`` for the value itself, ``"[0].name"`` or ``"name"`` below it)."""
    if not key:
        return path
    if not path or key.startswith("["):
        return path + key
    return f"{path}.{key}"


def _quoted_key(key: str) -> str:
    """A TOML-style quoted key, one line, shortened like ``quote`` shortens values."""
    short = key if len(key) <= 60 else key[:60]  # keys are short: 60 characters shown
    text = json.dumps(short, ensure_ascii=True)
    return text if short == key else f"{text}... ({len(key)} characters)"


# --------------------------------------------------------------------------- items


@dataclass(frozen=True)
class Item(Generic[T]):
    """How each item of an array, or each value of a table of names, is read: of type ``typ``
    passing ``check`` (``of``), or by ``read(reader, value, path)``, which returns the typed
    item and records its problems on ``reader`` at ``path`` (``tables``). An item with a
    problem is left out. ``plural`` words the container: ``"strings"`` makes ``an array of
    strings``; ``""`` just ``an array``.
    """

    typ: Types = object
    check: Check[Any] | None = None
    read: Callable[[Reader, object, str], T] | None = None
    plural: str = ""


def of(typ: Types, check: Check[Any] | None = None) -> Item[Any]:
    """Items of type ``typ`` (one type or a tuple of types) that pass ``check``."""
    return Item(typ, check, plural=_PLURAL.get(typ, "") if isinstance(typ, type) else "")


def tables(read: Callable[[Reader, dict[str, Any]], T]) -> Item[T]:
    """Items that are tables, each read by ``read(reader, table)`` with key paths relative to
    the table; its problems bubble up under the item's key path."""

    def item(r: Reader, value: object, path: str) -> T:
        if not isinstance(value, dict):
            r.problem(path, expected("a table", value))
            return cast(T, None)
        return cast(T, r.nested(path, lambda inner: read(inner, value)))

    return Item(read=item, plural="tables")


def _checked(value: object, typ: Types, check: Check[Any] | None) -> tuple[Any, str | None]:
    """``(value, None)`` when ``value`` is of type ``typ`` and passes ``check`` (an integer
    where a number is expected comes back as a float), else ``(None, the problem)``."""
    types = typ if isinstance(typ, tuple) else (typ,)
    if float in types and int not in types and type(value) is int:
        value = float(value)
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        return None, expected(words(typ), value)  # True is no integer or number
    message = check(value) if check is not None else None
    return (None, message) if message else (value, None)


# --------------------------------------------------------------------------- the reader


class Reader:
    """Typed getters over parsed TOML or JSON that record problems instead of raising.

    Each getter takes the table it reads from, the key and the key path of that table (``""``
    at the top), and returns the value, or its default when the value is missing or has a
    problem (recorded in ``problems``, each a ``Problem`` naming ``file`` and the full key
    path). The caller raises its error with ``problems`` when it has read everything.
    """

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []

    def problem(self, key: str, message: str) -> None:
        """Record a problem at key path ``key`` (the parse goes on)."""
        self.problems.append(Problem(self.file, key, message))

    def value(self, value: object, path: str, typ: Types, check: Check[Any] | None = None) -> Any:
        """``value`` if it is of type ``typ`` and passes ``check``, else None (the problem
        recorded at ``path``). An integer passes for a ``float`` and comes back as one."""
        found, message = _checked(value, typ, check)
        if message:
            self.problem(path, message)
        return found

    def get(
        self,
        data: Mapping[str, Any],
        key: str,
        path: str,
        typ: type[T],
        default: T | None = None,
        *,
        required: bool = False,
        check: Check[T] | None = None,
    ) -> T | None:
        """``data[key]`` of type ``typ`` that passes ``check``; ``default`` when it is missing
        (a problem too when ``required``) or wrong."""
        full = join(path, key)
        if key not in data:
            if required:
                self.problem(full, missing(words(typ)))
            return default
        found = self.value(data[key], full, typ, check)
        return default if found is None else cast(T, found)

    def require(
        self,
        data: Mapping[str, Any],
        key: str,
        path: str,
        typ: type[T],
        *,
        check: Check[T] | None = None,
    ) -> T:
        """``data[key]``, required, of type ``typ``; when it is missing or wrong, the problem is
        recorded and the type's empty value (``""``, ``0``) returned, which ``nested`` and
        ``tables`` then drop with the value being read."""
        found = self.get(data, key, path, typ, required=True, check=check)
        return typ() if found is None else found

    def table(
        self, data: Mapping[str, Any], key: str, path: str, *, required: bool = False
    ) -> dict[str, Any] | None:
        """``data[key]`` if it is a table; None when it is missing (a problem too when
        ``required``) or is not one."""
        return self.get(data, key, path, dict, required=required)

    def array(
        self,
        data: Mapping[str, Any],
        key: str,
        path: str,
        item: Item[T],
        default: tuple[T, ...] = (),
        *,
        required: bool = False,
    ) -> tuple[T, ...]:
        """``data[key]`` as an array of ``item``; an item with a problem is left out."""
        full = join(path, key)
        what = f"an array of {item.plural}" if item.plural else "an array"
        if key not in data:
            if required:
                self.problem(full, missing(what))
            return default
        value = data[key]
        if not isinstance(value, list):
            self.problem(full, expected(what, value))
            return default
        return tuple(got for _, got in self._items(full, enumerate(value), item))

    def entries(
        self,
        data: Mapping[str, Any],
        key: str,
        path: str,
        item: Item[T],
        *,
        required: bool = False,
        key_check: Check[str] | None = None,
    ) -> dict[str, T]:
        """``data[key]``: a table of names (any keys that pass ``key_check``) to ``item``
        values; an entry with a problem is left out."""
        full = join(path, key)
        what = f"a table of {item.plural}" if item.plural else "a table"
        if key not in data:
            if required:
                self.problem(full, missing(what))
            return {}
        value = data[key]
        if not isinstance(value, dict):
            self.problem(full, expected(what, value))
            return {}
        return self.names(value, full, item, key_check=key_check)

    def names(
        self,
        table: Mapping[str, Any],
        path: str,
        item: Item[T],
        *,
        key_check: Check[str] | None = None,
    ) -> dict[str, T]:
        """Every entry of ``table`` (at ``path``) read as ``item``, keys checked by
        ``key_check``; an entry with a problem is left out."""
        if key_check is not None:
            for name in table:
                message = key_check(name)
                if message:
                    self.problem(join(path, name), message)
            table = {k: v for k, v in table.items() if not key_check(k)}
        return dict(self._items(path, table.items(), item))

    def strings(
        self,
        data: Mapping[str, Any],
        key: str,
        path: str,
        default: tuple[str, ...] = (),
        *,
        check: Check[str] | None = None,
    ) -> tuple[str, ...]:
        """``data[key]`` as an array of strings that pass ``check``; a bad item is left out."""
        return self.array(data, key, path, of(str, check), default)

    def section(
        self,
        data: Mapping[str, Any],
        key: str,
        path: str,
        read: Callable[[Reader, dict[str, Any]], T],
        *,
        required: bool = False,
    ) -> T | None:
        """``data[key]``, a table, read by ``read(reader, table)`` with key paths relative to
        it (``nested``); None when it is missing or not a table, or has a problem."""
        table = self.table(data, key, path, required=required)
        if table is None:
            return None
        return self.nested(join(path, key), lambda inner: read(inner, table))

    def nested(self, path: str, read: Callable[[Reader], T]) -> T | None:
        """``read(reader)`` with a reader of its own whose key paths are relative to ``path``;
        its problems come back here under ``path`` (the parent key chained in front, as
        ``pylock.py`` chains its context), and the value is None when any came."""
        inner = Reader(self.file)
        found = read(inner)
        for p in inner.problems:
            self.problem(_chain(path, p.key), p.message)
        return None if inner.problems else found

    def known_keys(self, data: Mapping[str, Any], path: str, allowed: Sequence[str]) -> None:
        """A problem for each key of ``data`` not in ``allowed``, with the nearest known key
        (``did you mean 'python'?``) or, when none is near, the known keys."""
        for key in data:
            if key not in allowed:
                import difflib  # only on the error path

                close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                hint = (
                    f"; did you mean '{close[0]}'?"
                    if close
                    else f" (known keys: {', '.join(allowed)})"
                )
                self.problem(join(path, key), f"unknown key{hint}")

    def _items(
        self, path: str, pairs: Iterable[tuple[int | str, object]], item: Item[T]
    ) -> list[tuple[Any, T]]:
        """``(key, item)`` for each ``(key, value)`` under ``path`` (an index or a name) that
        reads without a problem. The key path is worked out only for a problem or a nested
        read: reading a large fingerprint stays cheap."""

        def where(key: int | str) -> str:
            return index(path, key) if isinstance(key, int) else join(path, key)

        out: list[tuple[Any, T]] = []
        read = item.read
        for key, value in pairs:
            if read is None:
                got, message = _checked(value, item.typ, item.check)
                if message:
                    self.problem(where(key), message)
                    continue
            else:
                before = len(self.problems)
                got = read(self, value, where(key))
                if len(self.problems) != before:
                    continue
            out.append((key, got))
        return out
