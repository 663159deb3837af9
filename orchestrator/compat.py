"""Check a spec against the torch x CUDA x cuDNN x Python table before anything is written.

The facts live in ``orchestrator/data/compat.toml``, each with its source; this module only
reads them (once, on first use) and answers questions. A combination the table proves does
not exist is a ``Problem`` naming the alternatives and the nearest fix; anything the table
cannot prove either way (releases outside it, facts marked unverified) is a warning.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from orchestrator.errors import EnvparityError, Problem
from orchestrator.schema import Reader, of, shape, tables
from orchestrator.spec import DevcontainerTarget, Spec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

TABLE_FILE = "compat.toml"


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True, kw_only=True)
class Build:
    """One official CUDA build of a torch minor release (download.pytorch.org/whl/cuXY)."""

    cuda: str
    cudnn: str | None
    source: str
    unverified: bool = False
    # Compute capabilities with kernels ("8.6"; "12.0+PTX" also carries PTX); () = unknown.
    archs: tuple[str, ...] = ()
    archs_source: str = ""
    archs_unverified: bool = False


@dataclass(frozen=True, kw_only=True)
class Release:
    """One torch minor release; its patch releases share these facts."""

    minor: str
    versions: tuple[str, ...]
    python: tuple[str, ...]
    python_index_only: tuple[str, ...]
    pypi_cuda: str
    builds: Mapping[str, Build]
    unverified: bool
    note: str
    python_source: str
    pypi_source: str

    def has_build(self, cuda: str) -> bool:
        return cuda in self.builds


@dataclass(frozen=True, kw_only=True)
class Toolkit:
    """A CUDA toolkit: the Linux driver it needs and whether nixpkgs still has it."""

    version: str
    driver: str
    driver_latest: str
    latest_update: str
    minor_compat: str
    nixpkgs: str  # "present" or "removed"
    source: str
    unverified: bool = False

    @property
    def nix_attr(self) -> str:
        return "cudaPackages_" + self.version.replace(".", "_")


@dataclass(frozen=True, kw_only=True)
class AbiBound:
    """torch releases built against one major version of a package's C API (``[abi.X]``)."""

    package: str  # "numpy"
    torch: str  # the torch releases concerned: "<2.3"
    requires: str  # what they need of the package: "<2"
    newest: str  # the newest release of the package inside the bound: "1.26.4"
    symptom: str
    source: str

    def covers(self, torch_version: str) -> bool:
        """Whether the torch release ``torch_version`` (a local label is ignored) needs it."""
        return SpecifierSet(self.torch).contains(_public(torch_version), prereleases=True)


@dataclass(frozen=True, kw_only=True)
class ImageRequirement:
    """What ``NVIDIA_REQUIRE_CUDA`` of the nvidia/cuda:A.B.x images asks of the host
    (``[nvidia_require_cuda."A.B"]``); ``expression`` is the variable's value."""

    cuda: str
    brands: tuple[str, ...]
    branches: tuple[int, ...]
    source: str

    @property
    def expression(self) -> str:
        clauses = [f"cuda>={self.cuda}"] + [
            f"brand={brand},driver>={n},driver<{n + 1}"
            for n in self.branches
            for brand in self.brands
        ]
        return " ".join(clauses)


@dataclass(frozen=True, kw_only=True)
class Table:
    newest_on_pypi: str
    checked: str
    sources: Mapping[str, str]
    releases: tuple[Release, ...]  # oldest first
    toolkits: Mapping[str, Toolkit]
    abi: tuple[AbiBound, ...] = ()
    images: Mapping[str, ImageRequirement] = field(default_factory=dict)

    def release_of(self, version: str) -> Release | None:
        return next((r for r in self.releases if version in r.versions), None)

    @property
    def versions(self) -> tuple[str, ...]:
        """Every recorded torch release, oldest first."""
        return tuple(v for r in self.releases for v in r.versions)


class TableError(EnvparityError):
    """The compatibility table file is malformed (a bad edit of ``orchestrator/data``, or a
    broken installation): every problem, one line each, naming the key path (exit 2)."""


@functools.cache
def table() -> Table:
    """The compatibility table, parsed on first use and kept for the process."""
    return load_table(Path(__file__).parent / "data" / TABLE_FILE)


def load_table(path: Path) -> Table:
    """The table in ``path`` (the layout of ``orchestrator/data/compat.toml``, described at its
    top); ``TableError`` naming every key that is missing, unknown or of the wrong type."""
    file = str(path)
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise TableError(f"{file}: cannot read the compatibility table: {exc}") from None
    r = Reader(file)
    r.known_keys(
        data,
        "",
        (
            "schema",
            "newest_on_pypi",
            "checked",
            "sources",
            "torch",
            "cuda",
            "abi",
            "nvidia_require_cuda",
        ),
    )
    minor = shape(_VERSION_KEY_RE, 'a version such as "2.13"')
    releases = r.entries(data, "torch", "", tables(_read_release), required=True, key_check=minor)
    toolkits = r.entries(data, "cuda", "", tables(_read_toolkit), required=True, key_check=minor)
    abi = r.entries(data, "abi", "", tables(_read_abi))
    images = r.entries(data, "nvidia_require_cuda", "", tables(_read_image), key_check=minor)
    found = Table(
        newest_on_pypi=r.require(data, "newest_on_pypi", "", str),
        checked=r.require(data, "checked", "", str),
        sources=r.entries(data, "sources", "", of(str), required=True),
        releases=tuple(
            sorted(
                (replace(rel, minor=m) for m, rel in releases.items()),
                key=lambda rel: _key(rel.minor),
            )
        ),
        toolkits={v: replace(k, version=v) for v, k in toolkits.items()},
        abi=tuple(replace(b, package=name) for name, b in abi.items()),
        images={v: replace(i, cuda=v) for v, i in images.items()},
    )
    if r.problems:
        raise TableError("\n".join(str(p) for p in r.problems))
    return found


_STRINGS = of(str)
_VERSION_KEY_RE = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}", re.ASCII)  # what _key sorts by


def _read_release(r: Reader, entry: dict[str, Any]) -> Release:
    """A ``[torch."X.Y"]`` table; its ``minor`` is its key, set by ``load_table``."""
    r.known_keys(
        entry,
        "",
        (
            "versions",
            "python",
            "python_index_only",
            "pypi_cuda",
            "cuda",
            "unverified",
            "note",
            "python_source",
            "pypi_source",
        ),
    )
    builds = r.entries(
        entry, "cuda", "", tables(_read_build), key_check=shape(_VERSION_KEY_RE, "a CUDA version")
    )
    return Release(
        minor="",
        versions=r.array(entry, "versions", "", _STRINGS, required=True),
        python=r.array(entry, "python", "", _STRINGS, required=True),
        python_index_only=r.array(entry, "python_index_only", "", _STRINGS),
        pypi_cuda=r.require(entry, "pypi_cuda", "", str),
        builds={
            cuda: replace(b, cuda=cuda)
            for cuda, b in sorted(builds.items(), key=lambda kv: _key(kv[0]))
        },
        unverified=bool(r.get(entry, "unverified", "", bool, False)),
        note=r.get(entry, "note", "", str, "") or "",
        python_source=r.require(entry, "python_source", "", str),
        pypi_source=r.require(entry, "pypi_source", "", str),
    )


def _read_build(r: Reader, b: dict[str, Any]) -> Build:
    """A ``[torch."X.Y".cuda."A.B"]`` table; its ``cuda`` is its key, set by ``_read_release``."""
    r.known_keys(
        b, "", ("cudnn", "source", "unverified", "archs", "archs_source", "archs_unverified")
    )
    return Build(
        cuda="",
        cudnn=r.get(b, "cudnn", "", str),
        source=r.require(b, "source", "", str),
        unverified=bool(r.get(b, "unverified", "", bool, False)),
        archs=r.array(b, "archs", "", _STRINGS),
        archs_source=r.get(b, "archs_source", "", str, "") or "",
        archs_unverified=bool(r.get(b, "archs_unverified", "", bool, False)),
    )


def _read_toolkit(r: Reader, entry: dict[str, Any]) -> Toolkit:
    """A ``[cuda."A.B"]`` table; its ``version`` is its key, set by ``load_table``."""
    keys = ("driver", "driver_latest", "latest_update", "minor_compat", "nixpkgs", "source")
    r.known_keys(entry, "", (*keys, "unverified"))
    return Toolkit(
        version="",
        **{key: r.require(entry, key, "", str) for key in keys},
        unverified=bool(r.get(entry, "unverified", "", bool, False)),
    )


def _read_abi(r: Reader, entry: dict[str, Any]) -> AbiBound:
    """An ``[abi.X]`` table; its ``package`` is its key, set by ``load_table``."""
    keys = ("torch", "requires", "newest", "symptom", "source")
    r.known_keys(entry, "", keys)
    return AbiBound(package="", **{key: r.require(entry, key, "", str) for key in keys})


def _read_image(r: Reader, entry: dict[str, Any]) -> ImageRequirement:
    """A ``[nvidia_require_cuda."A.B"]`` table; its ``cuda`` is its key, set by ``load_table``."""
    r.known_keys(entry, "", ("brands", "branches", "source"))
    return ImageRequirement(
        cuda="",
        brands=r.array(entry, "brands", "", _STRINGS, required=True),
        branches=r.array(entry, "branches", "", of(int), required=True),
        source=r.require(entry, "source", "", str),
    )


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


# --------------------------------------------------------------------------- lookups


def min_driver(cuda_version: str) -> str | None:
    """The minimum Linux x86_64 driver of a CUDA toolkit's GA release (``"12.8"`` ->
    ``"570.26"``); None for a toolkit not in the table. Under CUDA minor-version
    compatibility an older driver of the same major family also runs it, with limits."""
    toolkit = table().toolkits.get(cuda_version)
    return None if toolkit is None else toolkit.driver


def min_driver_minor_compat(cuda_version: str) -> str | None:
    """The oldest driver that runs a CUDA toolkit under minor-version compatibility (the
    toolkit's major family, e.g. 525 for 12.x): pip wheels of torch run there, with limits
    (no PTX JIT of newer code). None for a toolkit not in the table."""
    toolkit = table().toolkits.get(cuda_version)
    return None if toolkit is None else toolkit.minor_compat


def cuda_of_driver(driver: str) -> str | None:
    """The newest CUDA toolkit in the table whose GA Linux driver is at most ``driver``
    (``"551.78"`` -> ``"12.4"``): what that driver reports as its CUDA version, by NVIDIA's
    table "CUDA Toolkit and Corresponding Driver Versions". None below every toolkit."""
    have = _key_loose(driver)
    fits = [k.version for k in table().toolkits.values() if _key_loose(k.driver) <= have]
    return max(fits, key=_key) if fits else None


def image_cuda(image: str) -> str | None:
    """The CUDA ``major.minor`` of an ``nvidia/cuda`` image from its tag
    (``nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04@sha256:...`` -> ``"12.8"``); None for
    another image or a tag without a version."""
    name, tag = _image_tag(image)
    found = _CUDA_IMAGE_TAG_RE.match(tag) if name.rsplit("/", 1)[-1] == "cuda" else None
    return f"{int(found[1])}.{int(found[2])}" if found else None


def image_patch(cuda: str) -> str | None:
    """``"12.4"`` -> ``"12.4.1"``: the newest update release of a toolkit in the table (the
    version nvidia/cuda tags of it start with); None for a toolkit not in the table."""
    toolkit = table().toolkits.get(cuda)
    if toolkit is None:
        return None
    update = re.search(r"Update (\d+)", toolkit.latest_update)
    return f"{cuda}.{update[1] if update else 0}"


def _key_loose(version: str) -> tuple[int, ...]:
    """``"570.86.15"`` -> ``(570, 86, 15)``; non-numeric parts are dropped."""
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def cudnn_for(cuda_version: str, torch_version: str | None = None) -> str | None:
    """The cuDNN of torch's CUDA build: of ``torch_version`` when given, else of the newest
    recorded torch release that has a build for ``cuda_version``. None when unknown."""
    t = table()
    if torch_version is not None:
        release = t.release_of(_public(torch_version))
        build = None if release is None else release.builds.get(cuda_version)
        return None if build is None else build.cudnn
    for release in reversed(t.releases):
        build = release.builds.get(cuda_version)
        if build is not None and build.cudnn is not None:
            return build.cudnn
    return None


def pypi_default_cuda(torch_version: str) -> str | None:
    """The CUDA of the default PyPI Linux x86_64 wheel of ``torch_version`` (``"2.13.0"`` ->
    ``"13.0"``); None for a release not in the table."""
    release = table().release_of(_public(torch_version))
    return None if release is None else release.pypi_cuda


def _public(version: str) -> str:
    """``"2.1.0+cu121"`` -> ``"2.1.0"``."""
    return version.split("+", 1)[0]


# --------------------------------------------------------------------------- the check


@dataclass(frozen=True)
class _Request:
    """What a spec asks of torch, resolved against the table."""

    file: str
    specifier: str
    admitted: tuple[str, ...]  # recorded torch releases the specifier admits, oldest first
    newer: bool  # the specifier also admits releases newer than the table's newest
    python: str
    cuda: str | None
    cudnn: str | None


def check(spec: Spec, *, flavor: str | None = None) -> list[Problem]:
    """Every combination the spec asks for that the table proves does not exist; with
    ``flavor``, those that stop that flavor's lock (for ``"cpu"``: the spec as if it had no
    ``[cuda]``, so a CUDA build that does not exist leaves the cpu flavor alone)."""
    if flavor == "cpu" and spec.cuda is not None:
        spec = replace(spec, cuda=None)
    problems = _unknown_cuda(spec) + _cuda_sources(spec, flavor)
    request = _request(spec)
    if problems or request is None:
        return problems
    if request.cuda is not None and spec.cuda is not None:
        for capability in spec.cuda.compute_capabilities:
            refused, _ = gpu_verdict(request.admitted, request.cuda, capability)
            if refused:
                problems.append(Problem(request.file, "cuda.compute_capabilities", refused))
    problems += _local_label(spec, request)
    problems += _abi_problems(spec)
    if not request.admitted:
        return problems
    with_cuda = request.admitted
    if request.cuda is not None:
        with_cuda = tuple(v for v in request.admitted if _release(v).has_build(request.cuda))
        # Refused unless the spec asks only for releases whose builds are unverified (then it
        # is a warning): an unverified release must not excuse the verified ones that lack it.
        only_unverified = all(_release(v).unverified for v in request.admitted)
        if not with_cuda and not (
            only_unverified and _unverified_lacking(request, request.admitted)
        ):
            problems.append(_no_cuda_build(request))
    pool = with_cuda or request.admitted
    with_python = tuple(v for v in pool if request.python in _release(v).python)
    if not with_python and not _index_only_python(request, pool):
        filtered = request.cuda is not None and pool != request.admitted
        problems.append(_no_python(request, pool, cuda_filtered=filtered))
    if request.cuda is not None and request.cudnn is not None and with_cuda:
        problem = _cudnn_mismatch(request, with_python or with_cuda)
        if problem is not None:
            problems.append(problem)
    return problems


def warnings(spec: Spec) -> list[str]:
    """Non-fatal notes: what the check could not prove either way (``architecture_warnings``
    last)."""
    return _table_warnings(spec) + architecture_warnings(spec)


def _table_warnings(spec: Spec) -> list[str]:
    file = _display(spec.path)
    out: list[Problem] = []
    torch = spec.dependency("torch")
    t = table()
    if torch is None:
        if spec.cuda is not None:
            out.append(
                Problem(
                    file,
                    "dependencies",
                    "no torch dependency: only the CUDA "
                    "toolkit version is checked against the compatibility table",
                )
            )
        return [str(p) for p in out]
    key = _torch_key(spec)
    if not torch.specifier:
        out.append(
            Problem(
                file,
                key,
                f"torch is unpinned: the lock takes the newest release "
                f"its index offers; the check covers every release in the table "
                f"({t.versions[0]} to {t.versions[-1]})",
            )
        )
    request = _request(spec)
    if request is None:
        return [str(p) for p in out]
    if not request.admitted:
        out.append(
            Problem(
                file,
                key,
                f"{request.specifier!r} admits no torch release in the "
                f"compatibility table ({t.versions[0]} to {t.versions[-1]}): "
                "nothing was checked",
            )
        )
        return [str(p) for p in out]
    if request.newer and torch.specifier:
        out.append(
            Problem(
                file,
                key,
                f"{request.specifier!r} also admits torch releases newer "
                f"than {t.versions[-1]}, which the compatibility table does not cover",
            )
        )
    if request.cuda is not None:
        out += _cuda_warnings(spec, request)
    out += _python_warnings(request)
    return [str(p) for p in out]


def _cuda_warnings(spec: Spec, request: _Request) -> list[Problem]:
    assert request.cuda is not None
    cuda = request.cuda
    out: list[Problem] = []
    with_cuda = [v for v in request.admitted if _release(v).has_build(cuda)]
    lacking = [v for v in request.admitted if not _release(v).has_build(cuda)]
    unverified_lacking = [v for v in lacking if _release(v).unverified]
    if unverified_lacking:
        out.append(
            Problem(
                request.file,
                "cuda.version",
                f"no CUDA {cuda} build of torch "
                f"{_span(unverified_lacking)} is recorded, but the table's build list "
                f"for it is unverified ({_release(unverified_lacking[0]).note})",
            )
        )
    if with_cuda and lacking:
        out.append(
            Problem(
                request.file,
                _torch_key(spec),
                f"{_what(request)} admits "
                f"torch releases without a CUDA {cuda} build; only "
                f"{_span(with_cuda)} {'has' if len(with_cuda) == 1 else 'have'} one",
            )
        )
    unverified_builds = [v for v in with_cuda if _release(v).builds[cuda].unverified]
    if unverified_builds:
        out.append(
            Problem(
                request.file,
                "cuda.version",
                f"the CUDA {cuda} build of torch "
                f"{_span(unverified_builds)} is unverified: "
                f"{_release(unverified_builds[0]).builds[cuda].source}",
            )
        )
    toolkit = table().toolkits.get(cuda)
    if toolkit is not None and toolkit.nixpkgs == "removed":
        out.append(
            Problem(
                request.file,
                "cuda.version",
                f"nixpkgs no longer has "
                f"{toolkit.nix_attr} (removed 2025-08-08): the nix target needs a "
                "nixpkgs commit from before then",
            )
        )
    return out


def _python_warnings(request: _Request) -> list[Problem]:
    index_only = [
        v
        for v in request.admitted
        if request.python not in _release(v).python
        and request.python in _release(v).python_index_only
    ]
    if not index_only:
        return []
    return [
        Problem(
            request.file,
            "environment.python",
            f"torch {_span(index_only)} has no "
            f"Python {request.python} wheels on PyPI; the release matrix lists them as "
            "experimental on download.pytorch.org only (unverified here)",
        )
    ]


def admitted_versions(spec: Spec) -> tuple[str, ...]:
    """The table's torch releases the spec's torch requirement admits, oldest first."""
    request = _request(spec)
    return () if request is None else request.admitted


def _request(spec: Spec) -> _Request | None:
    torch = spec.dependency("torch")
    if torch is None:
        return None
    try:
        specifier = SpecifierSet(torch.specifier)
    except InvalidSpecifier:  # the loader refuses these; a hand-built Spec may not
        return None
    versions = table().versions

    # A "+cu121" label picks a build, not a release: admit releases by their public version
    # (_local_label reports a label that contradicts [cuda]).
    public = SpecifierSet(",".join(f"{c.operator}{_public(c.version)}" for c in specifier))

    def admits(version: str) -> bool:
        return public.contains(version, prereleases=True)

    major, minor, patch = Version(versions[-1]).release[:3]
    beyond = (f"{major}.{minor}.{patch + 1}", f"{major}.{minor + 1}.0", f"{major + 1}.0.0")
    newer = any(admits(v) for v in beyond)
    return _Request(
        file=_display(spec.path),
        specifier=torch.specifier,
        admitted=tuple(v for v in versions if admits(v)),
        newer=newer,
        python=spec.environment.python_minor,
        cuda=None if spec.cuda is None else spec.cuda.version,
        cudnn=None if spec.cuda is None else spec.cuda.cudnn,
    )


def _release(version: str) -> Release:
    release = table().release_of(version)
    assert release is not None, version
    return release


def _unknown_cuda(spec: Spec) -> list[Problem]:
    if spec.cuda is None:
        return []
    t = table()
    cuda = spec.cuda.version
    built = {c for r in t.releases for c in r.builds}
    if cuda in t.toolkits or cuda in built:
        return []
    known = sorted(set(t.toolkits) | built, key=_key)
    nearest = _nearest(cuda, known)
    return [
        Problem(
            _display(spec.path),
            "cuda.version",
            f"CUDA {cuda} is not a toolkit release in the compatibility table; it knows "
            f'{_and(known)} (nearest: cuda.version = "{nearest}")',
        )
    ]


def _local_label(spec: Spec, request: _Request) -> list[Problem]:
    """A ``+cuXY``/``+cpu`` pin in the specifier must match [cuda]."""
    want = "cpu" if spec.cuda is None else spec.cuda.flavor
    out = []
    for clause in SpecifierSet(request.specifier):
        if "+" not in clause.version:
            continue
        label = clause.version.split("+", 1)[1]
        if (label.startswith("cu") or label == "cpu") and label != want:
            what = "no [cuda] table" if spec.cuda is None else f"cuda.version {spec.cuda.version!r}"
            out.append(
                Problem(
                    request.file,
                    _torch_key(spec),
                    f"{clause} asks for the '+{label}' build but the spec has {what} "
                    f"(flavor '{want}'); drop the label or use '+{want}'",
                )
            )
    return out


# The CUDA a base image carries, from its tag: nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04.
_CUDA_IMAGE_TAG_RE = re.compile(r"^(\d{1,2})\.(\d{1,2})(?:\.\d+)*(?:-|$)")
# The build a PyTorch wheel index serves: https://download.pytorch.org/whl/cu128 (or whl/cpu;
# also under whl/nightly/ and whl/test/).
_TORCH_INDEX_RE = re.compile(r"/whl/(?:nightly/|test/)?(cu\d{2,4}|cpu)/?$")
# PyTorch's wheel indexes: PYTORCH_INDEX + "cu128" (or "cpu"), pytorch.org/get-started/locally.
# The one definition: lock's advice and init's drafts take it from here.
PYTORCH_INDEX = "https://download.pytorch.org/whl/"


def _cuda_sources(spec: Spec, only: str | None = None) -> list[Problem]:
    """The devcontainer's CUDA image and the PyTorch indexes must be the spec's CUDA (or CPU)."""
    file = _display(spec.path)
    out = []
    dc = spec.targets.get("devcontainer")
    flavor = spec.flavor_of("devcontainer")
    if isinstance(dc, DevcontainerTarget) and spec.cuda is not None and flavor.startswith("cu"):
        name, tag = _image_tag(dc.image)
        have = image_cuda(dc.image)
        if have is not None and have != spec.cuda.version:
            out.append(
                Problem(
                    file,
                    "targets.devcontainer.image",
                    f"the image's tag {tag!r} is CUDA {have} but cuda.version is "
                    f"{spec.cuda.version!r}: use a {spec.cuda.version}.x tag of {name}, "
                    f'or set cuda.version = "{have}"',
                )
            )
    for i, index in enumerate(spec.indexes):
        found = _TORCH_INDEX_RE.search(index.url)
        if found is None:
            continue
        serves = found[1]
        for f in spec.flavors:
            if not index.applies_to(f) or serves == f or only not in (None, f):
                continue
            what = "the CPU" if serves == "cpu" else f"the CUDA {_cuda_of(serves)}"
            if f.startswith("cu") and serves.startswith("cu"):
                fix = f"use {PYTORCH_INDEX}{f}"
            elif f.startswith("cu"):
                fix = 'limit it with flavors = ["cpu"]'
            elif spec.cuda is not None:
                fix = f'limit it with flavors = ["{spec.cuda.flavor}"]'
            else:
                fix = f"use {PYTORCH_INDEX}cpu"
            out.append(
                Problem(
                    file,
                    f"index[{i}].url",
                    f"{index.url!r} serves {what} builds of torch but applies to the {f} "
                    f"flavor{_cuda_note(spec, f)}; {fix}",
                )
            )
    return out


def _image_tag(image: str) -> tuple[str, str]:
    """``registry/name:tag@digest`` -> (``registry/name``, ``tag``); the tag is "" if none."""
    ref = image.split("@", 1)[0]
    name, colon, tag = ref.rpartition(":")
    return (name, tag) if colon and "/" not in tag else (ref, "")


def _cuda_of(flavor: str) -> str:
    """``"cu128"`` -> ``"12.8"``; ``"cu92"`` -> ``"9.2"``."""
    digits = flavor[2:]
    return f"{digits[:-1]}.{digits[-1]}"


def _cuda_note(spec: Spec, flavor: str) -> str:
    if flavor.startswith("cu") and spec.cuda is not None:
        return f" (cuda.version {spec.cuda.version!r})"
    return ""


def _unverified_lacking(request: _Request, versions: Iterable[str]) -> bool:
    assert request.cuda is not None
    return any(_release(v).unverified and not _release(v).has_build(request.cuda) for v in versions)


def _no_cuda_build(request: _Request) -> Problem:
    assert request.cuda is not None
    cuda = request.cuda
    admitted = request.admitted
    have = sorted({c for v in admitted for c in _release(v).builds}, key=_key)
    one = len(admitted) == 1
    subject = (
        f"torch {admitted[0]}"
        if one
        else (f"torch {_span(admitted)} (admitted by {request.specifier or 'any version'!r})")
    )
    fixes = [f'cuda.version = "{_nearest(cuda, have)}"']
    other = _nearest_release(admitted, lambda r: r.has_build(cuda))
    if other is not None:
        fixes.append(f"torch {other}, the nearest release with a CUDA {cuda} build")
    return Problem(
        request.file,
        "cuda.version",
        f"{subject} {'has' if one else 'have'} no CUDA {cuda} build; "
        f"{'it has' if one else 'they have'} {_and(have)} (use {' or '.join(fixes)})",
    )


def _no_python(request: _Request, pool: Sequence[str], *, cuda_filtered: bool) -> Problem:
    python = request.python
    have = sorted({p for v in pool for p in _release(v).python}, key=_key)
    one = len(pool) == 1
    if cuda_filtered:
        subject = f"torch {_span(pool)}, the admitted releases with a CUDA {request.cuda} build,"
    else:
        subject = (
            f"torch {pool[0]}"
            if one
            else f"torch {_span(pool)} (admitted by {request.specifier or 'any version'!r})"
        )
    fixes = [f'python = "{_nearest(python, have)}"']
    other = _nearest_release(
        pool, lambda r: python in r.python and (request.cuda is None or r.has_build(request.cuda))
    )
    if other is not None:
        extra = f" and a CUDA {request.cuda} build" if request.cuda is not None else ""
        fixes.append(f"torch {other}, the nearest release with Python {python} wheels{extra}")
    return Problem(
        request.file,
        "environment.python",
        f"{subject} {'has' if one else 'have'} no wheels for Python {python}; "
        f"{'it has' if one else 'they have'} {_and(have)} (use {' or '.join(fixes)})",
    )


def _index_only_python(request: _Request, pool: Sequence[str]) -> bool:
    return any(request.python in _release(v).python_index_only for v in pool)


def _cudnn_mismatch(request: _Request, pool: Sequence[str]) -> Problem | None:
    assert request.cuda is not None and request.cudnn is not None
    cuda, want = request.cuda, request.cudnn
    used = {v: _release(v).builds[cuda].cudnn for v in pool}
    known = {v: c for v, c in used.items() if c is not None}
    if not known or len(known) < len(used) or any(_prefix(want, c) for c in known.values()):
        return None
    cudnns = sorted(set(known.values()), key=_key)
    one = len(pool) == 1
    subject = (
        f"torch {pool[0]}'s CUDA {cuda} build uses"
        if one
        else (f"the CUDA {cuda} builds of torch {_span(pool)} use")
    )
    majors = sorted({c.split(".")[0] for c in cudnns}, key=int)
    fix = " or ".join(f'cudnn = "{m}"' for m in majors)
    return Problem(
        request.file,
        "cuda.cudnn",
        f"{subject} cuDNN {_and(cudnns)}, not {want} (use {fix}, or leave cudnn out "
        "to take what torch pins)",
    )


def _prefix(want: str, have: str) -> bool:
    """``"9"`` and ``"9.10"`` match ``"9.10.2.21"``; ``"9.1"`` does not."""
    w, h = want.split("."), have.split(".")
    return h[: len(w)] == w


def _nearest(version: str, choices: Sequence[str]) -> str:
    """The choice closest to ``version``: the same major first, then the fewest releases
    away (11.8 among 12.6, 12.8: 12.6), the newer one on a tie."""
    target = _key(version)

    def distance(choice: str) -> tuple[int, int, tuple[int, ...]]:
        k = _key(choice)
        between = sum(1 for c in choices if min(k, target) < _key(c) < max(k, target))
        return (abs(k[0] - target[0]), between, tuple(-p for p in k))

    return min(choices, key=distance)


def _nearest_release(admitted: Sequence[str], good: Callable[[Release], bool]) -> str | None:
    """The recorded release nearest to the admitted ones that satisfies ``good``."""
    versions = table().versions
    lo, hi = versions.index(admitted[0]), versions.index(admitted[-1])
    best: tuple[int, int, str] | None = None
    for i, v in enumerate(versions):
        if v in admitted or not good(_release(v)):
            continue
        distance = lo - i if i < lo else i - hi
        candidate = (distance, -i, v)
        if best is None or candidate < best:
            best = candidate
    return None if best is None else best[2]


def _what(request: _Request) -> str:
    return repr(request.specifier) if request.specifier else "an unpinned torch"


def _display(path: Path) -> str:
    """The spec's path as the user knows it: relative to the working directory when inside."""
    try:
        return str(path.relative_to(Path.cwd())) if path.is_absolute() else str(path)
    except ValueError:
        return str(path)


def _torch_key(spec: Spec) -> str:
    torch = spec.dependency("torch")
    return f"dependencies.{torch.name if torch is not None else 'torch'}"


def _span(versions: Sequence[str]) -> str:
    return versions[0] if len(versions) == 1 else f"{versions[0]} to {versions[-1]}"


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def example_image(cuda: str | None) -> str:
    """A devcontainer base image for a spec: for CUDA ``X.Y``, NVIDIA's ``nvidia/cuda`` devel
    image with cuDNN at the newest update the table records (``12.8`` ->
    ``nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04``), else ``ubuntu:24.04``. The tag follows
    the patterns of nvidia/cuda's published tags (``11.7.1-cudnn8-devel-ubuntu22.04``,
    ``12.3.2-cudnn9-devel-ubuntu22.04``, ``12.4.1-cudnn-devel-ubuntu22.04``,
    ``12.8.1-cudnn-devel-ubuntu24.04``, as public Dockerfiles name them; Docker Hub is not
    reachable here, so a tag is not checked to exist). Unpinned: ``check`` asks for a digest."""
    if cuda is None:
        return "ubuntu:24.04"
    toolkit = table().toolkits.get(cuda)
    found = re.search(r"Update ([0-9]+)", toolkit.latest_update) if toolkit else None
    patch = found[1] if found else "0"
    key = _key(cuda)
    cudnn = "cudnn8" if key < (12, 3) else "cudnn9" if key < (12, 4) else "cudnn"
    ubuntu = "24.04" if key >= (12, 6) else "22.04"
    return f"nvidia/cuda:{cuda}.{patch}-{cudnn}-devel-ubuntu{ubuntu}"


# --------------------------------------------------------------------------- ABI pairs


def abi_bounds(spec: Spec) -> list[AbiBound]:
    """The table's ABI bounds (``[abi.X]``) that the lock must add for ``spec``: those whose
    torch releases include every release the spec's torch admits, where the spec's own
    requirement of the package (or its absence) also admits versions outside the bound. The
    lock hands each to uv as a constraint (``bound.package + bound.requires``), so it binds the
    package whether the spec names it or another package pulls it in. ``[]`` for a spec whose
    torch also admits releases outside a bound: the lock then checks its pins
    (``abi_conflicts``). Source of the facts: ``orchestrator/data/compat.toml``."""
    torch = spec.dependency("torch")
    if torch is None:
        return []
    out = []
    for bound in table().abi:
        if not _only_inside(torch.specifier, bound.torch, table().versions):
            continue
        dep = spec.dependency(bound.package)
        if dep is None or _admits_outside(dep.specifier, bound.requires):
            out.append(bound)
    return out


def abi_notes(spec: Spec) -> list[str]:
    """One line per bound of ``abi_bounds(spec)``: what the lock takes, and why."""
    torch = spec.dependency("torch")
    out = []
    for bound in abi_bounds(spec):
        dep = spec.dependency(bound.package)
        key = f"dependencies.{dep.name if dep is not None else 'torch'}"
        out.append(
            str(
                Problem(
                    _display(spec.path),
                    key,
                    f"the locks take {bound.package} {bound.requires} ({bound.newest} is the "
                    f"newest): torch {torch.specifier if torch else ''!r} needs it; "
                    f"{bound.symptom}",
                )
            )
        )
    return out


def abi_conflicts(pins: Mapping[str, str]) -> list[str]:
    """What a resolved lock (``{canonical name: version}``) pairs across an ABI bound, one
    line each naming the pins, the symptom and the fix; ``[]`` when nothing does."""
    out = []
    torch = pins.get("torch")
    for bound in table().abi:
        have = pins.get(bound.package)
        if torch is None or have is None or not bound.covers(torch):
            continue
        if not SpecifierSet(bound.requires).contains(have, prereleases=True):
            out.append(
                f"torch {torch} beside {bound.package} {have} (add {bound.package} = "
                f'"{bound.requires}" to [dependencies], {bound.newest} being the newest, or use '
                f"{_outside(bound)}): {bound.symptom}"
            )
    return out


def _abi_problems(spec: Spec) -> list[Problem]:
    """A spec whose torch needs a bound that its own requirement of the package excludes."""
    torch = spec.dependency("torch")
    if torch is None:
        return []
    out = []
    for bound in table().abi:
        dep = spec.dependency(bound.package)
        if dep is None or not _only_inside(torch.specifier, bound.torch, table().versions):
            continue
        if not _admits_inside(dep.specifier, bound.requires, bound.newest):
            out.append(
                Problem(
                    _display(spec.path),
                    f"dependencies.{dep.name}",
                    f"{dep.specifier!r} admits no {bound.package} {bound.requires}, which torch "
                    f'{torch.specifier!r} needs (use {dep.name} = "{bound.requires}", '
                    f"{bound.newest} being the newest, or {_outside(bound)}): {bound.symptom}",
                )
            )
    return out


def _outside(bound: AbiBound) -> str:
    """The fix on torch's side: ``"torch 2.3 or newer"`` for a bound on ``"<2.3"``."""
    clauses = list(SpecifierSet(bound.torch))
    if len(clauses) == 1 and clauses[0].operator == "<":
        return f"torch {clauses[0].version} or newer"
    return f"a torch release outside {bound.torch!r}"


def _candidates(*specifiers: str) -> set[str]:
    """Versions that probe ``specifiers``: each clause's version, just above and just below
    it, and a far-off release (an open range admits it)."""
    out = {"9999"}
    for text in specifiers:
        for clause in SpecifierSet(text):
            try:
                release = list(Version(_public(clause.version)).release)
            except ValueError:  # a prefix match such as ==2.2.*
                release = [int(p) for p in clause.version.split(".") if p.isdigit()]
            if not release:
                continue
            out.add(".".join(map(str, release)))
            out.add(".".join(map(str, [*release[:-1], release[-1] + 1])))
            nonzero = [i for i, p in enumerate(release) if p > 0]
            if nonzero:
                i = nonzero[-1]
                out.add(".".join(map(str, [*release[:i], release[i] - 1, 999])))
    return out


def _admits(specifier: str, version: str) -> bool:
    public = ",".join(f"{c.operator}{_public(c.version)}" for c in SpecifierSet(specifier))
    return SpecifierSet(public).contains(version, prereleases=True)


def _only_inside(specifier: str, bound: str, known: Sequence[str]) -> bool:
    """Whether ``specifier`` admits some version, all of them inside ``bound`` (as far as the
    table's ``known`` releases and the specifiers' own versions show)."""
    admitted = [v for v in {*known, *_candidates(specifier, bound)} if _admits(specifier, v)]
    return bool(admitted) and all(_admits(bound, v) for v in admitted)


def _admits_outside(specifier: str, bound: str) -> bool:
    return any(
        _admits(specifier, v) and not _admits(bound, v) for v in _candidates(specifier, bound)
    )


def _admits_inside(specifier: str, bound: str, newest: str) -> bool:
    return any(
        _admits(specifier, v) and _admits(bound, v)
        for v in {newest, *_candidates(specifier, bound)}
    )


# --------------------------------------------------------------------------- GPU architectures: the spec


def architecture_warnings(spec: Spec) -> list[str]:
    """What the architecture check (``gpu_verdict``) could not prove for each of the spec's
    ``cuda.compute_capabilities``: no kernel list known for the build, an unverified list, or
    PTX only. One line when no list is known at all. lock, render, check and doctor print
    these; refusals are ``check``'s."""
    if spec.cuda is None or not spec.cuda.compute_capabilities:
        return []
    capabilities = spec.cuda.compute_capabilities
    what = "compute capability" if len(capabilities) == 1 else "compute capabilities"
    request = _request(spec)
    if request is None or request.cuda is None or not request.admitted:
        torch = spec.dependency("torch")
        why = (
            "no torch dependency"
            if torch is None
            else f"{torch.specifier!r} admits no torch release in the compatibility table"
        )
        message = f"{why}: {what} {_and(list(capabilities))} not checked"
        return [str(Problem(_display(spec.path), "cuda.compute_capabilities", message))]
    builds = _builds(request.admitted, request.cuda)
    if capabilities and builds and not any(b.archs for _, b in builds):
        message = _not_in_table(request.admitted, request.cuda, capabilities)
        return [str(Problem(request.file, "cuda.compute_capabilities", message))]
    out = []
    for capability in capabilities:
        _, warning = gpu_verdict(request.admitted, request.cuda, capability)
        if warning:
            out.append(str(Problem(request.file, "cuda.compute_capabilities", warning)))
    return out


# --------------------------------------------------------------------------- rendering


def render_matrix() -> str:
    """The table as Markdown, for docs/compatibility.md (a test keeps the two in step)."""
    t = table()
    lines = [
        "| torch | releases | Python (PyPI wheels) | PyPI default CUDA | CUDA builds (cuDNN) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in reversed(t.releases):
        builds = ", ".join(
            f"{b.cuda} ({b.cudnn or 'cuDNN unknown'}){' *unverified*' if b.unverified else ''}"
            for b in r.builds.values()
        )
        python = _span(r.python) + (
            f" (+{', '.join(r.python_index_only)} index only)" if r.python_index_only else ""
        )
        mark = " *unverified*" if r.unverified else ""
        lines.append(
            f"| {r.minor}{mark} | {', '.join(r.versions)} | {python} | {r.pypi_cuda} | {builds} |"
        )
    lines += [
        "",
        "| CUDA | min. Linux driver (GA) | newest update: its driver | minor-version compat."
        " | nixpkgs |",
        "| --- | --- | --- | --- | --- |",
    ]
    for k in sorted(t.toolkits.values(), key=lambda k: _key(k.version), reverse=True):
        mark = " *unverified*" if k.unverified else ""
        lines.append(
            f"| {k.version}{mark} | {k.driver} | {k.latest_update}: {k.driver_latest} | "
            f">= {k.minor_compat} | `{k.nix_attr}` {k.nixpkgs} |"
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- GPU architectures


def runs_on(archs: Sequence[str], capability: str) -> str | None:
    """How a build with kernels for ``archs`` runs on a GPU of compute ``capability``.

    ``archs``: TORCH_CUDA_ARCH_LIST entries (``"8.6"``, ``"12.0+PTX"``). Returns ``"native"``
    when it has a cubin of the GPU's major version and a minor at most the GPU's (NVIDIA's
    binary compatibility: sm_86 code runs on an 8.9 GPU), ``"ptx"`` when only PTX of an older
    or equal capability can be compiled for it at start-up (slow first start, results from a
    JIT), ``None`` when it has nothing for it ("no kernel image is available").
    Source: CUDA C++ Programming Guide, "Binary Compatibility" and "PTX Compatibility".
    """
    major, minor = _capability(capability)
    ptx = False
    for arch in archs:
        base, _, suffix = arch.partition("+")
        have = _capability(base)
        if have[0] == major and have[1] <= minor:
            return "native"
        if suffix.upper() == "PTX" and have <= (major, minor):
            ptx = True
    return "ptx" if ptx else None


def archs_from_torch(arch_list: Sequence[str]) -> tuple[str, ...]:
    """``torch.cuda.get_arch_list()`` (``["sm_86", "sm_90a", "compute_90"]``) in table form
    (``("8.6", "9.0", "9.0+PTX")``). ``sm_90a``-style variants count as their base."""
    out: list[str] = []
    for entry in arch_list:
        kind, _, digits = entry.partition("_")
        digits = digits.rstrip("af")
        if not digits.isdigit() or len(digits) < 2:
            continue
        arch = f"{digits[:-1]}.{digits[-1]}"
        out.append(arch + "+PTX" if kind == "compute" else arch)
    return tuple(out)


def sm_names(archs: Sequence[str]) -> str:
    """``("8.6", "9.0+PTX")`` -> ``"sm_86, sm_90 (+PTX)"``."""
    return ", ".join(
        "sm_" + a.partition("+")[0].replace(".", "") + (" (+PTX)" if "+" in a else "")
        for a in archs
    )


def builds_for(capability: str) -> list[str]:
    """Every build in the table with kernels for ``capability``: ``"2.10+cu128"``, newest
    release first; lists not tied to a release are marked ``(unverified)``."""
    out: list[str] = []
    for release in reversed(table().releases):
        for build in release.builds.values():
            if build.archs and runs_on(build.archs, capability) == "native":
                mark = " (unverified)" if build.archs_unverified else ""
                out.append(f"{release.minor}+cu{build.cuda.replace('.', '')}{mark}")
    return out


# When the table records no build with kernels for a GPU: it does not know every build's list.
NO_KNOWN_BUILD = "not known (the table records kernel lists for some builds only)"


def gpu_verdict(
    torch_versions: Sequence[str], cuda: str, capability: str
) -> tuple[str | None, str | None]:
    """``(refusal, warning)`` for a GPU of ``capability`` under the table's ``cuda`` build of
    ``torch_versions`` (releases in the table). A refusal when every such build with a known
    list lacks kernels for it; a warning when only PTX or unverified lists cover it, or when
    no list is known. ``(None, None)``: it runs natively."""
    builds = _builds(torch_versions, cuda)
    known = [(v, b) for v, b in builds if b.archs]
    if not known:
        return None, (_not_in_table(torch_versions, cuda, [capability]) if builds else None)
    fits = {v: runs_on(b.archs, capability) for v, b in known}
    sm = "sm_" + capability.replace(".", "")
    if any(f == "native" for f in fits.values()):
        return None, None
    others = builds_for(capability)
    alternatives = ", ".join(others) if others else NO_KNOWN_BUILD
    build = known[-1][1]
    what = (
        f"torch {_span([v for v, _ in known])}+cu{cuda.replace('.', '')} has no kernels for "
        f"compute capability {capability} ({sm}; it is built for {sm_names(build.archs)})"
    )
    if any(f == "ptx" for f in fits.values()):
        return (
            None,
            f"{what} except PTX compiled at start-up; torch builds with {sm}: {alternatives}",
        )
    if all(b.archs_unverified for _, b in known) or len(known) < len(builds):
        return None, f"{what}, as far as the table knows; torch builds with {sm}: {alternatives}"
    return (
        f"{what}: 'no kernel image is available'; torch builds that have them: {alternatives}",
        None,
    )


def _not_in_table(torch_versions: Sequence[str], cuda: str, capabilities: Sequence[str]) -> str:
    """Says that no build's kernel list is known, so ``capabilities`` were not checked."""
    what = "compute capability" if len(capabilities) == 1 else "compute capabilities"
    return (
        f"which GPUs torch {_span(torch_versions)} cu{cuda.replace('.', '')} has kernels for is "
        f"not in the compatibility table: {what} {_and(list(capabilities))} not checked"
    )


def _builds(torch_versions: Sequence[str], cuda: str) -> list[tuple[str, Build]]:
    """``(release, build)`` of the table's ``cuda`` build of each of ``torch_versions``."""
    return [
        (v, b)
        for v in torch_versions
        if (r := table().release_of(v)) is not None and (b := r.builds.get(cuda)) is not None
    ]


def _capability(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    return int(major), int(minor or 0)
