"""The one writer of ``environment.toml`` text: a ``Draft`` in, TOML out, built with tomlkit.

tomlkit builds the document (tables, arrays of tables, inline tables, key quoting, comments),
so the structure is always valid TOML. Strings are written as basic strings with every
character that is not printable (control characters, line and paragraph separators,
bidirectional overrides) as an escape, so the file shows exactly what it holds; comments show
such characters as escapes too.
"""

from __future__ import annotations

from typing import Any

import tomlkit
from tomlkit.items import String, StringType, Trivia

from orchestrator import spec as specs
from orchestrator.determinism_settings import DeterminismSettings
from orchestrator.init.draft import Draft
from orchestrator.spec import Dependency

_SHORT_ESCAPES = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def toml_string(value: str) -> String:
    """``value`` as a one-line TOML basic string item; ``ValueError`` for a lone surrogate."""
    out = []
    for ch in value:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 0xD800 <= code <= 0xDFFF:
            raise ValueError(f"{value!r} holds a lone surrogate, which TOML cannot represent")
        elif ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif not ch.isprintable():
            out.append(f"\\u{code:04X}" if code <= 0xFFFF else f"\\U{code:08X}")
        else:
            out.append(ch)
    return String(StringType.SLB, value, "".join(out), Trivia())


def comment_text(text: str) -> str:
    """``text`` made one printable line, for a TOML comment."""
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape", "backslashreplace").decode()
        for ch in text
    )


def _array(values: tuple[str, ...] | list[str]) -> Any:
    array = tomlkit.array()
    for v in values:
        array.append(toml_string(v))
    return array


def _dependency_value(dep: Dependency) -> Any:
    version = toml_string(dep.specifier or "*")
    if not (dep.extras or dep.markers or dep.flavors):
        return version
    table = tomlkit.inline_table()
    table.append("version", version)
    if dep.extras:
        table.append("extras", _array(dep.extras))
    if dep.markers:
        table.append("markers", toml_string(dep.markers))
    if dep.flavors:
        table.append("flavors", _array(dep.flavors))
    return table


class _Doc:
    """A tomlkit document with comment helpers."""

    def __init__(self) -> None:
        self.doc = tomlkit.document()

    def comment(self, text: str, into: Any = None) -> None:
        (self.doc if into is None else into).add(tomlkit.comment(comment_text(text)))

    def blank(self) -> None:
        self.doc.add(tomlkit.nl())


def render(d: Draft) -> str:
    """The text of ``environment.toml`` for a complete draft (name and python set)."""
    assert d.name is not None and d.python is not None
    w = _Doc()
    doc = w.doc
    w.comment("environment.toml: the one description of this project's environment.")
    if d.origin:
        w.comment(
            f"Converted by 'envparity init' from {d.origin}: review it, "
            "and every 'not converted' line at the end."
        )
    else:
        w.comment("Written by 'envparity init' as a starting point: edit it to your project.")
    w.comment("Then: 'envparity lock' pins every package, 'envparity render' writes the rest.")
    for note in d.notes:
        w.comment(note)
    w.blank()

    environment = tomlkit.table()
    environment.add("name", toml_string(d.name))
    if d.python_origin:
        why = d.python_origin if d.python_chosen else f"from {d.python_origin}"
        w.comment(f"python {d.python}: {why}", environment)
    environment.add("python", toml_string(d.python))
    doc.add("environment", environment)

    if d.cuda is None:
        w.blank()
        for line in (
            "CPU-only. For a CUDA toolkit (it must match the torch wheel's CUDA):",
            "[cuda]",
            'version = "12.8"',
            'cudnn = "9"',
        ):
            w.comment(line)
    else:
        cuda = tomlkit.table()
        if d.cuda_origin:
            w.comment(f"from {d.cuda_origin}", cuda)
        cuda.add("version", toml_string(d.cuda))
        if d.cudnn:
            cuda.add("cudnn", toml_string(d.cudnn))
        doc.add("cuda", cuda)

    dependencies = tomlkit.table()
    dependencies.comment("PEP 440 specifiers; the lock pins these and all they pull in")
    for dep in d.deps.values():
        dependencies.add(dep.name, _dependency_value(dep))
    if d.local:
        dependencies.add(
            tomlkit.comment(
                "the project's own code: its dependencies are locked, and it is installed "
                "after the lock (uv pip install --no-deps [-e] PATH)"
            )
        )
    for package in d.local.values():
        table = tomlkit.inline_table()
        table.append("path", toml_string(package.path))
        table.append("editable", package.editable)
        if package.extras:
            table.append("extras", _array(package.extras))
        dependencies.add(package.name, table)
    doc.add("dependencies", dependencies)

    if d.indexes:
        indexes = tomlkit.aot()
        for index in d.indexes:
            entry = tomlkit.table()
            w.comment(f"from {index.origin}", entry)
            entry.add("url", toml_string(index.url))
            if index.kind != "index":
                entry.add("kind", toml_string(index.kind))
            if index.flavors:
                entry.add("flavors", _array(index.flavors))
            if index.packages:
                entry.add("packages", _array(index.packages))
            indexes.append(entry)
        doc.add("index", indexes)

    if d.system:
        system = tomlkit.table()
        system.add("packages", _array(d.system))
        doc.add("system", system)
    else:
        w.blank()
        for line in (
            "System tools, mapped to each target's packages:",
            "[system]",
            'packages = ["git", "git-lfs"]',
        ):
            w.comment(line)

    defaults = DeterminismSettings()
    determinism = tomlkit.table()
    determinism.add("seed", defaults.seed)
    determinism.add("deterministic_algorithms", defaults.deterministic_algorithms)
    determinism.add("tf32", defaults.tf32)
    determinism.add("cudnn_benchmark", defaults.cudnn_benchmark)
    determinism.add(
        tomlkit.comment(
            "threads = 1  # torch otherwise uses one thread per core, which changes CPU results "
            "between machines"
        )
    )
    doc.add("determinism", determinism)

    if d.variables:
        variables = tomlkit.table()
        variables.comment("names and defaults; secret values are never written")
        for name, value in d.variables.items():
            default = tomlkit.inline_table()
            default.append("default", toml_string(value))
            variables.add(name, default)
        doc.add("variables", variables)
    else:
        w.blank()
        for line in (
            "Environment variables the project reads (names and defaults only):",
            "[variables]",
            'DATA_PATH = { default = "./data", required = true }',
        ):
            w.comment(line)

    _targets(w, d)

    verify = tomlkit.table()
    verify.add("steps", specs.Verify().steps)
    doc.add("verify", verify)

    if d.skipped:
        w.blank()
        w.comment("Everything below was in the source but has no place in the spec.")
        for line in d.skipped:
            w.comment(f"not converted: {line}")
    text = tomlkit.dumps(doc)
    return text if text.endswith("\n") else text + "\n"


def _targets(w: _Doc, d: Draft) -> None:
    """``host`` and ``venv``, so that ``envparity verify --targets host venv`` runs as the README
    says. For a CUDA project both run the cpu flavor: verify skips a CUDA target on a machine
    without an NVIDIA GPU, and the first session must work on any machine."""
    targets = tomlkit.table(is_super_table=True)
    host = tomlkit.table()
    venv = tomlkit.table()
    w.comment("the interpreter your code runs in", host)
    w.comment("a uv venv built from the lock", venv)
    if d.cuda is not None:
        cuda_flavor = "cu" + d.cuda.replace(".", "")
        for table in (host, venv):
            w.comment(
                "the cpu flavor, so that any machine (CI without a GPU too) can verify this "
                f'target; on a GPU machine set "{cuda_flavor}" (or remove the line) to verify '
                "the CUDA build",
                table,
            )
            table.add("flavor", toml_string("cpu"))
    targets.add("host", host)
    targets.add("venv", venv)
    w.doc.add("targets", targets)
    from orchestrator import compat
    from orchestrator.spec import EXAMPLE_NIXPKGS

    w.blank()
    w.comment(
        "A devcontainer and a Nix shell: uncomment to have 'envparity render' write them. Pin "
        "the image by digest (@sha256:..., from 'docker buildx imagetools inspect IMAGE')."
    )
    w.comment("[targets.devcontainer]")
    w.comment(f'image = "{compat.example_image(d.cuda)}"')
    toolkit = compat.table().toolkits.get(d.cuda or "")
    if toolkit is not None and toolkit.nixpkgs == "removed":
        w.comment(
            f"nixpkgs removed {toolkit.nix_attr} on 2025-08-08: the nix target needs a commit "
            "from before then (docs/compatibility.md)"
        )
    w.comment("[targets.nix]")
    w.comment(f'nixpkgs = "{EXAMPLE_NIXPKGS}"  # nixos-unstable of 2026-10-01')
    w.blank()
