"""How values from input files appear in messages: quoted, short, and without credentials.

Two functions, used wherever a user-supplied value or a tool's output reaches a message, the
terminal or a report:

- ``quote(value)``: a one-line ``repr``-style rendering of at most about ``LIMIT`` characters
  (a 1 MB string shows its first characters and its length; a 5,000-digit integer shows its
  size, never its digits), with credentials redacted;
- ``redact(text)``: every URL's userinfo (``https://user:TOKEN@host``) replaced by ``***``.

Neither raises, whatever the value.
"""

from __future__ import annotations

import re
import reprlib

LIMIT = 160  # characters of a quoted string shown before "..." (an image with its digest fits)

# scheme://userinfo@ : the userinfo runs up to the last "@" before the host's "/", "?" or "#"
# (a password may hold an unencoded "@"); whitespace and quotes end a URL in running text.
_USERINFO_RE = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s\"'<>]*@", re.ASCII)

_repr = reprlib.Repr()
_repr.maxstring = LIMIT + 2
_repr.maxother = LIMIT
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 4
_repr.maxlevel = 2


def redact(text: str) -> str:
    """``text`` with the userinfo of every URL replaced: ``https://u:t@h/x`` -> ``https://***@h/x``."""
    return _USERINFO_RE.sub(lambda m: m["scheme"] + "***@", text)


def quote(value: object) -> str:
    """``value`` as a short, one-line, credential-free Python literal for a message.

    Strings longer than ``LIMIT`` show their first ``LIMIT`` characters and their length;
    integers of more than 40 digits show their size; containers show their first items.
    """
    if isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        if abs(value) < 10**40:  # at most 40 digits
            return repr(value)
        try:
            return f"an integer of {len(str(abs(value)))} digits"
        except ValueError:  # str() refuses more than sys.get_int_max_str_digits() digits
            return "an integer of thousands of digits"
    if isinstance(value, str):
        if len(value) > LIMIT:
            return redact(repr(value[:LIMIT]) + f"... ({len(value)} characters)")
        return redact(repr(value))
    try:
        return redact(_repr.repr(value))
    except (ValueError, RecursionError):  # pragma: no cover - reprlib of a huge int inside
        return f"a {type(value).__name__}"


def clip(text: str, limit: int = 200) -> str:
    """``text`` (a tool's or a library's message) cut to ``limit`` characters, redacted."""
    return redact(text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)")
