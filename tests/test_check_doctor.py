"""``envparity check`` and ``envparity doctor`` on small specs (no network: locks are written
with the real lock writer from a hand-made body, rendering never runs uv)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import cli, files, lock, spec
from tests.conftest import REPO

SPEC = """\
[environment]
name = "demo"
python = "{python}"

[dependencies]
packaging = "=={packaging}"

[variables]
DATA_PATH = {{ required = true, description = "where the data lives" }}

[targets.host]

[targets.devcontainer]
image = "debian:bookworm-slim"

[targets.nix]
nixpkgs = "github:NixOS/nixpkgs/nixos-unstable"
"""


def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, python: str = "3.11") -> Path:
    from importlib.metadata import version

    path = tmp_path / "environment.toml"
    path.write_text(SPEC.format(python=python, packaging=version("packaging")))
    s = spec.load(path)
    for target in lock.lock_targets(s):
        body = f"packaging=={version('packaging')} \\\n    --hash=sha256:{'0' * 64}\n"
        files.atomic_write(tmp_path / target.path, lock.render_lock(s, target, body).text)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["render"]) == 0
    return path


def test_check_passes_when_fresh_and_warns_about_pins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    project(tmp_path, monkeypatch)
    capsys.readouterr()
    assert cli.main(["check"]) == 0
    out = capsys.readouterr().out
    assert (
        "warning: targets.devcontainer.image 'debian:bookworm-slim' is not pinned by digest" in out
    )
    assert (
        "warning: targets.nix.nixpkgs 'github:NixOS/nixpkgs/nixos-unstable' is not pinned to a commit"
        in out
    )
    assert out.rstrip().endswith("ok: 5 generated files match environment.toml")


def test_check_shows_a_diff_and_fails_on_drift_and_stale_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = project(tmp_path, monkeypatch)
    path.write_text(path.read_text().replace('name = "demo"', 'name = "demo2"'))
    capsys.readouterr()
    assert cli.main(["check"]) == 1
    out = capsys.readouterr().out
    assert '-  "name": "demo",\n+  "name": "demo2",' in out
    assert "--- a/.devcontainer/devcontainer.json\n+++ b/.devcontainer/devcontainer.json" in out
    path.write_text(path.read_text().replace('packaging = "==', 'packaging = ">='))
    assert cli.main(["check"]) == 1
    out = capsys.readouterr().out
    assert "locks/cpu.txt: stale (environment.toml changed since it was locked)" in out
    assert out.rstrip().endswith("run: envparity lock && envparity render")


def test_check_refuses_an_impossible_combination_with_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "environment.toml").write_text(
        '[environment]\nname = "x"\npython = "3.11"\n[cuda]\nversion = "12.4"\n'
        '[dependencies]\ntorch = "==2.1.0"\n'
    )
    monkeypatch.chdir(tmp_path)
    assert cli.main(["check"]) == 2
    assert (
        "environment.toml: cuda.version: torch 2.1.0 has no CUDA 12.4 build; it has 11.8 and 12.1"
        in (capsys.readouterr().err)
    )
    assert cli.main(["render"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["environment.toml"]


def test_check_does_not_import_torch_numpy_or_rich() -> None:
    code = (
        "import sys; from orchestrator import cli; rc = cli.main(['check']);"
        "print(rc, [m for m in ('torch', 'numpy', 'rich') if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.stdout.strip().splitlines()[-1] == "0 []", done.stdout + done.stderr


def test_the_repository_itself_has_no_drift() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "check"], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_doctor_reports_each_checklist_item(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    project(tmp_path, monkeypatch, python="3.9")
    monkeypatch.delenv("DATA_PATH", raising=False)
    capsys.readouterr()
    assert cli.main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "  ok    locks and generated files match the spec" in out
    assert "does not match environment.python = '3.9'" in out
    assert "  ok    installed packages match locks/cpu.txt" in out
    assert "  FAIL  required variable DATA_PATH is not set (environment or .env)" in out
    assert "  warn  .env is not in .gitignore" in out
    assert "warn  not set as the spec says: CUBLAS_WORKSPACE_CONFIG=:4096:8" in out
    (tmp_path / ".env").write_text("DATA_PATH=/data\n")
    (tmp_path / ".gitignore").write_text(".env\n")
    capsys.readouterr()
    cli.main(["doctor"])
    out = capsys.readouterr().out
    assert "  ok    required variables are set" in out and ".gitignore" not in out


def test_an_unrelated_spec_edit_leaves_generated_files_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = project(tmp_path, monkeypatch)
    path.write_text(path.read_text() + "\n[verify]\nsteps = 7\n")
    capsys.readouterr()
    assert cli.main(["check"]) == 0
    path.write_text(path.read_text().replace("where the data lives", "where data lives"))
    assert cli.main(["render"]) == 0
    assert capsys.readouterr().out.splitlines()[-4:] == [
        "unchanged flake.nix",
        "unchanged .devcontainer/devcontainer.json",
        "unchanged .devcontainer/Dockerfile",
        "  updated .env.example",
    ]


def test_unreadable_files_are_one_message_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    project(tmp_path, monkeypatch)
    (tmp_path / "flake.nix").write_bytes(b"\xff\xfe not text")
    capsys.readouterr()
    assert cli.main(["check"]) == 2
    assert capsys.readouterr().err == (
        "envparity: flake.nix: not UTF-8 text (byte 0); delete it or restore it\n"
    )
    (tmp_path / "locks/cpu.txt").write_bytes(b"\xff")
    assert cli.main(["lock", "--check"]) == 2
    assert "locks/cpu.txt: not UTF-8 text" in capsys.readouterr().err
    assert cli.main(["render"]) == 2  # the lock it would install cannot be read
    assert "locks/cpu.txt: not UTF-8 text" in capsys.readouterr().err


def test_files_of_a_removed_target_are_reported_and_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = project(tmp_path, monkeypatch)
    path.write_text(path.read_text().split("[targets.nix]")[0])  # the nix target is gone
    capsys.readouterr()
    assert cli.main(["check"]) == 1
    assert "flake.nix: no longer produced by environment.toml" in capsys.readouterr().out
    assert cli.main(["render", "--check"]) == 1
    assert (tmp_path / "flake.nix").is_file()  # --check removes nothing
    assert cli.main(["render"]) == 0
    assert "  removed flake.nix" in capsys.readouterr().out
    assert not (tmp_path / "flake.nix").exists()
    assert cli.main(["check"]) == 0


def test_a_hand_edited_orphan_is_kept_unless_forced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = project(tmp_path, monkeypatch)
    with (tmp_path / ".env.example").open("a") as fh:
        fh.write("MINE=1\n")
    path.write_text(
        path.read_text().replace(
            '[variables]\nDATA_PATH = { required = true, description = "where the data lives" }\n',
            "",
        )
    )
    capsys.readouterr()
    assert cli.main(["render"]) == 2
    assert "edited by hand since: .env.example" in capsys.readouterr().err
    assert (tmp_path / ".env.example").is_file()
    assert cli.main(["render", "--force"]) == 0
    assert not (tmp_path / ".env.example").exists()


def test_a_lock_of_a_flavor_no_longer_in_the_spec_is_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    project(tmp_path, monkeypatch)
    (tmp_path / "locks/cu121.txt").write_text((tmp_path / "locks/cpu.txt").read_text())
    (tmp_path / "locks/notes.txt").write_text("my own notes\n")  # no header: not ours
    capsys.readouterr()
    assert cli.main(["lock", "--check"]) == 1
    out = capsys.readouterr().out
    assert "locks/cu121.txt: no longer produced by environment.toml" in out
    assert "notes.txt" not in out


@pytest.mark.parametrize(
    ("driver", "line"),
    [
        ("570.86", "  ok    NVIDIA H100: driver 570.86 >= 570.26"),
        (
            "550.54",
            "  warn  NVIDIA H100: driver 550.54 runs CUDA 12.8 only under minor-version compatibility",
        ),
        (
            "470.1",
            "  FAIL  NVIDIA H100: driver 470.1 cannot run CUDA 12.8 (needs 525.60.13 or newer",
        ),
    ],
)
def test_doctor_judges_the_driver_by_minor_version_compatibility(
    driver: str,
    line: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from orchestrator import gpus

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(
        f'#!/bin/sh\nif [ "$1" = -L ]; then echo "GPU 0: NVIDIA H100"; else echo "NVIDIA H100, {driver}"; fi\n'
    )
    (bin_dir / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    gpus.nvidia_smi.cache_clear()
    (tmp_path / "environment.toml").write_text(
        '[environment]\nname = "g"\npython = "3.11"\n[cuda]\nversion = "12.8"\n'
        '[dependencies]\ntorch = "==2.7.0"\n'
    )
    monkeypatch.chdir(tmp_path)
    try:
        cli.main(["doctor"])
    finally:
        gpus.nvidia_smi.cache_clear()
    assert line in capsys.readouterr().out
