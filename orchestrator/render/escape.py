"""One escaper per target language. Every spec value that reaches a generated file goes
through one of these (values are also shape-checked at load time, in orchestrator.spec)."""

from __future__ import annotations

import json
import shlex

from orchestrator.messages import quote


def _no_controls(value: str, where: str) -> None:
    bad = next((c for c in value if ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:  # the loader refuses these first; this guards the renderers' contract
        raise ValueError(f"{where}: control character {bad!r} in {quote(value)}")


def _no_nul(value: str, where: str) -> None:
    if "\x00" in value:  # a Nix string cannot hold NUL: the evaluator's strings end there
        raise ValueError(f"{where}: NUL character in {quote(value)}")


def nix_string(value: str) -> str:
    """A Nix double-quoted string whose value is exactly ``value`` (no interpolation).

    Raises ``ValueError`` for a NUL character, which no Nix string can hold.
    """
    _no_nul(value, "Nix string")
    out = value.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${")
    out = out.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f'"{out}"'


def nix_indented_string(value: str) -> str:
    r"""A Nix indented string (two single quotes ... two single quotes) holding exactly
    ``value``, also when every line of it but the first is then indented by the same number
    of spaces (as the flake renderer does).

    The lexer's special sequences are two single quotes, ``${`` and the escapes that start
    with two single quotes (``''$``, three quotes, ``''\x``); and Nix strips the indentation
    common to all lines and drops a last line of only spaces. So, character by character:

    - a ``'`` followed by another ``'``, by ``$`` or by the closing quotes is written ``''\'``
      (otherwise ``'${`` reads as an escaped quote pair and then an interpolation, and a
      trailing ``'`` swallows the closing quotes);
    - a ``$`` before ``{`` is written ``''$``;
    - Nix strips the indentation (leading spaces) common to the lines that hold more than
      spaces, and drops a last line of only spaces. When every such line of ``value`` is
      indented, or its last line is only spaces, the first space of one line is written
      ``''\`` and a space: an escape is text, not indentation, so exactly the indentation
      added around the string is stripped.

    Raises ``ValueError`` for a NUL character, which no Nix string can hold.
    """
    _no_nul(value, "Nix indented string")
    lines = value.split("\n")
    protect: set[int] = set()  # lines whose first space is written as an escape
    content = [i for i, line in enumerate(lines) if line.strip(" ")]
    if content and all(lines[i].startswith(" ") for i in content):
        protect.add(content[0])
    if lines[-1] and not lines[-1].strip(" "):
        protect.add(len(lines) - 1)
    out: list[str] = []
    for n, line in enumerate(lines):
        if n:
            out.append("\n")
        for i, c in enumerate(line):
            following = line[i + 1 : i + 2] or ("\n" if n < len(lines) - 1 else "")
            if i == 0 and n in protect:
                out.append("''\\ ")
            elif c == "'" and following in ("'", "$", ""):
                out.append("''\\'")
            elif c == "$" and following == "{":
                out.append("''$")
            else:
                out.append(c)
    return "''\n" + "".join(out) + "''"


def nix_list(values: list[str]) -> str:
    return "[ " + " ".join(nix_string(v) for v in values) + " ]" if values else "[ ]"


def nix_attr(path: str) -> str:
    """``a.b-c`` -> ``a."b-c"``: each component quoted, so any name is a selection, never code."""
    return ".".join(nix_string(part) for part in path.split("."))


def shell_word(value: str) -> str:
    """One POSIX shell word whose value is exactly ``value``."""
    _no_controls(value, "shell word")
    return shlex.quote(value)


def shell_line(args: list[str]) -> str:
    return " ".join(shell_word(a) for a in args)


def dockerfile_string(value: str) -> str:
    """A double-quoted value for Dockerfile ENV/LABEL: no variable substitution, no escapes."""
    _no_controls(value, "Dockerfile value")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def json_text(data: object) -> str:
    """Deterministic JSON: sorted keys, two-space indent, trailing newline."""
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
