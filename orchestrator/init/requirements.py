"""pip requirements files (``requirements.txt``, ``*.in``), and pip lines inside other formats.

Read line by line as pip does: continuation backslashes, ``#`` comments, ``-r``/``-c``
includes relative to the including file, index and find-links options (also on a
requirement's own line), ``--hash`` (dropped: the lock hashes). Requirements that cannot be
locked with hashes (``-e``, ``name @ URL``, ``git+...``, paths, archive URLs) are kept as
``# not converted:`` lines.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet

from orchestrator.errors import Problem, SpecError
from orchestrator.init.draft import Draft, Where, canonical, ordered, public_specifier
from orchestrator.spec import Dependency

_URLISH_RE = re.compile(
    r"^(?:[A-Za-z][A-Za-z0-9+.-]*://|[A-Za-z]+\+[A-Za-z]+:|\.{1,2}(?:/|\Z)|/|~)"
)
# A local folder: ./pkg, ../pkg, ., /abs/pkg, ~/pkg, file:///abs/pkg, each with [extras].
_LOCAL_RE = re.compile(
    r"(?P<path>(?:\.{1,2}|\.{1,2}/[^\[\s]*|/[^\[\s]*|~/[^\[\s]*|file:/[^\[\s]*))"
    r"(?P<extras>\[[^\]]*\])?"
)
ARCHIVE_RE = re.compile(r"\.(?:whl|zip|tar\.gz|tar\.bz2|tgz)\Z", re.IGNORECASE)
_OPTIONS_SPLIT_RE = re.compile(r"\s+(?=--?[A-Za-z])")
_COMMENT_RE = re.compile(r"(?:^|\s+)#.*\Z")
_PYTHON_HINT_RE = re.compile(r"^#\s*python(?:[_ -]?version)?\s*[:=]\s*(\S+)\s*\Z", re.IGNORECASE)
_PLATFORM_HINT_RE = re.compile(r"^#\s*platform\s*[:=]\s*(\S+)\s*\Z", re.IGNORECASE)

# pip options read from requirements files, by every spelling, to one name.
_PIP_OPTIONS = {
    "-r": "requirement",
    "--requirement": "requirement",
    "-c": "constraint",
    "--constraint": "constraint",
    "-i": "index-url",
    "--index-url": "index-url",
    "--extra-index-url": "extra-index-url",
    "-f": "find-links",
    "--find-links": "find-links",
    "-e": "editable",
    "--editable": "editable",
}
UNLOCKABLE = (
    "cannot be locked with hashes; the spec lists released packages by name and version "
    "(publish it to an index, or put its wheel in a find-links [[index]] folder and "
    "require it by name)"
)


def read_text(path: Path, display: str) -> str:
    """The UTF-8 text of an input file; ``SpecError`` naming it when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(
            [Problem(display, "", f"not UTF-8 text: {exc.reason} at byte {exc.start}")]
        ) from None
    except OSError as exc:
        raise SpecError([Problem(display, "", f"cannot read: {exc.strerror or exc}")]) from None


def read_toml(path: Path, display: str) -> dict[str, Any]:
    """A TOML input file (pyproject.toml, pixi.toml, uv.lock) parsed; ``SpecError`` naming it
    when it cannot be read or is not TOML."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10 only
        import tomli as tomllib

    try:
        return tomllib.loads(read_text(path, display))
    except tomllib.TOMLDecodeError as exc:
        raise SpecError([Problem(display, "", f"TOML syntax error: {exc}")]) from None


def first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def from_requirements(draft: Draft, path: Path) -> None:
    reader = RequirementsReader(draft)
    reader.read_file(path, str(path), constraint=False, stack=())
    reader.apply_constraints()


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Lines joined across trailing backslashes, each with the number of its first line."""
    parts: list[str] = []
    start = 1
    for number, line in enumerate(text.splitlines(), 1):
        if not parts:
            start = number
        if line.endswith("\\"):
            parts.append(line[:-1])
            continue
        parts.append(line)
        yield start, "".join(parts)
        parts = []
    if parts:
        yield start, "".join(parts)


class RequirementsReader:
    """pip requirement lines, from files or from a conda ``pip:`` list, into a draft."""

    def __init__(self, draft: Draft) -> None:
        self.draft = draft
        self.constraints: list[tuple[Dependency, Where]] = []

    def read_file(
        self, path: Path, display: str, *, constraint: bool, stack: tuple[Path, ...]
    ) -> None:
        text = read_text(path, display)
        for number, raw in _logical_lines(text):
            where = Where(display, f"line {number}")
            stripped = raw.strip()
            if stripped.startswith("#"):
                self._hint(stripped, where)
                continue
            line = _COMMENT_RE.sub("", raw).strip()
            if line:
                self.line(
                    line, where, path.parent, constraint=constraint, stack=(*stack, path.resolve())
                )

    def _hint(self, comment: str, where: Where) -> None:
        """``# python_version: 3.10`` and ``# platform: linux``; other comments are prose."""
        from orchestrator.init.python import python_from

        if m := _PYTHON_HINT_RE.match(comment):
            if re.fullmatch(r"[0-9]+(\.[0-9]+)*", m[1]):
                self.draft.set_python(m[1], f"{comment!r} ({where})", where)
            else:
                python_from(self.draft, m[1], f"{comment!r} ({where})", where)
        elif (m := _PLATFORM_HINT_RE.match(comment)) and not m[1].lower().startswith("linux"):
            self.draft.skip(where, comment, "envparity environments run on Linux")

    def line(
        self, line: str, where: Where, folder: Path, *, constraint: bool, stack: tuple[Path, ...]
    ) -> None:
        if line.startswith("-"):
            self._options(line, where, folder, constraint=constraint, stack=stack)
            return
        requirement, *options = _OPTIONS_SPLIT_RE.split(line, maxsplit=1)
        dep = self.dependency(requirement, where, folder=None if constraint else folder)
        if options:
            self._requirement_options(options[0], where, folder, stack=stack)
        if dep is None:
            return
        if constraint:
            self.constraints.append((dep, where))
        else:
            self.draft.add(dep, where)

    def dependency(
        self, text: str, where: Where, *, folder: Path | None = None
    ) -> Dependency | None:
        """One PEP 508 requirement as a dependency; None (and noted) when it is not one. With
        ``folder`` (the including file's), a local folder (``./pkg``, ``name @ file:///...``)
        is taken as a local package of the project."""
        if folder is not None and self.local(text, where, folder, editable=False):
            return None
        if _URLISH_RE.match(text) or ARCHIVE_RE.search(text):
            self.draft.unlockable(where, text, UNLOCKABLE)
            return None
        try:
            req = Requirement(text)
        except InvalidRequirement as exc:
            self.draft.problem(where, f"invalid requirement {text!r}: {first_line(exc)}")
            return None
        if req.url:
            self.draft.unlockable(where, text, UNLOCKABLE)
            return None
        specifier = public_specifier(self.draft, req.name, req.specifier, where)
        return Dependency(
            name=req.name,
            specifier=ordered(specifier),
            extras=tuple(sorted(req.extras)),
            markers=str(req.marker) if req.marker else "",
        )

    def local(self, text: str, where: Where, folder: Path, *, editable: bool) -> bool:
        """Take ``text`` as a local folder of the project if it is one: ``./pkg[extra]``,
        ``.``, ``/abs/pkg``, ``file:///abs/pkg``, ``name @ file:///abs/pkg`` (not an archive:
        a wheel or sdist file is a release, which the spec cannot name by path)."""
        name = None
        target = text.strip()
        if m := re.fullmatch(
            r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*@\s*(file:\S+)", target
        ):
            name, target = m[1], m[3] + (m[2] or "")
        m = _LOCAL_RE.fullmatch(target)
        if m is None or ARCHIVE_RE.search(m["path"]):
            return False
        path = m["path"]
        if path.startswith("file:"):
            from urllib.parse import unquote, urlsplit

            path = unquote(urlsplit(path).path)
        extras = tuple(
            sorted(e.strip() for e in (m["extras"] or "[]")[1:-1].split(",") if e.strip())
        )
        what = f"-e {text}" if editable else text
        self.draft.add_local(
            folder / Path(path).expanduser(),
            where,
            what,
            name=name,
            editable=editable,
            extras=extras,
        )
        return True

    def _requirement_options(
        self, options: str, where: Where, folder: Path, *, stack: tuple[Path, ...]
    ) -> None:
        """Options after a requirement: ``--hash`` is dropped (the lock hashes); index and
        find-links options are read as if on a line of their own; others are noted."""
        try:
            tokens = shlex.split(options)
        except ValueError as exc:
            self.draft.problem(where, f"cannot parse {options!r}: {exc}")
            return
        sources: list[str] = []
        others: list[str] = []
        while tokens:
            token = tokens.pop(0)
            option = token.split("=", 1)[0]
            if option.startswith("--hash"):
                continue
            if _PIP_OPTIONS.get(option) in ("index-url", "extra-index-url", "find-links"):
                sources += [token] if "=" in token or not tokens else [token, tokens.pop(0)]
            else:
                others.append(token)
        if sources:
            self._options(shlex.join(sources), where, folder, constraint=False, stack=stack)
        if others:
            self.draft.skip(
                where, " ".join(others), "per-requirement pip options have no spec equivalent"
            )

    def _options(
        self, line: str, where: Where, folder: Path, *, constraint: bool, stack: tuple[Path, ...]
    ) -> None:
        try:
            tokens = shlex.split(line)
        except ValueError as exc:
            self.draft.problem(where, f"cannot parse {line!r}: {exc}")
            return
        while tokens:
            option, value = tokens.pop(0), None
            if option.startswith("--") and "=" in option:
                option, value = option.split("=", 1)
            elif not option.startswith("--") and len(option) > 2:
                option, value = option[:2], option[2:]
            name = _PIP_OPTIONS.get(option)
            if name is None:
                self.draft.skip(
                    where,
                    shlex.join(
                        [option, *tokens] if value is None else [f"{option}={value}", *tokens]
                    ),
                    "a pip option with no spec equivalent",
                )
                return
            if value is None:
                if not tokens:
                    self.draft.problem(where, f"{option} needs a value")
                    return
                value = tokens.pop(0)
            if name == "editable":
                if not self.local(value, where, folder, editable=True):
                    self.draft.unlockable(where, f"{option} {value}", UNLOCKABLE)
            elif name in ("requirement", "constraint"):
                self._include(
                    value, where, folder, constraint=constraint or name == "constraint", stack=stack
                )
            else:
                kind = "find-links" if name == "find-links" else "index"
                origin = f"--{name}" + (", kept beside PyPI" if name == "index-url" else "")
                self.draft.add_index(value, kind, origin, where)

    def _include(
        self, value: str, where: Where, folder: Path, *, constraint: bool, stack: tuple[Path, ...]
    ) -> None:
        path = folder / value
        display = str(Path(where.file).parent / value)
        if path.resolve() in stack:
            self.draft.problem(where, f"{value} includes itself (through {display})")
        elif not path.is_file():
            self.draft.problem(where, f"{value}: no such file ({display})")
        else:
            self.read_file(path, display, constraint=constraint, stack=stack)

    def apply_constraints(self) -> None:
        """A constraint narrows the requirement it names; the spec has no bare constraints."""
        for dep, where in self.constraints:
            kept = self.draft.deps.get(canonical(dep.name))
            if kept is None:
                self.draft.skip(
                    where, f"constraint {dep.requirement()}", "no requirement names this package"
                )
            elif dep.markers or dep.extras:
                self.draft.skip(
                    where, f"constraint {dep.requirement()}", "a constraint with markers or extras"
                )
            else:
                narrowed = ordered(SpecifierSet(kept.specifier) & SpecifierSet(dep.specifier))
                self.draft.deps[canonical(dep.name)] = replace(kept, specifier=narrowed)
