"""Lock every Python package with hashes, one file per flavor, resolved by uv for the target
platform (not the machine running the resolver).

``locks/<flavor>.txt`` is for x86_64-linux; aarch64-linux gets ``locks/<flavor>-aarch64.txt``,
macOS ``locks/<flavor>-aarch64-darwin.txt`` / ``-x86_64-darwin.txt`` (the cpu flavor only:
CUDA flavors are locked for Linux alone). The lock holds pins and hashes only: the package
sources (``[[index]]``) are passed by whoever installs it, so a mirror can stand in for an
index without changing the lock. Each flavor's locks are also written as one PEP 751 file,
``locks/pylock.<flavor>.toml``, with URLs, hashes and a marker per system
(``orchestrator.pylock``).

Mirrors: ``ENVPARITY_MIRRORS="URL=LOCATION ..."`` makes resolution and installs read
``LOCATION`` wherever the spec names ``URL`` (an air-gapped mirror, or a local wheel folder
in tests). A mirror behaves like the source it stands in for: a folder standing in for an
index is served to uv as a PEP 503 simple index (``file://``), so uv's index rules hold (the
first index that has a package is the only one asked for it) instead of the find-links rule
(a folder's files merged with PyPI's, newest wins). The lock is unchanged by a mirror: the
files, and so the hashes, are the same.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orchestrator import files
from orchestrator.compat import PYTORCH_INDEX
from orchestrator.errors import CheckFailed, EnvparityError, SpecError, ToolError, UsageError
from orchestrator.messages import quote
from orchestrator.spec import Index, LocalPackage, Spec

LOCK_DIR = "locks"
LOCK_FORMAT = 1
# uv's --python-platform per system; macOS also takes MACOSX_DEPLOYMENT_TARGET (the spec's
# environment.macos), which uv reads for its darwin targets (uv pip compile --help).
_PLATFORM = {
    "x86_64-linux": "x86_64-manylinux_2_28",
    "aarch64-linux": "aarch64-manylinux_2_28",
    "aarch64-darwin": "aarch64-apple-darwin",
    "x86_64-darwin": "x86_64-apple-darwin",
}
_SUFFIX = {"x86_64-linux": "", "aarch64-linux": "-aarch64"}  # as before macOS; others: -<system>
_PIN_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


@dataclass(frozen=True)
class LockTarget:
    flavor: str
    system: str

    @property
    def path(self) -> str:
        suffix = _SUFFIX.get(self.system, f"-{self.system}")
        return f"{LOCK_DIR}/{self.flavor}{suffix}.txt"

    @property
    def platform(self) -> str:
        return _PLATFORM[self.system]

    @property
    def darwin(self) -> bool:
        return self.system.endswith("-darwin")


def pylock_path(flavor: str) -> str:
    """The PEP 751 lock of a flavor, every system in one file (PEP 751's ``pylock.<name>.toml``)."""
    return f"{LOCK_DIR}/pylock.{flavor}.toml"


def lock_targets(spec: Spec, flavors: list[str] | None = None) -> list[LockTarget]:
    chosen = list(spec.flavors)
    if flavors:
        unknown = [f for f in flavors if f not in spec.flavors]
        if unknown:
            raise UsageError(
                f"unknown flavor {unknown[0]!r}; this spec's flavors are {', '.join(spec.flavors)}"
            )
        chosen = [f for f in chosen if f in flavors]
    return [LockTarget(f, s) for f in chosen for s in spec.systems_of(f)]


def this_system() -> str:
    """This machine as a Nix system name: ``x86_64-linux``, ``aarch64-linux``, ``aarch64-darwin``
    (Apple Silicon, whose ``platform.machine()`` is ``arm64``) or ``x86_64-darwin``; another OS
    gives ``<machine>-<sys.platform>``, which no spec locks."""
    import platform
    import sys

    machine = platform.machine().lower()
    machine = {"arm64": "aarch64", "amd64": "x86_64"}.get(machine, machine)
    return f"{machine}-{sys.platform}"


def local_target(spec: Spec, flavor: str) -> LockTarget:
    """The lock of ``flavor`` this machine installs: the one for its system when the spec locks
    it; on a Mac the cpu flavor's (CUDA flavors are locked for Linux only); on a machine the
    spec does not list, the flavor's first system's."""
    here = this_system()
    if here not in spec.systems_of(flavor) and here in spec.systems_of("cpu"):
        flavor = "cpu"
    systems = spec.systems_of(flavor)
    return LockTarget(flavor, here if here in systems else systems[0])


def sources(spec: Spec, flavor: str, system: str | None = None) -> tuple[Index, ...]:
    """The ``[[index]]`` entries a flavor's lock (for ``system``, when given) reads."""
    return tuple(i for i in spec.indexes if i.applies_to(flavor, system))


def inputs(spec: Spec, target: LockTarget) -> str:
    """Hash of exactly what determines a lock's content (a local package's build files too:
    its dependencies are locked)."""
    data: dict[str, object] = {
        "format": LOCK_FORMAT,
        "flavor": target.flavor,
        "platform": target.platform,
        "python": spec.environment.python,
        "requirements": requirements(spec, target.flavor),
        "sources": [
            (i.kind, i.url, *([list(i.packages)] if i.packages else []))
            for i in sources(spec, target.flavor, target.system)
        ],
    }
    # only when there are any: the hash of every other lock stays what it was
    bounds = constraints(spec, target.flavor)
    if bounds:
        data["constraints"] = bounds
    local = local_packages(spec, target.flavor)
    if local:
        data["local"] = [(p.target, p.editable, _build_files(spec, p)) for p in local]
    if target.darwin:  # the deployment target decides which macOS wheels fit
        data["macos"] = spec.environment.macos_target
    return files.inputs_hash(data)


def pylock_inputs(spec: Spec, flavor: str) -> str:
    """Hash of what a flavor's PEP 751 lock is made from: the inputs of each system's lock."""
    return files.inputs_hash(
        {"pylock": 1, "locks": [inputs(spec, t) for t in lock_targets(spec, [flavor])]}
    )


def constraints(spec: Spec, flavor: str) -> list[str]:
    """uv constraints the compatibility table adds to a flavor's lock (``compat.abi_bounds``):
    ``numpy<2`` for a torch built against NumPy 1.x, in the flavors that hold torch. They bind
    a package whoever pulls it in, and add none."""
    from orchestrator import compat

    torch = spec.dependency("torch")
    if torch is None or not torch.applies_to(flavor):
        return []
    return [f"{b.package}{b.requires}" for b in compat.abi_bounds(spec)]


def requirements(spec: Spec, flavor: str) -> list[str]:
    """The PEP 508 lines a flavor's lock resolves: every dependency that applies to it."""
    return [d.requirement() for d in spec.dependencies if d.applies_to(flavor)]


def local_packages(spec: Spec, flavor: str) -> tuple[LocalPackage, ...]:
    """The project's own packages (``[dependencies]`` tables with a ``path``) of a flavor."""
    return tuple(p for p in spec.local_packages if p.applies_to(flavor))


_BUILD_FILES = ("pyproject.toml", "setup.cfg", "setup.py")


def _build_files(spec: Spec, package: LocalPackage) -> str:
    """sha256 of the files that declare a local package's dependencies ("" when none)."""
    folder = spec.root / package.path
    texts = {name: files.read(folder / name, name) for name in _BUILD_FILES}
    return files.inputs_hash({k: v for k, v in texts.items() if v is not None})


def local_install_commands(spec: Spec, flavor: str, python: str) -> list[list[str]]:
    """``uv pip install --no-deps [-e] ./PATH`` for each local package of ``flavor``, into the
    interpreter ``python``, run from the spec's folder after the lock is installed: their
    dependencies are in the lock, hash-checked; the packages themselves have no release."""
    return [
        [
            "uv",
            "pip",
            "install",
            "--python",
            python,
            "--no-deps",
            *(["--editable"] if p.editable else []),
            p.target,
        ]
        for p in local_packages(spec, flavor)
    ]


def mirrors() -> dict[str, str]:
    """``ENVPARITY_MIRRORS`` as {spec URL: location to read instead}."""
    out = {}
    for item in os.environ.get("ENVPARITY_MIRRORS", "").split():
        url, sep, location = item.partition("=")
        if not sep or not url or not location:
            raise UsageError(f"ENVPARITY_MIRRORS: {quote(item)} is not URL=LOCATION")
        out[url.rstrip("/")] = location
    return out


def source_args(spec: Spec, flavor: str, system: str | None = None) -> list[str]:
    """uv arguments naming the package sources of a flavor, with mirrors applied.

    Each source keeps its kind whatever its location: an index mirrored by a local folder of
    distributions is passed as a generated ``file://`` simple index of that folder
    (``simple_index``), never as find-links. Raises ``UsageError`` for a mirror folder that
    does not exist.
    """
    args: list[str] = []
    for index, location in _located(spec, flavor, system):
        args += ["--find-links" if index.kind == "find-links" else "--extra-index-url", location]
    return args + index_strategy(spec, flavor, system)


def _located(spec: Spec, flavor: str, system: str | None = None) -> list[tuple[Index, str]]:
    """Each source of ``flavor`` with the location uv reads, mirrors applied."""
    out = []
    mirror = mirrors()
    for index in sources(spec, flavor, system):
        location = mirror.get(index.url.rstrip("/"), index.url)
        folder = None if index.kind == "find-links" else local_folder(location)
        if folder is not None:
            location = simple_index(folder, mirror_of=index.url)
        out.append((index, location))
    return out


def index_strategy(spec: Spec, flavor: str, system: str | None = None) -> list[str]:
    """Installing a lock whose packages come from an index kept to some packages: every
    index may serve any pinned file, since the lock's hashes decide which file is accepted
    (uv's default takes each package from the first index that has it, at any version)."""
    if any(i.packages for i in sources(spec, flavor, system)):
        return ["--index-strategy", "unsafe-best-match"]
    return []


def mirror_notes(spec: Spec, flavor: str, system: str | None = None) -> list[str]:
    """One line per index a local folder stands in for, naming what uv's messages call it."""
    out = []
    mirror = mirrors()
    for index in sources(spec, flavor, system):
        location = mirror.get(index.url.rstrip("/"))
        folder = None if location is None or index.kind == "find-links" else local_folder(location)
        if folder is not None:
            out.append(
                f"{simple_index(folder, mirror_of=index.url)} is {folder} served as an index: "
                f"ENVPARITY_MIRRORS has it stand in for {index.url}"
            )
    return out


def local_folder(location: str) -> Path | None:
    """The folder a mirror location names (a path or a ``file://`` URL); None for a remote URL."""
    if location.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(location).path))
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", location):
        return None
    return Path(location)


def simple_index(folder: Path, *, mirror_of: str = "") -> str:
    """A ``file://`` URL of a PEP 503 simple index serving the distributions in ``folder``.

    A folder that already is a simple index (it has an ``index.html``) is used as it is.
    Otherwise the index pages are generated under the system's temporary folder, keyed by
    the folder's path and the names, sizes and times of its files, and reused while those
    stay the same; pages link to the files where they are (no copies, no hashes: uv hashes
    the files it locks). Raises ``UsageError`` when ``folder`` is not a folder.
    """
    import html
    import shutil
    import tempfile

    from packaging.utils import (
        InvalidSdistFilename,
        InvalidWheelFilename,
        parse_sdist_filename,
        parse_wheel_filename,
    )

    folder = folder.expanduser().resolve()
    if not folder.is_dir():
        raise UsageError(
            f"ENVPARITY_MIRRORS: {folder} (the mirror of {mirror_of or 'an index'}) is not a folder"
        )
    if (folder / "index.html").is_file():
        return folder.as_uri()
    projects: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        try:
            if path.name.endswith(".whl"):
                name = parse_wheel_filename(path.name)[0]
            elif path.name.endswith((".tar.gz", ".zip")):
                name = parse_sdist_filename(path.name)[0]
            else:
                continue
        except (InvalidWheelFilename, InvalidSdistFilename):
            continue  # not a distribution: an index would not list it either
        projects.setdefault(str(name), []).append(path)
    stamp = {
        "folder": str(folder),
        "files": [
            (p.name, p.stat().st_size, p.stat().st_mtime_ns) for ps in projects.values() for p in ps
        ],
    }
    root = Path(tempfile.gettempdir()) / f"envparity-simple-{files.inputs_hash(stamp)[:16]}"
    if not (root / "index.html").is_file():
        shutil.rmtree(root, ignore_errors=True)  # an unfinished index from an older version
        tmp = Path(tempfile.mkdtemp(prefix=root.name + ".tmp-", dir=root.parent))
        for project, paths in projects.items():
            links = "".join(
                f'<a href="{p.as_uri()}">{html.escape(p.name)}</a><br>\n' for p in paths
            )
            (tmp / project).mkdir()
            (tmp / project / "index.html").write_text(_page(links), encoding="utf-8")
        listing = "".join(f'<a href="{n}/">{n}</a><br>\n' for n in projects)
        (tmp / "index.html").write_text(_page(listing), encoding="utf-8")
        try:
            os.replace(tmp, root)
        except OSError:  # another process made the same index first
            shutil.rmtree(tmp, ignore_errors=True)
    return root.as_uri()


def _page(body: str) -> str:
    return f"<!DOCTYPE html>\n<html><body>\n{body}</body></html>\n"


def install_args(spec: Spec, flavor: str, system: str | None = None) -> list[str]:
    """Sources as written in generated files (no mirrors: those are this machine's business)."""
    args: list[str] = []
    for index in sources(spec, flavor, system):
        args += ["--find-links" if index.kind == "find-links" else "--extra-index-url", index.url]
    return args + index_strategy(spec, flavor, system)


def resolve(spec: Spec, target: LockTarget, *, previous: str | None, upgrade: bool) -> str:
    """Run ``uv pip compile`` for one flavor and system; return the lock body."""
    import tempfile

    python = spec.environment.python
    with tempfile.TemporaryDirectory(prefix="envparity-lock-") as tmp:
        req, unscoped = _resolver_input(spec, target.flavor, Path(tmp), target.system)
        bounds = Path(tmp, CONSTRAINTS_NAME)
        bound = constraints(spec, target.flavor)
        bounds.write_text("".join(f"{c}\n" for c in bound), encoding="utf-8")
        out = Path(tmp, "lock.txt")
        if previous and not upgrade:
            out.write_text(previous, encoding="utf-8")  # uv keeps these pins where it can
        args = [
            "uv",
            "pip",
            "compile",
            str(req),
            "--output-file",
            str(out),
            "--generate-hashes",
            "--no-header",
            "--no-emit-index-url",
            "--no-emit-find-links",
            "--python-version",
            python,
            "--python-platform",
            target.platform,
            "--quiet",
            *(["--constraints", str(bounds)] if bound else []),
            *unscoped,
        ]
        if upgrade:
            args.append("--upgrade")
        kept = [
            f"{', '.join(i.packages)} only from {i.url}"
            for i in sources(spec, target.flavor, target.system)
            if i.packages
        ]
        scoped_note = (
            [
                f"{_PROJECT} is {spec.path.name}'s [dependencies], resolved through a "
                f"generated pyproject.toml that keeps {'; '.join(kept)} (index.packages)"
            ]
            if req.name == "pyproject.toml"
            else []
        )
        _run_uv(spec, target, args, notes=scoped_note)
        body = out.read_text(encoding="utf-8")
    for via in (f"{_PROJECT} ({req})", f"{_PROJECT} (pyproject.toml)"):  # a pyproject input
        body = body.replace(via, "-r environment.toml")  # worded as a requirements input's
    body = body.replace(str(req), "environment.toml").replace(str(bounds), CONSTRAINTS_NAME)
    body = _without_local(body)
    _check_flavor(spec, target, body)
    conflicts = compat_conflicts(body)
    if conflicts:
        raise ToolError(f"{target.path}: " + "; ".join(conflicts))
    return body


_PROJECT = "envparity-lock-input"  # the name of the generated pyproject.toml's project


def _resolver_input(
    spec: Spec, flavor: str, tmp: Path, system: str | None = None
) -> tuple[Path, list[str]]:
    """The file ``uv pip compile`` resolves, and the source arguments it is given.

    A requirements file in general. When an index is kept to some packages, a generated
    ``pyproject.toml`` instead, whose ``[tool.uv.sources]`` send those packages to it (an
    explicit ``[[tool.uv.index]]``): uv has no command-line option for that. Local packages
    are named by absolute path, so that their dependencies are resolved; ``_without_local``
    takes them out of the lock."""
    import json

    located = _located(spec, flavor, system)
    scoped = [(i, location) for i, location in located if i.packages]
    unscoped = [
        arg
        for i, location in located
        if not i.packages
        for arg in ("--find-links" if i.kind == "find-links" else "--extra-index-url", location)
    ]
    local = local_packages(spec, flavor)
    lines = requirements(spec, flavor)
    if not scoped:
        for p in local:
            where = (spec.root / p.path).resolve()
            extras = f"[{','.join(p.extras)}]" if p.extras else ""
            lines.append(
                f"-e {where}{extras}" if p.editable else f"{p.name}{extras} @ {where.as_uri()}"
            )
        req = tmp / "requirements.in"
        req.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return req, unscoped
    toml = json.dumps  # a JSON string is a valid TOML basic string
    deps = lines + [p.name + (f"[{','.join(p.extras)}]" if p.extras else "") for p in local]
    text = [
        "[project]",
        f"name = {toml(_PROJECT)}",
        'version = "0"',
        "dependencies = [" + ", ".join(toml(d) for d in deps) + "]",
        "",
    ]
    routes: dict[str, str] = {}
    for n, (index, location) in enumerate(scoped):
        text += ["[[tool.uv.index]]", f'name = "envparity-{n}"', f"url = {toml(location)}"]
        text += ["explicit = true", ""]
        for package in index.packages:
            routes.setdefault(package, f'{{ index = "envparity-{n}" }}')
    for p in local:
        folder = str((spec.root / p.path).resolve())
        routes[p.name] = f"{{ path = {toml(folder)}, editable = {str(p.editable).lower()} }}"
    text += ["[tool.uv.sources]", *(f"{toml(k)} = {v}" for k, v in routes.items())]
    req = tmp / "pyproject.toml"
    req.write_text("\n".join(text) + "\n", encoding="utf-8")
    return req, unscoped


def _without_local(body: str) -> str:
    """The lock body without the entries of local packages (``-e /path``, ``name @ file://``),
    which are installed after the lock, not from it."""
    out: list[str] = []
    skipping = False
    for line in body.splitlines(keepends=True):
        if not line[:1].isspace():
            skipping = line.startswith("-e ") or bool(re.match(r"^\S+ @ file://", line))
        if not skipping:
            out.append(line)
    return "".join(out)


# How a bound from the compatibility table is named in a lock's "# via -c ..." lines.
CONSTRAINTS_NAME = "envparity-compat-bounds.txt"


def compat_conflicts(body: str) -> list[str]:
    """The ABI pairs a lock body breaks (``compat.abi_conflicts`` of its pins)."""
    from orchestrator import compat

    return compat.abi_conflicts(pinned(body))


def _run_uv(
    spec: Spec, target: LockTarget, args: list[str], *, notes: list[str] | None = None
) -> None:
    """Run uv for ``target`` (macOS: with its deployment target); a failure is a ``ToolError``
    with uv's message, then ``notes``, what to change for a macOS target without wheels, and
    what each mirror is."""
    from orchestrator import process  # subprocess and logging: only when resolving

    env = {"UV_CUSTOM_COMPILE_COMMAND": "envparity lock"}
    if target.darwin:
        env["MACOSX_DEPLOYMENT_TARGET"] = spec.environment.macos_target
    try:
        process.run(args, extra_env=env)
    except process.CommandFailed as exc:
        more = [
            *(notes or []),
            *_no_wheels_hint(spec, target, str(exc)),
            *mirror_notes(spec, target.flavor, target.system),
        ]
        if not more:
            raise
        raise ToolError(f"{exc}\n" + "\n".join(more)) from None


def _no_wheels_hint(spec: Spec, target: LockTarget, error: str) -> list[str]:
    """What to change when uv found no wheel for a macOS target."""
    if not target.darwin or "has no wheels with a matching platform tag" not in error:
        return []
    if target.system == "x86_64-darwin":
        return [
            "PyTorch publishes no Intel macOS (x86_64) wheels after torch 2.2.2 (seen with uv "
            "against PyPI): drop x86_64-darwin from environment.systems, or pin torch<=2.2.2"
        ]
    return [
        f"the darwin locks target macOS {spec.environment.macos_target} (environment.macos); "
        "a wheel built for a newer macOS needs a higher one"
    ]


def resolve_pylock(spec: Spec, target: LockTarget, body: str) -> dict[str, object]:
    """uv's PEP 751 document for one lock body: exactly its pins (``--no-deps``), resolved for
    the target's platform, with the URL, size and hashes of each file uv found there."""
    import tempfile

    from orchestrator import pylock

    with tempfile.TemporaryDirectory(prefix="envparity-pylock-") as tmp:
        pins = Path(tmp, "pins.txt")
        pins.write_text(body, encoding="utf-8")
        out = Path(tmp, "pylock.toml")
        _run_uv(
            spec,
            target,
            [
                "uv", "pip", "compile", str(pins), "--no-deps", "--format", "pylock.toml",
                "--output-file", str(out), "--no-header", "--quiet",
                "--python-version", spec.environment.python,
                "--python-platform", target.platform,
                *source_args(spec, target.flavor, target.system),
            ],
        )  # fmt: skip
        return pylock.loads(out.read_text(encoding="utf-8"))


def render_pylock(
    spec: Spec, flavor: str, documents: dict[str, dict[str, object]]
) -> files.Generated:
    """The flavor's ``locks/pylock.<flavor>.toml`` from uv's documents, ``{system: document}``."""
    from orchestrator import pylock

    mirrored = {}
    mirror = mirrors()
    for index in sources(spec, flavor):
        location = mirror.get(index.url.rstrip("/"))
        if location is not None:
            folder = local_folder(location)
            prefix = folder.expanduser().resolve().as_uri() if folder is not None else location
            mirrored[prefix.rstrip("/") + "/"] = index.url
    data = pylock.merge(
        documents,
        python=spec.environment.python,
        macos=spec.environment.macos_target,
        mirrored=mirrored,
    )
    return files.Generated(
        path=pylock_path(flavor),
        body=pylock.dumps(data),
        inputs=pylock_inputs(spec, flavor),
        regenerate="envparity lock",
        spec_name=spec.path.name,
    )


def _check_flavor(spec: Spec, target: LockTarget, body: str) -> None:
    """Refuse a lock whose packages are not the flavor's: CUDA in cpu, another CUDA in cuXY.

    The advice fits the spec in hand: add the PyTorch index when the flavor has none, make it
    an index when it is find-links, fill the mirror when a mirror stands in for it."""
    pins = pinned(body)
    # The CUDA runtime wheels a CUDA build of torch pulls in (other nvidia-* packages, such
    # as nvidia-ml-py, are fine in a cpu lock).
    cuda_pkgs = sorted(
        p
        for p in pins
        if re.fullmatch(r"nvidia-(cuda-runtime|cudnn|cublas)(-cu\d+)?|cuda-toolkit", p)
    )
    if "+cpu" in pins.get("torch", "+cpu"):
        cuda_pkgs = []  # torch is a CPU build (or absent): whatever else pulled them is the user's
    runtime = next(
        (v for p, v in pins.items() if re.fullmatch(r"nvidia-cuda-runtime(-cu\d+)?", p)), None
    )
    if spec.cuda is not None and target.flavor == spec.cuda.flavor and runtime is not None:
        got = ".".join(runtime.split(".")[:2])
        if got != spec.cuda.version:
            raise ToolError(
                f"{target.path}: the {target.flavor} flavor resolved the CUDA {got} runtime "
                f"(nvidia-cuda-runtime {runtime}), not CUDA {spec.cuda.version}: PyPI's torch is built "
                f"for CUDA {got}. "
                + _index_advice(
                    spec, target.flavor, f"the PyTorch index for CUDA {spec.cuda.version}"
                )
            )
    if target.flavor == "cpu" and cuda_pkgs:
        raise ToolError(
            f"{target.path}: the cpu flavor resolved CUDA packages ({', '.join(cuda_pkgs[:3])}, ...): "
            f"torch {pins.get('torch', '?')} is PyPI's CUDA build. "
            + _index_advice(spec, "cpu", "the PyTorch CPU index")
        )
    mixed = torch_family_mismatch(pins)
    if mixed:
        raise ToolError(f"{target.path}: {mixed}" + _family_advice(spec, target.flavor, pins))


# Built against torch's C++ ABI and CUDA: each release pins one torch release exactly
# (torchvision's and torchaudio's setup.py: torch==$PYTORCH_VERSION), and a build runs only
# beside the torch build (cpu, cuXY) it was made with.
TORCH_BUILT = ("torchvision", "torchaudio")


def _build_label(version: str, torch: str) -> str:
    """The build a pin is: ``"cpu"``, ``"cu128"``; an unlabelled version is PyPI's build, made
    for PyPI's torch of the same release (its CUDA from the compatibility table)."""
    from orchestrator import compat

    local = version.partition("+")[2]
    if re.fullmatch(r"cpu|cu[0-9]{2,3}", local):
        return local
    cuda = compat.pypi_default_cuda(torch)
    return "pypi" if cuda is None else "cu" + cuda.replace(".", "")


def torch_family_mismatch(pins: dict[str, str]) -> str:
    """Why the lock's torchvision/torchaudio cannot run beside its torch ("" when they can).

    uv takes each package from the first index that has it: an index (or a mirror of one)
    holding torch but not torchvision gives the CPU torch beside PyPI's CUDA torchvision, a
    resolution PEP 440 accepts (``torch==2.13.0`` admits ``2.13.0+cpu``) that fails at run
    time (``operator torchvision::nms does not exist``)."""
    torch = pins.get("torch")
    if torch is None:
        return ""
    want = _build_label(torch, torch)
    wrong = [n for n in TORCH_BUILT if n in pins and _build_label(pins[n], torch) != want]
    if not wrong:
        return ""
    return (
        f"torch {torch} is {_build_words(torch, torch)}, but "
        + " and ".join(f"{n} {pins[n]} is {_build_words(pins[n], torch)}" for n in wrong)
        + ": their compiled operators run only beside the torch build they were made for "
        "(seen: operator torchvision::nms does not exist)"
    )


def _build_words(version: str, torch: str) -> str:
    from orchestrator import compat

    public, _, local = torch.partition("+")[0], "", version.partition("+")[2]
    if local == "cpu":
        return "the CPU build" if version == torch else f"built for torch {public}+cpu"
    if local:
        return f"the {local} build" if version == torch else f"built for torch {public}+{local}"
    cuda = compat.pypi_default_cuda(public)
    made = f" (CUDA {cuda})" if cuda else ""
    if version == torch:
        return f"PyPI's build{made}"
    return f"PyPI's build, made for PyPI's torch {public}{made}"


def _family_advice(spec: Spec, flavor: str, pins: dict[str, str]) -> str:
    """Where the matching builds are: the PyTorch index of the flavor's build, and the
    mirror standing in for it when one does."""
    url = PYTORCH_INDEX + flavor
    names = [n for n in TORCH_BUILT if n in pins]
    label = "cpu" if flavor == "cpu" else flavor
    public = pins["torch"].partition("+")[0]
    wanted = ", ".join(f"{n} {pins[n].partition('+')[0]}+{label}" for n in names)
    advice = (
        f". Take {' and '.join(names)} from the index with the builds for torch "
        f"{public}+{label}: {url} ({wanted})"
    )
    mirror = mirrors().get(url)
    if mirror is not None:
        advice += (
            f"; ENVPARITY_MIRRORS has {mirror} stand in for it: put those wheels there, "
            "or unset ENVPARITY_MIRRORS to use the index itself"
        )
    elif not any(i.url.rstrip("/") == url for i in sources(spec, flavor)):
        scope = '["cpu"]' if flavor == "cpu" else '["cuda"]'
        advice += f'; add it to {spec.path.name}: [[index]] url = "{url}" flavors = {scope}'
    return advice


def _index_advice(spec: Spec, flavor: str, what: str) -> str:
    """How to take torch from PyTorch's index for ``flavor``, given what the spec has now."""
    url = PYTORCH_INDEX + flavor
    index = next((i for i in sources(spec, flavor) if i.url.rstrip("/") == url), None)
    if index is None:
        scope = '["cpu"]' if flavor == "cpu" else '["cuda"]'
        return (
            f"Take torch from {what}: add it to {spec.path.name}:\n"
            f'  [[index]]\n  url = "{url}"\n  flavors = {scope}'
        )
    if index.kind == "find-links":
        return (
            f'{spec.path.name} names {url} with kind = "find-links": uv merges find-links with '
            "PyPI and takes the newest version, which is PyPI's. Make it an index: remove "
            '"kind" (or set kind = "index")'
        )
    mirror = mirrors().get(url)
    if mirror is not None:
        return (
            f"{spec.path.name} names {what} ({url}), mirrored by ENVPARITY_MIRRORS at {mirror}, "
            f"which holds no torch wheel for Python {spec.environment.python} on {target_platform(spec)}: "
            f"put the {flavor} wheels there, or unset ENVPARITY_MIRRORS to use the index itself"
        )
    return (
        f"{spec.path.name} names {what} ({url}), which offered no torch matching "
        f"{_torch_requirement(spec)}: pin a torch release that index has"
    )


def target_platform(spec: Spec) -> str:
    return " and ".join(_PLATFORM[s] for s in spec.environment.systems)


def _torch_requirement(spec: Spec) -> str:
    dep = spec.dependency("torch")
    return dep.requirement() if dep is not None else "torch (pulled in by another package)"


def pinned(body: str) -> dict[str, str]:
    """{canonical name (PEP 503): version} of every pin in a lock body."""
    from orchestrator.names import canonical_name

    out = {}
    for line in body.splitlines():
        m = _PIN_RE.match(line)
        if m:
            out[canonical_name(m[1])] = m[2]
    return out


def render_lock(spec: Spec, target: LockTarget, body: str) -> files.Generated:
    return files.Generated(
        path=target.path,
        body=body,
        inputs=inputs(spec, target),
        regenerate="envparity lock",
        spec_name=spec.path.name,
    )


def lock(
    spec: Spec,
    *,
    upgrade: bool = False,
    flavors: list[str] | None = None,
    force: bool = False,
    progress: Callable[[str], None] = lambda message: None,
) -> list[str]:
    """Resolve every flavor and system; write all locks or none. Returns the paths written.
    ``progress`` is told before each resolution starts (uv takes seconds to minutes)."""
    targets = lock_targets(spec, flavors)
    paths = lock_paths(spec, flavors)
    files.refuse_links(spec.root, *paths)  # before uv
    # nor run uv for locks that write_all would refuse to replace (a hand edit, a foreign file)
    files.refuse_overwrites(spec.root, paths, force=force)
    generated = []
    documents: dict[str, dict[str, dict[str, object]]] = {}
    failed: list[tuple[LockTarget, EnvparityError]] = []
    incompatible = {f: _incompatible(spec, f) for f in dict.fromkeys(t.flavor for t in targets)}
    for target in targets:
        if incompatible[target.flavor] is not None:
            failed.append((target, incompatible[target.flavor]))  # type: ignore[arg-type]
            continue
        previous = read_lock_body(spec, target)
        progress(f"resolving {target.path} ({target.flavor}, {target.system}) with uv")
        try:
            body = resolve(spec, target, previous=previous, upgrade=upgrade)
            document = resolve_pylock(spec, target, body)
        except (ToolError, UsageError) as exc:
            if len(targets) == 1:
                raise
            failed.append((target, exc))
            continue
        generated.append(render_lock(spec, target, body))
        documents.setdefault(target.flavor, {})[target.system] = document
    for flavor, by_system in documents.items():
        if any(t.flavor == flavor for t, _ in failed):
            continue  # a flavor's PEP 751 lock holds all its systems or is not written
        progress(f"writing {pylock_path(flavor)} ({', '.join(by_system)})")
        generated.append(render_pylock(spec, flavor, by_system))
    if (
        failed
        and not generated
        and (len(failed) == 1 or all(isinstance(e, SpecError) for _, e in failed))
    ):
        _raise_together([e for _, e in failed])
    removed = [] if flavors or failed else orphans(spec)
    results = files.write_all(spec.root, generated, remove=removed, force=force)
    written = [f"{path} ({status})" for path, status in results]
    if failed:
        raise LockIncomplete(written, [(t.path, e) for t, e in failed])
    return written


class LockIncomplete(CheckFailed):
    """Some flavors locked, others not (exit 1): those that resolved are written, each
    failing one is named on its own line with its reason, and its old lock is left alone."""

    def __init__(self, written: list[str], failed: list[tuple[str, EnvparityError]]) -> None:
        self.written = written
        self.failed = failed
        lines = [f"{path}: not written: {_one_paragraph(exc)}" for path, exc in failed]
        if not written:
            self.exit_code = 2 if all(e.exit_code == 2 for _, e in failed) else 1
        super().__init__("\n".join(lines))


def _one_paragraph(exc: EnvparityError) -> str:
    return str(exc).replace("\n", "\n  ")


def _raise_together(errors: list[EnvparityError]) -> None:
    if all(isinstance(e, SpecError) for e in errors):
        problems = [p for e in errors for p in e.problems]  # type: ignore[attr-defined]
        raise SpecError(list(dict.fromkeys(problems)))  # a problem two flavors share, once
    raise errors[0]


def refuse_when_no_flavor_locks(spec: Spec, flavors: list[str] | None = None) -> None:
    """Raise ``SpecError`` when every flavor asked for has a compatibility problem: nothing
    could be locked. One flavor's problem beside flavors that lock is ``lock``'s to report."""
    chosen = dict.fromkeys(t.flavor for t in lock_targets(spec, flavors))
    found = [_incompatible(spec, f) for f in chosen]
    if found and all(found):
        _raise_together([e for e in found if e is not None])


def _incompatible(spec: Spec, flavor: str) -> SpecError | None:
    """The compatibility problems that stop ``flavor``'s lock (the cpu flavor's lock does
    not need the CUDA build to exist); None when there are none."""
    from orchestrator import compat

    problems = compat.check(spec, flavor=flavor)
    return SpecError(problems) if problems else None


def lock_paths(spec: Spec, flavors: list[str] | None = None) -> list[str]:
    """Every lock file ``lock`` writes: each system's ``.txt``, then each flavor's pylock."""
    chosen = [f for f in spec.flavors if not flavors or f in flavors]
    return [t.path for t in lock_targets(spec, flavors)] + [pylock_path(f) for f in chosen]


def orphans(spec: Spec) -> list[str]:
    """Locks of flavors or systems the spec no longer has."""
    folder = spec.root / LOCK_DIR
    existing = [
        f"{LOCK_DIR}/{p.name}" for p in (*folder.glob("*.txt"), *folder.glob("pylock.*.toml"))
    ]
    return files.orphans(spec.root, existing, lock_paths(spec))


def refuse_incompatible(spec: Spec) -> None:
    """Raise ``SpecError`` if the spec asks for a torch/CUDA/Python combination that does not exist."""
    from orchestrator import compat

    problems = compat.check(spec)
    if problems:
        raise SpecError(problems)


def read_lock_body(spec: Spec, target: LockTarget) -> str | None:
    """The pins of the lock envparity wrote at ``target.path`` (what uv keeps); ``None`` when
    there is none, or the file there was not written by envparity (``--force`` replaces it:
    its text is no source of pins)."""
    text = files.read(spec.root / target.path, target.path)
    if text is None:
        return None
    header = files.read_header(text)
    return header.body if header else None


# Why a lock is stale when 'envparity lock' alone would refuse to replace it (--force needed).
NOT_WRITTEN = "has no envparity header"
EDITED = "edited by hand since envparity wrote it"


def needs_force(reason: str) -> bool:
    """Whether a ``stale_locks`` line names a lock 'envparity lock' refuses without --force."""
    return reason.endswith((f": {NOT_WRITTEN}", f": {EDITED}"))


def stale_locks(spec: Spec) -> list[str]:
    """Why each lock is stale (missing, made from other inputs, or edited by hand); [] if none."""
    out = []
    expected = [
        (t.path, t.flavor, f"{t.flavor}, {t.system}", inputs(spec, t)) for t in lock_targets(spec)
    ]
    expected += [
        (pylock_path(f), f, f"{f}, {', '.join(spec.systems_of(f))}", pylock_inputs(spec, f))
        for f in spec.flavors
    ]
    for path, flavor, platform, wanted in expected:
        text = files.read(spec.root / path, path)
        if text is None:
            out.append(f"{path}: missing")
            continue
        header = files.read_header(text)
        if header is None:
            out.append(f"{path}: {NOT_WRITTEN}")
        elif header.hand_edited:
            out.append(f"{path}: {EDITED}")
        elif header.inputs != wanted:
            shown = f"{path} ({platform})" if len(spec.environment.systems) > 1 else path
            what = spec.path.name + (
                " or a local package's build files" if local_packages(spec, flavor) else ""
            )
            out.append(f"{shown}: stale ({what} changed since it was locked)")
    out += [f"{p}: no longer produced by {spec.path.name}" for p in orphans(spec)]
    return out


def lock_digest(spec: Spec, flavor: str) -> str:
    """The content hash recorded in a flavor's primary lock, for render inputs ("" if missing)."""
    return content_digest(spec, LockTarget(flavor, spec.systems_of(flavor)[0]).path)


def recorded_contents(spec: Spec) -> dict[str, str]:
    """``{path: content_digest}`` of every lock the spec has (``lock_paths``), for the files
    rendered from all of them (flake.nix)."""
    return {path: content_digest(spec, path) for path in lock_paths(spec)}


def content_digest(spec: Spec, path: str) -> str:
    """The content hash recorded in the lock at ``path`` (its whole text's when it has no
    envparity header; "" when it is missing)."""
    text = files.read(spec.root / path, path)
    if text is None:
        return ""
    header = files.read_header(text)
    return header.content if header else files.sha256(text)
