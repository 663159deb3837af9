"""``uv.lock``: the project's own resolution, kept instead of made again.

The project's intent (indexes and their packages, the extras that choose the torch build,
``requires-python``, local packages) is read from the ``pyproject.toml`` beside the lock when
there is one (``orchestrator.init.pyproject``), else from the lock's record of it (the root
package's ``[package.metadata] requires-dist``). Then every package the lock resolves for
Linux x86_64 and the chosen Python is pinned to the lock's version (``==``, the build label
dropped: each flavor's index gives its build), its transitive packages included, so that
``envparity lock`` resolves the same versions. Each flavor follows the lock's graph from the
project through its extra (uv's conflict markers, ``extra == 'extra-N-project-cu128'``, are
evaluated for that extra): a package in both flavors' graphs is shared; one only the CUDA
flavor reaches (nvidia-*, triton) stays in it.

The format is uv's (docs.astral.sh/uv/concepts/projects/layout, "The lockfile"; read here
as ``version = 1`` files written by uv 0.5 to 0.13): ``[[package]]`` tables with ``name``,
``version``, ``source`` (``registry``, ``virtual``, ``editable``, ``directory``, ``path``,
``git``, ``url``), ``dependencies`` (``name``, and ``version``/``source``/``marker``/
``extra`` where needed) and ``[package.optional-dependencies]``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from packaging.markers import InvalidMarker, Marker

from orchestrator.errors import Problem, SpecError
from orchestrator.init import python as python_choice
from orchestrator.init.draft import Draft, Where, canonical, cuda_only
from orchestrator.init.requirements import UNLOCKABLE, read_toml
from orchestrator.spec import Dependency

_PYTORCH_BUILD_RE = re.compile(r"^https://download\.pytorch\.org/whl/(cpu|cu[0-9]{2,3})/?\Z")
_ROOT_SOURCES = ("virtual", "editable")


def from_uv_lock(draft: Draft, path: Path) -> None:
    display = str(path)
    data = read_toml(path, display)
    packages = data.get("package")
    if not isinstance(packages, list) or not all(isinstance(p, dict) for p in packages):
        raise SpecError([Problem(display, "package", "expected uv's [[package]] tables")])
    lock = _Lock(draft, display, path, data, packages)
    lock.read()


class _Lock:
    def __init__(
        self,
        draft: Draft,
        display: str,
        path: Path,
        data: dict[str, Any],
        packages: list[dict[str, Any]],
    ) -> None:
        self.draft = draft
        self.display = display
        self.path = path
        self.data = data
        self.packages = packages
        self.by_name: dict[str, list[dict[str, Any]]] = {}
        for package in packages:
            self.by_name.setdefault(canonical(str(package.get("name", ""))), []).append(package)

    def where(self, key: str) -> Where:
        return Where(self.display, key)

    def root(self) -> dict[str, Any] | None:
        """The project itself: the package whose source is the lock's own folder."""
        for package in self.packages:
            source = package.get("source")
            if isinstance(source, dict) and any(source.get(k) == "." for k in _ROOT_SOURCES):
                return package
        return None

    def read(self) -> None:
        root = self.root()
        if root is None:
            raise SpecError(
                [
                    Problem(
                        self.display,
                        "package",
                        'no package with source = { virtual = "." } or { editable = "." }: '
                        "not the lock of a uv project",
                    )
                ]
            )
        pyproject = self.path.parent / "pyproject.toml"
        if pyproject.is_file():
            from orchestrator.init import pyproject as pyproject_format

            pyproject_format.from_pyproject(self.draft, pyproject)
            self.draft.notes.append(
                f"{self.display}: the project's intent read from {pyproject}; the versions "
                f"from {self.display}"
            )
        else:
            self._intent(root)
        python_choice.choose(self.draft)  # the versions the lock resolves depend on it
        self._pin(root)

    def _intent(self, root: dict[str, Any]) -> None:
        """No pyproject.toml beside the lock: the project's requirements as uv recorded them."""
        from orchestrator.init.draft import pep440

        self.draft.name = self.draft.name or str(root.get("name"))
        requires = self.data.get("requires-python")
        if isinstance(requires, str) and (spec := pep440(requires)) is not None:
            python_choice.python_from(
                self.draft,
                spec,
                f"requires-python {requires!r} ({self.display})",
                self.where("requires-python"),
            )
        metadata = root.get("metadata", {})
        for i, item in enumerate(
            metadata.get("requires-dist", []) if isinstance(metadata, dict) else []
        ):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                continue
            where = self.where(f"package.metadata.requires-dist[{i}]")
            index = item.get("index")
            if isinstance(index, str):
                self.draft.add_index(
                    index, "index", f"the uv index of {item['name']}", where, (item["name"],)
                )

    def _pin(self, root: dict[str, Any]) -> None:
        flavors = self._flavor_extras(root)
        reached = {flavor: dict(self._closure(root, extra)) for flavor, extra in flavors.items()}
        names: dict[str, None] = {}
        for found in reached.values():
            names.update(dict.fromkeys(found))
        pinned = 0
        for key in names:
            packages = {f: found[key] for f, found in reached.items() if key in found}
            one = next(iter(packages.values()))
            if not self._registry(one, key):
                continue
            public = {str(p["version"]).partition("+")[0] for p in packages.values()}
            if len(public) > 1:
                self.draft.skip(
                    self.where(f"package.{key}"),
                    f"{key} {' and '.join(sorted(public))}",
                    "the flavors' resolutions differ in version; the spec holds one version "
                    "per package, so it is resolved again",
                )
                continue
            version = public.pop()
            where = self.where(f"package.{key}")
            in_all = len(packages) == len(reached)
            kept = self.draft.deps.get(key)
            if kept is not None:
                self.draft.deps[key] = replace(kept, specifier=f"=={version}")
            else:
                dep = Dependency(name=str(one["name"]), specifier=f"=={version}")
                if not in_all and not cuda_only(dep.name):
                    dep = replace(dep, flavors=tuple(packages))
                if self.draft.cuda is None and dep.flavors == ("cuda",):
                    continue  # a CUDA-only package of a lock with no CUDA flavor here
                self.draft.add(dep, where)
            pinned += 1
        self.draft.notes.append(
            f"{pinned} packages pinned to the versions {self.display} resolves for Linux x86_64 "
            f"and Python {self.draft.python} (transitive ones included), so that 'envparity "
            "lock' resolves the same versions"
        )

    def _flavor_extras(self, root: dict[str, Any]) -> dict[str, str | None]:
        """{flavor: the root's extra that chooses its build (None: no extra)}."""
        extras = root.get("optional-dependencies", {})
        extras = extras if isinstance(extras, dict) else {}
        builds: dict[str, str] = {}
        for extra, deps in extras.items():
            for dep in deps if isinstance(deps, list) else []:
                source = dep.get("source", {}) if isinstance(dep, dict) else {}
                m = _PYTORCH_BUILD_RE.match(str(source.get("registry", "")))
                if m:
                    builds[extra] = m[1]
        cpu = next((e for e, b in builds.items() if b == "cpu"), None)
        cuda_extras = [e for e, b in builds.items() if b != "cpu"]
        wanted = self.draft.cuda
        chosen = next(
            (e for e in cuda_extras if wanted and builds[e] == "cu" + wanted.replace(".", "")),
            max(cuda_extras, key=lambda e: int(builds[e][2:]), default=None),
        )
        out: dict[str, str | None] = {}
        if self.draft.cuda is not None or chosen is not None:
            out["cuda"] = chosen
        out["cpu"] = cpu if cpu is not None else chosen
        return out

    def _closure(
        self, root: dict[str, Any], extra: str | None
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every package the root reaches with ``extra`` on Linux x86_64: (name, package)."""
        project = canonical(str(root.get("name")))
        marker_extra = f"extra-{len(project)}-{project}-{extra}" if extra else ""
        environment = _environment(self.draft.python or python_choice.running(), marker_extra)
        seen: set[tuple[str, str, tuple[str, ...]]] = set()
        todo: list[object] = list(root.get("dependencies", []))
        if extra:
            todo += list(root.get("optional-dependencies", {}).get(extra, []))
        while todo:
            edge = todo.pop()
            if not isinstance(edge, dict) or not _applies(edge.get("marker"), environment):
                continue
            package = self._package(edge)
            if package is None:
                continue
            key = canonical(str(package["name"]))
            extras = tuple(str(e) for e in edge.get("extra", []) or ())
            ident = (key, str(package.get("version", "")), extras)
            if ident in seen:
                continue
            seen.add(ident)
            if key != project:
                yield key, package
            todo += list(package.get("dependencies", []))
            optional = package.get("optional-dependencies", {})
            for name in extras:
                todo += list(optional.get(name, []))

    def _package(self, edge: dict[str, Any]) -> dict[str, Any] | None:
        candidates = self.by_name.get(canonical(str(edge.get("name", ""))), [])
        if "version" in edge:
            candidates = [p for p in candidates if p.get("version") == edge["version"]]
        if "source" in edge:
            candidates = [p for p in candidates if p.get("source") == edge["source"]] or candidates
        return candidates[0] if candidates else None

    def _registry(self, package: dict[str, Any], key: str) -> bool:
        """True for a package from an index; a local folder becomes a local package and
        anything else is named as unlockable (False for both)."""
        source = package.get("source", {})
        where = self.where(f"package.{key}")
        if "registry" in source:
            return True
        folder = next((source[k] for k in ("editable", "directory") if k in source), None)
        if isinstance(folder, str):
            self.draft.add_local(
                self.path.parent / folder,
                where,
                f"{package['name']} ({folder})",
                name=str(package["name"]),
                editable="editable" in source,
            )
            return False
        what = next(
            (f"{k} = {source[k]!r}" for k in ("git", "url", "path") if k in source), repr(source)
        )
        self.draft.unlockable(where, f"{package['name']} {{ {what} }}", UNLOCKABLE)
        return False


def _environment(python: str, extra: str) -> dict[str, str]:
    """PEP 508 marker values for Linux x86_64, CPython ``python``, and uv's conflict extra."""
    minor = ".".join(python.split(".")[:2])
    full = python if python.count(".") == 2 else f"{minor}.0"
    return {
        "python_version": minor,
        "python_full_version": full,
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "extra": extra,
    }


def _applies(marker: object, environment: dict[str, str]) -> bool:
    if not isinstance(marker, str) or not marker:
        return True
    try:
        return Marker(marker).evaluate(environment)
    except (InvalidMarker, ValueError):  # a name packaging does not know (uv's group markers)
        return True
