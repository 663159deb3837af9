"""``pyproject.toml``: PEP 621 ``[project]`` (with uv's ``[tool.uv]`` sources), and Poetry.

PEP 621 ``dependencies`` are read like requirements lines. uv's ``[[tool.uv.index]]`` become
``[[index]]`` entries; ``[tool.uv.sources]`` that choose an index per extra (``{ index =
"pytorch-cu128", extra = "cu128" }``) or per marker make those extras the spec's flavors: the
extra whose index is a PyTorch CPU index (or that is named ``cpu``) is the cpu flavor, the one
with a CUDA index (or named ``cuXY``/``cuda``/``gpu``) the CUDA flavor and sets ``[cuda]``;
their packages go to that flavor, or to both when both ask for them. A source that is not an
index (git, path, url, workspace) cannot be locked with hashes: that package is not converted.

Poetry constraints are mapped to PEP 440 as Poetry documents them ("Dependency
specification", python-poetry.org/docs/dependency-specification): ``^`` and ``~`` ranges,
``*`` wildcards, comma- or space-joined ranges; local build labels (``^2.2.0+cu121``) name the
build and set ``[cuda]``; ``source = "x"`` takes that ``[[tool.poetry.source]]``'s flavor.
Development groups (Poetry groups, PEP 735 ``[dependency-groups]``) are left out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from packaging.markers import InvalidMarker, Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from orchestrator import spec as specs
from orchestrator.errors import Problem, SpecError
from orchestrator.init.draft import (
    Draft,
    Where,
    canonical,
    cuda_of_tag,
    for_linux,
    local_build,
    ordered,
    pep440,
    public_specifier,
    sorted_specifiers,
)
from orchestrator.init.python import python_from
from orchestrator.init.requirements import (
    ARCHIVE_RE,
    UNLOCKABLE,
    RequirementsReader,
    first_line,
    read_toml,
)
from orchestrator.spec import Dependency

# [tool.poetry] keys that describe the package, not its environment: neither converted nor noted.
_POETRY_METADATA = frozenset(
    {
        "authors", "build", "classifiers", "description", "documentation", "exclude",
        "homepage", "include", "keywords", "license", "maintainers", "name", "package-mode",
        "packages", "plugins", "readme", "repository", "requires-plugins", "requires-poetry",
        "scripts", "urls", "version",
    }
)  # fmt: skip
_ACCELERATOR_EXTRA_RE = re.compile(r"^(?P<build>cpu|cu[0-9]{2,3}|cuda|gpu)\Z")
_PYTORCH_BUILD_RE = re.compile(
    r"^https://download\.pytorch\.org/whl/(?:nightly/|test/)?(cpu|cu[0-9]{2,3})\b"
)
_CUDA_LABEL_RE = re.compile(r"\+((?:pt[0-9]+)?cu[0-9]{2,3})\b")
DEV_GROUP = (
    "a development group, left out of the environment under test; add what it needs to "
    "[dependencies]"
)


def _build_flavor(build: str | None) -> str | None:
    """``"cpu"`` -> ``"cpu"``; ``"cu128"``, ``"cuda"``, ``"gpu"`` -> ``"cuda"``; else None."""
    if build is None:
        return None
    return "cpu" if build == "cpu" else "cuda"


def from_pyproject(draft: Draft, path: Path) -> None:
    display = str(path)
    data = read_toml(path, display)
    tool = _table(data.get("tool"))
    poetry = tool.get("poetry")
    project = data.get("project")
    has_poetry = isinstance(poetry, dict) and "dependencies" in poetry
    has_project = isinstance(project, dict) and (
        "dependencies" in project or "optional-dependencies" in project
    )
    pixi = tool.get("pixi")
    if not (has_poetry or has_project or isinstance(pixi, dict)):
        raise SpecError(
            [
                Problem(
                    display,
                    "",
                    "no [tool.poetry.dependencies], [project] dependencies or [tool.pixi] to "
                    "convert",
                )
            ]
        )
    if isinstance(project, dict):
        _Pep621(draft, display, path, _table(tool.get("uv"))).read(project)
    if isinstance(poetry, dict):
        _Poetry(draft, display, path.parent).read(poetry)
    if isinstance(tool.get("pdm"), dict):
        _pdm(draft, display, tool["pdm"])
    if isinstance(pixi, dict):
        from orchestrator.init import pixi as pixi_format

        pixi_format.read(draft, pixi, path, display, prefix="tool.pixi.")
    _the_project_itself(draft, data, path, display)
    groups = data.get("dependency-groups")
    if isinstance(groups, dict):
        for group, items in groups.items():
            _drop_group(
                draft,
                Where(display, f"dependency-groups.{group}"),
                [_item_text(i) for i in items] if isinstance(items, list) else [str(items)],
            )


_PDM_KNOWN = ("source", "dev-dependencies", "distribution", "version", "build")


def _pdm(draft: Draft, display: str, pdm: dict[str, Any]) -> None:
    """PDM's ``[[tool.pdm.source]]`` (pdm-project.org, "Configure the package indexes"): each
    becomes an ``[[index]]`` (a PyTorch per-build URL gets that build's flavor), ``type =
    "find_links"`` a find-links one; ``include_packages`` (with ``exclude_packages = ["*"]``:
    that source serves those packages only) keeps it to them. A source named ``pypi``
    replaces PyPI in PDM; envparity keeps PyPI beside it. Development groups are left out."""
    sources = pdm.get("source", [])
    for i, source in enumerate(sources if isinstance(sources, list) else [sources]):
        where = Where(display, f"tool.pdm.source[{i}]")
        if not (isinstance(source, dict) and isinstance(source.get("url"), str)):
            draft.problem(where, "expected a table with a 'url' string")
            continue
        name = str(source.get("name", ""))
        kind = "find-links" if source.get("type") == "find_links" else "index"
        include = [p for p in source.get("include_packages", []) if isinstance(p, str)]
        exclude = [p for p in source.get("exclude_packages", []) if isinstance(p, str)]
        plain = [p for p in include if not re.search(r"[*?\[]", p)]
        origin = f"pdm source {name!r}"
        if name == "pypi":
            origin += ", which replaces PyPI in PDM (envparity keeps PyPI beside it)"
        packages: tuple[str, ...] = ()
        if plain and kind == "index":
            packages = tuple(plain)
            origin += f", for {', '.join(plain)}"
            if exclude != ["*"]:
                origin += " (in PDM other packages may come from it too)"
        if len(plain) < len(include) or (exclude and exclude != ["*"]):
            draft.skip(
                where,
                f"include_packages = {include!r}, exclude_packages = {exclude!r}",
                "package patterns have no spec equivalent; the spec keeps an index to packages "
                "it names",
            )
        draft.add_index(source["url"], kind, origin, where, packages)
    groups = pdm.get("dev-dependencies", {})
    for group, items in (groups if isinstance(groups, dict) else {}).items():
        _drop_group(
            draft,
            Where(display, f"tool.pdm.dev-dependencies.{group}"),
            [str(i) for i in items] if isinstance(items, list) else [str(items)],
        )
    for key, value in pdm.items():
        if key not in _PDM_KNOWN:
            draft.skip(Where(display, f"tool.pdm.{key}"), repr(value), "no spec equivalent")


def _the_project_itself(draft: Draft, data: dict[str, Any], path: Path, display: str) -> None:
    """A project with a ``[build-system]`` is a package, which uv and Poetry install editable
    beside its dependencies (unless ``tool.uv.package = false`` or Poetry's ``package-mode =
    false``): so is it here, as a local package ``"."``."""
    tool = _table(data.get("tool"))
    project, poetry = _table(data.get("project")), _table(tool.get("poetry"))
    name = project.get("name", poetry.get("name"))
    if (
        "build-system" not in data
        or not isinstance(name, str)
        or _table(tool.get("uv")).get("package") is False
        or poetry.get("package-mode") is False
    ):
        return
    draft.add_local(
        path.parent, Where(display, "build-system"), f"the project {name}", name=name, editable=True
    )


def _table(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _item_text(item: object) -> str:
    if isinstance(item, dict) and "include-group" in item:
        return f"(the group {item['include-group']})"
    return str(item)


def _drop_group(draft: Draft, where: Where, items: list[str]) -> None:
    draft.skip(where, ", ".join(items), DEV_GROUP)


# --------------------------------------------------------------------------- PEP 621 + uv


class _Pep621:
    def __init__(self, draft: Draft, display: str, path: Path, uv: Mapping[str, Any]) -> None:
        self.draft = draft
        self.display = display
        self.path = path
        self.uv = uv
        self.reader = RequirementsReader(draft)
        self.index_urls: dict[str, str] = {}
        self.not_index: dict[str, str] = {}  # canonical package -> why it cannot be locked
        self.local_sources: dict[str, tuple[Path, bool]] = {}  # package -> (folder, editable)
        self.extra_flavor: dict[str, str] = {}  # accelerator extra -> "cpu" / "cuda"
        self.extra_build: dict[str, str] = {}  # accelerator extra -> its build (cu128 ...)
        # extra, url, origin, where, packages (those naming an explicit index)
        self.extra_indexes: list[tuple[str, str, str, Where, tuple[str, ...]]] = []
        self.explicit: set[str] = set()  # uv indexes with explicit = true

    def where(self, key: str) -> Where:
        return Where(self.display, key)

    def read(self, project: dict[str, Any]) -> None:
        if isinstance(project.get("name"), str):
            self.draft.name = project["name"]
        requires = project.get("requires-python")
        where = self.where("project.requires-python")
        if isinstance(requires, str):
            spec = pep440(requires)
            if spec is None:
                self.draft.problem(where, f"invalid specifier {requires!r}")
            else:
                python_from(self.draft, spec, f"requires-python {requires!r} ({where})", where)
        self._uv_indexes()
        self._uv_sources()
        deps = project.get("dependencies", [])
        if not isinstance(deps, list):
            self.draft.problem(self.where("project.dependencies"), "expected an array of strings")
            deps = []
        for i, line in enumerate(deps):
            self._requirement(line, self.where(f"project.dependencies[{i}]"), None)
        optional = project.get("optional-dependencies")
        self._extras(optional if isinstance(optional, dict) else {})
        for key, value in self.uv.items():
            if key not in (
                "index",
                "sources",
                "conflicts",
                "package",
                "dev-dependencies",
                "workspace",
            ):
                self.draft.skip(self.where(f"tool.uv.{key}"), repr(value), "no spec equivalent")
        if "dev-dependencies" in self.uv:
            items = self.uv["dev-dependencies"]
            _drop_group(
                self.draft,
                self.where("tool.uv.dev-dependencies"),
                [str(i) for i in items] if isinstance(items, list) else [str(items)],
            )

    def _requirement(self, line: object, where: Where, flavor: str | None) -> None:
        if not isinstance(line, str) or line.lstrip().startswith("-"):
            self.draft.problem(where, f"expected a PEP 508 requirement string, got {line!r}")
            return
        text = line.strip()
        try:
            name = canonical(Requirement(text).name)
        except InvalidRequirement:
            name = ""
        if name in self.not_index:
            self.draft.unlockable(where, text, self.not_index[name])
            return
        if name in self.local_sources:
            folder, editable = self.local_sources[name]
            req = Requirement(text)
            self.draft.add_local(
                folder,
                where,
                text,
                name=req.name,
                editable=editable,
                extras=tuple(sorted(req.extras)),
            )
            return
        dep = self.reader.dependency(text, where)
        if dep is None:
            return
        if flavor is None:
            self.draft.add(dep, where)
        else:
            self.draft.add_flavored(dep, flavor, where)

    def _uv_indexes(self) -> None:
        indexes = self.uv.get("index", [])
        if not isinstance(indexes, list):
            self.draft.problem(self.where("tool.uv.index"), "expected an array of tables")
            indexes = []
        for i, index in enumerate(indexes):
            where = self.where(f"tool.uv.index[{i}]")
            if not (isinstance(index, dict) and isinstance(index.get("url"), str)):
                self.draft.problem(where, "expected a table with a 'url' string")
                continue
            name = str(index.get("name", ""))
            self.index_urls[name] = index["url"]
            if index.get("explicit"):
                self.explicit.add(name)
            else:
                origin = f"uv index {name!r}" + (
                    ", the default (envparity keeps PyPI beside it)" if index.get("default") else ""
                )
                self.draft.add_index(index["url"], "index", origin, where)

    def _uv_sources(self) -> None:
        sources = self.uv.get("sources", {})
        if not isinstance(sources, dict):
            self.draft.problem(self.where("tool.uv.sources"), "expected a table")
            return
        for package, value in sources.items():
            entries = value if isinstance(value, list) else [value]
            for j, entry in enumerate(entries):
                suffix = f"[{j}]" if isinstance(value, list) else ""
                where = self.where(f"tool.uv.sources.{package}{suffix}")
                if not isinstance(entry, dict):
                    self.draft.problem(where, f"expected a table, got {entry!r}")
                    continue
                self._source(canonical(package), entry, where)

    def _source(self, package: str, entry: dict[str, Any], where: Where) -> None:
        kind = next((k for k in ("git", "path", "url", "workspace") if k in entry), None)
        folder = None
        if kind == "path" and isinstance(entry["path"], str):
            folder = self.path.parent / entry["path"]
        elif kind == "workspace" and entry["workspace"] is True:
            folder = self._member(package)
        if folder is not None and not ARCHIVE_RE.search(folder.name):
            self.local_sources[package] = (
                folder,
                entry.get("editable", kind == "workspace") is True,
            )
            return
        if kind is not None:
            self.not_index[package] = (
                f"comes from its {kind} source {entry[kind]!r} ({where}), which {UNLOCKABLE}"
            )
            return
        label = entry.get("index")
        if not isinstance(label, str) or label not in self.index_urls:
            self.draft.problem(where, f"no [[tool.uv.index]] is named {label!r}")
            return
        marker = entry.get("marker")
        if isinstance(marker, str) and not for_linux(marker):
            self.draft.skip(
                where, f"index {label} for {marker}", "envparity environments run on Linux"
            )
            return
        url = self.index_urls[label]
        extra = entry.get("extra")
        build_match = _PYTORCH_BUILD_RE.match(url)
        build = build_match[1] if build_match else None
        if isinstance(extra, str):
            named = _ACCELERATOR_EXTRA_RE.match(extra)
            build = build or (named["build"] if named else None)
            if build is None:
                self.draft.skip(
                    where,
                    f"index {label} for the extra {extra!r}",
                    "an optional extra of the project",
                )
                return
            self.extra_flavor[extra] = _build_flavor(build) or "cuda"
            self.extra_build[extra] = build
        # explicit: only the packages whose sources name it come from it, as in uv
        packages = (package,) if label in self.explicit else ()
        with_extra = f" with the extra {extra!r}" if isinstance(extra, str) else ""
        if packages:
            origin = (
                f"uv index {label!r}, explicit: for the packages whose sources name it{with_extra}"
            )
        else:
            origin = f"uv index {label!r}, the source of {package}{with_extra}; here it serves every package"
        if isinstance(extra, str):  # added once the extras are chosen: one CUDA flavor
            self.extra_indexes.append((extra, url, origin, where, packages))
        else:
            self.draft.add_index(url, "index", origin, where, packages)

    def _member(self, package: str) -> Path | None:
        """The folder of the uv workspace member named ``package`` (``[tool.uv.workspace]
        members`` globs, relative to this pyproject's folder), or None."""
        from orchestrator.init.draft import package_name

        workspace = _table(self.uv.get("workspace"))
        members = workspace.get("members", [])
        for pattern in members if isinstance(members, list) else []:
            if not isinstance(pattern, str):
                continue
            for folder in sorted(self.path.parent.glob(pattern)):
                found = package_name(folder) if folder.is_dir() else None
                if found is not None and canonical(found) == package:
                    return folder
        return None

    def _extras(self, optional: dict[str, Any]) -> None:
        for extra in optional:
            named = _ACCELERATOR_EXTRA_RE.match(extra)
            if extra not in self.extra_flavor and named and self.extra_flavor:
                self.extra_flavor[extra] = _build_flavor(named["build"]) or "cuda"
                self.extra_build[extra] = named["build"]
        cuda_extras = [e for e, f in self.extra_flavor.items() if f == "cuda"]
        chosen_cuda = max(cuda_extras, key=self._cuda_rank, default=None)
        for extra, url, origin, where, packages in self.extra_indexes:
            if self.extra_flavor[extra] == "cuda" and extra != chosen_cuda:
                self.draft.skip(
                    where,
                    f"{url} for the extra {extra!r}",
                    f"another CUDA build; the spec has one CUDA flavor, from the extra "
                    f"{chosen_cuda!r}",
                )
            else:
                self.draft.add_index(url, "index", origin, where, packages)
        for extra, items in optional.items():
            where = self.where(f"project.optional-dependencies.{extra}")
            flavor = self.extra_flavor.get(extra)
            if flavor is None:
                self.draft.skip(
                    where,
                    ", ".join(map(str, items)) if isinstance(items, list) else str(items),
                    "an optional extra of the project; add what the environment needs "
                    "to [dependencies]",
                )
            elif flavor == "cuda" and extra != chosen_cuda:
                self.draft.skip(
                    where,
                    ", ".join(map(str, items)) if isinstance(items, list) else str(items),
                    f"another CUDA build; the spec has one CUDA flavor, from the extra "
                    f"{chosen_cuda!r}",
                )
            else:
                for i, line in enumerate(items if isinstance(items, list) else []):
                    self._requirement(line, where.at(f"{where.key}[{i}]"), flavor)

    def _cuda_rank(self, extra: str) -> tuple[int, int]:
        build = self.extra_build.get(extra, "")
        if re.fullmatch(r"cu[0-9]{2,3}", build):
            major, minor = cuda_of_tag(build).split(".")
            return int(major), int(minor)
        return (0, 0)


# --------------------------------------------------------------------------- Poetry

_POETRY_REFUSED = ("path", "git", "url", "file", "develop")
_POETRY_TABLE = (
    "version", "extras", "markers", "python", "platform", "source", "optional",
    "allow-prereleases", *_POETRY_REFUSED, "branch", "tag", "rev", "subdirectory",
)  # fmt: skip


class _Poetry:
    def __init__(self, draft: Draft, display: str, folder: Path) -> None:
        self.draft = draft
        self.display = display
        self.folder = folder  # the pyproject's: path dependencies are relative to it
        self.used: dict[str, list[str]] = {}  # source label -> packages naming it

    def where(self, key: str) -> Where:
        return Where(self.display, key)

    def read(self, poetry: dict[str, Any]) -> None:
        draft = self.draft
        if isinstance(poetry.get("name"), str) and draft.name is None:
            draft.name = poetry["name"]
        sources = poetry.get("source", [])
        sources = sources if isinstance(sources, list) else [sources]
        urls = {
            str(s.get("name", "")): s["url"]
            for s in sources
            if isinstance(s, dict) and isinstance(s.get("url"), str)
        }
        deps = poetry.get("dependencies", {})
        if not isinstance(deps, dict):
            draft.problem(self.where("tool.poetry.dependencies"), "expected a table")
            deps = {}
        for name, value in deps.items():
            where = self.where(f"tool.poetry.dependencies.{name}")
            if name == "python":
                _poetry_python(draft, value, where)
            elif isinstance(value, list):
                self._alternatives(name, value, urls, where)
            else:
                self._one(name, value, where, flavor=None)
        groups = poetry.get("group", {})
        if isinstance(groups, dict):
            for group, table in groups.items():
                if isinstance(table, dict):
                    _drop_group(
                        draft,
                        self.where(f"tool.poetry.group.{group}.dependencies"),
                        _poetry_listing(table.get("dependencies", {})),
                    )
        if "dev-dependencies" in poetry:
            _drop_group(
                draft,
                self.where("tool.poetry.dev-dependencies"),
                _poetry_listing(poetry["dev-dependencies"]),
            )
        for i, source in enumerate(sources):
            where = self.where(f"tool.poetry.source[{i}]")
            if not (isinstance(source, dict) and isinstance(source.get("url"), str)):
                draft.problem(where, "expected a table with a 'url' string")
                continue
            label = str(source.get("name", ""))
            users = self.used.pop(label, [])
            priority = source.get("priority", "")
            if not users and priority == "explicit":
                draft.skip(
                    where, f"source {label} {source['url']}", "explicit, and no package names it"
                )
                continue
            origin = f"poetry source {label!r}"
            if priority:
                origin += f", priority {priority}"
            packages: tuple[str, ...] = ()
            if users and priority == "explicit":  # as in Poetry: only for those packages
                packages = tuple(users)
                origin += f", named by {', '.join(users)}"
            elif users:
                origin += f", named by {', '.join(users)}; here it serves every package"
            draft.add_index(source["url"], "index", origin, where, packages)
        for label, users in self.used.items():
            draft.problem(
                self.where(f"tool.poetry.dependencies.{users[0]}.source"),
                f"no [[tool.poetry.source]] is named {label!r}",
            )
        for key in poetry:
            if key not in _POETRY_METADATA and key not in (
                "dependencies", "group", "dev-dependencies", "source",
            ):  # fmt: skip
                draft.skip(
                    self.where(f"tool.poetry.{key}"), str(poetry[key]), "not an environment setting"
                )

    def _alternatives(
        self, name: str, value: list[Any], urls: Mapping[str, str], where: Where
    ) -> None:
        """Multiple constraints: those for other platforms are left out; alternatives that
        differ by a CPU and a CUDA source become the two flavors' entries."""
        linux: list[dict[str, Any]] = []
        for j, alternative in enumerate(value):
            table = {"version": alternative} if isinstance(alternative, str) else alternative
            if not isinstance(table, dict):
                self.draft.problem(
                    where, f"expected a version string or a table, got {alternative!r}"
                )
                return
            markers = _poetry_markers_or_none(table)
            if markers is not None and not for_linux(markers):
                self.draft.skip(
                    where.at(f"{where.key}[{j}]"),
                    f"{name} {table.get('version', '*')} for {markers}",
                    "envparity environments run on Linux",
                )
                continue
            linux.append(table)
        flavors = [_build_flavor(self._source_build(t, urls)) for t in linux]
        if len(linux) == 1:
            self._one(name, linux[0], where, flavor=None)
        elif linux and all(flavors) and len(set(flavors)) == len(flavors):
            for table, flavor in zip(linux, flavors, strict=True):
                plain = {k: v for k, v in table.items() if k != "markers" or "extra" not in str(v)}
                self._one(name, plain, where, flavor=flavor)
        elif linux:
            self.draft.skip(
                where,
                f"{name} = {value!r}",
                "multiple-constraint dependencies have no spec equivalent; choose one",
            )

    @staticmethod
    def _source_build(table: Mapping[str, Any], urls: Mapping[str, str]) -> str | None:
        url = urls.get(str(table.get("source", "")), "")
        m = _PYTORCH_BUILD_RE.match(url)
        return m[1] if m else None

    def _one(self, name: str, value: object, where: Where, *, flavor: str | None) -> None:
        dep = self._dependency(name, value, where)
        if dep is None:
            return
        source = value.get("source") if isinstance(value, dict) else None
        if isinstance(source, str) and source.lower() != "pypi":
            self.used.setdefault(source, []).append(name)
        if (
            flavor is None
            and isinstance(value, dict)
            and set(value) <= {"source", "markers", "python", "platform"}
            and canonical(name) in self.draft.deps
        ):
            return  # Poetry 2: [project] lists it; this table only chooses its source
        if flavor is None:
            self.draft.add(dep, where)
        else:
            self.draft.add_flavored(dep, flavor, where)

    def _dependency(self, name: str, value: object, where: Where) -> Dependency | None:
        draft = self.draft
        if not specs._PKG_RE.match(name):
            draft.problem(where, f"{name!r} is not a valid package name")
            return None
        if isinstance(value, str):
            value = {"version": value}
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
        if isinstance(value.get("path"), str) and value.get("optional") is not True:
            extras = value.get("extras", [])
            draft.add_local(
                self.folder / value["path"],
                where,
                f"{name} = {{ path = {value['path']!r} }}",
                name=name,
                editable=value.get("develop") is True,
                extras=tuple(sorted(e for e in extras if isinstance(e, str))),
            )
            return None
        if refused := [k for k in _POETRY_REFUSED if k in value]:
            what = f"{name} = {{ {refused[0]} = {value[refused[0]]!r} }}"
            optional = " (optional)" if value.get("optional") is True else ""
            draft.unlockable(where, what + optional, UNLOCKABLE)
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
        version = str(value.get("version", "*"))
        for label in _CUDA_LABEL_RE.findall(version):
            build = local_build(label)
            if build and build != "cpu":
                draft.set_cuda(cuda_of_tag(build), f"the +{label} of {name} ({where})", where)
        try:
            specifier = poetry_constraint(version)
            markers = _poetry_markers(value)
        except ValueError as exc:
            draft.problem(where, str(exc))
            return None
        extras = value.get("extras", [])
        if not (isinstance(extras, list) and all(isinstance(e, str) for e in extras)):
            draft.problem(where, f"extras: expected an array of strings, got {extras!r}")
            return None
        specifier = ordered(public_specifier(draft, name, SpecifierSet(specifier), where))
        return Dependency(
            name=name, specifier=specifier, extras=tuple(sorted(extras)), markers=markers
        )


def _poetry_listing(table: object) -> list[str]:
    if not isinstance(table, dict):
        return [str(table)]
    return [
        f"{name} {value}" if isinstance(value, str) else f"{name} {value!r}"
        for name, value in table.items()
    ]


def _poetry_python(draft: Draft, value: object, where: Where) -> None:
    if not isinstance(value, str):
        draft.problem(where, f"expected a version constraint string, got {value!r}")
        return
    try:
        alternatives = [poetry_constraint(a) for a in value.split("||")]
    except ValueError as exc:
        draft.problem(where, str(exc))
        return
    python_from(draft, "||".join(alternatives), f"python {value!r} ({where})", where)


def _poetry_markers_or_none(value: Mapping[str, object]) -> str | None:
    try:
        return _poetry_markers(value) or None
    except ValueError:
        return None


def _poetry_markers(value: Mapping[str, object]) -> str:
    parts: list[str] = []
    if isinstance(value.get("markers"), str):
        parts.append(str(value["markers"]))
    if isinstance(value.get("python"), str):
        alternatives = [
            " and ".join(
                f'python_full_version {s.operator} "{s.version}"'
                for s in sorted_specifiers(SpecifierSet(poetry_constraint(alternative)))
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
        raise ValueError(f"invalid markers {joined!r}: {first_line(exc)}") from None


_POETRY_TOKEN_RE = re.compile(r"(\^|~=|~|===|==|!=|>=|<=|>|<|=)?\s*([^\s,^~=!<>|]+)")


def poetry_constraint(text: str) -> str:
    """A Poetry version constraint as a PEP 440 specifier; ``ValueError`` if none exists.

    ``^1.2.3`` -> ``>=1.2.3,<2.0.0``; ``^0.2.3`` -> ``>=0.2.3,<0.3.0``; ``~1.2.3`` ->
    ``>=1.2.3,<1.3.0``; ``1.2.3`` -> ``==1.2.3``; ``1.2.*`` -> ``==1.2.*``; ``*`` -> ``""``.
    A local build label (``^2.2.0+cu121``, ``2.1.0+cpu``) is dropped: it names a build, which
    the flavor's index decides. Constraints joined by commas or spaces all apply; ``||``
    (either) has no equivalent.
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
        if "+" in version and local_build(version.split("+", 1)[1]) is not None:
            version = version.split("+", 1)[0]
        if operator in ("^", "~"):
            parts.extend(_poetry_range(operator, version, text))
        elif operator in ("", "="):
            parts.append(f"=={version}")
        else:
            parts.append(f"{operator}{version}")
    result = pep440(",".join(parts))
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
