"""What a ``noxfile.py`` registers, read with ``ast`` without running it (``check``'s fast path).

``nox -l --json`` answers exactly but costs a Python process importing nox and the noxfile
(0.2 to 0.3 s, more than the rest of ``check``). This reads the statements that run at the
noxfile's top level and keeps only what it can vouch for:

- ``register(SPEC, ...)`` calls (``from orchestrator.nox_sessions import register``, or the
  module imported under any name) whose spec file is a literal or a path built from literals,
  ``__file__``, ``Path(...)``, ``.parent``, ``.resolve()``, ``/`` and ``os.path.join``, and
  names assigned once at the top level (``ROOT = Path(__file__).parent``);
- functions decorated with ``@nox.session`` alone (no ``@nox.parametrize``, no list of
  Pythons): their ``name=``, else the function's name.

A name bound twice at the top level (or declared ``global`` in a function, or after a
``from X import *``) is not trusted; statements inside ``if``, ``try`` or functions are not
read. So a reading can miss sessions that nox would list, never add one: ``check`` asks nox
whenever the reading does not show every session it needs. ``read`` gives None (ask nox) for a
file that does not parse, or whose top-level imports name a module this interpreter cannot find
(nox would fail to load it, and its error is the message to show).
"""

from __future__ import annotations

import ast
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REGISTER = "orchestrator.nox_sessions.register"
_SESSION = ("nox.session", "nox.registry.session_decorator")
_PATH_TYPES = ("pathlib.Path", "pathlib.PurePath", "pathlib.PosixPath")
_SAME_PATH = ("builtins.str", "os.fspath", "os.path.abspath", "os.path.realpath")


@dataclass(frozen=True)
class Reading:
    """``specs``: the spec file of each top-level ``register`` call read, resolved as nox would
    (relative to the noxfile's folder); ``sessions``: the names of ``@nox.session`` functions."""

    specs: tuple[Path, ...] = ()
    sessions: frozenset[str] = frozenset()


def read(noxfile: Path, default_spec: str) -> Reading | None:
    """The sessions ``noxfile`` visibly registers (see the module docstring); None when it does
    not parse or imports a module that cannot be found from here. ``default_spec``: the spec
    file ``register()`` reads when called without one."""
    try:
        source = noxfile.read_bytes()
        tree = ast.parse(source, str(noxfile))
    except (OSError, SyntaxError, ValueError):
        return None
    scope = _Scope(tree, noxfile, source, default_spec)
    if not scope.imports_resolve():
        return None
    specs: list[Path] = []
    sessions: set[str] = set()
    for stmt in tree.body:
        value = stmt.value if isinstance(stmt, (ast.Expr, ast.Assign, ast.AnnAssign)) else None
        if isinstance(value, ast.Call) and scope.origin(value.func) == REGISTER:
            spec = scope.register_spec(value)
            if spec is not None:
                specs.append(spec)
        elif isinstance(stmt, ast.FunctionDef):
            name = scope.session_name(stmt)
            if name is not None:
                sessions.add(name)
    return Reading(tuple(specs), frozenset(sessions))


class _Scope:
    """The noxfile's top-level names: each bound once (an import or an assignment), or not
    trusted."""

    def __init__(self, tree: ast.Module, noxfile: Path, source: bytes, default_spec: str) -> None:
        self.tree = tree
        self.noxfile = noxfile
        self.default_spec = default_spec
        self.bound: dict[str, list[ast.AST]] = {}
        self.starred = False
        # the source text spares walking what cannot bind a name: expressions hold no binding
        # without ':=', function bodies none at the top level without 'global'
        for node, binder in _bindings(tree, walrus=b":=" in source):
            if isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
                self.starred = True
            self.bound.setdefault(binder, []).append(node)
        for node in ast.walk(tree) if b"global" in source else ():
            if isinstance(node, ast.Global):
                for name in node.names:
                    self.bound.setdefault(name, []).append(node)

    def only(self, name: str, before: int) -> ast.AST | None:
        """The one statement that binds ``name``, when it runs before line ``before``."""
        found = self.bound.get(name, [])
        if self.starred or len(found) != 1 or getattr(found[0], "lineno", before) >= before:
            return None
        return found[0]

    def unbound(self, name: str) -> bool:
        return not self.starred and name not in self.bound

    def origin(self, node: ast.expr) -> str | None:
        """The dotted name an expression refers to through the imports: ``nox.session``."""
        if isinstance(node, ast.Attribute):
            base = self.origin(node.value)
            return None if base is None else f"{base}.{node.attr}"
        if not isinstance(node, ast.Name):
            return None
        if self.unbound(node.id):
            return f"builtins.{node.id}"
        stmt = self.only(node.id, node.lineno)
        if isinstance(stmt, ast.Import):
            alias = next(a for a in stmt.names if (a.asname or a.name.split(".")[0]) == node.id)
            return alias.name if alias.asname else node.id
        if isinstance(stmt, ast.ImportFrom) and stmt.level == 0 and stmt.module:
            alias = next(a for a in stmt.names if (a.asname or a.name) == node.id)
            return f"{stmt.module}.{alias.name}"
        return None

    def imports_resolve(self) -> bool:
        """Every module imported at the top level can be found (the top package of each)."""
        from importlib.util import find_spec

        for stmt in self.tree.body:
            if isinstance(stmt, ast.Import):
                names = [a.name for a in stmt.names]
            elif isinstance(stmt, ast.ImportFrom) and stmt.level == 0 and stmt.module:
                names = [stmt.module]
            else:
                continue
            for top in {n.split(".")[0] for n in names}:
                here = self.noxfile.parent / top
                if not (
                    top in sys.modules
                    or top in sys.stdlib_module_names
                    or here.with_suffix(".py").is_file()
                    or (here / "__init__.py").is_file()
                    or find_spec(top) is not None
                ):
                    return False
        return True

    def register_spec(self, call: ast.Call) -> Path | None:
        """The spec file a ``register(...)`` call reads, resolved; None when not literal."""
        given = [k.value for k in call.keywords if k.arg == "spec_file"]
        if any(k.arg is None for k in call.keywords) or any(
            isinstance(a, ast.Starred) for a in call.args
        ):
            return None
        args = call.args[:1] + given
        text = self.path(args[0], 0) if args else self.default_spec
        if text is None:
            return None
        # nox runs the noxfile in its folder: a relative path is relative to it
        return Path(os.path.join(os.path.dirname(os.path.realpath(self.noxfile)), text)).resolve()

    def path(self, node: ast.expr, depth: int) -> str | None:
        """The path an expression of literals and path operations gives, or None."""
        if depth > 20:
            return None
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Name):
            if node.id == "__file__" and self.unbound(node.id):
                return str(self.noxfile)
            stmt = self.only(node.id, node.lineno)
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                return self.path(stmt.value, depth + 1)
            if isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
                return self.path(stmt.value, depth + 1)
            return None
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            return self.joined([node.left, node.right], depth)
        if isinstance(node, ast.Attribute) and node.attr == "parent":
            inner = self.path(node.value, depth + 1)
            return None if inner is None else os.path.dirname(inner)
        if not isinstance(node, ast.Call) or node.keywords:
            return None
        func = node.func
        if isinstance(func, ast.Attribute) and self.origin(func) is None:  # a method of a path
            if func.attr in ("resolve", "absolute") and not node.args:
                return self.path(func.value, depth + 1)
            if func.attr == "joinpath":
                return self.joined([func.value, *node.args], depth)
            return None
        origin = self.origin(func)
        if origin in _PATH_TYPES or origin == "os.path.join":
            return self.joined(node.args, depth) if node.args else None
        if origin in _SAME_PATH and len(node.args) == 1:
            return self.path(node.args[0], depth + 1)
        if origin == "os.path.dirname" and len(node.args) == 1:
            inner = self.path(node.args[0], depth + 1)
            return None if inner is None else os.path.dirname(inner)
        return None

    def joined(self, parts: list[ast.expr], depth: int) -> str | None:
        texts = [self.path(p, depth + 1) for p in parts]
        if any(t is None for t in texts) or any(isinstance(p, ast.Starred) for p in parts):
            return None
        return os.path.join(*[t for t in texts if t is not None])

    def session_name(self, func: ast.FunctionDef) -> str | None:
        """The name ``@nox.session`` registers ``func`` under, when it is its only decorator
        and names one session (one Python at most)."""
        if len(func.decorator_list) != 1:
            return None
        decorator = func.decorator_list[0]
        call = decorator if isinstance(decorator, ast.Call) else None
        if self.origin(call.func if call else decorator) not in _SESSION:
            return None
        if call is None:
            return func.name
        if call.args or any(k.arg is None for k in call.keywords):
            return None
        name = func.name
        for keyword in call.keywords:
            value = keyword.value
            if keyword.arg == "name":
                if not (isinstance(value, ast.Constant) and isinstance(value.value, str)):
                    return None
                name = value.value
            elif keyword.arg in ("python", "py") and not (
                isinstance(value, ast.Constant) and isinstance(value.value, (str, type(None)))
            ):
                return None  # a list of Pythons names one session per Python ("tests-3.11")
        return name


def _bindings(tree: ast.Module, walrus: bool) -> Iterator[tuple[ast.AST, str]]:
    """(statement or node, name) for every name bound in the module's own scope: assignments,
    imports, definitions, loop and ``with`` targets, walrus targets, ``except ... as``, match
    captures; not inside functions or classes (their own scopes), but in their decorators.
    ``walrus``: whether the source has ``:=``; without it, only assignment targets among the
    expressions are walked."""
    stack: list[tuple[ast.AST, ast.AST]] = [(s, s) for s in tree.body]
    while stack:
        node, stmt = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name != "*":
                    yield node, alias.asname or alias.name.split(".")[0]
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node, node.name
            inner: list[ast.AST] = list(node.decorator_list)
            if isinstance(node, ast.ClassDef):
                inner += [*node.bases, *node.keywords]
            else:
                inner += [*node.args.defaults, *[d for d in node.args.kw_defaults if d]]
            stack += [(n, stmt) for n in inner]
            continue
        if isinstance(node, ast.Lambda):
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            yield stmt, node.id
        elif isinstance(node, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and node.name:
            yield node, node.name
        elif isinstance(node, ast.MatchMapping) and node.rest:
            yield node, node.rest
        stack += [
            (child, child if isinstance(child, ast.stmt) else stmt)
            for child in ast.iter_child_nodes(node)
            if walrus
            or not isinstance(child, ast.expr)
            or isinstance(getattr(child, "ctx", None), (ast.Store, ast.Del))
        ]
