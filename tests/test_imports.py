"""The import graph of ``orchestrator``: no loops, no upward imports, and the probe stays bare.

Every ``import orchestrator...`` and ``from orchestrator... import`` is read with ``ast``, at
module level, inside functions and under ``TYPE_CHECKING`` alike: an import inside a function
hides a loop from a plain ``import``, not from this. Importing ``orchestrator.a.b`` from outside
``orchestrator.a`` also runs ``orchestrator/a/__init__.py``: that is an edge too.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "orchestrator"

# Lower layers first. A module imports only from its own layer or below (loops within a layer
# are caught by the loop test); a new module must be placed here.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "foundation: stdlib-only values and helpers",
        (
            "orchestrator",
            "orchestrator.errors",
            "orchestrator.messages",
            "orchestrator.schema",
            "orchestrator.process",
            "orchestrator.files",
            "orchestrator.tolerances",
            "orchestrator.determinism_settings",
            "orchestrator.noxfile_reader",
            "orchestrator.names",
        ),
    ),
    (
        "the spec, and this machine",
        (
            "orchestrator.spec",
            "orchestrator.determinism",
            "orchestrator.gpus",
            "orchestrator.interpreter",
        ),
    ),
    (
        "facts about packages and CUDA",
        (
            "orchestrator.compat",
            "orchestrator.lock",
            "orchestrator.pylock",
            "orchestrator.cuda_host",
        ),
    ),
    ("the probe (runs in bare targets)", ("orchestrator.probe.*",)),
    ("init", ("orchestrator.init", "orchestrator.init.*")),
    (
        "generated files, stored references, the nox sessions CI calls",
        ("orchestrator.render.*", "orchestrator.references", "orchestrator.nox_sessions"),
    ),
    ("the verdict", ("orchestrator.verdict.*",)),
    ("targets and freshness", ("orchestrator.targets.*", "orchestrator.freshness")),
    # bisect runs experiments with verify's targets and runtime: beside it, never below
    ("verify and check", ("orchestrator.verify", "orchestrator.check", "orchestrator.bisect")),
    (
        "reports and sessions",
        ("orchestrator.doctor", "orchestrator.report", "orchestrator.ci_runs"),
    ),
    ("the CLI", ("orchestrator.cli", "orchestrator.__main__")),
)
# Deprecated names kept for a release: they import from above (the new home) and nothing in
# orchestrator may import them.
SHIMS = {
    "orchestrator.launch": ("launch_environment", "SET_AT_LAUNCH", "THREAD_VARIABLES"),
    "orchestrator.probe.compare": ("compare", "likely_causes", "verdict_lines", "Verdict"),
}
# What the probe may import: it runs inside a target holding only torch and numpy.
BARE = (
    "orchestrator",
    "orchestrator.errors",
    "orchestrator.messages",
    "orchestrator.schema",
    "orchestrator.files",
    "orchestrator.determinism",
    "orchestrator.determinism_settings",
    "orchestrator.probe.*",
)


def modules(root: Path) -> dict[str, Path]:
    """Module name -> file, for every ``.py`` file of the package at ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, anywhere in its file."""
    known = modules(root)
    top = root.name

    def owner(name: str) -> str:
        while name not in known:
            name = name.rpartition(".")[0]
        return name

    edges: dict[str, set[str]] = {}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the importing module's package
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
                ]
            for target in targets:
                if target.split(".")[0] != top:
                    continue
                found.add(owner(target))
                # importing a.b.c runs a/__init__.py and a/b/__init__.py first
                parts = target.split(".")
                for i in range(1, len(parts)):
                    parent = ".".join(parts[:i])
                    if parent in known and not name.startswith(parent + ".") and parent != name:
                        found.add(parent)
        found.discard(name)
        edges[name] = found
    return edges


def cycles(edges: Mapping[str, set[str]]) -> list[list[str]]:
    """One loop per strongly connected component of more than one module, as a path that
    starts and ends at its first module: ``[a, b, a]``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    loops = []
    for component in components:
        start = min(component)
        # the shortest way back to start, inside the component (breadth first)
        paths = {start: [start]}
        queue = [start]
        loop: list[str] = []
        while queue and not loop:
            v = queue.pop(0)
            for w in sorted(edges[v] & component):
                if w == start:
                    loop = [*paths[v], start]
                    break
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    queue.append(w)
        loops.append(loop)
    return sorted(loops)


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(
        name == p or (p.endswith(".*") and (name == p[:-2] or name.startswith(p[:-1])))
        for p in patterns
    )


def layer(name: str) -> int | None:
    return next((i for i, (_, names) in enumerate(LAYERS) if _matches(name, names)), None)


EDGES = graph(PACKAGE)


def test_no_import_loops() -> None:
    found = cycles(EDGES)
    assert found == [], "import loops:\n" + "\n".join(" -> ".join(loop) for loop in found)


def test_the_loop_finder_sees_imports_inside_functions_and_type_checking(tmp_path: Path) -> None:
    """The test above can fail: a loop made only of a function-level import and one under
    TYPE_CHECKING (as launch/determinism_settings and references/verify were) is named."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from pkg.sub import c\n")
    (pkg / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import B\n"
    )
    (pkg / "b.py").write_text("def f():\n    from pkg import a\n")
    (pkg / "sub" / "c.py").write_text("import pkg.d\n")
    (pkg / "d.py").write_text("from pkg.sub.c import x\n")  # runs pkg/sub/__init__ first
    edges = graph(pkg)
    assert edges["pkg.a"] == {"pkg.b"} and edges["pkg.b"] == {"pkg.a"}
    assert cycles(edges) == [["pkg.a", "pkg.b", "pkg.a"], ["pkg.d", "pkg.sub.c", "pkg.d"]]


def test_every_module_has_a_layer() -> None:
    unplaced = sorted(m for m in EDGES if layer(m) is None and m not in SHIMS)
    assert unplaced == [], f"place these modules in LAYERS: {unplaced}"


def test_no_module_imports_from_a_higher_layer() -> None:
    upward = [
        f"{src} ({LAYERS[layer(src) or 0][0]}) imports {dst} ({LAYERS[layer(dst) or 0][0]})"
        for src, targets in sorted(EDGES.items())
        if src not in SHIMS
        for dst in sorted(targets)
        if (layer(dst) or 0) > (layer(src) or 0)
    ]
    assert upward == [], "upward imports:\n" + "\n".join(upward)


def test_the_probe_imports_only_what_a_bare_target_has() -> None:
    outside = [
        f"{src} imports {dst}"
        for src, targets in sorted(EDGES.items())
        if _matches(src, ("orchestrator.probe.*",)) and src not in SHIMS
        for dst in sorted(targets)
        if not _matches(dst, BARE)
    ]
    assert outside == []


def test_the_probe_command_runs_on_the_stdlib_alone() -> None:
    """``python -m orchestrator probe`` in a target: the CLI and every probe module but the
    workload (torch and numpy) import nothing outside the standard library (``-S``: no
    site-packages)."""
    code = (
        "import sys, orchestrator.cli, orchestrator.probe.run, orchestrator.probe.capture\n"
        "orchestrator.cli.build_parser()\n"
        "names = {m.split('.')[0] for m in sys.modules} - {'__main__'}\n"
        "print(sorted(names - set(sys.stdlib_module_names)))"
    )
    done = subprocess.run(
        [sys.executable, "-S", "-c", code], cwd=PACKAGE.parent, capture_output=True, text=True
    )
    assert done.stdout == "['orchestrator']\n", done.stderr


def test_nothing_imports_a_deprecated_module() -> None:
    users = sorted(f"{src} imports {dst}" for src, t in EDGES.items() for dst in t & set(SHIMS))
    assert users == []


@pytest.mark.parametrize("name", sorted(SHIMS))
def test_a_deprecated_module_still_works_and_says_where_its_names_went(name: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = importlib.import_module(name)
    with pytest.warns(DeprecationWarning, match=rf"^{name} is deprecated: import "):
        importlib.reload(module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for attr in SHIMS[name]:
            assert getattr(module, attr) is not None
