"""Is everything current, and does the host conform? The one answer check, doctor and verify use.

Freshness: every lock made from the spec as it is now (``lock.stale_locks``), every generated
file equal to what ``render`` would write (``files.drift``; a CI file whose header records the
current inputs, ``CI_FORMAT`` among them, and that nobody edited is read back rather than
rendered: ``render.ci.ci_file``), no generated file left over from
an earlier spec (a lock of a removed flavor, ``.env.example`` after ``[variables]`` went), and
a committed ``flake.lock`` locking the nixpkgs the spec pins (``render.flake.flake_lock_drift``).
``check`` prints it as diffs (exit 1), ``doctor`` as failures, ``verify`` refuses to start.

Conformance: whether the interpreter the user's code runs in (the ``host`` target;
``orchestrator.interpreter`` finds it) is what the spec describes: its Python release against ``environment.python`` and its installed packages
against the host flavor's lock (every pin installed at the pinned version; packages the lock
does not name are not judged). ``doctor`` fails on it, ``verify`` fails the host's row unless
the drift is accepted (``--accept-host-drift``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from orchestrator import files, lock
from orchestrator.spec import Spec

if TYPE_CHECKING:  # check never judges an interpreter: it need not import process/subprocess
    from orchestrator.interpreter import Interpreter


@dataclass(frozen=True)
class Freshness:
    """What is out of date, each as one line naming the file; empty tuples when all is current."""

    stale_locks: tuple[str, ...] = ()  # "locks/cpu.txt: stale (...)", orphaned locks included
    drift: tuple[files.Drift, ...] = ()  # generated files that differ, each with its diff
    orphans: tuple[str, ...] = ()  # generated files the spec no longer produces
    flake_lock: str = ""  # flake.lock locking another nixpkgs than the pin, with its fix
    generated: int = 0  # how many files (locks and rendered) the spec produces
    spec_name: str = "environment.toml"

    @property
    def files_current(self) -> bool:
        """Every file envparity writes is current (flake.lock, which nix writes, aside)."""
        return not (self.stale_locks or self.drift or self.orphans)

    @property
    def current(self) -> bool:
        return self.files_current and not self.flake_lock

    @property
    def problems(self) -> list[str]:
        """One line per out-of-date file, locks first, flake.lock last."""
        return (
            list(self.stale_locks)
            + [f"{d.path}: out of date or missing" for d in self.drift]
            + list(self.orphans)
            + ([self.flake_lock] if self.flake_lock else [])
        )

    @property
    def fixes(self) -> list[str]:
        """The commands that bring everything up to date, in the order to run them.

        ``envparity lock --force`` (``render --force``) when a lock (a generated file) was edited
        by hand or not written by envparity: the plain command refuses those; ``force_note``
        says what ``--force`` discards.
        """
        relock = (
            "envparity lock --force"  # plain 'envparity lock' refuses to discard a hand edit
            if any(lock.needs_force(line) for line in self.stale_locks)
            else "envparity lock"
        )
        rerender = (
            "envparity render --force"  # likewise for a generated file edited by hand
            if any(d.needs_force for d in self.drift)
            else "envparity render"
        )
        return ([relock] if self.stale_locks else []) + (
            [rerender] if self.drift or self.orphans else []
        )

    @property
    def summary(self) -> str:
        if self.files_current:
            return f"{self.generated} generated files match {self.spec_name}"
        return (
            f"{len(self.stale_locks)} stale lock(s), {len(self.drift) + len(self.orphans)} "
            f"drifted file(s); run: {' && '.join(self.fixes)}{self.force_note}"
        )

    @property
    def force_note(self) -> str:
        """What ``--force`` in ``fixes`` costs, and the other way out ("" when none needs it)."""
        if not (
            any(lock.needs_force(line) for line in self.stale_locks)
            or any(d.needs_force for d in self.drift)
        ):
            return ""
        return (
            f" (--force discards hand edits; to keep one, move the change into "
            f"{self.spec_name} instead)"
        )


def freshness(spec: Spec) -> Freshness:
    """Compare every lock and generated file on disk with what the spec makes now (no network).

    Raises ``files.Unreadable`` (exit 2) for a file that exists but cannot be read as text.
    """
    from orchestrator import render
    from orchestrator.render.flake import flake_lock_drift

    rendered = render.render_all(spec, reuse=True)  # CI files made from these inputs: read back
    return Freshness(
        flake_lock=flake_lock_drift(spec) or "",
        stale_locks=tuple(lock.stale_locks(spec)),
        drift=tuple(files.drift(spec.root, rendered)),
        orphans=tuple(
            f"{path}: no longer produced by {spec.path.name}"
            for path in render.orphans(spec, rendered)
        ),
        generated=len(lock.lock_paths(spec)) + len(rendered),
        spec_name=spec.path.name,
    )


# --------------------------------------------------------------------------- the host


def host_lock(spec: Spec) -> lock.LockTarget:
    """The lock the host is judged against: the host flavor's lock for this machine
    (``lock.local_target``: on a Mac the cpu flavor's, CUDA flavors being Linux-only)."""
    return lock.local_target(spec, spec.flavor_of("host"))


def python_matches(want: str, running: str) -> bool:
    """``environment.python`` ("3.11" or "3.11.9") against a running release ("3.11.7")."""
    return running == want or ".".join(running.split(".")[:2]) == want


@dataclass(frozen=True)
class Conformance:
    """How an interpreter differs from the spec; empty strings where it conforms."""

    python: str = (
        ""  # "Python 3.12.1 (/usr/bin/python3) does not match environment.python = '3.11'"
    )
    packages: str = (
        ""  # "2 package(s) differ from locks/cpu.txt: a 1.0 installed, lock pins 2.0; ..."
    )
    lock: str = ""  # the lock judged against ("locks/cpu.txt"); "" when it is missing

    @property
    def problems(self) -> list[str]:
        return [p for p in (self.python, self.packages) if p]


def conformance(spec: Spec, interpreter: Interpreter) -> Conformance:
    """How ``interpreter`` differs from the spec: its Python release, and its packages against
    the host lock (the first six named). A missing lock is freshness's business: the packages
    are then not judged (``lock`` is "")."""
    want = spec.environment.python
    python = (
        ""
        if python_matches(want, interpreter.version)
        else f"Python {interpreter.version} ({interpreter.executable}) does not match "
        f"environment.python = {want!r}"
    )
    target = host_lock(spec)
    body = lock.read_lock_body(spec, target)
    if body is None:
        return Conformance(python=python)
    mismatched = []
    for name, version in sorted(lock.pinned(body).items()):
        installed = interpreter.packages.get(name)
        if installed is None:
            mismatched.append(f"{name} is not installed (lock: {version})")
        elif installed != version:
            mismatched.append(f"{name} {installed} installed, lock pins {version}")
    from orchestrator.names import canonical_name

    for package in lock.local_packages(spec, target.flavor):  # the project's own code
        if canonical_name(package.name) not in interpreter.packages:
            mismatched.append(f"{package.name} is not installed (local: {package.target})")
    packages = (
        f"{len(mismatched)} package(s) differ from {target.path}: "
        + "; ".join(mismatched[:6])
        + (" ..." if len(mismatched) > 6 else "")
        if mismatched
        else ""
    )
    return Conformance(python=python, packages=packages, lock=target.path)


def install_command(spec: Spec, interpreter: Interpreter) -> str:
    """The command that makes ``interpreter``'s packages match the host lock and keeps what the
    lock does not name (envparity itself among them): ``uv pip install -r``, not ``uv pip
    sync``, which would uninstall everything else. Sources as the spec names them, or their
    ``ENVPARITY_MIRRORS`` locations."""
    import shlex

    target = host_lock(spec)
    mirror = lock.mirrors()
    args = ["uv", "pip", "install", "--python", interpreter.executable, "--require-hashes"]
    for index in lock.sources(spec, target.flavor, target.system):
        location = mirror.get(index.url.rstrip("/"), index.url)
        local = lock.local_folder(location) is not None
        kind = "--find-links" if index.kind == "find-links" or local else "--extra-index-url"
        args += [kind, location]
    args += [*lock.index_strategy(spec, target.flavor), "-r", target.path]
    installs = lock.local_install_commands(spec, target.flavor, interpreter.executable)
    return " && ".join(shlex.join(a) for a in [args, *installs])
