"""Load ``environment.toml`` into a frozen ``Spec``.

Loading never stops at the first problem: every problem is collected with its key path
and reported together as one ``SpecError`` (exit 2). Values that later reach Nix, a
Dockerfile, JSON or a shell line are validated here against a strict shape, so renderers
only ever see values they can represent safely.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.determinism_settings import (
    MAX_STEPS,
    SET_AT_LAUNCH,
    DeterminismSettings,
    check_values,
)
from orchestrator.errors import Problem, SpecError
from orchestrator.messages import clip, quote, redact
from orchestrator.schema import Reader as _Reader
from orchestrator.schema import between, expected, of
from orchestrator.schema import join as _join
from orchestrator.schema import shape as _shape
from orchestrator.tolerances import DEFAULTS, RANGE, Tolerances, valid

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

SPEC_FILE = "environment.toml"

# Nix's system names. CUDA flavors are locked for the Linux ones only (no CUDA on macOS).
SYSTEMS = ("x86_64-linux", "aarch64-linux", "aarch64-darwin", "x86_64-darwin")
LINUX_SYSTEMS = ("x86_64-linux", "aarch64-linux")
# The oldest macOS a darwin lock installs on, when [environment] macos is not set: torch 2.13's
# macOS wheels are macosx_14_0_arm64 (PyPI), which uv's own default target (13.0) refuses.
DEFAULT_MACOS = "14.0"
TARGET_NAMES = ("host", "venv", "devcontainer", "nix")
DEFAULT_TARGETS = ("host", "venv")  # need no settings: verify runs them without a table


# Shapes of values that reach generated files. Anything outside them is refused at load.
# Every shape is matched against the whole value (``fullmatch``: no trailing newline slips
# past a ``$``) and in ASCII (``re.ASCII``: ``\d`` is 0-9, never an Arabic-Indic digit).
def _ascii(pattern: str) -> re.Pattern[str]:
    # \Z as well: a caller that uses .match (init does) gets a whole-value match too
    return re.compile(rf"(?:{pattern})\Z", re.ASCII)


_NAME_RE = _ascii(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_PYTHON_RE = _ascii(r"3\.(\d{1,2})(\.\d{1,3})?")
_CUDA_RE = _ascii(r"(\d{1,2})\.(\d{1,2})")
_CUDNN_RE = _ascii(r"\d{1,2}(\.\d{1,3}){0,3}")
_PKG_RE = _ascii(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")
_SYSPKG_RE = _ascii(r"[a-z0-9][a-z0-9.+_-]{0,63}")
_NIX_ATTR_RE = _ascii(r"[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*")
_ENV_NAME_RE = _ascii(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_EXTENSION_RE = _ascii(r"[A-Za-z0-9][A-Za-z0-9-]*\.[A-Za-z0-9][A-Za-z0-9.-]*")
_USER_RE = _ascii(r"[a-z_][a-z0-9_-]{0,31}")
_NIXPKGS_RE = _ascii(r"github:NixOS/nixpkgs/[0-9a-f]{40}")
# A pin that loads and is one: nixos-unstable of 2026-10-01 (docs/targets.md, "Choosing a
# nixpkgs pin"), this repository's own. Messages and init's templates offer it as the example.
EXAMPLE_NIXPKGS = "github:NixOS/nixpkgs/c59305bab2065cfecc4944690d9eedbb56f3a9fa"
_NIXPKGS_ANY_RE = _ascii(
    r"(github|gitlab|git\+https|https|path|tarball\+https):[A-Za-z0-9._~:/?#@!&'()*+,;=%-]+"
)
# registry/path:tag@sha256:digest, Docker's reference grammar (lower-case path components).
_IMAGE_RE = _ascii(
    r"(?P<name>(?:[a-z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?"
)
_SHM_RE = _ascii(r"[1-9][0-9]{0,6}[kmg]")
_URL_RE = _ascii(r"(https?://|file://|/)[A-Za-z0-9._~:/?#@!&()*+,;=%-]+")
# Variables the launch environment sets (determinism_settings.SET_AT_LAUNCH) or the system owns.
_RESERVED_VARIABLES = frozenset({*SET_AT_LAUNCH, "PATH", "HOME", "VIRTUAL_ENV"})
_PROBE_RE = _ascii(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")
# A spec is a page of settings; anything this large is a mistake (or an attack on the parser).
MAX_SPEC_BYTES = 1_000_000


# --------------------------------------------------------------------------- the data


@dataclass(frozen=True, kw_only=True)
class Environment:
    name: str
    python: str
    systems: tuple[str, ...] = ("x86_64-linux",)
    macos: str | None = None  # the oldest macOS the darwin locks install on; None: DEFAULT_MACOS

    @property
    def macos_target(self) -> str:
        """The macOS deployment target of the darwin locks (``MACOSX_DEPLOYMENT_TARGET``)."""
        return self.macos or DEFAULT_MACOS

    @property
    def python_minor(self) -> str:
        """``"3.11"`` for both ``"3.11"`` and ``"3.11.9"``."""
        return ".".join(self.python.split(".")[:2])


@dataclass(frozen=True, kw_only=True)
class Cuda:
    version: str
    cudnn: str | None = None
    # GPUs this environment must run on, by compute capability ("8.6", "12.0"): checked
    # against the torch build's architectures before anything is installed (compat).
    compute_capabilities: tuple[str, ...] = ()

    @property
    def flavor(self) -> str:
        """The lock flavor of this toolkit: ``"12.8"`` -> ``"cu128"``."""
        return "cu" + self.version.replace(".", "")

    @property
    def nix_attr(self) -> str:
        """The nixpkgs package set: ``"12.8"`` -> ``"cudaPackages_12_8"``."""
        return "cudaPackages_" + self.version.replace(".", "_")


@dataclass(frozen=True, kw_only=True)
class Dependency:
    name: str
    specifier: str = ""
    extras: tuple[str, ...] = ()
    markers: str = ""
    flavors: tuple[str, ...] = ()  # empty: every flavor; "cuda" means the CUDA flavor

    def applies_to(self, flavor: str) -> bool:
        """Whether the lock of ``flavor`` holds this dependency."""
        return _in_flavors(flavor, self.flavors)

    def requirement(self) -> str:
        """The PEP 508 line handed to the resolver."""
        extras = f"[{','.join(self.extras)}]" if self.extras else ""
        markers = f"; {self.markers}" if self.markers else ""
        return f"{self.name}{extras}{self.specifier}{markers}"


@dataclass(frozen=True, kw_only=True)
class LocalPackage:
    """The project's own code from a folder of the repository, a ``[dependencies]`` table
    with ``path`` (``sd-scripts = { path = "sd-scripts", editable = true }``; ``-e .`` is
    ``path = "."``). Its dependencies are resolved into the lock with the rest; the package
    itself is not locked (it has no release to hash) but installed after the lock, without
    dependencies (``uv pip install --no-deps [-e] PATH``), in every target that runs the
    project's code."""

    name: str
    path: str  # relative to the spec's folder and inside it, "/"-separated; "." is the folder
    editable: bool = False
    extras: tuple[str, ...] = ()
    flavors: tuple[str, ...] = ()  # empty: every flavor; "cuda" means the CUDA flavor

    def applies_to(self, flavor: str) -> bool:
        return _in_flavors(flavor, self.flavors)

    @property
    def target(self) -> str:
        """What ``uv pip install`` is given, relative to the spec's folder: ``./sd-scripts[train]``."""
        extras = f"[{','.join(self.extras)}]" if self.extras else ""
        return ("." if self.path == "." else f"./{self.path}") + extras


@dataclass(frozen=True, kw_only=True)
class Index:
    url: str
    kind: str = "index"  # "index" (PEP 503 simple index) or "find-links" (flat folder/page)
    flavors: tuple[str, ...] = ()  # empty: every flavor
    # empty: the index serves every package; else only these (uv's explicit index, Poetry's
    # explicit source): the other packages never look at it
    packages: tuple[str, ...] = ()
    systems: tuple[str, ...] = ()  # empty: every system (macOS takes PyPI's torch: leave it out)

    def applies_to(self, flavor: str, system: str | None = None) -> bool:
        """Whether the lock of ``flavor`` (for ``system``, when given) reads this source."""
        return _in_flavors(flavor, self.flavors) and (
            system is None or not self.systems or system in self.systems
        )


def _in_flavors(flavor: str, flavors: tuple[str, ...]) -> bool:
    """``flavors`` empty means every flavor; ``"cuda"`` stands for the spec's CUDA flavor."""
    return not flavors or flavor in flavors or (flavor.startswith("cu") and "cuda" in flavors)


@dataclass(frozen=True, kw_only=True)
class System:
    packages: tuple[str, ...] = ()
    nix: Mapping[str, str] = field(default_factory=dict)  # package -> nixpkgs attribute
    apt: Mapping[str, str] = field(default_factory=dict)  # package -> Debian/Ubuntu package


# The [determinism] table is one typed value, owned by orchestrator.determinism_settings.
Determinism = DeterminismSettings


@dataclass(frozen=True, kw_only=True)
class Variable:
    name: str
    default: str | None = None
    required: bool = False
    secret: bool = False
    description: str = ""


@dataclass(frozen=True, kw_only=True)
class Target:
    """Settings every target shares."""

    name: str
    flavor: str | None = None  # which lock this target installs; None: the spec's default
    required: bool = False  # a skip of a required target fails verify


@dataclass(frozen=True, kw_only=True)
class DevcontainerTarget(Target):
    image: str
    extensions: tuple[str, ...] = ("ms-python.python",)
    user: str = "dev"
    shm_size: str = "8g"  # the container's /dev/shm (docker/podman --shm-size)
    install_project: bool = False  # postCreateCommand: the workspace installed editable

    @property
    def pinned(self) -> bool:
        return "@sha256:" in self.image


@dataclass(frozen=True, kw_only=True)
class NixTarget(Target):
    nixpkgs: str

    @property
    def pinned(self) -> bool:
        return bool(_NIXPKGS_RE.fullmatch(self.nixpkgs))


@dataclass(frozen=True, kw_only=True)
class Verify:
    steps: int = 30
    runs: int = 2
    probe: str | None = None  # "package.module:function"; None: the built-in probe
    # The comparison tolerances, defaults from orchestrator.tolerances (bitwise; 1e-4 across
    # device models); ``tolerances`` is the typed value the verdict takes.
    rtol: float = DEFAULTS.rtol
    atol: float = DEFAULTS.atol
    cross_device_rtol: float = DEFAULTS.cross_device_rtol

    @property
    def tolerances(self) -> Tolerances:
        return Tolerances(rtol=self.rtol, atol=self.atol, cross_device_rtol=self.cross_device_rtol)


@dataclass(frozen=True, kw_only=True)
class CiSettings:
    """``[ci]``: the generated workflow (``envparity ci github``) and noxfile."""

    # what the CI jobs install to get envparity, pinned: an exact version, a URL at a commit or
    # a path in the repository ("." here); None: the envparity that renders (render/ci.py)
    envparity: str | None = None
    # runs-on labels (GitLab: tags) of the self-hosted GPU runners; empty: no GPU jobs
    gpu_runner_labels: tuple[str, ...] = ()
    # render writes a small generated noxfile.py calling nox_sessions: True always, False
    # never (the project's own registers the sessions), None when the project has none
    noxfile: bool | None = None
    providers: tuple[str, ...] = ("github",)  # which CI files render writes (CI_PROVIDERS)


@dataclass(frozen=True, kw_only=True)
class Spec:
    path: Path
    environment: Environment
    cuda: Cuda | None = None
    dependencies: tuple[Dependency, ...] = ()
    local_packages: tuple[LocalPackage, ...] = ()  # [dependencies] tables with a path
    indexes: tuple[Index, ...] = ()
    system: System = field(default_factory=System)
    determinism: Determinism = field(default_factory=Determinism)
    variables: tuple[Variable, ...] = ()
    targets: Mapping[str, Target] = field(default_factory=dict)
    verify: Verify = field(default_factory=Verify)
    ci: CiSettings | None = None  # None: no [ci] table, no workflow

    @property
    def root(self) -> Path:
        """The folder the spec lives in; generated files are written relative to it."""
        return self.path.parent

    @property
    def flavors(self) -> tuple[str, ...]:
        """Lock flavors: always ``cpu``; plus ``cuXY`` when a CUDA toolkit is given."""
        return ("cpu",) if self.cuda is None else (self.cuda.flavor, "cpu")

    def systems_of(self, flavor: str) -> tuple[str, ...]:
        """The systems ``flavor`` is locked for: every system for ``cpu``, the Linux ones for a
        CUDA flavor (NVIDIA's CUDA does not run on macOS)."""
        systems = self.environment.systems
        return systems if flavor == "cpu" else tuple(s for s in systems if s in LINUX_SYSTEMS)

    @property
    def default_flavor(self) -> str:
        return self.flavors[0]

    def flavor_of(self, target: str) -> str:
        """The flavor a target installs: its ``flavor``, else the CUDA flavor if any; for
        ``nix`` else ``cpu`` (the flake's default devShell: a contributor without a GPU gets
        CPU torch; ``nix develop .#cuXY`` is one command away)."""
        t = self.targets.get(target)
        if t is not None and t.flavor:
            return t.flavor
        return "cpu" if target == "nix" else self.default_flavor

    def dependency(self, name: str) -> Dependency | None:
        key = _canonical(name)
        return next((d for d in self.dependencies if _canonical(d.name) == key), None)

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-able dict of everything that determines the outputs."""
        data = asdict(self)
        data.pop("path")
        if data["cuda"] is not None and not data["cuda"]["compute_capabilities"]:
            # Added later, and never rendered: absent when unset, so the inputs hash of
            # every spec without it (and so every generated file) stays what it was.
            del data["cuda"]["compute_capabilities"]
        if not data["local_packages"]:  # likewise for local packages and scoped indexes
            del data["local_packages"]
        for index in data["indexes"]:
            if not index["packages"]:
                del index["packages"]
        for index in data["indexes"]:
            if not index["systems"]:
                del index["systems"]
        if data["environment"]["macos"] is None:  # added later too, absent when unset
            del data["environment"]["macos"]
        plain: dict[str, Any] = json.loads(json.dumps(data, sort_keys=True, default=_jsonable))
        return plain

    def digest(self, *parts: str) -> str:
        """sha256 of the named top-level parts (all when none are named), canonical JSON."""
        data = self.to_dict()
        chosen = {k: data[k] for k in parts} if parts else data
        blob = json.dumps(chosen, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()


def _jsonable(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(type(value).__name__)


def _canonical(name: str) -> str:
    from orchestrator.names import canonical_name  # not packaging.utils: see names.py

    return canonical_name(name)


# --------------------------------------------------------------------------- loading


_CAPABILITY_RE = _ascii(r"[1-9][0-9]?\.[0-9]")
_MACOS_RE = _ascii(r"1[1-9]\.[0-9]|[2-9][0-9]\.[0-9]")


def load(path: str | Path = SPEC_FILE) -> Spec:
    """Read and validate a spec file; raise ``SpecError`` listing every problem."""
    p = Path(path)
    file = str(path)
    try:
        with open(p, "rb") as handle:
            raw = handle.read(MAX_SPEC_BYTES + 1)
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise SpecError(
            [Problem(file, "", "no such file (create one with 'envparity init')")]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([Problem(file, "", f"cannot read: {clip(str(exc))}")]) from None
    return loads(text, path=p)


def loads(text: str, *, path: str | Path = SPEC_FILE) -> Spec:
    p = Path(path)
    file = str(path)
    bad = next(
        (c for c in p.name if ord(c) < 32 or 127 <= ord(c) < 160 or c in "\u2028\u2029"), None
    )
    if bad is not None:  # the name is written into every generated file's header comment
        raise SpecError(
            [
                Problem(
                    file.encode("unicode_escape").decode(),
                    "",
                    f"the file name contains the control character {bad!r}; rename it",
                )
            ]
        )
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError(
            [Problem(file, "", f"larger than {MAX_SPEC_BYTES:,} characters: not a spec file")]
        )
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError([Problem(file, "", f"TOML syntax error: {_reason(exc)}")]) from None
    except RecursionError:
        raise SpecError([Problem(file, "", "TOML nested too deeply")]) from None
    except ValueError as exc:  # tomllib lets int()'s digit limit through: 5,000-digit integers
        reason = clip(str(exc).split(";")[0])  # not int()'s advice to raise a Python limit
        raise SpecError([Problem(file, "", f"TOML value out of range: {reason}")]) from None
    r = _Reader(file)
    # The folder is resolved, the file name is not: a symlinked environment.toml is read
    # through its link, and its generated files go beside the link, not beside its target.
    located = p.absolute().parent.resolve() / p.name if p.is_absolute() or p.exists() else p
    spec = _build(r, data, located)
    if r.problems or spec is None:
        raise SpecError(r.problems)
    return spec


_TOP = (
    "environment",
    "cuda",
    "dependencies",
    "index",
    "system",
    "determinism",
    "variables",
    "targets",
    "verify",
    "ci",
)


def _build(r: _Reader, data: dict[str, Any], path: Path) -> Spec | None:
    r.known_keys(data, "", _TOP)
    environment = _environment(r, data)
    cuda = _cuda(r, data)
    local: list[LocalPackage] = []
    dependencies = _dependencies(r, data, cuda, local)
    indexes = _indexes(r, data, cuda)
    named = {_canonical(d.name) for d in dependencies} | {_canonical(p.name) for p in local}
    for i, index in enumerate(indexes):
        for j, package in enumerate(index.packages):
            if _canonical(package) not in named:
                r.problem(
                    f"index[{i}].packages[{j}]",
                    f"{quote(package)} is not in [dependencies]: an index kept to some packages "
                    "serves only packages the spec names (uv sends only direct dependencies "
                    "to such an index)",
                )
    system = _system(r, data)
    determinism = _determinism(r, data)
    variables = _variables(r, data)
    flavors = ("cpu",) if cuda is None else (cuda.flavor, "cpu")
    targets = _targets(r, data, flavors)
    verify = _verify(r, data)
    ci = _ci(r, data)
    if environment is not None:
        _check_systems(r, environment, cuda, indexes, targets)
    if environment is None or r.problems:
        return None
    return Spec(
        path=path,
        environment=environment,
        cuda=cuda,
        dependencies=dependencies,
        local_packages=tuple(local),
        indexes=indexes,
        system=system,
        determinism=determinism,
        variables=variables,
        targets=targets,
        verify=verify,
        ci=ci,
    )


def _environment(r: _Reader, data: dict[str, Any]) -> Environment | None:
    t = r.table(data, "environment", "", required=True)
    if t is None:
        return None
    r.known_keys(t, "environment", ("name", "python", "systems", "macos"))
    name = r.get(
        t,
        "name",
        "environment",
        str,
        required=True,
        check=_shape(_NAME_RE, "a name (letters, digits, '.', '_', '-'; at most 64)"),
    )
    python = r.get(
        t,
        "python",
        "environment",
        str,
        required=True,
        check=_shape(_PYTHON_RE, 'a Python version such as "3.11" or "3.11.9"'),
    )
    systems = r.strings(
        t,
        "systems",
        "environment",
        ("x86_64-linux",),
        check=_system_check,
    )
    if "systems" in t and not systems and not r.problems:
        r.problem("environment.systems", "must list at least one system")
    macos = r.get(
        t, "macos", "environment", str, check=_shape(_MACOS_RE, 'a macOS version such as "14.0"')
    )
    if name is None or python is None:
        return None
    return Environment(name=name, python=python, systems=systems, macos=macos)


def _check_systems(
    r: _Reader,
    environment: Environment,
    cuda: Cuda | None,
    indexes: tuple[Index, ...],
    targets: Mapping[str, Target],
) -> None:
    """What needs a Linux system has one; an index names only systems the spec has."""
    linux = [s for s in environment.systems if s in LINUX_SYSTEMS]
    if cuda is not None and not linux:
        r.problem(
            "environment.systems",
            "[cuda] needs a Linux system (x86_64-linux or aarch64-linux): CUDA flavors are "
            "locked for Linux only, macOS has no CUDA",
        )
    if "devcontainer" in targets and not linux:
        r.problem(
            "targets.devcontainer",
            "needs a Linux system in environment.systems: a container runs Linux (on Apple "
            "Silicon add aarch64-linux, for linux/arm64 images)",
        )
    for i, index in enumerate(indexes):
        for j, system in enumerate(index.systems):
            if system not in environment.systems:
                r.problem(
                    f"index[{i}].systems[{j}]",
                    f"{quote(system)} is not in environment.systems ({', '.join(environment.systems)})",
                )


def _system_check(s: str) -> str | None:
    return (
        None
        if s in SYSTEMS
        else f"{quote(s)} is not a supported system (supported: {', '.join(SYSTEMS)})"
    )


def _cuda(r: _Reader, data: dict[str, Any]) -> Cuda | None:
    t = r.table(data, "cuda", "")
    if t is None:
        return None
    r.known_keys(t, "cuda", ("version", "cudnn", "compute_capabilities"))
    version = r.get(
        t,
        "version",
        "cuda",
        str,
        required=True,
        check=_shape(_CUDA_RE, 'a CUDA toolkit version major.minor such as "12.8"'),
    )
    cudnn = r.get(
        t, "cudnn", "cuda", str, check=_shape(_CUDNN_RE, 'a cuDNN version such as "9" or "9.10"')
    )
    capabilities = r.strings(
        t,
        "compute_capabilities",
        "cuda",
        check=_shape(_CAPABILITY_RE, 'a compute capability major.minor such as "8.6" or "12.0"'),
    )
    return (
        None
        if version is None
        else Cuda(version=version, cudnn=cudnn, compute_capabilities=capabilities)
    )


def _flavor_check(cuda: Cuda | None) -> Callable[[str], str | None]:
    known = {"cpu", "cuda"} | ({cuda.flavor} if cuda else set())
    return lambda f: (
        None
        if f in known
        else f"{quote(f)} is not a flavor of this spec ({', '.join(sorted(known))})"
    )


def _dependencies(
    r: _Reader, data: dict[str, Any], cuda: Cuda | None, local: list[LocalPackage]
) -> tuple[Dependency, ...]:
    """The released packages; the tables with a ``path`` (local packages) go to ``local``."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    t = r.table(data, "dependencies", "")
    if t is None:
        return ()
    out: list[Dependency] = []
    seen: dict[str, str] = {}
    for name, value in t.items():
        key = _join("dependencies", name)
        if not _PKG_RE.fullmatch(name):
            r.problem(key, f"{quote(name)} is not a valid package name")
            continue
        if _canonical(name) in seen:
            r.problem(key, f"the same package as '{seen[_canonical(name)]}'")
            continue
        seen[_canonical(name)] = name
        extras: tuple[str, ...] = ()
        markers = ""
        flavors: tuple[str, ...] = ()
        if isinstance(value, dict) and "path" in value:
            package = _local_package(r, name, value, key, cuda)
            if package is not None:
                local.append(package)
            continue
        if isinstance(value, dict):
            r.known_keys(value, key, ("version", "extras", "markers", "flavors"))
            flavors = r.strings(value, "flavors", key, check=_flavor_check(cuda))
            version = r.get(value, "version", key, str, "") or ""
            extras = r.strings(value, "extras", key, check=_shape(_PKG_RE, "a valid extra name"))
            markers = r.get(value, "markers", key, str, "") or ""
            spec_key = f"{key}.version"
        elif isinstance(value, str):
            version, spec_key = value, key
        else:
            r.problem(
                key,
                expected("a version specifier string or a table", value),
            )
            continue
        version = version.strip()
        if version in ("", "*"):
            version = ""
        else:
            try:
                version = str(SpecifierSet(version))
            except InvalidSpecifier as exc:
                r.problem(spec_key, f"invalid specifier {quote(version)}: {_reason(exc)}")
                continue
            if "\n" in version:  # pragma: no cover - SpecifierSet rejects these already
                r.problem(spec_key, "must be one line")
                continue
        if markers:
            from packaging.markers import InvalidMarker, Marker  # costly import: only when used

            try:
                markers = str(Marker(markers))
            except InvalidMarker as exc:
                r.problem(f"{key}.markers", f"invalid marker {quote(markers)}: {_reason(exc)}")
                continue
        out.append(
            Dependency(
                name=name, specifier=version, extras=extras, markers=markers, flavors=flavors
            )
        )
    return tuple(sorted(out, key=lambda d: _canonical(d.name)))


# A folder inside the spec's: "/"-separated names, none of them "." or ".." (nor hidden).
_LOCAL_PATH_RE = _ascii(r"\.|[A-Za-z0-9_][A-Za-z0-9_.+-]*(/[A-Za-z0-9_][A-Za-z0-9_.+-]*)*")


def _local_package(
    r: _Reader, name: str, value: dict[str, Any], key: str, cuda: Cuda | None
) -> LocalPackage | None:
    r.known_keys(value, key, ("path", "editable", "extras", "flavors"))
    path = r.get(value, "path", key, str, "")
    editable = bool(r.get(value, "editable", key, bool, False))
    extras = r.strings(value, "extras", key, check=_shape(_PKG_RE, "a valid extra name"))
    flavors = r.strings(value, "flavors", key, check=_flavor_check(cuda))
    if path is None:
        return None
    shown = path.rstrip("/")
    shown = shown[2:] if shown.startswith("./") and shown != "./" else shown
    shown = "." if shown in ("", "./") else shown
    if not _LOCAL_PATH_RE.fullmatch(shown):
        r.problem(
            f"{key}.path",
            f"{quote(path)} is not a folder inside the spec's folder (a relative path such as "
            '"sd-scripts" or "."; no "..", no absolute path: the devcontainer and CI see only '
            "the repository)",
        )
        return None
    return LocalPackage(name=name, path=shown, editable=editable, extras=extras, flavors=flavors)


def _reason(exc: Exception) -> str:
    """The first line of a library's error, short (packaging adds the value and a caret)."""
    return clip((str(exc).splitlines() or [""])[0])


def _indexes(r: _Reader, data: dict[str, Any], cuda: Cuda | None) -> tuple[Index, ...]:
    value = data.get("index")
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        r.problem("index", expected("an array of tables ([[index]] entries)", value))
        return ()
    out = []
    for i, t in enumerate(value):
        path = f"index[{i}]"
        r.known_keys(t, path, ("url", "kind", "flavors", "packages", "systems"))
        url = r.get(
            t,
            "url",
            path,
            str,
            required=True,
            check=_index_url_problem,
        )
        kind = r.get(
            t,
            "kind",
            path,
            str,
            "index",
            check=lambda k: (
                None
                if k in ("index", "find-links")
                else f"{quote(k)} is not 'index' or 'find-links'"
            ),
        )
        flavors = r.strings(t, "flavors", path, check=_flavor_check(cuda))
        packages = r.strings(
            t, "packages", path, check=_shape(_PKG_RE, "a package name such as 'torch'")
        )
        if "packages" in t and not packages and isinstance(t["packages"], list):
            r.problem(f"{path}.packages", "must name at least one package (or leave it out)")
        if packages and kind == "find-links":
            r.problem(
                f"{path}.packages",
                'an index for some packages only must be kind = "index" (uv keeps packages to '
                "an index, not to find-links)",
            )
        systems = r.strings(t, "systems", path, check=_system_check)
        if url is not None and kind is not None:
            out.append(
                Index(url=url, kind=kind, flavors=flavors, packages=packages, systems=systems)
            )
    return tuple(out)


_url_shape = _shape(
    _URL_RE,
    "an http(s):// or file:// URL or an absolute path (no spaces, quotes, '$' or backticks)",
)
CREDENTIALS_ADVICE = (
    "credentials in a URL would be written into generated files (flake.nix, the Dockerfile, "
    "the CI workflow) and messages: "
    "write the URL without them and let uv find them, in a ~/.netrc entry for the host "
    "(uv and pip read it), with 'uv auth login HOST', or in a keyring "
    "(UV_KEYRING_PROVIDER=subprocess); envparity hands indexes to uv unnamed "
    "(--extra-index-url), so UV_INDEX_<NAME>_USERNAME/_PASSWORD do not apply. For envparity's "
    'own lock and verify, ENVPARITY_MIRRORS="URL=URL-with-credentials" also works'
)


def _index_url_problem(url: str) -> str | None:
    """The URL's shape; and no userinfo (``user:token@``): secrets never reach generated files."""
    from urllib.parse import urlsplit

    shape = _url_shape(url)
    if shape is None and "://" in url and "@" in urlsplit(url).netloc:
        return f"{quote(url)} holds credentials; {CREDENTIALS_ADVICE}"
    return shape


def _system(r: _Reader, data: dict[str, Any]) -> System:
    t = r.table(data, "system", "")
    if t is None:
        return System()
    r.known_keys(t, "system", ("packages", "nix", "apt"))
    packages = r.strings(
        t,
        "packages",
        "system",
        check=_shape(_SYSPKG_RE, "a system package name (lower-case letters, digits, '.+_-')"),
    )

    def listed(pkg: str) -> str | None:
        return None if pkg in packages else f"{quote(pkg)} is not in system.packages"

    maps = {
        key: r.entries(t, key, "system", of(str, _shape(regex, what)), key_check=listed)
        for key, regex, what in (
            ("nix", _NIX_ATTR_RE, "a nixpkgs attribute path"),
            ("apt", _SYSPKG_RE, "a Debian package name"),
        )
    }
    return System(packages=packages, nix=maps["nix"], apt=maps["apt"])


def _determinism(r: _Reader, data: dict[str, Any]) -> Determinism:
    t = r.table(data, "determinism", "")
    if t is None:
        return Determinism()
    p = "determinism"
    defaults = Determinism().to_dict()
    r.known_keys(t, p, tuple(defaults))
    values: dict[str, Any] = {
        "seed": r.get(t, "seed", p, int, defaults["seed"]),
        "tf32": r.get(t, "tf32", p, bool, False),
        "cudnn_benchmark": r.get(t, "cudnn_benchmark", p, bool, False),
        "threads": r.get(t, "threads", p, int),
        "deterministic_algorithms": t.get("deterministic_algorithms", True),
    }
    mode = values["deterministic_algorithms"]
    if not (isinstance(mode, bool) or mode == "warn"):
        r.problem(
            f"{p}.deterministic_algorithms",
            expected('a boolean or "warn"', mode),
        )
        values["deterministic_algorithms"] = True
    found = check_values(values)  # the ranges, worded once by the settings' owner
    for key, message in found:
        r.problem(f"{p}.{key}", message)
        values[key] = defaults[key]
    return Determinism(**values)


def _one_line(what: str) -> Callable[[str], str | None]:
    """Refuses control characters: C0 (newlines, escapes), DEL and C1 (U+0080-U+009F, which
    some terminals read as escape sequences)."""

    def check(value: str) -> str | None:
        bad = next((c for c in value if unicodedata.category(c) == "Cc"), None)
        return None if bad is None else f"{what} must be one line of printable text (found {bad!r})"

    return check


def _variables(r: _Reader, data: dict[str, Any]) -> tuple[Variable, ...]:
    t = r.table(data, "variables", "")
    if t is None:
        return ()
    out = []
    for name, value in t.items():
        path = _join("variables", name)
        if not _ENV_NAME_RE.fullmatch(name):
            r.problem(
                path, f"{quote(name)} is not an environment variable name (letters, digits, '_')"
            )
            continue
        if name in _RESERVED_VARIABLES or name.startswith("LD_"):
            r.problem(
                path,
                f"{quote(name)} is set by envparity or the system, not here "
                "([determinism] sets the launch environment)",
            )
            continue
        if isinstance(value, str):
            value = {"default": value}
        if not isinstance(value, dict):
            r.problem(
                path,
                expected("a table or a default string", value),
            )
            continue
        r.known_keys(value, path, ("default", "required", "secret", "description"))
        default = r.get(value, "default", path, str, check=_one_line("a default"))
        secret = bool(r.get(value, "secret", path, bool, False))
        if secret and default is not None:
            r.problem(f"{path}.default", "a secret has no default: secret values are never written")
        out.append(
            Variable(
                name=name,
                default=default,
                secret=secret,
                required=bool(r.get(value, "required", path, bool, False)),
                description=r.get(
                    value, "description", path, str, "", check=_one_line("a description")
                )
                or "",
            )
        )
    return tuple(sorted(out, key=lambda v: v.name))


def _targets(r: _Reader, data: dict[str, Any], flavors: tuple[str, ...]) -> dict[str, Target]:
    t = r.table(data, "targets", "")
    if t is None:
        return {}
    r.known_keys(t, "targets", TARGET_NAMES)
    out: dict[str, Target] = {}

    def check_flavor(f: str) -> str | None:
        return (
            None
            if f in flavors
            else f"{quote(f)} is not a flavor of this spec ({', '.join(flavors)})"
        )

    for name in TARGET_NAMES:
        if name not in t:
            continue
        tt = r.table(t, name, "targets")
        if tt is None:
            continue
        p = f"targets.{name}"
        flavor = r.get(tt, "flavor", p, str, check=check_flavor)
        required = bool(r.get(tt, "required", p, bool, False))
        if name == "devcontainer":
            r.known_keys(
                tt,
                p,
                (
                    "image",
                    "extensions",
                    "user",
                    "shm_size",
                    "install_project",
                    "flavor",
                    "required",
                ),
            )
            image = r.get(tt, "image", p, str, required=True, check=_image_problem)
            extensions = r.strings(
                tt,
                "extensions",
                p,
                ("ms-python.python",),
                check=_shape(_EXTENSION_RE, "a VS Code extension id (publisher.name)"),
            )
            user = r.get(
                tt,
                "user",
                p,
                str,
                "dev",
                check=_devcontainer_user,
            )
            shm_size = r.get(
                tt,
                "shm_size",
                p,
                str,
                "8g",
                check=_shape(_SHM_RE, 'a size such as "8g" or "512m" (a number, then k, m or g)'),
            )
            install_project = bool(r.get(tt, "install_project", p, bool, False))
            if image is not None:
                out[name] = DevcontainerTarget(
                    name=name,
                    image=image,
                    extensions=extensions,
                    user=user or "dev",
                    shm_size=shm_size or "8g",
                    install_project=install_project,
                    flavor=flavor,
                    required=required,
                )
        elif name == "nix":
            r.known_keys(tt, p, ("nixpkgs", "flavor", "required"))
            nixpkgs = r.get(
                tt,
                "nixpkgs",
                p,
                str,
                required=True,
                check=_shape(
                    _NIXPKGS_ANY_RE,
                    f'a flake reference such as "{EXAMPLE_NIXPKGS}" (a commit a nixpkgs '
                    "channel published: docs/targets.md)",
                ),
            )
            if nixpkgs is not None:
                out[name] = NixTarget(name=name, nixpkgs=nixpkgs, flavor=flavor, required=required)
        else:
            r.known_keys(tt, p, ("flavor", "required"))
            out[name] = Target(name=name, flavor=flavor, required=required)
    return out


# uid 0 in Debian/Ubuntu images (root) and the BSD spelling some images carry (toor).
_ROOT_USERS = frozenset({"root", "toor"})


def _devcontainer_user(user: str) -> str | None:
    """A Linux user name that is not root: the Dockerfile gives the user uid 1000 (removing an
    image's own uid-1000 user first), and an existing root account would keep uid 0."""
    if user in _ROOT_USERS:
        return (
            f"{quote(user)} is root (uid 0): the container runs as a non-root user with uid 1000 "
            "that updateRemoteUserUID maps to yours; name one, e.g. 'dev' (the default)"
        )
    return _shape(_USER_RE, "a Linux user name")(user)


def _image_problem(image: str) -> str | None:
    if not _IMAGE_RE.fullmatch(image):
        return (
            f"{quote(image)} is not an image reference "
            "(registry/name:tag, optionally @sha256:<64 hex digits>)"
        )
    return None


def _verify(r: _Reader, data: dict[str, Any]) -> Verify:
    t = r.table(data, "verify", "")
    if t is None:
        return Verify()
    p = "verify"
    d = Verify()
    r.known_keys(t, p, ("steps", "runs", "probe", "rtol", "atol", "cross_device_rtol"))
    positive = between(1, MAX_STEPS)

    def tol(x: float) -> str | None:
        return None if valid(x) else f"{quote(x)} is not a tolerance in {RANGE}"

    return Verify(
        steps=r.get(t, "steps", p, int, d.steps, check=positive) or d.steps,
        runs=r.get(
            t,
            "runs",
            p,
            int,
            d.runs,
            check=between(2, 100),
        )
        or d.runs,
        probe=r.get(
            t,
            "probe",
            p,
            str,
            check=_shape(_PROBE_RE, "a probe reference 'package.module:function'"),
        ),
        rtol=_or(r.get(t, "rtol", p, float, check=tol), d.rtol),
        atol=_or(r.get(t, "atol", p, float, check=tol), d.atol),
        cross_device_rtol=_or(
            r.get(t, "cross_device_rtol", p, float, check=tol), d.cross_device_rtol
        ),
    )


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


_LABEL_RE = _ascii(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_REQUIREMENT_RE = _ascii(r"[A-Za-z0-9./][A-Za-z0-9._+/@:=<>!~,\[\] -]{0,199}")


_requirement_shape = _shape(_REQUIREMENT_RE, "a requirement or path (e.g. 'envparity==0.1.0', '.')")


def _requirement_problem(value: str) -> str | None:
    """The shape; and no URL with userinfo: the workflow file is committed."""
    shape = _requirement_shape(value)
    if shape is None and redact(value) != value:
        return f"{quote(value)} holds credentials; {CREDENTIALS_ADVICE}"
    return shape


CI_PROVIDERS = (
    "github",
    "gitlab",
)  # envparity ci github: .github/workflows; gitlab: .gitlab-ci.yml
_VCS_SCHEMES = ("git+", "hg+", "svn+", "bzr+")
UNPINNED_ADVICE = (
    "a bare name or a range installs whatever an index serves under that name (envparity is "
    "not on PyPI: anyone may publish it there); give an exact version ('envparity==0.1.0'), a "
    "VCS URL at a commit ('envparity @ git+https://host/envparity@<commit>') or a path in the "
    "repository ('.')"
)


def _ci_install_problem(value: str) -> str | None:
    """``[ci] envparity``: the shape, no credentials, and pinned like pre-commit's ``rev``: a
    path inside the repository, a URL naming one file or commit, or an exact version."""
    problem = _requirement_problem(value)
    if problem is not None:
        return problem
    name, _, url = value.partition(" @ ") if " @ " in value else ("", "", value)
    if "://" in url:
        if url.startswith("file:"):
            return f"{quote(value)} is a file: URL, a path on this machine, not in the CI runner's checkout; give a path in the repository ('./vendor/...')"
        path = url.split("://", 1)[1]
        if url.startswith(_VCS_SCHEMES) and "@" not in path.rsplit("/", 1)[-1]:
            return f"{quote(value)} is not pinned: a VCS URL without '@<commit>' installs whatever the branch holds when the job runs; append '@<commit>' (or a tag)"
        return None
    if not name and (value.startswith(".") or "/" in value):
        if value.startswith("/") or value == ".." or value.startswith("../"):
            return f"{quote(value)} is a path outside the repository, which the CI runner's checkout does not have; give a path in the repository ('.', './vendor/...')"
        return None
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        req = Requirement(value)
    except InvalidRequirement:
        return f"{quote(value)} is not a requirement or path (e.g. 'envparity==0.1.0', '.')"
    specs = list(req.specifier)
    exact = len(specs) == 1 and (
        specs[0].operator == "===" or (specs[0].operator == "==" and "*" not in specs[0].version)
    )
    return None if exact else f"{quote(value)} is not pinned: {UNPINNED_ADVICE}"


def _ci(r: _Reader, data: dict[str, Any]) -> CiSettings | None:
    t = r.table(data, "ci", "")
    if t is None:
        return None
    p = "ci"
    d = CiSettings()
    r.known_keys(t, p, ("envparity", "gpu_runner_labels", "noxfile", "providers"))
    providers = r.strings(
        t,
        "providers",
        p,
        d.providers,
        check=lambda v: (
            None if v in CI_PROVIDERS else f"{quote(v)} is not one of {', '.join(CI_PROVIDERS)}"
        ),
    )
    if "providers" in t and not t["providers"]:
        r.problem(f"{p}.providers", f"empty; name one or more of {', '.join(CI_PROVIDERS)}")
    return CiSettings(
        envparity=r.get(t, "envparity", p, str, check=_ci_install_problem),
        gpu_runner_labels=r.strings(
            t,
            "gpu_runner_labels",
            p,
            check=_shape(_LABEL_RE, "a runner label (letters, digits, '.', '_', '-')"),
        ),
        noxfile=r.get(t, "noxfile", p, bool),
        providers=tuple(dict.fromkeys(providers)) or d.providers,
    )
