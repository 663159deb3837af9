"""conda: an ``environment.yml``, and conda's spec lists (``conda list --export``, ``@EXPLICIT``).

Each package spec is parsed by py-rattler's ``MatchSpec`` (the conda MatchSpec grammar as
rattler, the maintained Rust implementation behind pixi, reads it): channel-qualified specs
(``pytorch::pytorch=2.0.0``), bracket specs (``numpy[version='>=1.24']``), ``|`` alternatives
and build strings. rattler is imported only for these formats.

conda's version grammar is mapped to PEP 440 here: ``2.0.*`` -> ``==2.0.*``, ``==1.24.0``,
``>=1.24,<2`` are kept, ``|`` (either) has no PEP 440 equivalent and keeps its first
alternative, with a note. conda names that differ from PyPI's are renamed (``pytorch`` ->
``torch``); the CUDA toolkit packages (``pytorch-cuda``, ``cudatoolkit``, ``cuda-version``)
set ``[cuda]``; a pytorch build string such as ``py3.10_cuda11.8_cudnn8.7.0_0`` does too.
A package whose build string names no Python (``h1234abc_0`` rather than
``py310h..._0``, ``pyhd8ed1ab_0`` or conda-forge's ``cuda118_py310h..._0``), as ``conda list --export`` and ``conda env export`` write
for every package, is a native library the PyPI wheels bundle: such packages are listed in
one ``not converted`` line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from orchestrator import spec as specs
from orchestrator.errors import Problem, SpecError
from orchestrator.init.draft import Draft, Where, canonical, ordered, pinned_version
from orchestrator.init.python import python_from
from orchestrator.init.requirements import RequirementsReader, read_text
from orchestrator.spec import Dependency

# conda names whose PyPI distribution is named differently.
_CONDA_TO_PYPI = {
    "pytorch": "torch",
    "pytorch-gpu": "torch",
    "pytorch-cpu": "torch",
    "py-opencv": "opencv-python",
    "opencv": "opencv-python",
    "matplotlib-base": "matplotlib",
    "tensorflow-gpu": "tensorflow",
    "pytables": "tables",
    "msgpack-python": "msgpack",
    "py-xgboost": "xgboost",
    "pyqt": "PyQt5",
}
# conda packages that say which CUDA toolkit the environment uses.
_CONDA_CUDA = frozenset(
    {"cudatoolkit", "pytorch-cuda", "cuda-version", "cuda-toolkit", "cuda", "cuda-runtime",
     "cuda-nvcc", "cuda-cudart"}
)  # fmt: skip
# conda packages with no PyPI counterpart: native libraries the PyPI wheels bundle themselves,
# and the installer's own tools.
_CONDA_ONLY = frozenset(
    {
        "_libgcc_mutex", "_openmp_mutex", "blas", "bzip2", "ca-certificates", "intel-openmp",
        "ld_impl_linux-64", "libblas", "libcblas", "libffi", "libgcc-ng", "liblapack",
        "libstdcxx-ng", "magma", "mkl", "mkl-service", "nccl", "ncurses", "openssl", "pip",
        "pytorch-mutex", "readline", "setuptools", "sqlite", "tk", "tzdata", "wheel", "xz",
        "zlib", "zstd",
    }
)  # fmt: skip
# conda packages that are command-line tools: they go to [system] packages.
_CONDA_SYSTEM = frozenset(
    {"cmake", "curl", "ffmpeg", "git", "git-lfs", "graphviz", "make", "unzip", "wget", "zip"}
)
# pytorch channel builds say py3.10_cuda11.8_cudnn8.7.0_0; conda-forge's cuda118_py310h1234_0.
_TORCH_BUILD_CUDA_RE = re.compile(r"cuda(?P<major>[0-9]{1,2})\.?(?P<minor>[0-9])(?:_|py|\Z)")
# A Python package's build names its Python: py310h..., pyhd8ed1ab_0, cuda118_py310h...
_PYTHON_BUILD_RE = re.compile(r"py(?:[0-9]|h|_)")
_CUDA_LABEL_RE = re.compile(r"^nvidia/label/cuda-(?P<version>[0-9]{1,2}\.[0-9])")
_SPEC_LIST_LINE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*=[^=\s]+(=[^=\s]+)?\Z")
_CONDA_PLATFORM_RE = re.compile(
    r"^#\s*platform:\s*(linux|osx|win)-[A-Za-z0-9_]+\s*\Z|^#\s*platform:\s*noarch\s*\Z", re.I
)


def is_spec_list(text: str) -> bool:
    """True for conda's spec-list formats (``conda list --export``, ``@EXPLICIT``), which a
    ``*.txt`` name shares with pip requirements files; pip never writes ``name=version``."""
    for raw in text.splitlines():
        line = raw.strip()
        if line == "@EXPLICIT" or _CONDA_PLATFORM_RE.match(line):
            return True
        if line and not line.startswith("#") and _SPEC_LIST_LINE_RE.match(line):
            return True
    return False


class CondaReader:
    """conda package specs into a draft; build strings and native packages summed up once."""

    def __init__(self, draft: Draft, file: str) -> None:
        self.draft = draft
        self.file = file
        self.channels: list[str] = []
        self.builds: list[str] = []
        self.native: list[str] = []
        self.gpu: Where | None = None  # where pytorch-gpu asked for a CUDA build of torch
        self.gpu_major: str | None = None  # the CUDA major the machine has (pixi's __cuda)
        self.pypi_from: dict[str, str] = {}  # PyPI name -> the conda name that brought it

    def package(self, item: str, where: Where) -> None:
        from rattler import MatchSpec
        from rattler.exceptions import InvalidMatchSpecError

        try:
            match = MatchSpec(item)
        except InvalidMatchSpecError as exc:
            self.draft.problem(where, f"{item!r} is not a conda package spec: {_first(exc)}")
            return
        if match.name is None:
            self.draft.problem(where, f"{item!r} is not a conda package spec: no package name")
            return
        name = match.name.normalized.lower()
        channel = match.channel.name if match.channel is not None else None
        if channel:
            self.channels.append(channel)
        build = match.build or ""
        if name in _CONDA_CUDA:
            self._cuda(name, item, match.version, channel, where)
            return
        if name == "cudnn":
            version = _single_version(match.version)
            if version is None:
                self.draft.skip(where, item, "cudnn needs one pinned version such as cudnn=8.9")
            else:
                self.draft.cudnn = version
            return
        if name == "cpuonly":
            self.draft.notes.append(f"{where}: cpuonly: a CPU-only environment has no [cuda] table")
            return
        if name == "pytorch-gpu":
            self.gpu = self.gpu or where
        elif name == "pytorch-cpu":
            self.draft.notes.append(
                f"{where}: pytorch-cpu (conda-forge's CPU build of torch): a CPU-only "
                "environment has no [cuda] table"
            )
        if name in _CONDA_SYSTEM:
            if name not in self.draft.system:
                self.draft.system.append(name)
            if match.version:
                self.draft.skip(
                    where,
                    item,
                    "[system] packages come from each target's package set; the version is not kept",
                )
            return
        if name in _CONDA_ONLY or (
            build and not _PYTHON_BUILD_RE.search(build) and name != "python"
        ):
            self.native.append(name)
            return
        specifier, note = conda_specifier(match.version)
        if specifier is None:
            self.draft.skip(where, item, "a conda version spec with no PEP 440 equivalent")
            return
        if note:
            self.draft.skip(where, item, note)
        if name == "python":
            if specifier:
                python_from(self.draft, specifier, f"{item!r} ({where})", where)
            else:
                self.draft.notes.append(f"{where}: {item} pins no version")
            return
        if build:
            self.builds.append(f"{name} {build}")
            if name in ("pytorch", "pytorch-gpu") and (m := _TORCH_BUILD_CUDA_RE.search(build)):
                origin = f"the build {build} of {name} ({where})"
                self.draft.set_cuda(f"{m['major']}.{m['minor']}", origin, where)
        pypi = _CONDA_TO_PYPI.get(name, name)
        first = self.pypi_from.setdefault(pypi, name)
        dep = Dependency(name=pypi, specifier=specifier)
        kept = self.draft.deps.get(canonical(pypi))
        if first != name and kept is not None and not (kept.specifier and specifier):
            # pytorch beside pytorch-gpu, opencv beside py-opencv: one PyPI package, kept once
            # with the version either gives
            self.draft.notes.append(f"{where}: {name} is {pypi} on PyPI, as {first} is")
            if specifier:
                self.draft.deps[canonical(pypi)] = dep
            return
        if first != name and kept == dep:
            self.draft.notes.append(f"{where}: {name} is {pypi} on PyPI, as {first} is")
            return
        self.draft.add(dep, where)

    def _cuda(
        self, name: str, item: str, version_spec: str | None, channel: str | None, where: Where
    ) -> None:
        version = _single_version(version_spec)
        if version is None and channel and (m := _CUDA_LABEL_RE.match(channel)):
            version = m["version"]
        if version is None:
            self.draft.skip(where, item, f"{name} needs one pinned version such as {name}=11.8")
            return
        release = Version(version).release
        cuda = ".".join(str(n) for n in release[:2])
        if self.draft.cuda == cuda:  # a second package of the same toolkit
            self.draft.notes.append(f"{where}: {item} is CUDA {cuda}, as [cuda] says")
            return
        self.draft.set_cuda(cuda, f"{item!r} ({where})", where)

    def _gpu_cuda(self) -> None:
        """pytorch-gpu with no CUDA version anywhere in the file: the newest CUDA that the
        newest torch release the torch specifier admits has a build for (from compat.toml)."""
        if self.gpu is None:
            return
        if self.draft.cuda is not None:
            self.draft.notes.append(
                f"{self.gpu}: pytorch-gpu (conda-forge's CUDA build of torch): torch, with "
                f"the [cuda] below"
            )
            return
        from orchestrator import compat

        torch = self.draft.deps.get("torch")
        specifier = SpecifierSet(torch.specifier if torch else "")
        table = compat.table()
        admitted = [r for r in table.releases if any(v in specifier for v in r.versions)]
        major = self.gpu_major
        with_builds = [
            r for r in admitted if any(major in (None, b.split(".")[0]) for b in r.builds)
        ]
        if not with_builds:
            self.draft.skip(
                self.gpu,
                "pytorch-gpu",
                f"no torch release {specifier or ''} with a CUDA build is in envparity's "
                "compatibility table; add [cuda] with the CUDA of your torch build",
            )
            return
        release = with_builds[-1]
        cuda = max(
            (b for b in release.builds if major in (None, b.split(".")[0])),
            key=lambda v: tuple(int(p) for p in v.split(".")),
        )
        self.draft.set_cuda(
            cuda,
            f"pytorch-gpu ({self.gpu}), conda-forge's CUDA build of torch; no CUDA version "
            f"given, so the newest CUDA torch {release.minor} has a build for",
            self.gpu,
        )

    def finish(self, where: Where) -> None:
        self._gpu_cuda()
        if self.builds:
            self.draft.skip(
                where,
                "build strings " + ", ".join(self.builds),
                "conda builds have no spec equivalent; the versions are kept",
            )
        if self.native:
            self.draft.skip(
                where,
                ", ".join(dict.fromkeys(self.native)),
                "conda-only packages: native libraries and installer tools that uv and the "
                "PyPI wheels provide",
            )
        if self.channels:
            self.draft.notes.append(
                f"conda channels {', '.join(dict.fromkeys(self.channels))} are not used: "
                "packages come from PyPI and the [[index]] entries"
            )


def _first(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _single_version(version_spec: str | None) -> str | None:
    """``11.8.*``, ``==11.8``, ``11.8`` -> ``"11.8"``; None for anything but one version."""
    if not version_spec:
        return None
    specifier, note = conda_specifier(version_spec)
    if specifier is None or note:
        return None
    return pinned_version(specifier)


def conda_specifier(version_spec: str | None) -> tuple[str | None, str]:
    """A conda version spec (as rattler normalises it) as a PEP 440 specifier and a note.

    ``None``/``*`` -> ``""``; ``2.0.0.*`` -> ``==2.0.0.*``; ``>=1.24,<2`` kept; ``1.0|1.1``
    -> ``==1.0`` and a note that the other alternatives were left out. The specifier is None
    when there is no equivalent (a conda-only version such as ``1.1.1w``).
    """
    if not version_spec or version_spec.strip() in ("", "*"):
        return "", ""
    alternatives = version_spec.split("|")
    note = ""
    if len(alternatives) > 1:
        note = (
            f"conda's '|' (either) has no PEP 440 equivalent; kept the first alternative, "
            f"{alternatives[0]}"
        )
    parts = []
    for atom in alternatives[0].split(","):
        atom = atom.strip()
        m = re.fullmatch(r"(==|!=|>=|<=|~=|>|<|=)?\s*(.+)", atom)
        if m is None:
            return None, ""
        operator, version = m[1] or "", m[2]
        if version == "*":
            continue
        if operator in ("", "="):
            operator = "=="
        if operator == "==" and re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+(\.[0-9]+)*\.\*", version):
            version = version[:-2]  # conda's =1.24.0: a full release means that release
        if version.endswith("*") and operator not in ("==", "!="):
            version = version.rstrip("*").rstrip(".")
        elif version.endswith("*") and not version.endswith(".*"):
            version = version.rstrip("*").rstrip(".") + ".*"
        parts.append(f"{operator}{version}")
    try:
        return ordered(SpecifierSet(",".join(parts))), note
    except InvalidSpecifier:
        return None, ""


# --------------------------------------------------------------------------- environment.yml


def from_environment_yml(draft: Draft, path: Path) -> None:
    import yaml

    display = str(path)
    text = read_text(path, display)
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
    conda = CondaReader(draft, display)
    reader = RequirementsReader(draft)
    for key, value in data.items():
        where = Where(display, str(key))
        if key == "name" and isinstance(value, str):
            draft.name = value
        elif key == "channels" and isinstance(value, list):
            conda.channels.extend(str(c) for c in value)
        elif key == "dependencies":
            for i, item in enumerate(value):
                _item(draft, conda, reader, item, Where(display, f"dependencies[{i}]"), path)
        elif key == "variables" and isinstance(value, dict):
            _variables(draft, value, where)
        else:
            draft.skip(where, repr(value), "no spec equivalent")
    reader.apply_constraints()
    conda.finish(Where(display, "dependencies"))


def _item(
    draft: Draft,
    conda: CondaReader,
    reader: RequirementsReader,
    item: object,
    where: Where,
    path: Path,
) -> None:
    if isinstance(item, dict) and set(item) == {"pip"} and isinstance(item["pip"], list):
        for j, line in enumerate(item["pip"]):
            at = where.at(f"{where.key}.pip[{j}]")
            if isinstance(line, str):
                reader.line(
                    line.strip(), at, path.parent, constraint=False, stack=(path.resolve(),)
                )
            else:
                draft.problem(at, f"expected a pip requirement string, got {line!r}")
    elif isinstance(item, str):
        conda.package(item.strip(), where)
    else:
        draft.problem(where, f"expected a conda package spec or a 'pip:' list, got {item!r}")


def _variables(draft: Draft, values: Mapping[object, object], where: Where) -> None:
    for name, value in values.items():
        text = str(value)
        if not (isinstance(name, str) and specs._ENV_NAME_RE.match(name)):
            draft.skip(where, f"{name}={text}", "not an environment variable name")
        elif any(ord(c) < 32 or ord(c) == 127 for c in text):
            draft.skip(where, name, "a default must be one line of printable text")
        else:
            draft.variables[name] = text


# --------------------------------------------------------------------------- spec lists


def from_spec_list(draft: Draft, path: Path) -> None:
    """``conda list --export`` (``name=version=build`` lines) or ``conda list --explicit``
    (``@EXPLICIT`` and one package URL a line; name, version and build from the file name)."""
    display = str(path)
    text = read_text(path, display)
    conda = CondaReader(draft, display)
    explicit = False
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        where = Where(display, f"line {number}")
        if not line:
            continue
        if line == "@EXPLICIT":
            explicit = True
            continue
        if line.startswith("#"):
            if _CONDA_PLATFORM_RE.match(line) and not re.search(r"linux|noarch", line, re.I):
                draft.notes.append(
                    f"{where}: written on {line.split(':', 1)[1].strip()}; "
                    "envparity environments run on Linux"
                )
            continue
        if explicit:
            spec = _explicit_spec(line)
            if spec is None:
                draft.problem(where, f"{line!r} is not a conda package URL (.conda or .tar.bz2)")
                continue
            conda.package(spec, where)
        else:
            conda.package(line, where)
    conda.finish(Where(display, ""))
    if explicit:
        draft.notes.append(
            f"{display} is an @EXPLICIT list of conda package URLs: each package is taken "
            "from PyPI at the version of its file name, not from those URLs"
        )


def _explicit_spec(url: str) -> str | None:
    """``.../linux-64/numpy-1.24.3-py310h5f9d8c6_0.conda#md5`` -> ``numpy=1.24.3=py310h5f9d8c6_0``
    (conda names its package files ``name-version-build`` and neither version nor build holds
    a ``-``)."""
    filename = url.split("#", 1)[0].rsplit("/", 1)[-1]
    for suffix in (".conda", ".tar.bz2"):
        if filename.endswith(suffix):
            parts = filename[: -len(suffix)].rsplit("-", 2)
            if len(parts) == 3 and all(parts):
                return "=".join(parts)
    return None
