"""``envparity init``: write a starter ``environment.toml``, or convert one from an existing file.

``spec_text`` builds the text: from scratch (CPU-only, this interpreter's Python, torch and
numpy) or converted from a pip requirements file, a conda ``environment.yml`` or a Poetry /
PEP 621 ``pyproject.toml``. Whatever a conversion cannot express is kept as a
``# not converted: ...`` comment, so nothing is lost silently; malformed input raises one
``SpecError`` listing every problem with its file and line or key. The text always passes
``orchestrator.spec.loads`` before it is returned. ``write_spec`` writes it atomically and
never replaces an existing spec unless asked to.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from packaging.markers import InvalidMarker, Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, Specifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from orchestrator import spec as specs
from orchestrator.errors import Problem, SpecError, UsageError
from orchestrator.spec import Dependency

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

PYTORCH_INDEX = "https://download.pytorch.org/whl/"
_PYTORCH_INDEX_RE = re.compile(
    r"^https://download\.pytorch\.org/whl/(?:nightly/|test/)?(?P<build>cu\d{2,3}|cpu)/?$"
)
_CUDA_LOCAL_RE = re.compile(r"^cu(?P<major>\d{1,2})(?P<minor>\d)$")
_URLISH_RE = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*://|\.{1,2}(?:/|$)|/|~)")
_ARCHIVE_RE = re.compile(r"\.(?:whl|zip|tar\.gz|tar\.bz2|tgz)$", re.IGNORECASE)
_OPTIONS_SPLIT_RE = re.compile(r"\s+(?=--?[A-Za-z])")
_COMMENT_RE = re.compile(r"(?:^|\s+)#.*$")
_PYTHON_HINT_RE = re.compile(r"^#\s*python(?:[_ -]?version)?\s*[:=]\s*(\S+)\s*$", re.IGNORECASE)
_PLATFORM_HINT_RE = re.compile(r"^#\s*platform\s*[:=]\s*(\S+)\s*$", re.IGNORECASE)
_BARE_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")

# fmt: off
# pip options read from requirements files, by every spelling, to one name.
_PIP_OPTIONS = {
    "-r": "requirement", "--requirement": "requirement",
    "-c": "constraint", "--constraint": "constraint",
    "-i": "index-url", "--index-url": "index-url",
    "--extra-index-url": "extra-index-url",
    "-f": "find-links", "--find-links": "find-links",
    "-e": "editable", "--editable": "editable",
}
# conda names whose PyPI distribution is named differently.
_CONDA_TO_PYPI = {
    "pytorch": "torch", "pytorch-gpu": "torch", "pytorch-cpu": "torch",
    "py-opencv": "opencv-python", "opencv": "opencv-python",
    "matplotlib-base": "matplotlib", "tensorflow-gpu": "tensorflow",
    "pytables": "tables", "msgpack-python": "msgpack",
}
# conda packages that say which CUDA toolkit the environment uses.
_CONDA_CUDA = ("cudatoolkit", "pytorch-cuda", "cuda-version", "cuda-toolkit", "cuda")
# conda packages with no PyPI counterpart: native libraries the PyPI wheels bundle themselves.
_CONDA_ONLY = frozenset({
    "_libgcc_mutex", "_openmp_mutex", "blas", "ca-certificates", "intel-openmp",
    "ld_impl_linux-64", "libblas", "libcblas", "libffi", "libgcc-ng", "liblapack",
    "libstdcxx-ng", "magma", "mkl", "nccl", "ncurses", "openssl", "pip", "pytorch-mutex",
    "readline", "sqlite", "tk", "xz", "zlib",
})
# conda packages that are command-line tools: they go to [system] packages.
_CONDA_SYSTEM = frozenset({
    "cmake", "curl", "ffmpeg", "git", "git-lfs", "graphviz", "make", "unzip", "wget", "zip",
})
# [tool.poetry] keys that describe the package, not its environment: neither converted nor noted.
_POETRY_METADATA = frozenset({
    "authors", "build", "classifiers", "description", "documentation", "exclude", "homepage",
    "include", "keywords", "license", "maintainers", "name", "package-mode", "packages",
    "plugins", "readme", "repository", "requires-plugins", "requires-poetry", "scripts", "urls",
    "version",
})
# fmt: on


# --------------------------------------------------------------------------- the public API


def spec_text(source: Path | None, *, name: str | None) -> str:
    """The text of a new ``environment.toml``: a starter spec, or ``source`` converted.

    Raises ``UsageError`` for an unusable argument and ``SpecError`` for malformed input.
    """
    draft = _starter() if source is None else _convert(source)
    draft.name = _choose_name(name, draft)
    if draft.python is None:
        draft.python = _running_python()
        draft.notes.append(
            f"python: {draft.origin} does not say; set to this interpreter's {draft.python}"
        )
    _add_pytorch_indexes(draft)
    text = _render(draft)
    specs.loads(text)  # every text we hand out must load; a failure here is a bug in this module
    return text


def write_spec(path: Path, text: str, *, force: bool) -> None:
    """Write ``text`` to ``path`` atomically; never replace an existing file unless ``force``."""
    if path.exists() and not force:
        raise UsageError(f"{path} already exists; use --force to overwrite it")
    folder = path.parent
    if not folder.is_dir():
        raise UsageError(f"{path}: folder {folder} does not exist")
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        if force:
            os.replace(tmp, path)
        else:
            _link_new(tmp, path)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _link_new(tmp: str, path: Path) -> None:
    """Put ``tmp`` at ``path`` only if nothing is there, without a window for a race."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise UsageError(f"{path} already exists; use --force to overwrite it") from None
    except OSError:  # a filesystem without hard links: check, then replace
        if path.exists():
            raise UsageError(f"{path} already exists; use --force to overwrite it") from None
        os.replace(tmp, path)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# --------------------------------------------------------------------------- the draft


@dataclass
class _Index:
    url: str
    kind: str  # "index" or "find-links"
    flavors: tuple[str, ...]
    origin: str  # where it came from, written as a comment above it


@dataclass(frozen=True)
class _Where:
    """A place in an input file: ``requirements.txt line 7``, ``env.yml dependencies[2]``."""

    file: str
    key: str

    def __str__(self) -> str:
        return f"{self.file} {self.key}" if self.key else self.file


@dataclass
class _Draft:
    """What a conversion found, before it is rendered; ``problems`` stop the conversion."""

    origin: str  # the source file as the user named it, or "" for the starter spec
    name: str | None = None
    python: str | None = None
    python_origin: str = ""
    cuda: str | None = None
    cuda_origin: str = ""
    cudnn: str | None = None
    deps: dict[str, Dependency] = field(default_factory=dict)  # canonical name -> dependency
    indexes: list[_Index] = field(default_factory=list)
    system: list[str] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def problem(self, where: _Where, message: str) -> None:
        self.problems.append(Problem(where.file, where.key, message))

    def skip(self, where: _Where, what: str, why: str) -> None:
        self.skipped.append(f"{where}: {what} ({why})")

    def add(self, dep: Dependency, where: _Where) -> None:
        key = _canonical(dep.name)
        kept = self.deps.get(key)
        if kept is None:
            self.deps[key] = dep
        elif kept != dep:
            self.skip(
                where,
                dep.requirement(),
                f"a second entry for {kept.name}; the spec holds one per package, "
                f"kept {kept.requirement()}",
            )

    def set_python(self, version: str, origin: str, where: _Where) -> None:
        if not specs._PYTHON_RE.match(version):
            self.skip(where, f"python {version}", "not a Python 3 version such as 3.11 or 3.11.9")
        elif self.python is None:
            self.python, self.python_origin = version, origin
        elif self.python != version:
            self.skip(where, f"python {version}", f"python is already {self.python}")

    def set_cuda(self, version: str, origin: str, where: _Where) -> None:
        if self.cuda is None:
            self.cuda, self.cuda_origin = version, origin
        elif self.cuda != version:
            self.problem(
                where, f"CUDA {version} conflicts with CUDA {self.cuda} from {self.cuda_origin}"
            )

    def add_index(self, raw_url: str, kind: str, origin: str, where: _Where) -> None:
        url, had_credentials = _without_credentials(raw_url)
        if had_credentials:
            self.notes.append(
                f"{where}: credentials removed from {url}; give them to uv "
                "through its environment or a netrc file, never in the spec"
            )
        if not specs._URL_RE.match(url):
            self.skip(
                where,
                f"{origin} {url}",
                "[[index]] needs an http(s):// or file:// URL or an absolute path",
            )
            return
        flavors: tuple[str, ...] = ()
        m = _PYTORCH_INDEX_RE.match(url)
        if m and m["build"] == "cpu":
            flavors = ("cpu",)
        elif m:
            flavors = ("cuda",)
            self.set_cuda(_cuda_of_tag(m["build"]), f"the index {url}", where)
        if all(i.url != url for i in self.indexes):
            self.indexes.append(
                _Index(url=url, kind=kind, flavors=flavors, origin=f"{origin} ({where})")
            )


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _cuda_of_tag(tag: str) -> str:
    """``"cu118"`` -> ``"11.8"``, ``"cu121"`` -> ``"12.1"``, ``"cu92"`` -> ``"9.2"``."""
    m = _CUDA_LOCAL_RE.match(tag)
    assert m is not None, tag
    return f"{m['major']}.{m['minor']}"


def _without_credentials(url: str) -> tuple[str, bool]:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, False
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=host)), True


def _running_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _choose_name(explicit: str | None, draft: _Draft) -> str:
    if explicit is not None:
        if not specs._NAME_RE.match(explicit):
            raise UsageError(
                f"--name: {explicit!r} is not a name (letters, digits, '.', '_', "
                "'-'; starting with a letter or digit; at most 64)"
            )
        return explicit
    if draft.name is not None:
        if specs._NAME_RE.match(draft.name):
            return draft.name
        fixed = _sanitized_name(draft.name)
        draft.notes.append(
            f"name: {draft.name!r} from {draft.origin} is not a valid name; using {fixed!r}"
        )
        return fixed
    return _sanitized_name(Path.cwd().name)


def _sanitized_name(raw: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", raw).lstrip("._-")[:64].rstrip("-")
    return name or "project"


# --------------------------------------------------------------------------- from scratch


def _starter() -> _Draft:
    draft = _Draft(origin="")
    for name, fallback in (("torch", ">=2.0"), ("numpy", ">=1.24")):
        try:
            installed = Version(metadata.version(name)).public
        except (metadata.PackageNotFoundError, InvalidVersion):
            draft.deps[name] = Dependency(name=name, specifier=fallback)
        else:
            draft.deps[name] = Dependency(name=name, specifier=f"=={installed}")
    draft.python = _running_python()
    draft.python_origin = "this interpreter"
    return draft


# --------------------------------------------------------------------------- converting


def _convert(source: Path) -> _Draft:
    if not source.exists():
        raise UsageError(f"--from {source}: no such file")
    if not source.is_file():
        raise UsageError(f"--from {source}: not a file")
    lower = source.name.lower()
    draft = _Draft(origin=str(source))
    if lower == specs.SPEC_FILE:
        raise UsageError(f"--from {source}: this is already an envparity spec")
    if lower.endswith((".yml", ".yaml")):
        _from_conda(draft, source)
    elif lower.endswith(".toml"):
        _from_pyproject(draft, source)
    elif lower.endswith((".txt", ".in")):
        reader = _RequirementsReader(draft)
        reader.read_file(source, str(source), constraint=False, stack=())
        reader.apply_constraints()
    else:
        raise UsageError(
            f"--from {source}: cannot tell the format from the name; expected a "
            "requirements file (*.txt, *.in), a conda environment (*.yml, *.yaml) "
            "or a pyproject.toml"
        )
    if draft.problems:
        raise SpecError(draft.problems)
    return draft


def _read(path: Path, display: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(
            [Problem(display, "", f"not UTF-8 text: {exc.reason} at byte {exc.start}")]
        ) from None
    except OSError as exc:
        raise SpecError([Problem(display, "", f"cannot read: {exc.strerror or exc}")]) from None


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


class _RequirementsReader:
    """pip requirement lines, from files or from a conda ``pip:`` list, into a draft."""

    def __init__(self, draft: _Draft) -> None:
        self.draft = draft
        self.constraints: list[tuple[Dependency, _Where]] = []

    def read_file(
        self, path: Path, display: str, *, constraint: bool, stack: tuple[Path, ...]
    ) -> None:
        text = _read(path, display)
        for number, raw in _logical_lines(text):
            where = _Where(display, f"line {number}")
            stripped = raw.strip()
            if stripped.startswith("#"):
                self._hint(stripped, where)
                continue
            line = _COMMENT_RE.sub("", raw).strip()
            if line:
                self.line(
                    line, where, path.parent, constraint=constraint, stack=(*stack, path.resolve())
                )

    def _hint(self, comment: str, where: _Where) -> None:
        """``# python_version: 3.10`` and ``# platform: linux``; other comments are prose."""
        if m := _PYTHON_HINT_RE.match(comment):
            self.draft.set_python(m[1], f"{comment!r} ({where})", where)
        elif (m := _PLATFORM_HINT_RE.match(comment)) and not m[1].lower().startswith("linux"):
            self.draft.skip(where, comment, "envparity environments run on Linux")

    def line(
        self, line: str, where: _Where, folder: Path, *, constraint: bool, stack: tuple[Path, ...]
    ) -> None:
        if line.startswith("-"):
            self._options(line, where, folder, constraint=constraint, stack=stack)
            return
        requirement, *options = _OPTIONS_SPLIT_RE.split(line, maxsplit=1)
        if options:
            self._requirement_options(options[0], where)
        dep = self._dependency(requirement, where)
        if dep is None:
            return
        if constraint:
            self.constraints.append((dep, where))
        else:
            self.draft.add(dep, where)

    def _dependency(self, text: str, where: _Where) -> Dependency | None:
        if _URLISH_RE.match(text) or _ARCHIVE_RE.search(text):
            self.draft.problem(where, _url_refusal(text))
            return None
        try:
            req = Requirement(text)
        except InvalidRequirement as exc:
            self.draft.problem(where, f"invalid requirement {text!r}: {_first_line(exc)}")
            return None
        if req.url:
            self.draft.problem(where, _url_refusal(text))
            return None
        parts = []
        for s in req.specifier:
            version = s.version
            if s.operator == "==" and "+" in version:
                public, local = version.split("+", 1)
                if _CUDA_LOCAL_RE.match(local):
                    self.draft.set_cuda(
                        _cuda_of_tag(local), f"the +{local} of {req.name} ({where})", where
                    )
                    version = public
                elif local == "cpu":
                    version = public
            parts.append(f"{s.operator}{version}")
        return Dependency(
            name=req.name,
            specifier=_ordered(SpecifierSet(",".join(parts))),
            extras=tuple(sorted(req.extras)),
            markers=str(req.marker) if req.marker else "",
        )

    def _requirement_options(self, options: str, where: _Where) -> None:
        """Per-requirement options: ``--hash`` is dropped (the lock hashes); others noted."""
        try:
            tokens = shlex.split(options)
        except ValueError as exc:
            self.draft.problem(where, f"cannot parse {options!r}: {exc}")
            return
        others = [t for t in tokens if not t.startswith("--hash")]
        if others:
            self.draft.skip(
                where, " ".join(others), "per-requirement pip options have no spec equivalent"
            )

    def _options(
        self, line: str, where: _Where, folder: Path, *, constraint: bool, stack: tuple[Path, ...]
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
                self.draft.problem(
                    where,
                    f"editable requirement '{option} {value}' cannot be "
                    "converted: the spec lists released packages; install the "
                    "project itself in the target, or remove the line",
                )
            elif name in ("requirement", "constraint"):
                self._include(
                    value, where, folder, constraint=constraint or name == "constraint", stack=stack
                )
            else:
                kind = "find-links" if name == "find-links" else "index"
                origin = f"--{name}" + (", kept beside PyPI" if name == "index-url" else "")
                self.draft.add_index(value, kind, origin, where)

    def _include(
        self, value: str, where: _Where, folder: Path, *, constraint: bool, stack: tuple[Path, ...]
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
            kept = self.draft.deps.get(_canonical(dep.name))
            if kept is None:
                self.draft.skip(
                    where, f"constraint {dep.requirement()}", "no requirement names this package"
                )
            elif dep.markers or dep.extras:
                self.draft.skip(
                    where, f"constraint {dep.requirement()}", "a constraint with markers or extras"
                )
            else:
                narrowed = _ordered(SpecifierSet(kept.specifier) & SpecifierSet(dep.specifier))
                self.draft.deps[_canonical(dep.name)] = replace(kept, specifier=narrowed)


def _url_refusal(text: str) -> str:
    return (
        f"{text!r} is a URL or path requirement, which the spec cannot hold: it lists "
        "package names with version specifiers (publish the package to an index, or add "
        "a find-links [[index]] folder and require it by name)"
    )


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


# --------------------------------------------------------------------------- conda


def _from_conda(draft: _Draft, path: Path) -> None:
    import yaml

    display = str(path)
    text = _read(path, display)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        location = f"line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError([Problem(display, location, f"YAML syntax error: {problem}")]) from None
    if not isinstance(data, dict) or not isinstance(data.get("dependencies"), list):
        raise SpecError(
            [
                Problem(
                    display,
                    "dependencies",
                    "expected a conda environment: a mapping with a 'dependencies' list",
                )
            ]
        )
    channels: list[str] = []
    reader = _RequirementsReader(draft)
    for key, value in data.items():
        where = _Where(display, str(key))
        if key == "name" and isinstance(value, str):
            draft.name = value
        elif key == "channels" and isinstance(value, list):
            channels.extend(str(c) for c in value)
        elif key == "dependencies":
            for i, item in enumerate(value):
                _conda_item(
                    draft, reader, item, _Where(display, f"dependencies[{i}]"), path, channels
                )
        elif key == "variables" and isinstance(value, dict):
            _conda_variables(draft, value, where)
        else:
            draft.skip(where, repr(value), "no spec equivalent")
    reader.apply_constraints()
    if channels:
        draft.notes.append(
            f"conda channels {', '.join(dict.fromkeys(channels))} are not used: "
            "packages come from PyPI and the [[index]] entries"
        )


def _conda_item(
    draft: _Draft,
    reader: _RequirementsReader,
    item: object,
    where: _Where,
    path: Path,
    channels: list[str],
) -> None:
    if isinstance(item, dict) and set(item) == {"pip"} and isinstance(item["pip"], list):
        for j, line in enumerate(item["pip"]):
            at = _Where(where.file, f"{where.key}.pip[{j}]")
            if isinstance(line, str):
                reader.line(
                    line.strip(), at, path.parent, constraint=False, stack=(path.resolve(),)
                )
            else:
                draft.problem(at, f"expected a pip requirement string, got {line!r}")
    elif isinstance(item, str):
        _conda_package(draft, item.strip(), where, channels)
    else:
        draft.problem(where, f"expected a conda package spec or a 'pip:' list, got {item!r}")


_CONDA_SPEC_RE = re.compile(
    r"^(?:(?P<channel>[A-Za-z0-9_./:-]+)::)?"
    r"(?P<name>[A-Za-z0-9_][A-Za-z0-9_.+-]*)\s*(?P<rest>.*)$"
)


def _conda_package(draft: _Draft, item: str, where: _Where, channels: list[str]) -> None:
    m = _CONDA_SPEC_RE.match(item)
    if m is None:
        draft.skip(where, item, "not a conda package spec")
        return
    if m["channel"]:
        channels.append(m["channel"])
    name = m["name"].lower()
    specifier, build = _conda_specifier(m["rest"])
    if specifier is None:
        draft.skip(where, item, "a conda version spec with no PEP 440 equivalent")
        return
    if build:
        draft.skip(
            where,
            f"build {build} of {name}",
            "conda build strings have no spec equivalent; the version is kept",
        )
    if name == "python":
        if specifier:
            _python_from(draft, specifier, f"{item!r} ({where})", where)
    elif name in _CONDA_CUDA or name == "cudnn":
        version = _pinned_version(specifier)
        if version is None:
            draft.skip(where, item, f"{name} needs one pinned version such as {name}=11.8")
        elif name == "cudnn":
            draft.cudnn = version
        else:
            release = Version(version).release
            draft.set_cuda(".".join(str(n) for n in release[:2]), f"{item!r} ({where})", where)
    elif name == "cpuonly":
        draft.notes.append(f"{where}: cpuonly: a CPU-only environment has no [cuda] table")
    elif name in _CONDA_SYSTEM:
        if name not in draft.system:
            draft.system.append(name)
        if specifier:
            draft.skip(
                where,
                item,
                "[system] packages come from each target's package set; the version is not kept",
            )
    elif name in _CONDA_ONLY:
        draft.skip(where, item, "a conda-only package; uv and the PyPI wheels provide this")
    else:
        draft.add(Dependency(name=_CONDA_TO_PYPI.get(name, name), specifier=specifier), where)


def _conda_specifier(rest: str) -> tuple[str | None, str]:
    """A conda version spec as a PEP 440 specifier (None: no equivalent) and its build string.

    ``=1.24.0`` -> ``==1.24.0``; ``=1.24`` (conda: any 1.24.x) -> ``==1.24.*``;
    ``>=1.24,<2`` is kept; ``1.24 py310_0`` -> ``==1.24.*`` and the build ``py310_0``.
    """
    rest = rest.strip()
    if rest in ("", "*"):
        return "", ""
    if rest.startswith("=="):
        version, _, build = rest[2:].partition("=")
        return _pep440(f"=={version}"), build
    if rest.startswith("="):
        version, _, build = rest[1:].partition("=")
        return _fuzzy(version), build
    if rest[0] in "<>!~":
        return (None if "|" in rest else _pep440(rest)), ""
    version, _, build = rest.partition(" ")
    if version[0] in "<>!=~":
        return _conda_specifier(version)[0], build.strip()
    return _fuzzy(version), build.strip()


def _fuzzy(version: str) -> str | None:
    """conda's ``=V``: V itself when it names a full x.y.z release, otherwise ``V.*``."""
    if any(c in version for c in "|,<>!"):
        return None
    if version == "*":
        return ""
    if version.endswith("*"):
        return _pep440("==" + version.rstrip("*").rstrip(".") + ".*")
    try:
        full = len(Version(version).release) >= 3
    except InvalidVersion:
        return None
    return _pep440(f"=={version}" if full else f"=={version}.*")


def _pep440(text: str) -> str | None:
    """``text`` as a normalised PEP 440 specifier, lower bounds first; None if it is not one."""
    try:
        return _ordered(SpecifierSet(text))
    except InvalidSpecifier:
        return None


_OPERATOR_ORDER = ("===", "==", "~=", ">=", ">", "<=", "<", "!=")


def _ordered(specifiers: SpecifierSet) -> str:
    """A specifier set written in a stable, readable order: ``>=2.1.0,<3.0.0``."""
    return ",".join(str(s) for s in _sorted(specifiers))


def _sorted(specifiers: SpecifierSet) -> list[Specifier]:
    return sorted(specifiers, key=lambda s: (_OPERATOR_ORDER.index(s.operator), s.version))


def _pinned_version(specifier: str) -> str | None:
    """``==11.8.*`` and ``==11.8`` -> ``11.8``; None for anything but one pin."""
    m = re.fullmatch(r"==(\d+(?:\.\d+)*)(?:\.\*)?", specifier)
    return m[1] if m else None


def _conda_variables(draft: _Draft, values: Mapping[object, object], where: _Where) -> None:
    for name, value in values.items():
        text = str(value)
        if not (isinstance(name, str) and specs._ENV_NAME_RE.match(name)):
            draft.skip(where, f"{name}={text}", "not an environment variable name")
        elif any(ord(c) < 32 or ord(c) == 127 for c in text):
            draft.skip(where, name, "a default must be one line of printable text")
        else:
            draft.variables[name] = text


def _python_from(draft: _Draft, specifier: str, origin: str, where: _Where) -> None:
    """One pinned version is kept as given; a range becomes its lowest allowed 3.x minor.

    ``specifier`` may hold alternatives joined by ``||`` (Poetry): the lowest of them counts.
    """
    pinned = _pinned_version(specifier)
    if pinned is not None and specs._PYTHON_RE.match(pinned):
        draft.set_python(pinned, origin, where)
        return
    alternatives = [SpecifierSet(a) for a in specifier.split("||")]
    lower = (">", ">=", "==", "~=", "===")
    if not all(any(s.operator in lower for s in a) for a in alternatives):
        draft.skip(where, f"python {specifier}", "no lower bound to choose a version from")
        return
    for minor in range(100):
        versions = [f"3.{minor}.{patch}" for patch in range(100)]
        if any(a.contains(v) for a in alternatives for v in versions):
            draft.set_python(f"3.{minor}", f"the lowest minor of {origin}", where)
            return
    draft.problem(where, f"python {specifier!r} allows no Python 3 version")


# --------------------------------------------------------------------------- pyproject


def _from_pyproject(draft: _Draft, path: Path) -> None:
    display = str(path)
    try:
        data = tomllib.loads(_read(path, display))
    except tomllib.TOMLDecodeError as exc:
        raise SpecError([Problem(display, "", f"TOML syntax error: {exc}")]) from None
    tool = data.get("tool")
    poetry = tool.get("poetry") if isinstance(tool, dict) else None
    project = data.get("project")
    has_poetry = isinstance(poetry, dict) and "dependencies" in poetry
    has_project = isinstance(project, dict) and "dependencies" in project
    if not (has_poetry or has_project):
        raise SpecError(
            [
                Problem(
                    display,
                    "",
                    "no [tool.poetry.dependencies] or [project] dependencies to convert",
                )
            ]
        )
    if isinstance(project, dict):
        _pep621(draft, project, display, path)
    if isinstance(poetry, dict):
        _poetry(draft, poetry, display)
    groups = data.get("dependency-groups")
    if isinstance(groups, dict):
        for group, items in groups.items():
            _drop_group(
                draft,
                _Where(display, f"dependency-groups.{group}"),
                [str(i) for i in items] if isinstance(items, list) else [str(items)],
            )


def _pep621(draft: _Draft, project: dict[str, Any], display: str, path: Path) -> None:
    if isinstance(project.get("name"), str):
        draft.name = project["name"]
    requires = project.get("requires-python")
    where = _Where(display, "project.requires-python")
    if isinstance(requires, str):
        spec = _pep440(requires)
        if spec is None:
            draft.problem(where, f"invalid specifier {requires!r}")
        else:
            _python_from(draft, spec, f"requires-python {requires!r}", where)
    reader = _RequirementsReader(draft)
    deps = project.get("dependencies", [])
    if not isinstance(deps, list):
        draft.problem(_Where(display, "project.dependencies"), "expected an array of strings")
        deps = []
    for i, line in enumerate(deps):
        at = _Where(display, f"project.dependencies[{i}]")
        if isinstance(line, str) and not line.lstrip().startswith("-"):
            reader.line(line.strip(), at, path.parent, constraint=False, stack=())
        else:
            draft.problem(at, f"expected a PEP 508 requirement string, got {line!r}")
    optional = project.get("optional-dependencies")
    if isinstance(optional, dict):
        for extra, items in optional.items():
            draft.skip(
                _Where(display, f"project.optional-dependencies.{extra}"),
                ", ".join(map(str, items)) if isinstance(items, list) else str(items),
                "an optional extra of the project; add what the environment needs "
                "to [dependencies]",
            )


def _poetry(draft: _Draft, poetry: dict[str, Any], display: str) -> None:
    if isinstance(poetry.get("name"), str) and draft.name is None:
        draft.name = poetry["name"]
    used_sources: dict[str, list[str]] = {}
    deps = poetry.get("dependencies", {})
    if not isinstance(deps, dict):
        draft.problem(_Where(display, "tool.poetry.dependencies"), "expected a table")
        deps = {}
    for name, value in deps.items():
        where = _Where(display, f"tool.poetry.dependencies.{name}")
        if name == "python":
            _poetry_python(draft, value, where)
        else:
            dep = _poetry_dependency(draft, name, value, where)
            if dep is not None:
                draft.add(dep, where)
                if isinstance(value, dict) and isinstance(value.get("source"), str):
                    used_sources.setdefault(value["source"], []).append(name)
    groups = poetry.get("group", {})
    if isinstance(groups, dict):
        for group, table in groups.items():
            if isinstance(table, dict):
                _drop_group(
                    draft,
                    _Where(display, f"tool.poetry.group.{group}.dependencies"),
                    _poetry_listing(table.get("dependencies", {})),
                )
    if "dev-dependencies" in poetry:
        _drop_group(
            draft,
            _Where(display, "tool.poetry.dev-dependencies"),
            _poetry_listing(poetry["dev-dependencies"]),
        )
    sources = poetry.get("source", [])
    for i, source in enumerate(sources if isinstance(sources, list) else [sources]):
        where = _Where(display, f"tool.poetry.source[{i}]")
        if not (isinstance(source, dict) and isinstance(source.get("url"), str)):
            draft.problem(where, "expected a table with a 'url' string")
            continue
        label = str(source.get("name", ""))
        users = used_sources.pop(label, [])
        origin = f"poetry source {label!r}"
        if "priority" in source:
            origin += f", priority {source['priority']}"
        if users:
            origin += f", named by {', '.join(users)}; here it serves every package"
        draft.add_index(source["url"], "index", origin, where)
    for label, users in used_sources.items():
        draft.problem(
            _Where(display, f"tool.poetry.dependencies.{users[0]}.source"),
            f"no [[tool.poetry.source]] is named {label!r}",
        )
    for key in poetry:
        if key not in _POETRY_METADATA and key not in (
            "dependencies",
            "group",
            "dev-dependencies",
            "source",
        ):
            draft.skip(
                _Where(display, f"tool.poetry.{key}"),
                str(poetry[key]),
                "not an environment setting",
            )


def _poetry_listing(table: object) -> list[str]:
    if not isinstance(table, dict):
        return [str(table)]
    return [
        f"{name} {value}" if isinstance(value, str) else f"{name} {value!r}"
        for name, value in table.items()
    ]


def _drop_group(draft: _Draft, where: _Where, items: list[str]) -> None:
    draft.skip(
        where,
        ", ".join(items),
        "a development group, left out of the environment "
        "under test; add what it needs to [dependencies]",
    )


def _poetry_python(draft: _Draft, value: object, where: _Where) -> None:
    if not isinstance(value, str):
        draft.problem(where, f"expected a version constraint string, got {value!r}")
        return
    try:
        alternatives = [_poetry_constraint(a) for a in value.split("||")]
    except ValueError as exc:
        draft.problem(where, str(exc))
        return
    _python_from(draft, "||".join(alternatives), f"python {value!r}", where)


_POETRY_REFUSED = ("path", "git", "url", "file", "develop")
_POETRY_TABLE = (
    "version",
    "extras",
    "markers",
    "python",
    "platform",
    "source",
    "optional",
    "allow-prereleases",
    *_POETRY_REFUSED,
)


def _poetry_dependency(draft: _Draft, name: str, value: object, where: _Where) -> Dependency | None:
    if not specs._PKG_RE.match(name):
        draft.problem(where, f"{name!r} is not a valid package name")
        return None
    if isinstance(value, str):
        value = {"version": value}
    if isinstance(value, list):
        draft.skip(
            where,
            f"{name} = {value!r}",
            "multiple-constraint dependencies have no spec equivalent; choose one",
        )
        return None
    if not isinstance(value, dict):
        draft.problem(where, f"expected a version string or a table, got {value!r}")
        return None
    if "||" in str(value.get("version", "")):
        draft.skip(
            where,
            f"{name} {value['version']}",
            "'||' (either constraint) has no PEP 440 equivalent; choose one",
        )
        return None
    if refused := [k for k in _POETRY_REFUSED if k in value]:
        draft.problem(
            where,
            f"a {refused[0]} dependency cannot be converted: the spec lists "
            "released packages with version specifiers; publish it or remove it",
        )
        return None
    if value.get("optional") is True:
        draft.skip(
            where,
            f"{name} {value.get('version', '*')}",
            "optional: installed only with an extra of the project",
        )
        return None
    for key in value:
        if key not in _POETRY_TABLE or key == "allow-prereleases":
            draft.skip(where, f"{key} = {value[key]!r}", "no spec equivalent")
    try:
        specifier = _poetry_constraint(str(value.get("version", "*")))
        markers = _poetry_markers(value)
    except ValueError as exc:
        draft.problem(where, str(exc))
        return None
    extras = value.get("extras", [])
    if not (isinstance(extras, list) and all(isinstance(e, str) for e in extras)):
        draft.problem(where, f"extras: expected an array of strings, got {extras!r}")
        return None
    return Dependency(name=name, specifier=specifier, extras=tuple(sorted(extras)), markers=markers)


def _poetry_markers(value: Mapping[str, object]) -> str:
    parts: list[str] = []
    if isinstance(value.get("markers"), str):
        parts.append(str(value["markers"]))
    if isinstance(value.get("python"), str):
        alternatives = [
            " and ".join(
                f'python_full_version {s.operator} "{s.version}"'
                for s in _sorted(SpecifierSet(_poetry_constraint(alternative)))
            )
            for alternative in str(value["python"]).split("||")
        ]
        alternatives = [a for a in alternatives if a]
        parts.append(
            alternatives[0]
            if len(alternatives) == 1
            else " or ".join(f"({a})" for a in alternatives)
        )
    if isinstance(value.get("platform"), str):
        parts.append(f'sys_platform == "{value["platform"]}"')
    joined = " and ".join(f"({p})" if " or " in p else p for p in parts if p)
    try:
        return str(Marker(joined)) if joined else ""
    except InvalidMarker as exc:
        raise ValueError(f"invalid markers {joined!r}: {_first_line(exc)}") from None


_POETRY_TOKEN_RE = re.compile(r"(\^|~=|~|===|==|!=|>=|<=|>|<|=)?\s*([^\s,^~=!<>|]+)")


def _poetry_constraint(text: str) -> str:
    """A Poetry version constraint as a PEP 440 specifier; ``ValueError`` if none exists.

    ``^1.2.3`` -> ``>=1.2.3,<2.0.0``; ``^0.2.3`` -> ``>=0.2.3,<0.3.0``; ``~1.2.3`` ->
    ``>=1.2.3,<1.3.0``; ``1.2.3`` -> ``==1.2.3``; ``1.2.*`` -> ``==1.2.*``; ``*`` -> ``""``.
    Constraints joined by commas or spaces all apply; ``||`` (either) has no equivalent.
    """
    text = text.strip()
    if text in ("", "*"):
        return ""
    if "||" in text or "|" in text:
        raise ValueError(f"{text!r}: '||' (either constraint) has no PEP 440 equivalent")
    tokens = list(_POETRY_TOKEN_RE.finditer(text))
    if not tokens or re.sub(r"[\s,]", "", "".join(t[0] for t in tokens)) != re.sub(
        r"[\s,]", "", text
    ):
        raise ValueError(f"{text!r} is not a version constraint")
    parts: list[str] = []
    for token in tokens:
        operator, version = token[1] or "", token[2]
        if operator in ("^", "~"):
            parts.extend(_poetry_range(operator, version, text))
        elif operator in ("", "="):
            parts.append(f"=={version}")
        else:
            parts.append(f"{operator}{version}")
    result = _pep440(",".join(parts))
    if result is None:
        raise ValueError(f"{text!r} is not a version constraint")
    return result


def _poetry_range(operator: str, version: str, text: str) -> list[str]:
    try:
        release = list(Version(version).release)
    except InvalidVersion:
        raise ValueError(f"{text!r}: {version!r} is not a version") from None
    given = len(version.split("+")[0].split("-")[0].split("."))
    release = (release + [0] * given)[: max(given, 1)]
    if operator == "^":
        bump = next((i for i, n in enumerate(release) if n != 0), len(release) - 1)
    else:
        bump = 1 if len(release) >= 2 else 0
    upper = [*release[:bump], release[bump] + 1] + [0] * (len(release) - bump - 1)
    return [f">={version}", f"<{'.'.join(map(str, upper))}"]


# --------------------------------------------------------------------------- pytorch indexes


def _add_pytorch_indexes(draft: _Draft) -> None:
    """Give each flavor its torch build. PyPI's Linux torch is a CUDA build, so the cpu flavor
    needs the PyTorch CPU index ('envparity lock' refuses a cpu lock holding CUDA packages),
    and a CUDA flavor the index of its toolkit."""
    if "torch" not in draft.deps:
        return
    wanted = [("cpu", f"{PYTORCH_INDEX}cpu")]
    if draft.cuda is not None:
        wanted.insert(0, ("cuda", f"{PYTORCH_INDEX}cu{draft.cuda.replace('.', '')}"))
    for flavor, url in wanted:
        if not any(flavor in i.flavors for i in draft.indexes):
            origin = f"the torch build for the {flavor} flavor (added by envparity init)"
            draft.indexes.append(_Index(url=url, kind="index", flavors=(flavor,), origin=origin))


# --------------------------------------------------------------------------- rendering


def _toml_string(value: str) -> str:
    """``value`` as a one-line TOML basic string.

    Anything not printable (control characters, line and paragraph separators, bidirectional
    overrides) is written as an escape, so the file shows exactly what it holds. Lone
    surrogates cannot be written in UTF-8 or TOML: they raise ``ValueError``.
    """
    out = ['"']
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
    out.append('"')
    return "".join(out)


_SHORT_ESCAPES = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_comment(text: str) -> str:
    """``text`` as one TOML comment line; anything not printable is shown as an escape."""
    shown = "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape", "backslashreplace").decode()
        for ch in text
    )
    return f"# {shown}" if shown else "#"


def _key(name: str) -> str:
    return name if _BARE_KEY_RE.match(name) else _toml_string(name)


def _array(values: tuple[str, ...] | list[str]) -> str:
    return "[" + ", ".join(_toml_string(v) for v in values) + "]"


def _dependency_value(dep: Dependency) -> str:
    version = _toml_string(dep.specifier or "*")
    if not dep.extras and not dep.markers:
        return version
    fields = [f"version = {version}"]
    if dep.extras:
        fields.append(f"extras = {_array(dep.extras)}")
    if dep.markers:
        fields.append(f"markers = {_toml_string(dep.markers)}")
    return "{ " + ", ".join(fields) + " }"


def _render(d: _Draft) -> str:
    assert d.name is not None and d.python is not None
    out: list[str] = ["# environment.toml: the one description of this project's environment."]
    if d.origin:
        out.append(
            _toml_comment(
                f"Converted by 'envparity init' from {d.origin}: review it, "
                "and every 'not converted' line at the end."
            )
        )
    else:
        out.append("# Written by 'envparity init' as a starting point: edit it to your project.")
    out.append("# Then: 'envparity lock' pins every package, 'envparity render' writes the rest.")
    out += [_toml_comment(n) for n in d.notes]

    out += ["", "[environment]", f"name = {_toml_string(d.name)}"]
    if d.python_origin:
        out.append(_toml_comment(f"python from {d.python_origin}"))
    out.append(f"python = {_toml_string(d.python)}")

    if d.cuda is None:
        out += [
            "",
            "# CPU-only. For a CUDA toolkit (it must match the torch wheel's CUDA):",
            "# [cuda]",
            '# version = "12.8"',
            '# cudnn = "9"',
        ]
    else:
        out += ["", "[cuda]"]
        if d.cuda_origin:
            out.append(_toml_comment(f"from {d.cuda_origin}"))
        out.append(f"version = {_toml_string(d.cuda)}")
        if d.cudnn:
            out.append(f"cudnn = {_toml_string(d.cudnn)}")

    out += ["", "[dependencies]  # PEP 440 specifiers; the lock pins these and all they pull in"]
    out += [f"{_key(dep.name)} = {_dependency_value(dep)}" for dep in d.deps.values()]

    for index in d.indexes:
        out += [
            "",
            _toml_comment(f"from {index.origin}"),
            "[[index]]",
            f"url = {_toml_string(index.url)}",
        ]
        if index.kind != "index":
            out.append(f"kind = {_toml_string(index.kind)}")
        if index.flavors:
            out.append(f"flavors = {_array(index.flavors)}")

    if d.system:
        out += ["", "[system]", f"packages = {_array(d.system)}"]
    else:
        out += [
            "",
            "# System tools, mapped to each target's packages:",
            "# [system]",
            '# packages = ["git", "git-lfs"]',
        ]

    determinism = specs.Determinism()
    out += [
        "",
        "[determinism]",
        f"seed = {determinism.seed}",
        f"deterministic_algorithms = {_bool(determinism.deterministic_algorithms)}",
        f"tf32 = {_bool(determinism.tf32)}",
        f"cudnn_benchmark = {_bool(determinism.cudnn_benchmark)}",
    ]

    if d.variables:
        out += ["", "[variables]  # names and defaults; secret values are never written"]
        out += [
            f"{name} = {{ default = {_toml_string(value)} }}" for name, value in d.variables.items()
        ]
    else:
        out += [
            "",
            "# Environment variables the project reads (names and defaults only):",
            "# [variables]",
            '# DATA_PATH = { default = "./data", required = true }',
        ]

    out += [
        "",
        "[targets.venv]",
        "# [targets.devcontainer]",
        '# image = "nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04@sha256:<digest>"',
        "# [targets.nix]",
        '# nixpkgs = "github:NixOS/nixpkgs/<40-hex commit>"',
        "",
        "[verify]",
        f"steps = {specs.Verify().steps}",
    ]

    if d.skipped:
        out += ["", "# Everything below was in the source but has no place in the spec."]
        out += [_toml_comment(f"not converted: {s}") for s in d.skipped]
    return "\n".join(out) + "\n"


def _bool(value: bool) -> str:
    return "true" if value else "false"
