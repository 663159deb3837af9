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

import re
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit, urlunsplit

from packaging.specifiers import InvalidSpecifier, Specifier, SpecifierSet
from packaging.utils import canonicalize_name

from orchestrator import spec as specs
from orchestrator.errors import Problem
from orchestrator.spec import Dependency

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
# (nvidia-cublas-cu12, nvidia-cudnn-cu11, ...) and CuPy's per-toolkit builds.
_CUDA_ONLY_RE = re.compile(r"^(?:nvidia-[a-z0-9-]+-cu[0-9]+|cupy-cuda[0-9]+x?)\Z")
TORCH_FAMILY = frozenset({"torch", "torchvision", "torchaudio"})


def canonical(name: str) -> str:
    """The one normalised form of a package name (PEP 503, via packaging)."""
    return str(canonicalize_name(name))


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


def cuda_only(name: str) -> bool:
    """True for packages that only a CUDA build uses (nvidia-*-cuXY runtime wheels, CuPy)."""
    return bool(_CUDA_ONLY_RE.match(canonical(name)))


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


@dataclass
class Draft:
    """Everything a conversion found; ``problems`` stop the conversion."""

    origin: str  # the source file as the user named it, or "" for the starter spec
    name: str | None = None
    python: str | None = None
    python_origin: str = ""
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

    def problem(self, where: Where, message: str) -> None:
        self.problems.append(Problem(where.file, where.key, message))

    def skip(self, where: Where, what: str, why: str) -> None:
        self.skipped.append(f"{where}: {what} ({why})")

    def unlockable(self, where: Where, what: str, why: str) -> None:
        """A requirement that cannot be locked with hashes: kept as a comment, named on stderr."""
        self.unlockables.append(Problem(where.file, where.key, f"{what!r}: {why}"))
        self.skip(where, what, why)

    def add(self, dep: Dependency, where: Where) -> None:
        """Add a dependency; a CUDA-only package (nvidia-*-cuXY) is kept to the CUDA flavor."""
        key = canonical(dep.name)
        if dep.markers and not for_linux(dep.markers):
            self.skip(
                where,
                dep.requirement(),
                "for another platform; envparity environments run on Linux",
            )
            return
        if cuda_only(dep.name) and not dep.flavors:
            dep = replace(dep, flavors=("cuda",))
            pinned = re.fullmatch(r"==([0-9]+)\.([0-9]+)(\.[0-9.]+)?", dep.specifier)
            if re.fullmatch(r"nvidia-cuda-runtime-cu[0-9]+", key) and pinned:
                origin = f"{dep.requirement()} ({where})"
                self.set_cuda(f"{pinned[1]}.{pinned[2]}", origin, where)
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

    def add_flavored(self, dep: Dependency, flavor: str, where: Where) -> None:
        """Add a dependency that one flavor (``"cpu"`` or ``"cuda"``) asked for.

        The same package asked for by both flavors is shared by them, with both version
        constraints; a package only one flavor asks for stays in that flavor.
        """
        key = canonical(dep.name)
        kept = self.deps.get(key)
        if kept is None:
            self.deps[key] = replace(dep, flavors=(flavor,))
            return
        if kept.extras != dep.extras or kept.markers != dep.markers:
            self.skip(
                where, dep.requirement(), f"differs from {kept.requirement()} beyond its version"
            )
            return
        both = SpecifierSet(kept.specifier) & SpecifierSet(dep.specifier)
        flavors = () if not kept.flavors or flavor not in kept.flavors else kept.flavors
        self.deps[key] = replace(kept, specifier=ordered(both), flavors=flavors)

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

    def add_index(self, raw_url: str, kind: str, origin: str, where: Where) -> None:
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
        self._index(url, kind, flavors, f"{origin} ({where})")
        if build is not None and build != "cpu" and (pyg := _PYG_PAGE_RE.match(url)):
            self._index(
                f"{pyg['base']}+cpu.html",
                "find-links",
                ("cpu",),
                f"the CPU page of {url}, for the cpu flavor (added by envparity init)",
            )

    def _index(self, url: str, kind: str, flavors: tuple[str, ...], origin: str) -> None:
        if all(i.url != url for i in self.indexes):
            self.indexes.append(IndexDraft(url=url, kind=kind, flavors=flavors, origin=origin))

    def has_torch(self) -> bool:
        return any(key in TORCH_FAMILY for key in self.deps)


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


def python_from(draft: Draft, specifier: str, origin: str, where: Where) -> None:
    """One pinned version is kept as given; a range becomes its lowest allowed 3.x minor.

    ``specifier`` may hold alternatives joined by ``||`` (Poetry): the lowest of them counts.
    """
    pinned = pinned_version(specifier)
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
