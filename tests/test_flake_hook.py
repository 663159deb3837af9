"""The flake's shell hook, run by bash with a recording stand-in for uv: it builds .venv from
the lock once, rebuilds when the lock's hash changes, and never takes a failed build for a
finished one."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from orchestrator import spec
from orchestrator.render.flake import venv_hook

SPEC = """\
[environment]
name = "hook"
python = "3.11"

[dependencies]
numpy = "==2.4.6"

[[index]]
url = "https://download.pytorch.org/whl/cpu"
flavors = ["cpu"]

[targets.nix]
nixpkgs = "github:NixOS/nixpkgs/03652d51808a3ea042cf9e6f0c658b8ca7c044ea"
"""

FAKE_UV = """#!/bin/sh
echo "uv $*" >> "$HOOK_LOG"
if [ "$1" = venv ]; then mkdir -p .venv/bin && : > .venv/bin/activate; exit 0; fi
[ -z "$FAKE_UV_FAIL" ]
"""


def enter(root: Path, hook: str, *, fail: bool = False) -> tuple[list[str], str]:
    log = root / "uv.log"
    log.unlink(missing_ok=True)
    env = {
        **os.environ,
        "PATH": f"{root / 'bin'}:{os.environ['PATH']}",
        "HOOK_LOG": str(log),
        "ENVPARITY_PYTHON": "/usr/bin/python3",
        "FAKE_UV_FAIL": "1" if fail else "",
    }
    done = subprocess.run(
        ["bash", "-c", hook], cwd=root, env=env, capture_output=True, text=True, check=True
    )
    calls = log.read_text().splitlines() if log.exists() else []
    return calls, done.stderr


def test_hook_builds_once_rebuilds_on_change_and_never_trusts_a_failed_build(
    tmp_path: Path,
) -> None:
    (tmp_path / "environment.toml").write_text(SPEC)
    hook = venv_hook(spec.load(tmp_path / "environment.toml"))
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "uv").write_text(FAKE_UV)
    (tmp_path / "bin" / "uv").chmod(0o755)
    lock = tmp_path / "locks" / "cpu.txt"
    lock.parent.mkdir()
    lock.write_text("numpy==2.4.6 --hash=sha256:aa\n")
    stamp = tmp_path / ".venv" / ".envparity-lock"

    calls, err = enter(tmp_path, hook)
    assert calls == [
        "uv venv --quiet --allow-existing --python /usr/bin/python3 .venv",
        "uv pip sync --quiet --python .venv/bin/python --require-hashes --extra-index-url "
        "https://download.pytorch.org/whl/cpu locks/cpu.txt",
    ]
    assert "envparity: building .venv from locks/cpu.txt" in err
    assert stamp.read_text().strip() == hashlib.sha256(lock.read_bytes()).hexdigest()

    assert enter(tmp_path, hook)[0] == []  # nothing changed: nothing runs

    old = lock.read_text()
    lock.write_text("numpy==2.4.5 --hash=sha256:bb\n")
    calls, err = enter(tmp_path, hook, fail=True)
    assert len(calls) == 2 and "envparity: could not build .venv from locks/cpu.txt" in err
    assert not stamp.exists()

    lock.write_text(old)  # back to the lock of the first build: the half-changed venv is rebuilt
    assert len(enter(tmp_path, hook)[0]) == 2


def test_hook_leaves_a_venv_it_did_not_make_alone(tmp_path: Path) -> None:
    (tmp_path / "environment.toml").write_text(SPEC)
    hook = venv_hook(spec.load(tmp_path / "environment.toml"))
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "uv").write_text(FAKE_UV)
    (tmp_path / "bin" / "uv").chmod(0o755)
    (tmp_path / "locks").mkdir()
    (tmp_path / "locks" / "cpu.txt").write_text("numpy==2.4.6 --hash=sha256:aa\n")
    mine = tmp_path / ".venv" / "lib" / "my-editable-install"
    mine.mkdir(parents=True)
    calls, err = enter(tmp_path, hook)
    assert calls == [] and mine.is_dir()
    assert "envparity: .venv was not made by envparity; leaving it as it is" in err
