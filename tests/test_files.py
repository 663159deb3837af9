"""The writer (orchestrator.files) through ``envparity render``: atomic writes, refusal to
clobber hand edits or foreign files, ``--force``, and ``render --check``'s diff and exit code."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
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


# --------------------------------------------------------------------------- all or nothing


def temporaries(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob(f"*{files.TMP_SUFFIX}"))


class TestAllOrNothing:
    """Every write and refusal is planned before anything is written; a failure while
    writing leaves the old files and no temporary file."""

    def test_a_refused_orphan_stops_every_write(
        self, project: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert cli.main(["render"]) == 0
        env = project / ".env.example"
        env.write_text(env.read_text() + "MINE=1\n")
        # every other file is stale now, and .env.example is an edited orphan
        spec = (
            SPEC.replace("writer", "writer2").split("[variables]")[0]
            + SPEC.split('where the data lives" }\n')[1]
        )
        (project / "environment.toml").write_text(spec)
        before = snapshot(project)
        capsys.readouterr()
        assert cli.main(["render"]) == 2
        assert capsys.readouterr().err == (
            "envparity: refusing to remove files the spec no longer produces, edited by hand "
            "since: .env.example; delete them yourself, or rerun with --force (nothing written)\n"
        )
        assert snapshot(project) == before

    def test_a_failure_while_staging_writes_nothing(
        self, project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert cli.main(["render"]) == 0
        (project / "environment.toml").write_text(SPEC.replace("writer", "writer2"))
        before = snapshot(project)
        calls = []
        real_fsync = os.fsync

        def full_on_the_third(fd: int) -> None:
            calls.append(fd)
            if len(calls) == 3:
                raise OSError(28, "No space left on device")
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", full_on_the_third)
        capsys.readouterr()
        assert cli.main(["render"]) == 2
        assert capsys.readouterr().err == "envparity: No space left on device\n"
        assert snapshot(project) == before
        assert temporaries(project) == []

    def test_a_killed_render_leaves_temporaries_that_the_next_one_removes(
        self, project: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """kill -9 between staging and renaming (the widest window), with a real process."""
        import signal
        import subprocess
        import sys
        import time

        (project / "go").unlink(missing_ok=True)
        script = (
            "import os, time, sys\n"
            "from orchestrator import cli\n"
            "def stop(src, dst):\n"
            "    open('staged', 'w').close()\n"
            "    time.sleep(60)\n"
            "os.replace = stop\n"
            "sys.exit(cli.main(['render']))\n"
        )
        child = subprocess.Popen([sys.executable, "-c", script], cwd=project)
        try:
            deadline = time.monotonic() + 30
            while not (project / "staged").exists():
                assert child.poll() is None and time.monotonic() < deadline, "never staged"
                time.sleep(0.02)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        (project / "staged").unlink()
        left = temporaries(project)
        assert left and all(p.startswith((".", ".devcontainer/.")) for p in left)
        assert not (project / "flake.nix").exists()  # nothing renamed into place
        capsys.readouterr()
        assert cli.main(["render"]) == 0
        assert temporaries(project) == []
        assert cli.main(["render", "--check"]) == 0


class TestConcurrentRenders:
    """Two renders at once take turns on a lock of the spec folder: both succeed, the files
    are whole (before the lock, about a third of such pairs ended in a spurious exit 2)."""

    def test_two_renders_at_once_both_succeed(self, project: Path) -> None:
        import subprocess
        import sys

        for _ in range(5):
            for path in GENERATED:
                (project / path).unlink(missing_ok=True)
            runs = [
                subprocess.Popen(
                    [sys.executable, "-m", "orchestrator", "render"],
                    cwd=project,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for _ in range(2)
            ]
            results = [(r.wait(), r.communicate()) for r in runs]
            assert [code for code, _ in results] == [0, 0], results
            outputs = sorted(out for _, (out, _) in results)
            assert outputs == sorted(
                ["".join(f"{s:>9} {p}\n" for p in GENERATED) for s in ("created", "unchanged")]
            )
            assert temporaries(project) == []
            assert cli.main(["render", "--check"]) == 0


# --------------------------------------------------------------------------- hand edits

EDITS: dict[str, Callable[[str], str]] = {
    "first line": lambda text: text.replace("do not edit.", "edit me.", 1),
    "recorded content hash": lambda text: re.sub(
        r"content=sha256:([0-9a-f])",
        lambda m: "content=sha256:" + "0123456789abcdef"[(int(m[1], 16) + 1) % 16],
        text,
        count=1,
    ),
    "a body line": lambda text: "\n".join([*text.split("\n")[:3], "", *text.split("\n")[3:]]),
    "last line": lambda text: text + "extra\n",
    "the final newline": lambda text: text[:-1],
}


class TestHandEdits:
    """An edit on any line but the inputs hash is detected, the header's first line included;
    render then refuses to overwrite it."""

    @pytest.mark.parametrize("edit", EDITS)
    @pytest.mark.parametrize("path", GENERATED)
    def test_detected_and_kept(
        self, path: str, edit: str, project: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert cli.main(["render"]) == 0
        target = project / path
        edited = EDITS[edit](target.read_text())
        assert edited != target.read_text()
        target.write_text(edited)
        header = files.read_header(edited)
        assert header is not None and header.hand_edited
        (project / "environment.toml").write_text(SPEC.replace("writer", "writer2"))
        before = snapshot(project)
        capsys.readouterr()
        assert cli.main(["render"]) == 2
        assert f"  {path}: edited by hand since envparity wrote it\n" in capsys.readouterr().err
        assert snapshot(project) == before

    def test_an_edited_inputs_hash_only_makes_the_file_stale(
        self, project: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The inputs hash is envparity's record, not the user's text: it is rewritten."""
        assert cli.main(["render"]) == 0
        flake = project / "flake.nix"
        flake.write_text(
            re.sub(r"inputs=sha256:[0-9a-f]{64}", "inputs=sha256:" + "0" * 64, flake.read_text())
        )
        capsys.readouterr()
        assert cli.main(["render"]) == 0
        assert "  updated flake.nix" in capsys.readouterr().out


class TestFilesFromEarlierVersions:
    """Files whose recorded hash covers the body only (written before the first line was
    hashed, such as locks committed then) are not edits, unless their first line changed."""

    def legacy(self, f: files.Generated, first: str | None = None) -> str:
        first = first if first is not None else f.first_line
        return (
            f"{first}\n# envparity: inputs=sha256:{f.inputs} content=sha256:{files.sha256(f.body)}"
            f"\n{f.body}"
        )

    def test_unedited(self) -> None:
        f = files.Generated("flake.nix", "{ }\n", "a" * 64)
        header = files.read_header(self.legacy(f))
        assert header is not None and not header.hand_edited

    def test_first_line_edited(self) -> None:
        f = files.Generated("flake.nix", "{ }\n", "a" * 64)
        header = files.read_header(self.legacy(f, "# my own flake"))
        assert header is not None and header.hand_edited


def test_kept_reads_back_only_an_unedited_file_made_from_the_same_inputs(tmp_path: Path) -> None:
    """``files.kept``: the file on disk stands for rendering again only when its header records
    these inputs, its first line is the one envparity writes, and no line was edited."""
    made = files.Generated("ci.yml", "jobs: {}\n", "a" * 64, regenerate="envparity ci github")
    header = {"regenerate": "envparity ci github", "spec_name": "environment.toml"}
    assert files.kept(tmp_path, "ci.yml", "a" * 64, **header) is None  # missing
    (tmp_path / "ci.yml").write_text(made.text)
    assert files.kept(tmp_path, "ci.yml", "a" * 64, **header) == made
    assert files.kept(tmp_path, "ci.yml", "b" * 64, **header) is None  # other inputs
    assert files.kept(tmp_path, "ci.yml", "a" * 64, regenerate="envparity render") is None
    assert files.kept(tmp_path, "ci.yml", "a" * 64, **{**header, "spec_name": "x.toml"}) is None
    (tmp_path / "ci.yml").write_text(made.text.replace("{}", "{ a: 1 }"))
    assert files.kept(tmp_path, "ci.yml", "a" * 64, **header) is None  # edited by hand
    (tmp_path / "ci.yml").write_text("jobs: {}\n")
    assert files.kept(tmp_path, "ci.yml", "a" * 64, **header) is None  # no header
