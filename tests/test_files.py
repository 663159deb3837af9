"""The writer (orchestrator.files) through ``envparity render``: atomic writes, refusal to
clobber hand edits or foreign files, ``--force``, and ``render --check``'s diff and exit code."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator import cli, files

SPEC = """\
[environment]
name = "writer"
python = "3.11"

[dependencies]
numpy = ">=2"

[variables]
DATA_PATH = { default = "./data", description = "where the data lives" }

[targets.nix]
nixpkgs = "github:NixOS/nixpkgs/03652d51808a3ea042cf9e6f0c658b8ca7c044ea"

[targets.devcontainer]
image = "python:3.11-slim"
"""
GENERATED = [
    "flake.nix",
    ".devcontainer/devcontainer.json",
    ".devcontainer/Dockerfile",
    ".env.example",
]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "environment.toml").write_text(SPEC, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_render_writes_every_file_then_reports_them_unchanged(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["render"]) == 0
    assert capsys.readouterr().out.split("\n")[:-1] == [f"  created {p}" for p in GENERATED]
    assert cli.main(["render"]) == 0
    assert capsys.readouterr().out.split("\n")[:-1] == [f"unchanged {p}" for p in GENERATED]
    for path in GENERATED:
        assert oct((project / path).stat().st_mode & 0o777) == "0o644"


def test_render_check_exits_0_when_fresh_and_1_with_a_diff_on_drift(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["render"]) == 0
    capsys.readouterr()
    assert cli.main(["render", "--check"]) == 0
    assert capsys.readouterr() == ("", "")

    spec = project / "environment.toml"
    spec.write_text(SPEC.replace('"./data"', '"/mnt/data"'), encoding="utf-8")
    before = snapshot(project)
    assert cli.main(["render", "--check"]) == 1
    out, err = capsys.readouterr()
    assert snapshot(project) == before, "--check wrote something"
    assert out.startswith("--- a/")
    assert "--- a/.env.example\n+++ b/.env.example\n@@ " in out
    assert "\n-DATA_PATH=./data\n+DATA_PATH=/mnt/data\n" in out
    assert err.endswith(" generated file(s) out of date; run 'envparity render'\n")


def test_render_check_shows_a_missing_file_as_created_from_dev_null(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["render"]) == 0
    (project / "flake.nix").unlink()
    capsys.readouterr()
    assert cli.main(["render", "--check"]) == 1
    assert capsys.readouterr().out.startswith("--- /dev/null\n+++ b/flake.nix\n")


def test_render_refuses_to_overwrite_a_hand_edit_and_writes_nothing(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["render"]) == 0
    dockerfile = project / ".devcontainer/Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "RUN echo mine\n")
    # a spec change makes every file stale; none may be written while one is refused
    (project / "environment.toml").write_text(SPEC.replace("writer", "writer2"))
    before = snapshot(project)
    capsys.readouterr()
    assert cli.main(["render"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "envparity: error\nrefusing to overwrite, nothing written:\n"
        "  .devcontainer/Dockerfile: edited by hand since envparity wrote it\n"
        "move your changes into environment.toml, or rerun with --force to discard them\n"
    )
    assert snapshot(project) == before


def test_render_refuses_a_file_envparity_did_not_write(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "flake.nix").write_text("{ outputs = _: { }; }\n")
    before = snapshot(project)
    assert cli.main(["render"]) == 2
    assert "  flake.nix: exists and was not written by envparity\n" in capsys.readouterr().err
    assert snapshot(project) == before


def test_render_force_overwrites_hand_edits_and_foreign_files(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["render"]) == 0
    expected = snapshot(project)
    (project / "flake.nix").write_text("{ outputs = _: { }; }\n")
    env = project / ".env.example"
    env.write_text(env.read_text() + "SECRET=oops\n")
    capsys.readouterr()
    assert cli.main(["render", "--force"]) == 0
    assert capsys.readouterr().out.split("\n")[:-1] == [
        "  updated flake.nix",
        "unchanged .devcontainer/devcontainer.json",
        "unchanged .devcontainer/Dockerfile",
        "  updated .env.example",
    ]
    assert snapshot(project) == expected


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli.main(["render"]) == 0
    before = snapshot(project)
    (project / "environment.toml").write_text(SPEC.replace("writer", "writer2"))
    before["environment.toml"] = (project / "environment.toml").read_bytes()

    def disk_full(src: str, dst: str) -> None:
        # the new content is complete in the temporary file when the rename fails
        assert Path(src).read_text(encoding="utf-8").endswith("\n")
        assert Path(src).parent == Path(dst).parent
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError, match="No space left"):
        files.atomic_write(project / "flake.nix", "new\n")
    assert snapshot(project) == before
    assert [p.name for p in project.rglob("*.tmp")] == []


def test_readers_see_the_old_file_or_the_new_one_never_part(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = project / "flake.nix"
    target.write_text("old\n")
    seen = []
    real_replace = os.replace

    def observe(src: str, dst: str) -> None:
        seen.append(target.read_text())  # just before the rename: still the whole old file
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", observe)
    files.atomic_write(target, "new\n" * 10_000)
    assert seen == ["old\n"]
    assert target.read_text() == "new\n" * 10_000
