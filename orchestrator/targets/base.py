"""The interface every verify target implements, and the context they share.

A target is asked three things: is it available here (and if not, why); provision it (build
whatever it needs, reusing a finished build); and how to run a command inside it. The probe
then runs through ``command()`` in a fresh process each time, with the launch environment.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from orchestrator import lock
from orchestrator.spec import Spec

RUNTIME_DIR = ".envparity"  # under the spec's folder; git-ignored; holds caches and runs


@dataclass(frozen=True)
class Context:
    """What every target needs from the verify run."""

    spec: Spec
    cache: Path  # <spec root>/.envparity: visible inside containers as part of the workspace
    runtime: Path  # a copy of the orchestrator package to put on PYTHONPATH inside the target
    fresh: bool = False  # rebuild, ignoring finished environments
    progress: Callable[[str], None] = field(default=lambda message: None)

    @property
    def launch_env(self) -> dict[str, str]:
        return self.spec.determinism.launch_env()


class Target(abc.ABC):
    name: ClassVar[str]
    # Set by provision() when it (re)built the environment in this run: fingerprints cached
    # for an earlier build of the same key are not reused.
    built: bool = False

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @abc.abstractmethod
    def unavailable(self) -> str | None:
        """None when this target can run here; otherwise why not (e.g. "nix: not installed")."""

    @abc.abstractmethod
    def provision(self) -> None:
        """Build the environment, or reuse a finished one (unless ctx.fresh). Idempotent.

        An interrupted build must never be mistaken for a finished one later.
        """

    @abc.abstractmethod
    def command(self, argv: list[str], *, env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        """The host command (and extra host environment) that runs ``argv`` inside the target
        with ``env`` set inside it. ``argv[0]`` is "python" meaning the target's interpreter."""

    def key(self) -> str:
        """What determines this environment's contents (for caching fingerprints)."""
        return ""

    @property
    def lock_file(self) -> Path:
        """The lock this target installs on this machine (``lock.local_target``: its flavor's
        for this machine's system; on a Mac the cpu flavor's)."""
        spec = self.spec
        return spec.root / lock.local_target(spec, spec.flavor_of(self.name)).path

    @property
    def spec(self) -> Spec:
        return self.ctx.spec

    def missing_inputs(self, *generated: str) -> str | None:
        """Why this target cannot run from what is on disk: not in the spec, a generated file
        or the lock missing. None when all is there. (A CUDA flavor without a GPU runs on the
        CPU: ``verify.probe_device``.)"""
        if self.name not in self.spec.targets:
            return f"{self.name}: the spec has no [targets.{self.name}]"
        for path in generated:
            if not (self.spec.root / path).is_file():
                return f"{self.name}: {path} is missing (run 'envparity render')"
        if not self.lock_file.is_file():
            missing = self.lock_file.relative_to(self.spec.root)
            return f"{self.name}: {missing} is missing (run 'envparity lock')"
        return None

    def make_writable(self, host_dir: Path) -> None:
        """Make ``host_dir`` (under the spec's folder) writable from inside the target."""
        host_dir.mkdir(parents=True, exist_ok=True)

    def remove(self) -> None:  # noqa: B027 - an optional hook; most targets start nothing
        """Tear down what provision() started (containers); environments on disk stay cached."""

    def inside(self, host_path: Path) -> str:
        """``host_path`` (under the spec's folder) as the target sees it."""
        return str(host_path)
