"""pixi: a ``pixi.toml``, or the ``[tool.pixi]`` tables of a ``pyproject.toml``.

The manifest's schema is pixi's own (prefix-dev/pixi, docs "pixi manifest"): conda packages
under ``[dependencies]``, PyPI packages under ``[pypi-dependencies]`` (a version string, or a
table with ``version``, ``extras``, ``index``, ``path``/``editable``, ``git``, ``url``), the
machine's CUDA under ``[system-requirements] cuda``, the same tables per feature
(``[feature.<name>.dependencies]``), per platform (``[target.linux-64.dependencies]``), and
``[environments]`` made of features (the default feature is in every environment unless
``no-default-feature = true``).

Environments become flavors: the environment whose features bring CUDA (a ``cuda`` system
requirement, ``pytorch-cuda``/``cuda-version``/``pytorch-gpu``, a PyTorch CUDA index) is the
CUDA flavor (the newest CUDA when several do), the one that brings a CPU build (``pytorch-cpu``,
``cpuonly``, the PyTorch CPU index, or the name ``cpu``) the cpu flavor; every package of
either is in both flavors' locks (CUDA-only packages aside), each from its own index.
Features no chosen environment uses (test, docs, other Pythons) are not converted, one line
each. Conda packages are read as ``environment.yml`` items are (``orchestrator.init.conda``);
a PyPI package's ``index`` is kept to that package, as pixi does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.init.conda import CondaReader
from orchestrator.init.draft import Draft, Where, canonical
from orchestrator.init.requirements import UNLOCKABLE, RequirementsReader, read_toml

_CUDA_CONDA = frozenset({"pytorch-cuda", "cuda-version", "cudatoolkit", "cuda", "cuda-toolkit"})
_CPU_CONDA = frozenset({"pytorch-cpu", "cpuonly"})
_PYTORCH_INDEX_RE = re.compile(r"^https://download\.pytorch\.org/whl/(cpu|cu[0-9]{2,3})/?\Z")
_LINUX_TARGETS = ("linux-64", "linux", "unix")
_KNOWN = (
    "project", "workspace", "package", "dependencies", "pypi-dependencies",
    "system-requirements", "feature", "environments", "target", "pypi-options",
)  # fmt: skip


@dataclass
class _Feature:
    name: str
    where: str  # its key path: "feature.gpu" or "" for the default feature
    conda: dict[str, object] = field(default_factory=dict)
    pypi: dict[str, object] = field(default_factory=dict)
    cuda: str | None = None  # system-requirements cuda
    kind: str = ""  # "cuda", "cpu" or ""
    cuda_version: tuple[int, ...] = ()  # how new, to choose among CUDA environments


def from_pixi_toml(draft: Draft, path: Path) -> None:
    display = str(path)
    data = read_toml(path, display)
    meta = data.get("workspace") or data.get("project") or {}
    if isinstance(meta, dict) and isinstance(meta.get("name"), str):
        draft.name = meta["name"]
    read(draft, data, path, display, prefix="")


def read(draft: Draft, data: dict[str, Any], path: Path, display: str, *, prefix: str) -> None:
    """The pixi tables of ``data`` (a pixi.toml's top level, or ``tool.pixi``) into the draft.
    ``prefix`` is their key path in the file (``"tool.pixi."`` in a pyproject.toml)."""
    _Pixi(draft, data, path, display, prefix).read()


class _Pixi:
    def __init__(
        self, draft: Draft, data: dict[str, Any], path: Path, display: str, prefix: str
    ) -> None:
        self.draft = draft
        self.data = data
        self.path = path
        self.display = display
        self.prefix = prefix
        self.conda = CondaReader(draft, display)
        self.reader = RequirementsReader(draft)

    def where(self, key: str) -> Where:
        return Where(self.display, self.prefix + key)

    def read(self) -> None:
        features = {"default": self._feature("default", "", self.data)}
        table = self.data.get("feature", {})
        for name, body in (table if isinstance(table, dict) else {}).items():
            if isinstance(body, dict):
                features[name] = self._feature(name, f"feature.{name}", body)
        environments = self._environments(features)
        cuda_env, cpu_env = self._choose(environments, features)
        chosen = [e for e in (cuda_env, cpu_env) if e is not None]
        used = {f for e in chosen for f in environments[e]}
        for name, feature in features.items():
            if name in used:
                in_cuda = cuda_env is not None and name in environments[cuda_env]
                in_cpu = cpu_env is not None and name in environments[cpu_env]
                flavor = (
                    None if in_cuda == in_cpu or not chosen[1:] else ("cuda" if in_cuda else "cpu")
                )
                self._convert(feature, flavor)
            elif feature.conda or feature.pypi:
                users = [e for e, fs in environments.items() if name in fs]
                self.draft.skip(
                    self.where(feature.where),
                    ", ".join([*feature.conda, *feature.pypi]),
                    f"feature {name!r} (environments: {', '.join(users) or 'none'}) is in none "
                    "of the environments converted"
                    + (f" ({', '.join(chosen)})" if chosen else "")
                    + "; add what the environment needs to [dependencies]",
                )
        self._options()
        self.conda.finish(self.where("dependencies"))
        self.reader.apply_constraints()
        for key, value in self.data.items():
            if key not in _KNOWN:
                self.draft.skip(self.where(key), _short(value), "no spec equivalent")

    def _feature(self, name: str, where: str, body: dict[str, Any]) -> _Feature:
        feature = _Feature(name=name, where=where)
        for key in ("dependencies", "pypi-dependencies"):
            table = body.get(key, {})
            if isinstance(table, dict):
                (feature.conda if key == "dependencies" else feature.pypi).update(table)
        targets = body.get("target", {})
        for platform, tables in (targets if isinstance(targets, dict) else {}).items():
            if not isinstance(tables, dict):
                continue
            if platform in _LINUX_TARGETS:
                for key in ("dependencies", "pypi-dependencies"):
                    table = tables.get(key, {})
                    if isinstance(table, dict):
                        (feature.conda if key == "dependencies" else feature.pypi).update(table)
            else:
                self.draft.skip(
                    self.where(f"{where}.target.{platform}".lstrip(".")),
                    _short(tables),
                    "for another platform; envparity environments run on Linux",
                )
        system = body.get("system-requirements", {})
        if isinstance(system, dict) and system.get("cuda") is not None:
            feature.cuda = str(system["cuda"])
        for key in body:
            if key not in _KNOWN and name != "default":
                self.draft.skip(
                    self.where(f"{where}.{key}"), _short(body[key]), "no spec equivalent"
                )
        feature.kind, feature.cuda_version = _kind(feature)
        return feature

    def _environments(self, features: dict[str, _Feature]) -> dict[str, list[str]]:
        table = self.data.get("environments", {})
        out: dict[str, list[str]] = {}
        for name, value in (table if isinstance(table, dict) else {}).items():
            no_default = False
            if isinstance(value, dict):
                no_default = value.get("no-default-feature") is True
                value = value.get("features", [])
            names = [str(f) for f in value] if isinstance(value, list) else []
            unknown = [f for f in names if f not in features]
            if unknown:
                self.draft.problem(
                    self.where(f"environments.{name}"), f"no feature is named {unknown[0]!r}"
                )
            out[str(name)] = ([] if no_default else ["default"]) + [
                f for f in names if f in features
            ]
        out.setdefault("default", ["default"])
        return out

    def _choose(
        self, environments: dict[str, list[str]], features: dict[str, _Feature]
    ) -> tuple[str | None, str | None]:
        """The CUDA environment (the newest CUDA; the last such when several tie) and the
        CPU one; either may be None."""

        def cuda_of(env: str) -> tuple[int, ...]:
            kinds = [features[f] for f in environments[env] if features[f].kind == "cuda"]
            return max((f.cuda_version for f in kinds), default=())

        def is_cpu(env: str) -> bool:
            return env == "cpu" or any(features[f].kind == "cpu" for f in environments[env])

        order = list(environments)
        cuda = [e for e in order if any(features[f].kind == "cuda" for f in environments[e])]
        cuda_env = max(cuda, key=lambda e: (cuda_of(e), order.index(e)), default=None)
        cpu = [e for e in order if e != cuda_env and is_cpu(e)]
        cpu_env = cpu[0] if cpu else None
        if cuda_env is None and cpu_env is None:
            cpu_env = "default"
        others = [e for e in cuda if e != cuda_env]
        if others:
            self.draft.notes.append(
                f"{self.display}: environments {', '.join(others)} are other CUDA builds; the "
                f"spec has one CUDA flavor, from the environment {cuda_env!r}"
            )
        return cuda_env, cpu_env

    def _convert(self, feature: _Feature, flavor: str | None) -> None:
        """One feature's packages, for both flavors (``flavor`` None) or one flavor's build."""
        base = feature.where + "." if feature.where else ""
        brings_cuda = any(canonical(n) in _CUDA_CONDA for n in feature.conda)
        if feature.cuda is not None and feature.kind == "cuda":
            self.conda.gpu_major = feature.cuda.split(".")[0]
        for name, value in feature.conda.items():
            where = self.where(f"{base}dependencies.{name}")
            item = _conda_item(name, value)
            if item is None:
                self.draft.skip(where, f"{name} = {_short(value)}", "not a conda package spec")
                continue
            if name == "pytorch" and feature.cuda is not None and not brings_cuda:
                # conda-forge's pytorch is a CUDA build where the machine has CUDA: its
                # toolkit from the table, as for pytorch-gpu
                self.conda.gpu = self.conda.gpu or where
            self.conda.package(item, where)  # shared by the flavors (CUDA-only ones aside)
        for name, value in feature.pypi.items():
            self._pypi(name, value, self.where(f"{base}pypi-dependencies.{name}"), flavor)

    def _pypi(self, name: str, value: object, where: Where, flavor: str | None) -> None:
        if isinstance(value, str):
            value = {"version": value}
        if not isinstance(value, dict):
            self.draft.problem(where, f"expected a version string or a table, got {value!r}")
            return
        if isinstance(value.get("path"), str):
            extras = value.get("extras", [])
            self.draft.add_local(
                self.path.parent / value["path"],
                where,
                f"{name} = {{ path = {value['path']!r} }}",
                name=name,
                editable=value.get("editable") is True,
                extras=tuple(sorted(e for e in extras if isinstance(e, str))),
            )
            return
        if kind := next((k for k in ("git", "url") if k in value), None):
            self.draft.unlockable(where, f"{name} = {{ {kind} = {value[kind]!r} }}", UNLOCKABLE)
            return
        version = str(value.get("version", "*")).strip()
        extras = value.get("extras", [])
        text = name + (
            f"[{','.join(str(e) for e in extras)}]" if isinstance(extras, list) and extras else ""
        )
        text += "" if version in ("", "*") else version
        dep = self.reader.dependency(text, where)
        if dep is None:
            return
        index = value.get("index")
        if isinstance(index, str):
            # pixi takes this package from that index only: so does the spec
            self.draft.add_index(index, "index", f"pixi index of {name}", where, (name,))
        if flavor is None:
            self.draft.add(dep, where)
        else:
            self.draft.add_flavored(dep, flavor, where)

    def _options(self) -> None:
        options = self.data.get("pypi-options", {})
        if not isinstance(options, dict):
            return
        where = self.where("pypi-options")
        if isinstance(options.get("index-url"), str):
            self.draft.add_index(
                options["index-url"],
                "index",
                "pixi pypi-options index-url, kept beside PyPI",
                where,
            )
        for url in options.get("extra-index-urls", []) or []:
            if isinstance(url, str):
                self.draft.add_index(url, "index", "pixi pypi-options extra-index-urls", where)
        for link in options.get("find-links", []) or []:
            url = link.get("url", link.get("path")) if isinstance(link, dict) else link
            if isinstance(url, str):
                self.draft.add_index(url, "find-links", "pixi pypi-options find-links", where)
        for key in options:
            if key not in ("index-url", "extra-index-urls", "find-links"):
                self.draft.skip(
                    where.at(f"{where.key}.{key}"), _short(options[key]), "no spec equivalent"
                )


def _kind(feature: _Feature) -> tuple[str, tuple[int, ...]]:
    """Whether a feature brings a CUDA build, a CPU build, or neither; and which CUDA."""
    versions: list[tuple[int, ...]] = []
    for name, value in feature.conda.items():
        if canonical(name) in _CPU_CONDA:
            return "cpu", ()
        if canonical(name) in _CUDA_CONDA:
            m = re.match(r"[=<>~ ]*([0-9]+)\.([0-9]+)", _version_text(value))
            versions.append((int(m[1]), int(m[2])) if m else (0,))
        if canonical(name) == "pytorch-gpu":
            versions.append((0,))
    for value in feature.pypi.values():
        index = value.get("index") if isinstance(value, dict) else None
        m = _PYTORCH_INDEX_RE.match(index) if isinstance(index, str) else None
        if m and m[1] == "cpu":
            return "cpu", ()
        if m:
            digits = m[1][2:]
            versions.append((int(digits[:-1]), int(digits[-1])))
    if feature.cuda is not None:
        m = re.match(r"([0-9]+)(?:\.([0-9]+))?", feature.cuda)
        versions.append((int(m[1]), int(m[2] or 0)) if m else (0,))
    return ("cuda", max(versions)) if versions else ("", ())


def _version_text(value: object) -> str:
    if isinstance(value, dict):
        return str(value.get("version", ""))
    return str(value)


def _conda_item(name: str, value: object) -> str | None:
    """A pixi conda dependency (``"2.1.*"``, ``{ version = "2.1", build = "...", channel =
    "pytorch" }``) as a MatchSpec string."""
    if isinstance(value, str):
        version, build, channel = value, "", ""
    elif isinstance(value, dict):
        version = str(value.get("version", "*"))
        build = str(value.get("build", ""))
        channel = str(value.get("channel", ""))
    else:
        return None
    item = (f"{channel}::" if channel else "") + name
    version = version.strip()
    if version and version != "*":
        item += f" {version}"
    elif build:
        item += " *"
    if build:
        item += f" {build}"
    return item


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."
