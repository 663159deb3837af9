"""Thin sessions over the library. The test environment is the repository's own lock:
``locks/cpu.txt``, generated from ``environment.toml``, installed hash-checked by uv.

    nox -s tests        the test suite (README's test command)
    nox -s lint         ruff + mypy
    nox -s lock|render|check
    nox -s verify       host and venv, compared with each other and with fingerprints/
    nox -s "probe(venv)" / compare   what each CI job runs (orchestrator.nox_sessions)
    nox -s bench        benchmarks; results go in docs/benchmarks.md
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).parent
sys.path.insert(0, str(ROOT))

from orchestrator import lock, spec  # noqa: E402
from orchestrator.compat import PYTORCH_INDEX  # noqa: E402
from orchestrator.nox_sessions import register  # noqa: E402

nox.options.default_venv_backend = "uv"
nox.options.sessions = ["tests", "lint", "check"]
nox.options.reuse_existing_virtualenvs = True

SPEC = spec.load(ROOT / "environment.toml")
PYTHON = SPEC.environment.python_minor


def _pip_find_links() -> str:
    """PIP_FIND_LINKS, else pip's configured ``global.find-links`` (as .ci/run reads it)."""
    if os.environ.get("PIP_FIND_LINKS"):
        return os.environ["PIP_FIND_LINKS"]
    try:
        out = subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", "global.find-links"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


# A machine whose pip reads a local wheel folder (PIP_FIND_LINKS, or pip's find-links setting)
# and cannot reach the PyTorch CPU index uses that folder as its mirror: the lock's hashes
# decide what is accepted.
if "ENVPARITY_MIRRORS" not in os.environ and (_links := _pip_find_links()):
    os.environ["ENVPARITY_MIRRORS"] = f"{PYTORCH_INDEX}cpu=" + _links


# The devcontainers CLI the tests and the devcontainer target run: npm package, pinned.
DEVCONTAINER_CLI = "@devcontainers/cli@0.89.0"
NODE_DIR = ROOT / ".ci" / "node"  # git-ignored


def devcontainer_cli(session: nox.Session) -> None:
    """Install the devcontainers CLI into .ci/node when it is not on PATH, and put it there."""
    bin_dir = NODE_DIR / "node_modules" / ".bin"
    if shutil.which("devcontainer") is None and not (bin_dir / "devcontainer").exists():
        session.run(
            "npm",
            "install",
            "--prefix",
            str(NODE_DIR),
            "--no-audit",
            "--no-fund",
            "--no-save",
            DEVCONTAINER_CLI,
            external=True,
        )
    session.env["PATH"] = f"{bin_dir}{os.pathsep}{session.env.get('PATH') or os.environ['PATH']}"


def install(session: nox.Session) -> None:
    """The repository's cpu lock, hash-checked, then envparity itself without dependencies."""
    target = lock.LockTarget("cpu", "x86_64-linux")
    session.run_install(
        "uv",
        "pip",
        "sync",
        "--python",
        session.virtualenv.location,
        "--require-hashes",
        "--compile-bytecode",
        *lock.source_args(SPEC, "cpu"),
        target.path,
    )
    session.run_install(
        "uv", "pip", "install", "--python", session.virtualenv.location, "--no-deps", "-e", "."
    )


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    install(session)
    devcontainer_cli(session)
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    install(session)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")


@nox.session(python=PYTHON, name="lock")
def lock_(session: nox.Session) -> None:
    install(session)
    session.run("envparity", "lock", *session.posargs)


@nox.session(python=PYTHON)
def render(session: nox.Session) -> None:
    install(session)
    session.run("envparity", "render", *session.posargs)


@nox.session(python=PYTHON)
def check(session: nox.Session) -> None:
    install(session)
    session.run("envparity", "check")


def verify_setup(session: nox.Session) -> None:
    install(session)
    devcontainer_cli(session)


# probe(<target>), verify and compare: the sessions every envparity user gets (the CI workflow,
# .github/workflows/envparity.yml, calls them). `nox -s verify` runs host and venv: here the
# devcontainer and the Nix shell install the cu130 lock, a multi-GB CUDA torch, which these CPU
# machines do not download; name them to run them: `nox -s verify -- --targets devcontainer`.
register(ROOT / "environment.toml", setup=verify_setup, verify_targets=("host", "venv"))


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    install(session)
    for script in sorted((ROOT / "bench").glob("bench_*.py")):
        session.run("python", str(script), *session.posargs)
