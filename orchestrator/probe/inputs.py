"""What the probe is, and what a probe run read besides its environment.

* The probe itself (``probe_source``): envparity's modules that decide the numbers
  (``NUMERIC_MODULES``) and, for a user probe, its package's sources. This is the one
  definition: verify's fingerprint cache key and each committed reference's inputs
  (``orchestrator.references``) hash it, so an edit to any of these modules re-runs cached
  probes and makes references stale ("re-record"), never "diverged".

* Code: every module in ``sys.modules`` whose file lies under the project folder (the current
  folder), plus the probe's own module wherever it is, outside the interpreter's prefix and
  any site-packages. Keyed by module name, so the same code under another folder (verify's
  runtime copy) compares equal. Of envparity itself only the modules that touch the numbers
  are kept (``NUMERIC_MODULES``): a new CLI is not "the code differs".
* Data: every file opened for reading under the project folder (or a folder named in
  ``ENVPARITY_DATA_PATHS``, separated by ``os.pathsep``) while the probe ran, seen by
  an audit hook on the ``open`` event (PEP 578), except Python sources and bytecode, shared
  libraries, files inside the interpreter's prefix or site-packages, ``.git`` and
  ``.envparity``. A changed data file is therefore named even when the steps never touch the
  entries that changed. Child processes report what they open through a spill file: forked
  ones (DataLoader workers by default on Linux) inherit the hook; those started by ``spawn``
  or ``forkserver`` (DataLoader workers with ``multiprocessing_context``, the data-parallel
  ranks) install it first thing, because ``multiprocessing``'s ``start`` is wrapped while
  the probe runs.
* Outside: files read for data outside the project folder and those folders (and outside
  the interpreter and system folders ``/proc``, ``/sys``, ``/dev``) are listed by path, not
  hashed: a changed vocabulary in ``/tmp`` is named as not fingerprinted, with the variable
  that would fingerprint it.

``stale`` re-hashes what a fingerprint recorded, for verify's cache. Stdlib only (this runs
inside bare targets).
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator import files
from orchestrator.probe.fingerprint import CodeFile, Inputs

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

DATA_PATHS = "ENVPARITY_DATA_PATHS"  # more folders whose files are recorded, absolute paths
# envparity's modules that decide a probe's numbers: the built-in training (workload), the
# recorder that digests what every probe reports, seeding (determinism) and the settings with
# the launch environment (determinism_settings). Not the CLI, the capture or the runner: a
# new message is not a new probe.
NUMERIC_MODULES = frozenset(
    {
        "orchestrator.determinism",
        "orchestrator.determinism_settings",
        "orchestrator.probe.recorder",
        "orchestrator.probe.workload",
    }
)
_PACKAGE = Path(__file__).resolve().parent.parent  # the orchestrator package folder
_SKIP_SUFFIXES = (".py", ".pyc", ".pyo", ".pyi", ".so", ".pyd", ".pth")
_SKIP_PARTS = frozenset({"__pycache__", ".git", ".envparity", ".nox", ".venv", ".tox"})
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_SYSTEM = tuple(Path(p) for p in ("/proc", "/sys", "/dev"))  # not data, never listed


def sha256_file(path: Path) -> str:
    """``sha256:`` of the file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(2**20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def module_file(name: str) -> Path:
    """The source file of envparity module ``name`` (``"orchestrator.probe.workload"``)."""
    return _PACKAGE.joinpath(*name.split(".")[1:]).with_suffix(".py")


def probe_source(probe: str | None, root: Path) -> str:
    """What the probe is, as one hash: the code of ``NUMERIC_MODULES`` (their
    ``sha256_file`` digests, the ones a fingerprint's ``inputs.code`` records) and, for a user
    probe ``package.module:function`` (``probe``; None for the built-in one), every ``.py``
    file of its top-level package (or its one module) found under ``root``, where verify puts
    it on the path. A user probe found nowhere under ``root`` (installed in the target) is
    keyed by its name. Other project files a run read are checked from the fingerprint
    (``stale``).

    verify's cache key and each reference's inputs both hash this; editing any of these files
    re-runs cached probes and makes references stale. Raises ``OSError`` when a file cannot
    be read.
    """
    parts: dict[str, object] = {
        "envparity": {name: sha256_file(module_file(name)) for name in sorted(NUMERIC_MODULES)}
    }
    if probe:
        import importlib.machinery

        top = probe.split(":")[0].split(".")[0]
        found = importlib.machinery.PathFinder.find_spec(top, [str(root)])
        if found is None:
            parts["probe"] = probe
        else:
            if found.submodule_search_locations:
                sources = sorted(
                    p for d in found.submodule_search_locations for p in Path(d).rglob("*.py")
                )
            else:
                sources = [Path(found.origin)] if found.origin else []
            base = root.resolve()
            parts["probe"] = {
                _relative(p.resolve(), base) or str(p): sha256_file(p) for p in sources
            }
    return files.inputs_hash(parts)


def _excluded_roots() -> list[Path]:
    roots = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix)}
    return sorted(r.resolve() for r in roots)


def _outside_environment(path: Path, excluded: list[Path]) -> bool:
    if any(part in ("site-packages", "dist-packages") for part in path.parts):
        return False
    return not any(path.is_relative_to(r) for r in excluded)


class _OpenedFiles:
    """Paths opened for reading, collected by an audit hook (which cannot be removed: it
    stops collecting when ``active`` is off).

    Forked children (DataLoader workers) inherit the hook; they append what they open to a
    spill file, one path per line (``O_APPEND`` writes of a line are not interleaved), which
    the recording process reads at the end.
    """

    def __init__(self) -> None:
        self.active = False
        self.paths: set[str] = set()
        self.pid = os.getpid()
        self.spill: str | None = None
        self._fds: dict[int, int] = {}  # pid -> spill file descriptor, in each child
        self._busy = False

    def hook(self, event: str, args: tuple[object, ...]) -> None:
        if event != "open" or not self.active or self._busy:
            return
        path, mode, flags = (*args, None, None, None)[:3]
        if not isinstance(path, (str, bytes, os.PathLike)) or isinstance(path, int):
            return
        if isinstance(mode, str) and any(c in mode for c in "wax+"):
            return
        if isinstance(flags, int) and flags & _WRITE_FLAGS:
            return
        name = os.path.abspath(os.fsdecode(path))
        pid = os.getpid()
        if pid == self.pid:
            self.paths.add(name)
        elif self.spill is not None and "\n" not in name:
            self._busy = True  # os.open below raises an "open" event of its own
            try:
                if pid not in self._fds:
                    self._fds[pid] = os.open(self.spill, os.O_WRONLY | os.O_APPEND)
                os.write(self._fds[pid], (name + "\n").encode(errors="surrogateescape"))
            except OSError:
                pass  # a child that cannot report: its files go unrecorded
            finally:
                self._busy = False

    def children(self) -> set[str]:
        """What forked children reported."""
        if self.spill is None:
            return set()
        try:
            with open(self.spill, "rb") as handle:
                return {
                    line.decode(errors="surrogateescape") for line in handle.read().splitlines()
                }
        except OSError:
            return set()


_OPENED = _OpenedFiles()
_HOOKED = False


def _hook() -> None:
    global _HOOKED
    if not _HOOKED:
        sys.addaudithook(_OPENED.hook)
        _HOOKED = True


def _child_main(
    spill: str, target: Callable[..., object], *args: object, **kwargs: object
) -> object:
    """A ``spawn``/``forkserver`` child's target, wrapped: report opened files to ``spill``
    (every open is a child's: ``pid`` is never this one's), then run the real target."""
    _hook()
    _OPENED.pid, _OPENED.spill, _OPENED._fds, _OPENED.active = -1, spill, {}, True
    return target(*args, **kwargs)


def _start_method(process: BaseProcess) -> str | None:
    """How ``process`` will start: its context's method, or the default context's."""
    import multiprocessing

    method = getattr(process, "_start_method", None)
    return method or multiprocessing.get_start_method(allow_none=True) or "fork"


@contextmanager
def _wrapping_starts(spill: str | None) -> Iterator[None]:
    """While the block runs, a process started by ``spawn`` or ``forkserver`` runs its target
    through ``_child_main`` (forked ones inherit the hook and need nothing)."""
    import multiprocessing.process  # here: at import it would load multiprocessing in every CLI

    base = multiprocessing.process.BaseProcess
    original = base.start
    if spill is None:
        yield
        return

    def start(self: BaseProcess) -> None:
        target = getattr(self, "_target", None)
        if target is not None and _start_method(self) in ("spawn", "forkserver"):
            self._target = functools.partial(_child_main, spill, target)  # type: ignore[attr-defined]
        original(self)

    base.start = start  # type: ignore[method-assign]
    try:
        yield
    finally:
        base.start = original  # type: ignore[method-assign]


@contextmanager
def recording() -> Iterator[_OpenedFiles]:
    """Collect the files opened for reading inside the block, by this process and its
    children (forked, spawned, forkserver); ``.paths`` holds them all when the block ends."""
    import tempfile  # the probe records; check only hashes the probe's code (probe_source)

    _hook()
    try:
        fd, spill = tempfile.mkstemp(prefix="envparity-opened-", suffix=".txt")
        os.close(fd)
    except OSError:  # no writable temporary folder: what workers open goes unrecorded
        spill = None
    _OPENED.paths, _OPENED.pid, _OPENED.spill, _OPENED._fds = set(), os.getpid(), spill, {}
    _OPENED.active = True
    try:
        with _wrapping_starts(spill):
            yield _OPENED
    finally:
        _OPENED.active = False
        _OPENED.paths |= _OPENED.children()
        _OPENED.spill = None
        if spill is not None:
            os.unlink(spill)


def _relative(path: Path, root: Path) -> str | None:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return None


class _Resolver:
    """``Path(file).resolve()`` for many files in few folders: each folder's real path once
    (``os.path.realpath``), then only a file that is itself a link is resolved again. For the
    thousand modules a torch process has imported, 0.02 s instead of 0.15 s."""

    def __init__(self) -> None:
        self._folders: dict[str, str] = {}

    def __call__(self, file: str) -> Path:
        folder, base = os.path.split(os.path.abspath(file))
        real = self._folders.get(folder)
        if real is None:
            real = self._folders[folder] = os.path.realpath(folder)
        path = os.path.join(real, base)
        return Path(os.path.realpath(path) if os.path.islink(path) else path)


def collect(root: Path, opened: set[str], probe_module: str) -> Inputs:
    """The code and data inputs of a run in project folder ``root`` (see the module doc)."""
    root = root.resolve()
    excluded = _excluded_roots()
    code: dict[str, CodeFile] = {}
    resolve = _Resolver()
    for name, module in sorted(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if name == "__mp_main__" or not isinstance(file, str) or not file.endswith(".py"):
            continue
        real = getattr(getattr(module, "__spec__", None), "name", None) or name
        if real.split(".")[0] == "orchestrator" and real not in NUMERIC_MODULES:
            continue
        path = resolve(file)
        inside = _relative(path, root)
        if name != probe_module and (inside is None or not _outside_environment(path, excluded)):
            continue
        if path.is_file():
            code[name] = CodeFile(inside or str(path), sha256_file(path))
    extra = [Path(p).resolve() for p in os.environ.get(DATA_PATHS, "").split(os.pathsep) if p]
    data: dict[str, str] = {}
    outside: set[str] = set()
    for raw in sorted(opened):
        path = Path(raw if os.path.isabs(raw) else os.path.join(root, raw)).resolve()
        inside = _relative(path, root)
        if inside is None and any(path.is_relative_to(e) for e in extra):
            inside = str(path)
        if (
            path.suffix in _SKIP_SUFFIXES
            or _SKIP_PARTS.intersection(Path(inside or path).parts)
            or not _outside_environment(path, excluded)
            or any(path.is_relative_to(s) for s in _SYSTEM)
            or not path.is_file()
        ):
            continue
        if inside is None:
            outside.add(str(path))
        else:
            data[inside] = sha256_file(path)
    return Inputs(
        code=code, data=data, outside=tuple(sorted(outside)), imported=imported_distributions()
    )


def imported_distributions() -> tuple[str, ...]:
    """The installed distributions whose top-level modules this process has imported
    (``importlib.metadata.packages_distributions``, 0.06 s here), names normalised as the
    capture's ``packages`` are: a package no run imported cannot have changed its numbers."""
    import importlib.metadata

    from orchestrator.probe.capture import normalise

    owners = importlib.metadata.packages_distributions()
    tops = {name.partition(".")[0] for name in list(sys.modules)}
    return tuple(sorted({normalise(d) for top in tops for d in owners.get(top, ())}))


def outside_note(outside: tuple[str, ...], shown: int = 3) -> str:
    """One line naming files a run read outside the project that are not fingerprinted, and
    how to fingerprint them ("" when there are none)."""
    if not outside:
        return ""
    names = ", ".join(outside[:shown]) + (
        f" and {len(outside) - shown} more" if len(outside) > shown else ""
    )
    return (
        f"{len(outside)} file(s) read outside the project are not fingerprinted ({names}): "
        f"add their folders to {DATA_PATHS} (separated by '{os.pathsep}') to fingerprint them"
    )


def stale(inputs: Inputs, root: Path) -> list[str]:
    """The recorded project files (relative paths) that changed or vanished since the run."""
    changed = []
    for rel, digest in sorted(inputs.files().items()):
        if os.path.isabs(rel) and not os.path.exists(rel):
            continue  # outside the project and not here (inside a container): not checked
        path = root / rel
        try:
            if sha256_file(path) != digest:
                changed.append(rel)
        except OSError:
            changed.append(rel)
    return changed
