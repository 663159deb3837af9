"""``nix``: the generated flake's default devShell, entered with ``nix develop``.

``provision()`` runs ``nix develop <spec folder> --command true``: Nix builds (or fetches) the
shell's packages, and the shell hook builds ``.venv`` from the lock, hash-checked, recording
the lock's hash in ``.venv/.envparity-lock`` only once it succeeded (so it is rebuilt when the
lock changes, and a half-built ``.venv`` is never taken for a finished one). Commands then run
as ``nix develop ... --command env K=V ... .venv/bin/python ...``, with the launch environment
set for that process alone. The hook works in the current folder, so every command starts
with ``env --chdir=<spec folder>``: it runs the same from wherever verify is started.

Where the pinned nixpkgs cannot be fetched (no network, or no access to GitHub) the target is
unavailable, saying so, rather than failing half-way through a build.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from orchestrator import files, process
from orchestrator.errors import ToolError
from orchestrator.spec import NixTarget as NixSettings
from orchestrator.targets.base import Target

FEATURES = ["--extra-experimental-features", "nix-command flakes"]
FLAKE = "flake.nix"
FLAKE_LOCK = "flake.lock"
VENV = ".venv"  # where the flake's shell hook builds the lock (orchestrator.render.flake)
VENV_MARKER = ".venv/.envparity-lock"  # the hook writes the lock's sha256 here when done


class NixTarget(Target):
    name = "nix"

    @property
    def root(self) -> Path:
        return self.ctx.spec.root

    @property
    def nixpkgs(self) -> str:
        settings = self.ctx.spec.targets.get("nix")
        if not isinstance(settings, NixSettings):
            raise ToolError("nix: the spec has no [targets.nix]")
        return settings.nixpkgs

    def unavailable(self) -> str | None:
        if shutil.which("nix") is None and "nix" in self.spec.targets:
            return "nix: not installed"
        missing = self.missing_inputs(FLAKE)
        if missing:
            return missing
        fetched = process.run(
            [
                "nix",
                "flake",
                "metadata",
                self.nixpkgs,
                *FEATURES,
                "--option",
                "connect-timeout",
                "10",
            ],
            check=False,
        )
        if fetched.returncode != 0:
            errors = [line for line in fetched.stderr.splitlines() if line.startswith("error:")]
            why = (
                errors[-1].removeprefix("error: ") if errors else f"exit code {fetched.returncode}"
            )
            return f"nix: nixpkgs {self.nixpkgs} cannot be fetched ({why})"
        return None

    def key(self) -> str:
        paths = [FLAKE, FLAKE_LOCK, str(self.lock_file.relative_to(self.root))]
        return files.inputs_hash(
            {
                path: files.sha256((self.root / path).read_text(encoding="utf-8"))
                for path in paths
                if (self.root / path).is_file()
            }
        )[:16]

    def develop(self, argv: list[str]) -> list[str]:
        """``nix develop`` on the spec's flake, from the spec's folder, running ``argv`` in its
        default devShell."""
        root = str(self.root)
        return ["env", f"--chdir={root}", "nix", "develop", root, *FEATURES, "--command", *argv]

    def provision(self) -> None:
        marker = self.root / VENV_MARKER
        if self.ctx.fresh:
            marker.unlink(missing_ok=True)  # the hook rebuilds .venv when its record differs
        self.ctx.progress("nix: building the devShell and .venv (nix develop --command true)")
        result = process.run(self.develop(["true"]))
        want = hashlib.sha256(self.lock_file.read_bytes()).hexdigest()
        try:
            done = marker.read_text(encoding="utf-8").strip() == want
        except OSError:
            done = False
        if not done:
            tail = "\n".join("  " + line for line in result.stderr.strip().splitlines()[-15:])
            lock_path = self.lock_file.relative_to(self.root)
            raise ToolError(
                f"nix: the devShell's hook did not build {VENV} from {lock_path}\n{tail}"
            )
        self.ctx.progress(f"nix: devShell and {VENV} ready in {result.seconds:.1f}s")

    def command(self, argv: list[str], *, env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        """``argv`` in the devShell with ``env`` set by ``env(1)``, after the shell's hook; the
        interpreter is ``.venv``'s, which the hook built from the lock."""
        exe = str(self.root / VENV / "bin" / "python") if argv[0] == "python" else argv[0]
        assignments = [f"{name}={value}" for name, value in sorted(env.items())]
        return self.develop(["env", *assignments, exe, *argv[1:]]), {}
