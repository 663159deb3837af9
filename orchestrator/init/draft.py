"""What a conversion found, before it is written: the ``Draft`` every source format fills.

Each converter (``requirements``, ``conda``, ``pyproject``) reads its format into a ``Draft``;
``orchestrator.init.writer`` turns the draft into the text of ``environment.toml``. Three kinds
of trouble are kept apart:

- ``skip``: something with no place in the spec; written as a ``# not converted:`` comment.
- ``unlockable``: a requirement that cannot be locked with hashes (git, URL, path, editable).
  Also a ``# not converted:`` comment, and named on stderr; the conversion refuses (exit 2)
  only when nothing else could be converted.
- ``problem``: malformed input (a syntax error, a missing include, two CUDA versions); the
  whole conversion is refused, every problem listed.

Facts about PyTorch's package sources (``https://download.pytorch.org/whl/<build>``, local
version labels ``+cu118``/``+cpu``, the PyG pages ``https://data.pyg.org/whl/torch-X+<build>.html``)
are from the PyTorch and PyG install instructions (pytorch.org/get-started/previous-versions,
pytorch-geometric.readthedocs.io "Installation").
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from packaging.specifiers import InvalidSpecifier, Specifier, SpecifierSet

from orchestrator import spec as specs
from orchestrator.errors import Problem
from orchestrator.names import canonical_name
from orchestrator.spec import Dependency, LocalPackage

_PYTORCH_INDEX_RE = re.compile(
    r"^https://download\.pytorch\.org/whl/(?:nightly/|test/)?(?P<build>cu[0-9]{2,3}|cpu)"
    r"(?P<page>/torch_stable\.html|/torch/?)?/?\Z"
)
_PYTORCH_ALL_BUILDS_RE = re.compile(
    r"^https://download\.pytorch\.org/whl/(?:nightly/)?torch_stable\.html\Z"
)
_PYG_PAGE_RE = re.compile(
    r"^(?P<base>https://(?:data\.pyg\.org|pytorch-geometric\.com)/whl/torch-[0-9.]+)"
    r"(?:\+|%2[Bb])(?P<build>cu[0-9]{2,3}|cpu)\.html\Z"
)
# A local version label naming a build: +cu118, +cpu, and PyG's +pt20cu118 / +pt20cpu.
_LOCAL_BUILD_RE = re.compile(r"^(?:pt[0-9]+)?(?P<build>cu[0-9]{2,3}|cpu)\Z")
_CUDA_TAG_RE = re.compile(r"^cu(?P<major>[0-9]{1,2})(?P<minor>[0-9])\Z")
# Packages that exist only for a CUDA build: the CUDA runtime wheels a CUDA torch pulls in
# (nvidia-cublas-cu12, nvidia-cudnn-cu11, ...; PyPI names), CuPy's per-toolkit builds, and
# packages whose PyPI distributions are CUDA builds or compile CUDA code when installed
# (xformers and flash-attn pin a CUDA torch or need nvcc; onnxruntime-gpu, tensorrt,
# jax's CUDA plugins), and what only a CUDA torch pulls in (triton, which compiles GPU
# kernels; cuda-toolkit and cuda-bindings, torch 2.13's CUDA runtime). nvidia-ml-py (NVML
# bindings) and nvidia-dali are not: they install without CUDA. tensorflow[and-cuda] and
# jax[cuda12] are the CUDA extras of CPU packages.
_CUDA_ONLY_RE = re.compile(
    r"^(?:nvidia-[a-z0-9-]+-cu[0-9]+|nvidia-cuda-[a-z0-9-]+|cupy-cuda[0-9]+x?|xformers"
    r"|flash-attn|flash-attn-[0-9]+|onnxruntime-gpu|paddlepaddle-gpu|tensorrt(?:-cu[0-9]+)?"
    r"|tensorrt-cu[0-9]+-[a-z-]+|torch-tensorrt|jax-cuda[0-9]+-(?:plugin|pjrt)|pycuda"
    r"|mamba-ssm|causal-conv1d|triton|pytorch-triton|cuda-toolkit|cuda-bindings|cuda-python"
    r"|cuda-pathfinder)\Z"
)
_CUDA_EXTRA_RE = re.compile(r"^(?:and-cuda|cuda[0-9]*(?:-local)?|cuda[0-9]+-(?:pip|local))\Z")
_CUDA_EXTRA_PACKAGES = frozenset({"tensorflow", "jax"})
# The CPU build of a CUDA-only package, published under another name: the cpu flavor gets it.
CPU_COUNTERPART = {"onnxruntime-gpu": "onnxruntime", "paddlepaddle-gpu": "paddlepaddle"}
TORCH_FAMILY = frozenset({"torch", "torchvision", "torchaudio"})


def canonical(name: str) -> str:
    """The one normalised form of a package name (PEP 503: ``names.canonical_name``)."""
    return canonical_name(name)


def cuda_of_tag(tag: str) -> str:
    """``"cu118"`` -> ``"11.8"``, ``"cu121"`` -> ``"12.1"``, ``"cu92"`` -> ``"9.2"``."""
    m = _CUDA_TAG_RE.match(tag)
    assert m is not None, tag
    return f"{m['major']}.{m['minor']}"


def local_build(local: str) -> str | None:
    """The build a local version label names: ``"cu118"``, ``"cpu"``, or None for others."""
    m = _LOCAL_BUILD_RE.match(local.lower())
    return m["build"] if m else None


_LINUX = {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix", "extra": ""}


def for_linux(markers: str) -> bool:
    """False when ``markers`` name a platform and exclude Linux (envparity's only platform)."""
    from packaging.markers import InvalidMarker, Marker

    if not re.search(r"sys_platform|platform_system|os_name", markers):
        return True
    try:
        return Marker(markers).evaluate(_LINUX)
    except InvalidMarker:  # pragma: no cover - callers pass parsed markers
        return True


def cuda_only(name: str, extras: tuple[str, ...] = ()) -> bool:
    """True for packages that exist only for a CUDA build (nvidia-*-cuXY runtime wheels, CuPy,
    xformers, flash-attn, onnxruntime-gpu, ...; ``tensorflow[and-cuda]``, ``jax[cuda12]``)."""
    key = canonical(name)
    if key in _CUDA_EXTRA_PACKAGES and any(_CUDA_EXTRA_RE.match(e) for e in extras):
        return True
    return bool(_CUDA_ONLY_RE.match(key))


@dataclass(frozen=True)
class Where:
    """A place in an input file: ``requirements.txt line 7``, ``env.yml dependencies[2]``."""

    file: str
    key: str

    def __str__(self) -> str:
        return f"{self.file} {self.key}" if self.key else self.file

    def at(self, key: str) -> Where:
        return Where(self.file, key)


@dataclass
class IndexDraft:
    url: str
    kind: str  # "index" or "find-links"
    flavors: tuple[str, ...]
    origin: str  # where it came from, written as a comment above it
    packages: tuple[str, ...] = ()  # only these come from it (uv explicit, Poetry explicit)


@dataclass
class Draft:
    """Everything a conversion found; ``problems`` stop the conversion."""

    origin: str  # the source file as the user named it, or "" for the starter spec
    name: str | None = None
    python: str | None = None
    python_origin: str = ""  # why this Python: where it was pinned, or how it was chosen
    python_range: str = ""  # the range the source allows (PEP 440; "||" between alternatives)
    python_range_origin: str = ""
    python_chosen: bool = False  # python_origin says how it was chosen, not where it was pinned
    cuda: str | None = None
    cuda_origin: str = ""
    cudnn: str | None = None
    deps: dict[str, Dependency] = field(default_factory=dict)  # canonical name -> dependency
    indexes: list[IndexDraft] = field(default_factory=list)
    system: list[str] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    unlockables: list[Problem] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    counterparts: dict[str, str] = field(default_factory=dict)  # cpu package -> CUDA-only one
    local: dict[str, LocalPackage] = field(default_factory=dict)  # the project's own packages
    spec_dir: Path = field(default_factory=Path.cwd)  # where the spec goes: paths relative to it

    def problem(self, where: Where, message: str) -> None:
        self.problems.append(Problem(where.file, where.key, message))

    def skip(self, where: Where, what: str, why: str) -> None:
        self.skipped.append(f"{where}: {what} ({why})")

    def unlockable(self, where: Where, what: str, why: str) -> None:
        """A requirement that cannot be locked with hashes: kept as a comment, named on stderr."""
        self.unlockables.append(Problem(where.file, where.key, f"{what!r}: {why}"))
        self.skip(where, what, why)

    def add(self, dep: Dependency, where: Where) -> None:
        """Add a dependency; a CUDA-only package (nvidia-*-cuXY, xformers, ...) is kept to the
        CUDA flavor, and its CPU counterpart (onnxruntime for onnxruntime-gpu) goes to cpu."""
        key = canonical(dep.name)
        if dep.markers and not for_linux(dep.markers):
            self.skip(
                where,
                dep.requirement(),
                "for another platform; envparity environments run on Linux",
            )
            return
        if cuda_only(dep.name, dep.extras) and not dep.flavors:
            dep = replace(dep, flavors=("cuda",))
            counterpart = CPU_COUNTERPART.get(key)
            if counterpart is not None and counterpart not in self.deps:
                self.deps[counterpart] = replace(dep, name=counterpart, flavors=("cpu",))
                self.counterparts[counterpart] = dep.name
            elif counterpart is not None:  # the project names both: the CPU build is cpu's
                self.deps[counterpart] = replace(self.deps[counterpart], flavors=("cpu",))
            pinned = re.fullmatch(r"==([0-9]+)\.([0-9]+)(\.[0-9.]+)?", dep.specifier)
            if re.fullmatch(r"nvidia-cuda-runtime-cu[0-9]+", key) and pinned:
                origin = f"{dep.requirement()} ({where})"
                self.set_cuda(f"{pinned[1]}.{pinned[2]}", origin, where)
        gpu = next((g for g, c in CPU_COUNTERPART.items() if c == key), None)
        if gpu is not None and gpu in self.deps and not dep.flavors:
            dep = replace(dep, flavors=("cpu",))  # the CPU build of a CUDA-only package
            if self.counterparts.pop(key, None) is not None:
                del self.deps[key]  # added for it: the project's own entry replaces it
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

    def cuda_only_note(self) -> str:
        """The note naming the packages kept to the CUDA flavor ("" when there are none)."""
        names = [
            d.requirement().split(";")[0]
            for d in self.deps.values()
            if d.flavors == ("cuda",) and cuda_only(d.name, d.extras)
        ]
        if not names or self.cuda is None:
            return ""
        flavor = "cu" + self.cuda.replace(".", "")
        note = (
            f"CUDA-only packages, in the {flavor} flavor only (the cpu flavor has no build of "
            f"them): {', '.join(names)}"
        )
        for cpu, gpu in self.counterparts.items():
            note += f"; the cpu flavor gets {cpu}, the CPU build of {gpu}"
        return note

    def add_local(
        self,
        folder: Path,
        where: Where,
        what: str,
        *,
        name: str | None = None,
        editable: bool,
        extras: tuple[str, ...] = (),
    ) -> None:
        """A package of the project's own code in ``folder`` (``-e ./sd-scripts``, a Poetry or
        uv ``path``): installed after the lock in every target. A folder outside the spec's
        is not converted (the devcontainer and CI see only the repository)."""
        where_to = folder.resolve()
        relative = Path(os.path.relpath(where_to, self.spec_dir.resolve())).as_posix()
        if relative.startswith("..") or not specs._LOCAL_PATH_RE.fullmatch(relative):
            self.unlockable(
                where,
                what,
                f"a local package outside the folder of the spec ({relative}); the "
                "devcontainer and CI see only the repository: move it inside, or publish it",
            )
            return
        found = package_name(where_to)
        if name is None:
            name = found or _sanitized(where_to.name)
            if found is None:
                self.notes.append(
                    f"{where}: {what}: no package name found in {relative} (pyproject.toml, "
                    f"setup.cfg, setup.py); named {name!r} after its folder"
                )
        package = LocalPackage(name=name, path=relative, editable=editable, extras=extras)
        if self.local.get(canonical(name)) == package:
            return  # named twice (the project itself, and a path source for it)
        if canonical(name) in self.deps or canonical(name) in self.local:
            self.skip(where, what, f"a second entry for {name}; the spec holds one per package")
            return
        self.local[canonical(name)] = package

    def add_flavored(self, dep: Dependency, flavor: str, where: Where) -> None:
        """Add a dependency that one flavor's build (``"cpu"`` or ``"cuda"``) asked for: a uv
        extra choosing the torch build, a Poetry alternative with a CPU or CUDA source.

        It is a package of the project all the same, so every flavor holds it (each takes it
        from its own index): the same package asked for by both is one entry with both
        version constraints. Only CUDA-only packages stay in the CUDA flavor (``add``), and
        the CPU counterpart of one in the cpu flavor.
        """
        key = canonical(dep.name)
        kept = self.deps.get(key)
        if cuda_only(dep.name, dep.extras):
            self.add(dep, where)
            return
        if kept is None:
            self.deps[key] = dep
            return
        if kept.extras != dep.extras or kept.markers != dep.markers:
            self.skip(
                where, dep.requirement(), f"differs from {kept.requirement()} beyond its version"
            )
            return
        a, b = pinned_version(kept.specifier), pinned_version(dep.specifier)
        if a is not None and b is not None and a != b:
            self.skip(
                where,
                dep.requirement(),
                f"the {flavor} build asks for another version than {kept.requirement()}; the "
                "spec holds one version per package for every flavor",
            )
            return
        both = SpecifierSet(kept.specifier) & SpecifierSet(dep.specifier)
        self.deps[key] = replace(kept, specifier=ordered(both))

    def set_python(self, version: str, origin: str, where: Where) -> None:
        if not specs._PYTHON_RE.match(version):
            self.skip(where, f"python {version}", "not a Python 3 version such as 3.11 or 3.11.9")
        elif self.python is None:
            self.python, self.python_origin = version, origin
        elif self.python != version:
            self.skip(where, f"python {version}", f"python is already {self.python}")

    def set_cuda(self, version: str, origin: str, where: Where) -> None:
        if self.cuda is None:
            self.cuda, self.cuda_origin = version, origin
        elif self.cuda != version:
            self.problem(
                where, f"CUDA {version} conflicts with CUDA {self.cuda} from {self.cuda_origin}"
            )

    def add_index(
        self, raw_url: str, kind: str, origin: str, where: Where, packages: tuple[str, ...] = ()
    ) -> None:
        """An index or find-links source. PyTorch's and PyG's per-build sources get the flavor
        of their build (a CUDA one also sets ``[cuda]``); a PyG page for a CUDA build brings
        its CPU page for the cpu flavor, so both flavors find the same packages."""
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
        if _PYTORCH_ALL_BUILDS_RE.match(url):
            self.notes.append(
                f"{where}: {url} lists every build of torch; the PyTorch index of each "
                "flavor's build is used instead"
            )
            return
        flavors: tuple[str, ...] = ()
        build = None
        if m := _PYTORCH_INDEX_RE.match(url):
            build = m["build"]
            if m["page"] and m["page"].endswith(".html"):
                kind = "find-links"
        elif m := _PYG_PAGE_RE.match(url):
            build, kind = m["build"], "find-links"
        if build == "cpu":
            flavors = ("cpu",)
        elif build is not None:
            flavors = ("cuda",)
            self.set_cuda(cuda_of_tag(build), f"the index {url}", where)
        self._index(url, kind, flavors, f"{origin} ({where})", packages)
        if build is not None and build != "cpu" and (pyg := _PYG_PAGE_RE.match(url)):
            self._index(
                f"{pyg['base']}+cpu.html",
                "find-links",
                ("cpu",),
                f"the CPU page of {url}, for the cpu flavor (added by envparity init)",
            )

    def _index(
        self,
        url: str,
        kind: str,
        flavors: tuple[str, ...],
        origin: str,
        packages: tuple[str, ...] = (),
    ) -> None:
        """Add an index once; a second mention of it adds its packages (or unscopes it)."""
        kept = next((i for i in self.indexes if i.url == url), None)
        if kept is None:
            self.indexes.append(IndexDraft(url, kind, flavors, origin, tuple(packages)))
        elif kept.packages:
            kept.packages = tuple(dict.fromkeys((*kept.packages, *packages))) if packages else ()

    def has_torch(self) -> bool:
        return any(key in TORCH_FAMILY for key in self.deps)


def package_name(folder: Path) -> str | None:
    """The distribution name a project folder declares: ``[project] name`` or Poetry's in
    ``pyproject.toml``, ``[metadata] name`` in ``setup.cfg``, or a literal ``name="..."`` in
    ``setup.py`` (read, never run). None when none is found."""
    import configparser
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10 only
        import tomli as tomllib

    try:
        data = tomllib.loads((folder / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        data = {}
    for table in (data.get("project"), data.get("tool", {}).get("poetry")):
        if isinstance(table, dict) and isinstance(table.get("name"), str):
            return str(table["name"])
    config = configparser.ConfigParser()
    try:
        config.read(folder / "setup.cfg", encoding="utf-8")
        if config.has_option("metadata", "name"):
            return config.get("metadata", "name")
    except (configparser.Error, UnicodeDecodeError):
        pass
    try:
        setup = (folder / "setup.py").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    m = re.search(r"""\bname\s*=\s*["']([A-Za-z0-9][A-Za-z0-9._-]*)["']""", setup)
    return m[1] if m else None


def _sanitized(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("._-") or "project"


def _without_credentials(url: str) -> tuple[str, bool]:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, False
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=host)), True


# --------------------------------------------------------------------------- versions

_OPERATOR_ORDER = ("===", "==", "~=", ">=", ">", "<=", "<", "!=")


def ordered(specifiers: SpecifierSet) -> str:
    """A specifier set written in a stable, readable order: ``>=2.1.0,<3.0.0``."""
    return ",".join(dict.fromkeys(str(s) for s in sorted_specifiers(specifiers)))


def sorted_specifiers(specifiers: SpecifierSet) -> list[Specifier]:
    return sorted(specifiers, key=lambda s: (_OPERATOR_ORDER.index(s.operator), s.version))


def pep440(text: str) -> str | None:
    """``text`` as a normalised PEP 440 specifier, lower bounds first; None if it is not one."""
    try:
        return ordered(SpecifierSet(text))
    except InvalidSpecifier:
        return None


def pinned_version(specifier: str) -> str | None:
    """``==11.8.*`` and ``==11.8`` -> ``11.8``; None for anything but one pin."""
    m = re.fullmatch(r"==([0-9]+(?:\.[0-9]+)*)(?:\.\*)?", specifier)
    return m[1] if m else None


def public_specifier(
    draft: Draft, name: str, specifiers: SpecifierSet, where: Where
) -> SpecifierSet:
    """``specifiers`` without local build labels: ``==2.1.0+cu118`` -> ``==2.1.0`` and CUDA 11.8.

    A build label says which build of a version to take, and that is the flavor's index's
    business (the cpu flavor takes the same version from the CPU index); a CUDA label sets
    ``[cuda]``. Other local labels are kept.
    """
    parts = []
    for s in specifiers:
        version = s.version
        if "+" in version:
            public, local = version.split("+", 1)
            build = local_build(local)
            if build is not None and build != "cpu":
                draft.set_cuda(cuda_of_tag(build), f"the +{local} of {name} ({where})", where)
            if build is not None:
                version = public
        parts.append(f"{s.operator}{version}")
    return SpecifierSet(",".join(parts))
