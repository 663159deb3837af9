"""One escaper per target language. Every spec value that reaches a generated file goes
through one of these (values are also shape-checked at load time, in orchestrator.spec)."""

from __future__ import annotations

import json
import shlex


def _no_controls(value: str, where: str) -> None:
    bad = next((c for c in value if ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:  # the loader refuses these first; this guards the renderers' contract
        raise ValueError(f"{where}: control character {bad!r} in {value!r}")


def nix_string(value: str) -> str:
    """A Nix double-quoted string whose value is exactly ``value`` (no interpolation)."""
    out = value.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${")
    out = out.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f'"{out}"'


def nix_indented_string(value: str) -> str:
    """A Nix indented string (two single quotes ... two single quotes) holding exactly ``value``.

    In these strings two single quotes and ``${`` are the only special sequences; they are
    written as three single quotes and as two single quotes before ``${``. Nix strips the
    indentation common to all lines, which is what the renderer's indenting expects.
    """
    out = value.replace("''", "'''").replace("${", "''${")
    return "''\n" + out + "''"


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
