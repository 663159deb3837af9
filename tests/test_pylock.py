"""The fleet: one spec locked for Linux (x86_64, aarch64) and macOS by the real uv against PyPI
(metadata and hashes only: no macOS or aarch64 wheel is downloaded), torch for Linux from the
PyTorch CPU index (here its mirror, the local wheel folder) and for macOS from PyPI; the PEP 751
``locks/pylock.<flavor>.toml`` validated and selected per system with ``packaging.pylock`` and
installed with ``uv pip install -r``; ``doctor`` on a Mac judged against the Mac lock.

The Mac is a stand-in: ``platform.machine()`` and ``sys.platform`` are patched to what an Apple
Silicon Mac reports (``arm64``, ``darwin``); no test here ran on macOS.
"""

from __future__ import annotations

import platform
import shutil
import sys
from pathlib import Path

import pytest
from packaging.pylock import Pylock

from orchestrator import cli, files, lock, process, pylock, spec
from orchestrator.interpreter import user_interpreter
from tests.helpers import REPO, mirror, torch_wheel

FLEET = """\
[environment]
name = "fleet"
python = "3.11"
systems = ["x86_64-linux", "aarch64-darwin"]

[dependencies]
torch = "==2.13.0"
numpy = "==2.4.6"

[[index]]
url = "https://download.pytorch.org/whl/cpu"
flavors = ["cpu"]
systems = ["x86_64-linux"]   # macOS takes PyPI's torch
"""

SMALL = """\
[environment]
name = "small"
python = "3.11"
systems = ["x86_64-linux", "aarch64-linux", "aarch64-darwin", "x86_64-darwin"]

[dependencies]
numpy = "==2.4.6"
six = "==1.17.0"
"""


def _lock(folder: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "environment.toml").write_text(text, encoding="utf-8")
    monkeypatch.chdir(folder)
    assert cli.main(["lock"]) == 0
    return folder


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ENVPARITY_MIRRORS", mirror())
        return _lock(tmp_path_factory.mktemp("fleet"), FLEET, mp)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("ENVPARITY_MIRRORS", raising=False)
        return _lock(tmp_path_factory.mktemp("small"), SMALL, mp)


def _body(path: Path) -> str:
    header = files.read_header(path.read_text(encoding="utf-8"))
    assert header is not None and not header.hand_edited
    return header.body


def test_each_system_gets_its_own_hashed_lock_macos_torch_from_pypi(fleet: Path) -> None:
    assert sorted(p.name for p in (fleet / "locks").iterdir()) == [
        "cpu-aarch64-darwin.txt",
        "cpu.txt",
        "pylock.cpu.toml",
    ]
    linux = lock.pinned(_body(fleet / "locks" / "cpu.txt"))
    mac = lock.pinned(_body(fleet / "locks" / "cpu-aarch64-darwin.txt"))
    assert linux["torch"] == "2.13.0+cpu"  # the PyTorch CPU index (its mirror)
    assert mac["torch"] == "2.13.0"  # PyPI's macOS build (CPU and MPS)
    assert linux["numpy"] == mac["numpy"] == "2.4.6"
    mac_body = _body(fleet / "locks" / "cpu-aarch64-darwin.txt")
    torch_entry = mac_body.split("torch==2.13.0")[1].split("\n    # via")[0]
    assert torch_entry.count("--hash=sha256:") >= 1
    assert not any(p.startswith("nvidia-") for p in mac)


def test_pylock_is_valid_pep_751_and_selects_each_systems_files(fleet: Path) -> None:
    text = (fleet / "locks" / "pylock.cpu.toml").read_text(encoding="utf-8")
    data = pylock.loads(text)
    lock_file = Pylock.from_dict(data)  # packaging's validator: raises on any error
    assert lock_file.lock_version is not None and str(lock_file.lock_version) == "1.0"
    assert [str(m) for m in lock_file.environments or []] == [
        'sys_platform == "linux" and platform_machine == "x86_64"',
        'sys_platform == "darwin" and platform_machine == "arm64"',
    ]
    chosen = {}
    for system in ("x86_64-linux", "aarch64-darwin"):
        picked = lock_file.select(
            environment=pylock.environment(system, "3.11"),  # type: ignore[arg-type]
            tags=pylock.wheel_tags(system, "3.11", macos="14.0"),
        )
        chosen[system] = {p.name: (str(p.version), d.filename) for p, d in picked}  # type: ignore[union-attr]
    assert chosen["x86_64-linux"]["torch"] == (
        "2.13.0+cpu",
        "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",
    )
    assert chosen["aarch64-darwin"]["torch"] == (
        "2.13.0",
        "torch-2.13.0-cp311-cp311-macosx_14_0_arm64.whl",
    )
    assert chosen["aarch64-darwin"]["numpy"][1].endswith("macosx_14_0_arm64.whl")
    # Each package records what each system installs, for Nix (no marker evaluation there).
    for package in data["packages"]:
        tool = package["tool"]["envparity"]["wheels"]
        for system, filename in tool.items():
            assert chosen[system][package["name"]] == (package["version"], filename)
    # URLs: PyPI's files by their URL; the torch that came through the mirror of the PyTorch
    # CPU index by that index's own URL (the same file, the same hash), so the committed
    # pylock does not name this machine's wheel folder.
    torches = [p for p in data["packages"] if p["name"] == "torch"]
    assert [p.get("marker") for p in torches] == [
        "(sys_platform == 'darwin' and platform_machine == 'arm64')",
        "(sys_platform == 'linux' and platform_machine == 'x86_64')",
    ]
    assert torches[0]["wheels"][0]["url"].startswith("https://files.pythonhosted.org/")
    assert torches[1]["wheels"][0]["url"] == (
        "https://download.pytorch.org/whl/cpu/torch-2.13.0%2Bcpu-cp311-cp311-manylinux_2_28_x86_64.whl"
    )
    assert torch_wheel().parent.as_uri() not in (fleet / "locks" / "pylock.cpu.toml").read_text()
    assert torches[1]["index"] == "https://download.pytorch.org/whl/cpu"
    assert all(w["hashes"]["sha256"] for p in data["packages"] for w in p["wheels"])


@pytest.mark.slow
def test_uv_installs_the_pylock_on_this_machine_hash_checked(fleet: Path, tmp_path: Path) -> None:
    uv = shutil.which("uv")
    assert uv is not None
    venv = tmp_path / "venv"
    process.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)])
    # The pylock names the PyTorch index's own URL for torch, which is not reachable here: the
    # mirror stands in for it as a mirror does, by the same file at the mirror's URL.
    index_file = "https://download.pytorch.org/whl/cpu/"
    mirrored = tmp_path / "pylock.mirrored.toml"
    text = (fleet / "locks" / "pylock.cpu.toml").read_text(encoding="utf-8")
    assert index_file in text
    mirrored.write_text(
        text.replace(index_file, torch_wheel().parent.as_uri() + "/"), encoding="utf-8"
    )
    process.run(
        [uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"),
         "-r", str(mirrored)],
        timeout=600,
    )  # fmt: skip
    shown = process.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import numpy, torch; print(torch.__version__, numpy.__version__)",
        ]
    ).stdout.split()
    assert shown == ["2.13.0+cpu", "2.4.6"]  # the x86_64-linux packages, by their markers

    # A wrong hash in the pylock is refused by uv.
    tampered = tmp_path / "pylock.cpu.toml"
    text = mirrored.read_text(encoding="utf-8")
    six_free = text.replace(
        pylock.loads(text)["packages"][-1]["wheels"][0]["hashes"]["sha256"], "0" * 64
    )
    tampered.write_text(six_free, encoding="utf-8")
    other = tmp_path / "other"
    process.run([uv, "venv", "--quiet", "--python", sys.executable, str(other)])
    failed = process.run(
        [
            uv,
            "pip",
            "install",
            "--quiet",
            "--python",
            str(other / "bin" / "python"),
            "-r",
            str(tampered),
        ],
        check=False,
    )
    assert failed.returncode != 0 and "hash" in failed.stderr.lower()


def test_four_systems_lock_with_real_pypi_hashes(small: Path) -> None:
    names = sorted(p.name for p in (small / "locks").iterdir())
    assert names == [
        "cpu-aarch64-darwin.txt",
        "cpu-aarch64.txt",
        "cpu-x86_64-darwin.txt",
        "cpu.txt",
        "pylock.cpu.toml",
    ]
    data = pylock.loads((small / "locks" / "pylock.cpu.toml").read_text(encoding="utf-8"))
    Pylock.from_dict(data)
    numpy = next(p for p in data["packages"] if p["name"] == "numpy")
    assert "marker" not in numpy  # every system has numpy 2.4.6: one entry, no marker
    wheels = numpy["tool"]["envparity"]["wheels"]
    assert wheels == {
        "x86_64-linux": "numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
        "aarch64-linux": "numpy-2.4.6-cp311-cp311-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl",
        "aarch64-darwin": "numpy-2.4.6-cp311-cp311-macosx_14_0_arm64.whl",
        "x86_64-darwin": "numpy-2.4.6-cp311-cp311-macosx_14_0_x86_64.whl",
    }
    by_name = {w["name"]: w for w in numpy["wheels"]}
    assert all(len(by_name[f]["hashes"]["sha256"]) == 64 for f in wheels.values())
    assert "upload-time" not in by_name[wheels["x86_64-linux"]]  # Nix's fromTOML has no dates


def test_check_names_the_platform_of_a_stale_lock(
    small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(small, tmp_path, dirs_exist_ok=True)
    spec_path = tmp_path / "environment.toml"
    spec_path.write_text(
        spec_path.read_text().replace('"x86_64-darwin"]', '"x86_64-darwin"]\nmacos = "15.0"')
    )
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert cli.main(["lock", "--check"]) == 1
    out = capsys.readouterr().out.splitlines()
    # the deployment target changes the macOS locks only (and the pylock that holds them)
    assert out == [
        "locks/cpu-aarch64-darwin.txt (cpu, aarch64-darwin): stale (environment.toml changed since it was locked)",
        "locks/cpu-x86_64-darwin.txt (cpu, x86_64-darwin): stale (environment.toml changed since it was locked)",
        "locks/pylock.cpu.toml (cpu, x86_64-linux, aarch64-linux, aarch64-darwin, x86_64-darwin): stale "
        "(environment.toml changed since it was locked)",
    ]


def test_intel_macs_get_no_torch_after_2_2_2_and_lock_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = FLEET.replace('"aarch64-darwin"]', '"x86_64-darwin"]').replace(
        'systems = ["x86_64-linux"]   # macOS takes PyPI\'s torch', 'systems = ["x86_64-linux"]'
    )
    monkeypatch.setenv("ENVPARITY_MIRRORS", mirror())
    (tmp_path / "environment.toml").write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["lock"]) == 1  # the Linux lock is written; the Mac one is not
    err = capsys.readouterr().err
    assert "locks/cpu-x86_64-darwin.txt: not written: command failed" in err
    assert "torch==2.13.0 has no wheels with a matching platform tag" in err
    assert err.rstrip().endswith(
        "PyTorch publishes no Intel macOS (x86_64) wheels after torch 2.2.2 (seen with uv "
        "against PyPI): drop x86_64-darwin from environment.systems, or pin torch<=2.2.2"
    )
    # the flavor's PEP 751 lock holds all its systems or is not written
    assert sorted(p.name for p in (tmp_path / "locks").iterdir()) == ["cpu.txt"]


def _as_a_mac(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in for Apple Silicon: what platform and sys report on an M-series Mac."""
    monkeypatch.setattr(platform, "machine", lambda: "arm64")
    monkeypatch.setattr(sys, "platform", "darwin")


def test_on_a_mac_doctor_and_host_judge_the_interpreter_against_the_mac_lock(
    fleet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from orchestrator import freshness

    shutil.copytree(fleet, tmp_path, dirs_exist_ok=True)
    loaded = spec.load(tmp_path / "environment.toml")
    assert freshness.host_lock(loaded).path == "locks/cpu.txt"  # this machine: x86_64-linux
    _as_a_mac(monkeypatch)
    assert lock.this_system() == "aarch64-darwin"
    assert freshness.host_lock(loaded).path == "locks/cpu-aarch64-darwin.txt"
    # This interpreter has the Linux build of torch: against the Mac lock it differs.
    found = freshness.conformance(loaded, user_interpreter())
    assert found.lock == "locks/cpu-aarch64-darwin.txt"
    assert "torch 2.13.0+cpu installed, lock pins 2.13.0" in found.packages
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    cli.main(["doctor"])
    out = capsys.readouterr().out
    assert "differ from locks/cpu-aarch64-darwin.txt: " in out
    assert "this machine" not in out  # aarch64-darwin is one of the spec's systems


def test_a_mac_the_spec_does_not_list_is_told_so(
    small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(small, tmp_path, dirs_exist_ok=True)
    spec_path = tmp_path / "environment.toml"
    spec_path.write_text(spec_path.read_text().replace(', "aarch64-darwin", "x86_64-darwin"]', "]"))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["lock"]) == 0
    _as_a_mac(monkeypatch)
    capsys.readouterr()
    cli.main(["doctor"])
    out = capsys.readouterr().out
    assert (
        "  warn  this machine (aarch64-darwin) is not in environment.systems: its packages are "
        "judged against locks/cpu.txt (x86_64-linux)\n"
        "        -> add 'aarch64-darwin' to environment.systems and run 'envparity lock'"
    ) in out


def test_repository_lock_files_are_current() -> None:
    # This repository's own spec: its pylock is written and current like its .txt locks.
    assert lock.stale_locks(spec.load(REPO / "environment.toml")) == []
