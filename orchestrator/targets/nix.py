"""``nix``: the generated flake's default devShell, entered with ``nix develop``.

``provision()`` runs ``nix develop <spec folder> --command true``: Nix builds (or fetches) the
shell's packages, and the shell hook builds ``.venv`` from the lock, hash-checked, recording
the lock's hash in ``.venv/.envparity-lock`` only once it succeeded (so it is rebuilt when the
lock changes, and a half-built ``.venv`` is never taken for a finished one). Commands then run
as ``nix develop ... --command env K=V ... .venv/bin/python ...``, with the launch environment
set for that process alone. The hook works in the current folder, so every command starts
with ``env --chdir=<spec folder>``: it runs the same from wherever verify is started.

Every ``nix`` command passes ``--accept-flake-config``: without it Nix ignores the flake's
``nixConfig`` (the CUDA binary caches) and builds CUDA packages from source.

The target is unavailable, saying why and what to install, when ``nix`` is missing or older
than ``MIN_NIX`` (nixpkgs refuses older ones: its ``lib/minfeatures.nix`` asks for 2.18), and
when the pinned nixpkgs cannot be fetched (no network, or no access to GitHub), rather than
failing half-way through a build.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

from orchestrator import files, process
from orchestrator.errors import ToolError
from orchestrator.spec import NixTarget as NixSettings
from orchestrator.targets.base import Target

FEATURES = ["--extra-experimental-features", "nix-command flakes"]
# Trust the flake's nixConfig (its CUDA binary caches); Nix ignores it otherwise.
ACCEPT_CONFIG = ["--accept-flake-config"]
# The oldest Nix that current nixpkgs evaluates with (nixpkgs lib/minfeatures.nix, since 2025-08).
MIN_NIX = (2, 18)
INSTALL_NIX = (
    "install Nix 2.18 or newer (https://nixos.org/download; on Debian 13 `apt install nix-bin` "
    "gives 2.26, Debian 12's is 2.8)"
)
# `nix (Nix) 2.26.3`, or a vendor's `nix (Determinate Nix 3.8.2) 2.30.1`: Nix's version follows
_VERSION_RE = re.compile(r"^nix \([^)]*\) (\d+)\.(\d+)(?:\.(\d+))?", re.MULTILINE)
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
            return f"nix: not installed; {INSTALL_NIX}"
        too_old = nix_too_old() if "nix" in self.spec.targets else None
        if too_old:
            return too_old
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
            # Nix >= 2.18 nests its errors ("error:" alone, then indented "error: ..."): the
            # last one with text is the innermost, the actual cause.
            errors = [
                line.strip().removeprefix("error:").strip()
                for line in fetched.stderr.splitlines()
                if line.strip().startswith("error:") and line.strip() != "error:"
            ]
            why = errors[-1] if errors else f"exit code {fetched.returncode}"
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
        return [
            "env", f"--chdir={root}",
            "nix", "develop", root, *FEATURES, *ACCEPT_CONFIG, "--command", *argv,
        ]  # fmt: skip

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


def nix_version() -> tuple[int, ...] | None:
    """The installed Nix's version from ``nix --version`` (``nix (Nix) 2.26.3`` -> (2, 26, 3)),
    or ``None`` when the output does not say."""
    result = process.run(["nix", "--version"], check=False)
    match = _VERSION_RE.search(result.stdout)
    if result.returncode != 0 or match is None:
        return None
    return tuple(int(part) for part in match.groups() if part is not None)


def nix_too_old() -> str | None:
    """Why the installed Nix cannot evaluate current nixpkgs, with what to install; ``None``
    when it can."""
    version = nix_version()
    if version is None:
        return f"nix: `nix --version` does not give a version; {INSTALL_NIX}"
    if version < MIN_NIX:
        shown = ".".join(map(str, version))
        wanted = ".".join(map(str, MIN_NIX))
        return f"nix: Nix {shown} is too old (nixpkgs needs {wanted} or newer); {INSTALL_NIX}"
    return None
