"""The README's first session, command for command, on a scratch project whose requirements.txt
has the shape of `pip freeze` output (torch from the PyTorch CPU index, through the local
mirror), with the real uv and torch; and what verify does with targets the spec has no table
for."""

from __future__ import annotations

import re
import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest

from orchestrator import process
from tests import helpers
from tests.helpers import CPU_INDEX, REPO, freeze

README = REPO / "README.md"


def first_session() -> list[list[str]]:
    """The commands of the README's "A first session" block, as argument lists."""
    text = README.read_text(encoding="utf-8")
    block = text.split("## A first session", 1)[1].split("```console", 1)[1].split("```", 1)[0]
    commands = []
    for line in block.strip().splitlines():
        if line.startswith("$ "):
            commands.append(line[2:].split("#", 1)[0].split())
    return commands


def envparity(project: Path, *args: str, columns: int = 80) -> process.Completed:
    """``tests.helpers.envparity`` as wide as the README's blocks (80 columns)."""
    return helpers.envparity(project, *args, columns=columns, timeout=900)


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A scratch project taken through the README's first session; the output of each command."""
    project = tmp_path_factory.mktemp("first") / "project"
    project.mkdir()
    pins = [p for p in freeze("torch", "numpy") if not p.startswith("torch==")]
    (project / "requirements.txt").write_text(
        f"--extra-index-url {CPU_INDEX}\ntorch=={version('torch')}\n" + "\n".join(pins) + "\n"
    )
    outputs = []
    commands = first_session()
    assert [c[:2] for c in commands] == [
        ["envparity", "init"],
        ["envparity", "lock"],
        ["envparity", "render"],
        ["envparity", "check"],
        ["envparity", "verify"],
    ]
    for command in commands:
        done = envparity(project, *command[1:])
        assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}{done.stderr}"
        outputs.append(done.stdout + done.stderr)
    return project, outputs


def test_the_readme_first_session_passes_as_written(session: tuple[Path, list[str]]) -> None:
    project, outputs = session
    init, lock_, render, check, verify = outputs
    assert "wrote environment.toml" in init
    assert "resolving locks/cpu.txt (cpu, x86_64-linux) with uv" in lock_
    assert "wrote locks/cpu.txt (created)" in lock_
    assert "torch==2.13.0+cpu" in (project / "locks/cpu.txt").read_text()
    assert "render: nothing to write: environment.toml has no [targets.nix]" in render
    assert "ok: 2 generated files match environment.toml" in check  # cpu.txt, pylock.cpu.toml
    for target in ("host", "venv"):
        row = next(line for line in verify.splitlines() if line.split()[:1] == [target])
        assert "2.13.0+cpu" in row and "bitwise identical" in row, verify
    assert "host vs venv: bitwise identical" in verify
    assert "OK: every target that ran computes the same thing" in verify


def test_verify_output_is_plain_and_fits_80_columns(session: tuple[Path, list[str]]) -> None:
    verify = session[1][-1]
    assert "cli.py:" not in verify  # progress lines carry no source tags
    start = verify.index("envparity verify: ")
    table = verify[start:].split("OK:")[0].splitlines()
    assert len(table) >= 4 and max(len(line) for line in table) <= 80, table
    assert verify.count("host: probe run 1 of 2") == 1


def test_verify_without_targets_runs_host_and_venv(session: tuple[Path, list[str]]) -> None:
    project, _ = session
    spec = (project / "environment.toml").read_text()
    # init writes [targets.host] and [targets.venv]: without either table, verify runs both
    bare = re.sub(r"(?m)^\[targets\.(?:host|venv)\]\n", "", spec)
    assert not re.search(r"(?m)^\[targets\.", bare)
    (project / "environment.toml").write_text(bare)
    try:
        done = envparity(project, "verify")
        assert done.returncode == 0, done.stdout + done.stderr
        rows = [line.split()[0] for line in done.stdout.splitlines() if "cached" in line]
        assert rows == ["host", "venv"]
    finally:
        (project / "environment.toml").write_text(spec)


@pytest.mark.parametrize(
    ("target", "keys"),
    [
        ("devcontainer", 'image = "ubuntu:24.04"   # the base image; pin it with @sha256:<digest>'),
        ("nix", 'nixpkgs = "github:NixOS/nixpkgs/c59305bab2065cfecc4944690d9eedbb56f3a9fa"'),
    ],
)
def test_a_target_that_needs_settings_is_refused_naming_them(
    session: tuple[Path, list[str]], target: str, keys: str
) -> None:
    project, _ = session
    done = envparity(project, "verify", "--targets", "host", target)
    assert done.returncode == 2
    assert done.stderr.startswith(
        f"envparity: error\ntarget '{target}' needs settings environment.toml does not have; "
        f"add:\n  [targets.{target}]\n  {keys}"
    )
    assert "Traceback" not in done.stderr
    from orchestrator import spec as specs

    added = done.stderr.split("add:\n", 1)[1].split("then run", 1)[0]  # as the user pastes it
    text = (project / "environment.toml").read_text().replace(f"[targets.{target}]\n", "")
    assert (
        target
        in specs.loads(text + "\n" + "\n".join(line.strip() for line in added.splitlines())).targets
    )


def test_the_cache_folder_keeps_itself_out_of_git(session: tuple[Path, list[str]]) -> None:
    project, _ = session
    assert (project / ".envparity/.gitignore").read_text().splitlines()[-1] == "*"
    done = subprocess.run(
        ["git", "init", "-q", "."], cwd=project, capture_output=True, text=True, check=True
    )
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=project,
        capture_output=True,
        text=True,
        check=True,
    )
    assert ".envparity" not in status.stdout, done.stdout + status.stdout
    assert "environment.toml" in status.stdout


def test_a_host_that_differs_from_the_lock_fails_verify_unless_accepted(
    session: tuple[Path, list[str]], tmp_path: Path
) -> None:
    import shutil

    project = tmp_path / "drift"
    shutil.copytree(session[0], project, ignore=shutil.ignore_patterns("venvs"))
    spec = project / "environment.toml"
    installed = version("numpy")
    older = "2.3.5" if installed != "2.3.5" else "2.3.4"
    spec.write_text(spec.read_text().replace(f'numpy = "=={installed}"', f'numpy = "=={older}"'))
    assert envparity(project, "lock").returncode == 0
    expected = (
        f"FAIL host: does not match the spec (1 package(s) differ from locks/cpu.txt: numpy "
        f"{installed} installed, lock pins {older}); fix it (envparity doctor says how) or pass "
        "--accept-host-drift"
    )
    failed = envparity(project, "verify", "--targets", "host", columns=200)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert expected in failed.stdout
    assert "differs from the spec" in next(
        line for line in failed.stdout.splitlines() if line.split()[:1] == ["host"]
    )
    doctor = envparity(project, "doctor", columns=200)
    assert (
        f"  FAIL  1 package(s) differ from locks/cpu.txt: numpy {installed} installed, "
        f"lock pins {older}" in doctor.stdout
    )
    accepted = envparity(project, "verify", "--targets", "host", "--accept-host-drift", columns=200)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert (
        f"host: differs from the spec (accepted): 1 package(s) differ from locks/cpu.txt: numpy "
        f"{installed} installed, lock pins {older}" in accepted.stdout
    )


def test_a_default_host_of_a_cuda_spec_runs_on_the_cpu_without_a_gpu_saying_so(
    write_spec, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    from orchestrator import gpus, spec, verify
    from orchestrator.targets.base import Context
    from orchestrator.targets.host import HostTarget

    monkeypatch.setattr(gpus, "visible", lambda: False)
    s = spec.load(
        write_spec('[environment]\nname = "g"\npython = "3.11"\n[cuda]\nversion = "13.0"\n')
    )
    s = verify.with_defaults(s, verify.choose_targets(s, None))
    host = HostTarget(Context(spec=s, cache=s.root / ".envparity", runtime=s.root))
    # issue 11: verified on the CPU, not skipped; the report says what was not verified
    assert host.unavailable() is None
    assert verify.probe_device(s, "host") == (
        "cpu",
        "GPU part not verified here: no NVIDIA GPU visible, the cu130 build ran on the CPU",
    )
