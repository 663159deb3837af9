"""``envparity check`` and ``envparity doctor`` on small specs (no network: locks are written
with the real lock writer from a hand-made body, rendering never runs uv)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator import cli, files, lock, spec
from tests import gpu_stand_ins
from tests.helpers import REPO

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
    # the PEP 751 lock, from what uv would say of that body (one wheel, its URL and hash)
    wheel = f"packaging-{version('packaging')}-py3-none-any.whl"
    uv_says = {
        "packages": [
            {
                "name": "packaging",
                "version": version("packaging"),
                "wheels": [
                    {
                        "url": f"https://files.pythonhosted.org/{wheel}",
                        "hashes": {"sha256": "0" * 64},
                    }
                ],
            }
        ]
    }
    pylock = lock.render_pylock(s, "cpu", {"x86_64-linux": uv_says})
    files.atomic_write(tmp_path / pylock.path, pylock.text)
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
    assert out.rstrip().endswith("ok: 6 generated files match environment.toml")


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


class TestAdviceForALockEnvparityWouldRefuse:
    """check and verify name the command that works: plain 'envparity lock' refuses these."""

    NOTE = (
        " (--force discards hand edits; to keep one, move the change into environment.toml instead)"
    )

    @pytest.mark.parametrize(
        ("edit", "reason", "then"),
        [
            (
                lambda text: text.replace("--hash=sha256:0", "--hash=sha256:1", 1),
                "edited by hand since envparity wrote it",
                ("0 drifted file(s)", ""),
            ),
            # the files rendered from the lock's digest drift with it
            (
                lambda text: "garbage\n",
                "has no envparity header",
                ("3 drifted file(s)", " && envparity render"),
            ),
        ],
        ids=["edited-by-hand", "not-written-by-envparity"],
    )
    def test_check_and_verify_advise_lock_force(
        self,
        edit: Callable[[str], str],
        reason: str,
        then: tuple[str, str],
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        from orchestrator import verify
        from orchestrator.errors import CheckFailed

        path = project(tmp_path, monkeypatch)
        lock_file = tmp_path / "locks/cpu.txt"
        lock_file.write_text(edit(lock_file.read_text()))
        capsys.readouterr()
        assert cli.main(["check"]) == 1
        out = capsys.readouterr().out.rstrip().splitlines()
        assert out[-2:] == [
            f"locks/cpu.txt: {reason}",
            f"1 stale lock(s), {then[0]}; run: envparity lock --force{then[1]}{self.NOTE}",
        ]
        with pytest.raises(CheckFailed) as refused:
            verify.preflight(spec.load(path), ["venv"])
        render = " and 'envparity render'" if then[1] else ""
        assert str(refused.value).startswith(
            f"verify would test stale files; run 'envparity lock --force'{render}{self.NOTE}:\n"
            f"  locks/cpu.txt: {reason}"
        )

    def test_a_generated_file_edited_by_hand_needs_render_force(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        from orchestrator import verify
        from orchestrator.errors import CheckFailed

        path = project(tmp_path, monkeypatch)
        generated = tmp_path / ".env.example"
        generated.write_text(generated.read_text() + "# mine\n")
        capsys.readouterr()
        assert cli.main(["check"]) == 1
        assert capsys.readouterr().out.rstrip().splitlines()[-1] == (
            f"0 stale lock(s), 1 drifted file(s); run: envparity render --force{self.NOTE}"
        )
        with pytest.raises(CheckFailed) as refused:
            verify.preflight(spec.load(path), ["venv"])
        assert str(refused.value) == (
            f"verify would test stale files; run 'envparity render --force'{self.NOTE}:\n"
            "  .env.example: out of date or missing"
        )
        assert cli.main(["render"]) == 2  # the advice is needed: plain render refuses

    def test_a_stale_lock_alone_needs_no_force(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from orchestrator import verify
        from orchestrator.errors import CheckFailed

        path = project(tmp_path, monkeypatch)
        path.write_text(path.read_text().replace('packaging = "==', 'packaging = ">='))
        with pytest.raises(CheckFailed) as refused:
            verify.preflight(spec.load(path), ["venv"])
        assert str(refused.value) == (
            "verify would test stale files; run 'envparity lock':\n"
            "  locks/cpu.txt: stale (environment.toml changed since it was locked)\n"
            "  locks/pylock.cpu.toml: stale (environment.toml changed since it was locked)"
        )


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


def test_check_imports_only_what_checking_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """check (the pre-commit hook) imports neither torch, numpy, rich, PyYAML, nox nor the
    verdict package, and starts no process, also on this repository, whose spec has [ci]: its
    CI file is read back, not rendered (render.ci.ci_file), and its own noxfile is read, not
    loaded by nox (noxfile_reader). The time it takes: bench/bench_check.py."""
    code = (
        "import sys; processes = [];"
        "sys.addaudithook(lambda e, a: processes.append(a[1]) if e == 'subprocess.Popen' else 0);"
        "from orchestrator import cli; rc = cli.main(['check']);"
        "heavy = ('torch', 'numpy', 'rich', 'yaml', 'nox', 'orchestrator.verdict');"
        "print(rc, [m for m in heavy if m in sys.modules], processes)"
    )
    project(tmp_path, monkeypatch)
    for folder, seen in ((tmp_path, "0 [] []"), (REPO, "0 [] []")):
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=folder, capture_output=True, text=True
        )
        assert done.stdout.strip().splitlines()[-1] == seen, done.stdout + done.stderr


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
    stand_in_bin: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """nvidia-smi is a stand-in (tests/gpu_stand_ins.py) listing one H100 on ``driver``."""
    gpu_stand_ins.nvidia_smi(stand_in_bin, [gpu_stand_ins.StandInGpu("NVIDIA H100")], driver=driver)
    (tmp_path / "environment.toml").write_text(
        '[environment]\nname = "g"\npython = "3.11"\n[cuda]\nversion = "12.8"\n'
        '[dependencies]\ntorch = "==2.7.0"\n'
    )
    monkeypatch.chdir(tmp_path)
    cli.main(["doctor"])
    assert line in capsys.readouterr().out


# --------------------------------------------------------------------------- one answer


def _drop_variables(path: Path) -> None:
    text = path.read_text()
    path.write_text(
        text.split("[variables]")[0] + "[targets.host]" + text.split("[targets.host]")[1]
    )


def _change_dependency(path: Path) -> None:
    path.write_text(path.read_text().replace('packaging = "==', 'packaging = ">='))


def _hand_edit_flake(path: Path) -> None:
    flake = path.parent / "flake.nix"
    flake.write_text(flake.read_text() + "# mine\n")


def _delete_dockerfile(path: Path) -> None:
    (path.parent / ".devcontainer/Dockerfile").unlink()


def _unreadable_flake_lock(path: Path) -> None:
    (path.parent / "flake.lock").write_text("{}\n")  # written by nix, committed: checked too


class TestCheckDoctorAndVerifyAgree:
    """check, doctor and verify's preflight give one answer (``freshness.freshness``)."""

    @pytest.mark.parametrize(
        ("change", "line"),
        [
            (_drop_variables, ".env.example: no longer produced by environment.toml"),
            (
                _change_dependency,
                "locks/cpu.txt: stale (environment.toml changed since it was locked)",
            ),
            (_hand_edit_flake, "flake.nix: out of date or missing"),
            (_delete_dockerfile, ".devcontainer/Dockerfile: out of date or missing"),
            (
                _unreadable_flake_lock,
                "flake.lock: cannot read the nixpkgs input's locked revision (KeyError('nodes'))",
            ),
        ],
    )
    def test_each_drift_fails_all_three(
        self,
        change,  # type: ignore[no-untyped-def]
        line: str,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        from orchestrator import verify
        from orchestrator.errors import CheckFailed

        path = project(tmp_path, monkeypatch)
        change(path)
        capsys.readouterr()
        assert cli.main(["check"]) == 1
        checked = capsys.readouterr().out
        assert cli.main(["doctor"]) == 1
        doctored = capsys.readouterr().out
        with pytest.raises(CheckFailed) as refused:
            verify.preflight(spec.load(path), [])
        assert f"  FAIL  {line}" in doctored
        assert f"  {line}" in str(refused.value)
        assert line.split(":")[0] in checked
        assert "locks and generated files match the spec" not in doctored

    def test_all_current_passes_all_three(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        from orchestrator import verify

        path = project(tmp_path, monkeypatch)
        _drop_variables(path)
        assert cli.main(["render"]) == 0  # removes .env.example
        capsys.readouterr()
        assert cli.main(["check"]) == 0
        cli.main(["doctor"])
        assert "  ok    locks and generated files match the spec" in capsys.readouterr().out
        assert verify.preflight(spec.load(path), []) == []


# --------------------------------------------------------------------------- the host


class TestHostConformance:
    """The host is judged once (``freshness.conformance``): doctor fails on it, verify's host
    row fails on it unless accepted."""

    def _spec(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, python: str = "3.11"):  # type: ignore[no-untyped-def]
        return spec.load(project(tmp_path, monkeypatch, python=python))

    @pytest.mark.parametrize(
        ("python", "packages", "expected"),
        [
            ("3.11.7", {"packaging": "PINNED"}, []),
            (
                "3.12.1",
                {"packaging": "PINNED"},
                ["Python 3.12.1 (/x/python) does not match environment.python = '3.11'"],
            ),
            (
                "3.11.7",
                {"packaging": "1.0"},
                [
                    "1 package(s) differ from locks/cpu.txt: packaging 1.0 installed, lock pins PINNED"
                ],
            ),
            (
                "3.11.7",
                {},
                [
                    "1 package(s) differ from locks/cpu.txt: packaging is not installed (lock: PINNED)"
                ],
            ),
        ],
    )
    def test_conformance(
        self,
        python: str,
        packages: dict[str, str],
        expected: list[str],
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        from importlib.metadata import version

        from orchestrator import freshness
        from orchestrator.interpreter import Interpreter

        pinned = version("packaging")
        s = self._spec(tmp_path, monkeypatch)
        interpreter = Interpreter(
            "/x/python", python, {k: v.replace("PINNED", pinned) for k, v in packages.items()}
        )
        assert freshness.conformance(s, interpreter).problems == [
            e.replace("PINNED", pinned) for e in expected
        ]

    def test_doctor_and_verify_report_the_same_host_drift(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        import platform

        from orchestrator import verify

        s = self._spec(tmp_path, monkeypatch, python="3.9")
        monkeypatch.setenv("DATA_PATH", "/data")
        drift = verify.preflight(s, ["host"])
        assert drift == [
            f"Python {platform.python_version()} ({sys.executable}) does not match "
            "environment.python = '3.9'"
        ]
        capsys.readouterr()
        assert cli.main(["doctor"]) == 1
        assert f"  FAIL  {drift[0]}" in capsys.readouterr().out

    @pytest.mark.parametrize("accepted", [False, True])
    def test_verify_fails_the_host_row_unless_accepted(
        self,
        accepted: bool,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        from rich.console import Console

        from orchestrator import report, verify
        from orchestrator.verdict.compare import Verdict

        s = self._spec(tmp_path, monkeypatch)
        host = verify.TargetResult(
            "host",
            "ok",
            verdict=Verdict(kind="bitwise", pairs=()),
            drift=["Python 3.11.2 (/usr/bin/python3) does not match environment.python = '3.12'"],
            drift_accepted=accepted,
        )
        result = verify.VerifyResult(s, [host], None, strict=False)
        console = Console(width=80, record=True, highlight=False, emoji=False, markup=False)
        report.print_table(result, console)
        text = " ".join(console.export_text().split())  # lines wrap at 80 columns
        if accepted:
            assert result.problems == []
            assert "differs from the spec (accepted)" in text
            assert (
                "host: differs from the spec (accepted): Python 3.11.2 (/usr/bin/python3) does "
                "not match environment.python = '3.12'" in text
            )
        else:
            assert result.problems == [
                "host: does not match the spec (Python 3.11.2 (/usr/bin/python3) does not match "
                "environment.python = '3.12'); fix it (envparity doctor says how) or pass "
                "--accept-host-drift"
            ]
            assert "FAIL host: does not match the spec" in text


class TestDoctorJudgesTheUsersEnvironmentAndItsFixWorks:
    """With the real uv: doctor finds a package that differs from the lock, in the environment
    the user's code runs in, and the command it suggests fixes it without removing envparity."""

    SPEC = '[environment]\nname = "fix"\npython = "3.11"\n[dependencies]\niniconfig = "==2.0.0"\n'

    def _venv(self, path: Path, *packages: str, envparity: bool) -> Path:
        subprocess.run(["uv", "venv", "--quiet", "--python", sys.executable, str(path)], check=True)
        python = path / "bin" / "python"
        args = ["uv", "pip", "install", "--quiet", "--python", str(python), *packages]
        subprocess.run(args + (["packaging", "-e", str(REPO)] if envparity else []), check=True)
        return python

    @pytest.mark.parametrize(
        "layout", ["envparity installed in the project's venv", "uv tool", "activated venv"]
    )
    def test_doctor_fix_makes_the_env_match_and_keeps_envparity(
        self, layout: str, tmp_path: Path
    ) -> None:
        if shutil.which("uv") is None:
            pytest.fail("uv is not on PATH (pip install uv)")
        project_dir = tmp_path / "project"
        project_dir.mkdir()
        (project_dir / "environment.toml").write_text(self.SPEC)
        assert cli.main(["--spec", str(project_dir / "environment.toml"), "lock"]) == 0
        user = self._venv(tmp_path / "user", "iniconfig==1.1.1", envparity=layout != "uv tool")
        runner = user
        env = {**os.environ, "PATH": f"{user.parent}{os.pathsep}{os.environ['PATH']}"}
        env.pop("VIRTUAL_ENV", None)
        if layout == "uv tool":
            runner = self._venv(tmp_path / "tool", envparity=True)
            (tmp_path / "tool" / "uv-receipt.toml").write_text("[tool]\n")  # as uv tool writes
        elif layout == "activated venv":  # envparity elsewhere, the user's venv activated
            runner = self._venv(tmp_path / "elsewhere", envparity=True)
            env = {**os.environ, "VIRTUAL_ENV": str(user.parent.parent)}

        def doctor() -> str:
            done = subprocess.run(
                [str(runner), "-m", "orchestrator", "doctor"],
                cwd=project_dir,
                env=env,
                capture_output=True,
                text=True,
            )
            return done.stdout + done.stderr

        before = doctor()
        judged = user.with_name("python3") if layout == "uv tool" else user  # python3 on PATH
        assert f"The host interpreter ({judged})" in before
        assert (
            "  FAIL  1 package(s) differ from locks/cpu.txt: iniconfig 1.1.1 installed, "
            "lock pins 2.0.0" in before
        )
        fix = before.split("lock pins 2.0.0\n        -> ", 1)[1].splitlines()[0]
        assert fix == shlex.join(
            [
                "uv",
                "pip",
                "install",
                "--python",
                str(judged),
                "--require-hashes",
                "-r",
                "locks/cpu.txt",
            ]
        )
        subprocess.run(shlex.split(fix), cwd=project_dir, env=env, check=True, capture_output=True)
        after = doctor()
        assert "  ok    installed packages match locks/cpu.txt" in after, after
        for python in {user, runner}:  # envparity is still where it was installed
            subprocess.run([str(python), "-c", "import orchestrator.cli"], check=True)
