"""``.pre-commit-hooks.yaml``: the hooks, run by the real pre-commit (``pre-commit try-repo``)
on a scratch git repository. try-repo clones this repository: the hooks and envparity it
installs are those of the last commit (plus uncommitted changes, which try-repo carries)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator import process
from tests.helpers import REPO, make_project

SPEC = """\
[environment]
name = "hooks-demo"
python = "3.11"

[dependencies]
packaging = "==24.2"
"""


def git(folder: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=folder,
        check=True,
        capture_output=True,
    )


def pre_commit(folder: Path, hook: str, home: Path) -> process.Completed:
    exe = shutil.which("pre-commit", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("pre-commit is not installed: it comes with the test lock (nox -s tests)")
    env = {**os.environ, "PRE_COMMIT_HOME": str(home)}
    env.pop("PYTHONPATH", None)
    args = [exe, "try-repo", str(REPO), hook, "--all-files"]
    return process.run(args, env=env, cwd=folder, check=False, timeout=900)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = make_project(tmp_path_factory.mktemp("hooks") / "repo", SPEC)
    git(folder, "init", "-q")
    git(folder, "add", "-A")
    git(folder, "commit", "-qm", "init")
    return folder, tmp_path_factory.mktemp("pre-commit-home")


def test_the_hooks_file_offers_check_and_lock_check() -> None:
    hooks = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    assert [(h["id"], h["entry"]) for h in hooks] == [
        ("envparity-check", "envparity check"),
        ("envparity-lock-check", "envparity lock --check"),
    ]


@pytest.mark.parametrize("hook", ["envparity-check", "envparity-lock-check"])
def test_hook_passes_on_a_current_repository_and_fails_on_a_stale_lock(
    scratch: tuple[Path, Path], hook: str
) -> None:
    folder, home = scratch
    ok = pre_commit(folder, hook, home)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "Passed" in ok.stdout
    spec = folder / "environment.toml"
    before = spec.read_text()
    spec.write_text(before.replace("==24.2", "==24.1"))
    try:
        stale = pre_commit(folder, hook, home)
    finally:
        spec.write_text(before)
    assert stale.returncode == 1, stale.stdout + stale.stderr
    assert "Failed" in stale.stdout
    assert "locks/cpu.txt: stale (environment.toml changed since it was locked)" in stale.stdout
