"""``venv``: a uv virtual environment built from the lock, hash-checked.

Cached under ``.envparity/venvs/<flavor>-<key>``, where the key covers the lock's content,
the Python version and the package sources. It is built in a temporary folder beside that
and renamed into place only when complete (``uv venv --relocatable`` keeps it working after
the rename), so an interrupted build is never taken for a finished one. An environment is
reused only when its completion marker names its key and its interpreter is there; anything
else (a delete killed half-way, a hand-removed ``bin/``) is moved aside and rebuilt, and the
fingerprints cached for it are not reused (``built``).
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

from orchestrator import files, lock, process
from orchestrator.errors import ToolError
from orchestrator.targets.base import Target

DONE = ".envparity-complete"


class VenvTarget(Target):
    name = "venv"

    @property
    def flavor(self) -> str:
        return self.ctx.spec.flavor_of("venv")

    @property
    def _lock_target(self) -> tuple[str, str]:
        """(flavor, system) of the lock this machine installs (``lock.local_target``)."""
        target = lock.local_target(self.ctx.spec, self.flavor)
        return target.flavor, target.system

    def key(self) -> str:
        return self._key

    @functools.cached_property
    def _key(self) -> str:
        """The lock's content, the exact interpreter and the sources: read once per run."""
        spec = self.ctx.spec
        return files.inputs_hash(
            {
                "lock": files.sha256(self.lock_file.read_text(encoding="utf-8")),
                "python": interpreter(spec.environment.python),
                "sources": lock.install_args(spec, *self._lock_target),
                **(
                    {"local": [p.target for p in lock.local_packages(spec, self.flavor)]}
                    if lock.local_packages(spec, self.flavor)
                    else {}
                ),
            }
        )[:16]

    @property
    def location(self) -> Path:
        return self.ctx.cache / "venvs" / f"{self.flavor}-{self.key()}"

    @property
    def python(self) -> Path:
        return self.location / "bin" / "python"

    def unavailable(self) -> str | None:
        if shutil.which("uv") is None:
            return "venv: uv is not installed"
        return self.missing_inputs()

    def complete(self) -> bool:
        """The environment is finished and whole: its marker names this key and its
        interpreter is an executable file (a symlink to one that exists)."""
        try:
            marked = (self.location / DONE).read_text(encoding="utf-8").strip() == self.key()
        except OSError:
            return False
        return marked and self.python.is_file() and os.access(self.python, os.X_OK)

    def provision(self) -> None:
        done = self.location / DONE
        if not self.ctx.fresh and self.complete():
            self.ctx.progress(f"venv: reusing {self.location.name}")
            return
        if not self.ctx.fresh and self.location.exists():
            self.ctx.progress(
                f"venv: {self.location.name} is incomplete (marker or interpreter missing): "
                "rebuilding it"
            )
        self.built = True
        spec = self.ctx.spec
        parent = self.location.parent
        parent.mkdir(parents=True, exist_ok=True)
        for stale in (*parent.glob(f".building-{self.location.name}-*"), *parent.glob(".old-*")):
            shutil.rmtree(stale, ignore_errors=True)  # left by an interrupted build or delete
        tmp = parent / f".building-{self.location.name}-{os.getpid()}"
        try:
            self.ctx.progress(f"venv: creating Python {spec.environment.python} environment")
            process.run(
                [
                    "uv",
                    "venv",
                    "--quiet",
                    "--relocatable",
                    "--python",
                    spec.environment.python,
                    str(tmp),
                ]
            )
            self.ctx.progress(f"venv: installing {self.lock_file.name} (hash-checked)")
            process.run(
                [
                    "uv",
                    "pip",
                    "sync",
                    "--quiet",
                    "--python",
                    str(tmp / "bin" / "python"),
                    "--require-hashes",
                    *lock.source_args(spec, *self._lock_target),
                    str(self.lock_file),
                ]
            )
            for install in lock.local_install_commands(
                spec, self.flavor, str(tmp / "bin" / "python")
            ):
                self.ctx.progress(f"venv: installing {install[-1]} (no dependencies: locked)")
                process.run(install, cwd=spec.root)
            (tmp / DONE).write_text(self.key() + "\n", encoding="utf-8")
            if self.location.exists():
                # Aside first, in one rename: a delete killed half-way leaves a hidden
                # folder for the next run to remove, never a marked one without its files.
                old = parent / f".old-{self.location.name}-{os.getpid()}"
                os.replace(self.location, old)
                shutil.rmtree(old, ignore_errors=True)
            os.replace(tmp, self.location)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for old in parent.glob(f"{self.flavor}-*"):  # environments of earlier locks: gigabytes
            if old != self.location:
                shutil.rmtree(old, ignore_errors=True)
        if not done.is_file():  # pragma: no cover - os.replace is atomic
            raise ToolError(f"venv: {self.location} was not completed")

    def command(self, argv: list[str], *, env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        exe = str(self.python) if argv[0] == "python" else argv[0]
        return [exe, *argv[1:]], {**env, "VIRTUAL_ENV": str(self.location)}


@functools.cache
def interpreter(request: str) -> str:
    """The interpreter uv picks for ``request`` ("3.11"), with its exact version, so that a
    new patch release (or another interpreter) is a new environment."""
    found = process.run(["uv", "python", "find", request], check=False)
    if found.returncode != 0:
        return request  # provisioning will fail and say why
    path = found.stdout.strip()
    version = process.run([path, "-c", "import sys; print(sys.version)"], check=False).stdout
    return f"{path} {version.strip()}"
