"""The flake's shell hook, run by bash: with a recording stand-in for uv it builds .venv from the
lock once, rebuilds when the lock's hash changes, and never takes a failed build for a finished
one; with fake driver files it links only the GPU driver's libraries into .envparity/nix-driver
(or takes NixOS's /run/opengl-driver/lib)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from orchestrator import spec
from orchestrator.render.flake import driver_hook, venv_hook

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
nixpkgs = "github:NixOS/nixpkgs/c59305bab2065cfecc4944690d9eedbb56f3a9fa"
"""

FAKE_UV = """#!/bin/sh
echo "uv $*" >> "$HOOK_LOG"
if [ "$1" = venv ]; then mkdir -p .venv/bin && : > .venv/bin/activate; exit 0; fi
[ -z "$FAKE_UV_FAIL" ]
"""


def hook_project(root: Path) -> tuple[str, Path]:
    """(the hook of SPEC, its lock): SPEC in ``root``, then ``_with_fake_uv``."""
    (root / "environment.toml").write_text(SPEC)
    return _with_fake_uv(root), root / "locks" / "cpu.txt"


def enter(root: Path, hook: str, *, fail: bool = False, wrapper: str = "") -> tuple[list[str], str]:
    log = root / "uv.log"
    log.unlink(missing_ok=True)
    env = {
        **os.environ,
        "PATH": f"{root / 'bin'}:{os.environ['PATH']}",
        "HOOK_LOG": str(log),
        "ENVPARITY_PYTHON": "/usr/bin/python3",
        "ENVPARITY_PYTHON_WRAPPER": wrapper,
        "FAKE_UV_FAIL": "1" if fail else "",
    }
    done = subprocess.run(
        ["bash", "-c", hook], cwd=root, env=env, capture_output=True, text=True, check=True
    )
    calls = log.read_text().splitlines() if log.exists() else []
    return calls, done.stderr


def _with_fake_uv(root: Path) -> str:
    """The hook of ``root``'s spec, with the recording uv on ``root/bin`` and a cpu lock."""
    (root / "bin").mkdir()
    (root / "bin" / "uv").write_text(FAKE_UV)
    (root / "bin" / "uv").chmod(0o755)
    (root / "locks").mkdir()
    (root / "locks" / "cpu.txt").write_text("numpy==2.4.6 --hash=sha256:aa\n")
    return venv_hook(spec.load(root / "environment.toml"))


def test_hook_builds_once_rebuilds_on_change_and_never_trusts_a_failed_build(
    tmp_path: Path,
) -> None:
    hook, lock = hook_project(tmp_path)
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
    hook = _with_fake_uv(tmp_path)
    mine = tmp_path / ".venv" / "lib" / "my-editable-install"
    mine.mkdir(parents=True)
    calls, err = enter(tmp_path, hook)
    assert calls == [] and mine.is_dir()
    assert "envparity: .venv was not made by envparity; leaving it as it is" in err


# --------------------------------------------------------------------------- the GPU driver


def driver_folder(root: Path, **env: str) -> tuple[str, str]:
    """Run the flake's driver hook with bash in ``root``; return ``envparity_driver`` and stderr."""
    script = driver_hook() + 'printf %s "$envparity_driver"'
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=root,
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout, done.stderr


def fake_host(root: Path) -> tuple[Path, Path]:
    """Two host library folders: a driver's libraries (with the soname links a driver package
    installs) among other libraries, and a second copy of libcuda that must not win."""
    first, second = root / "host" / "lib1", root / "host" / "lib2"
    for folder in (first, second):
        folder.mkdir(parents=True)
    for name in (
        "libcuda.so.570.86.15",
        "libnvidia-ml.so.570.86.15",
        "libc.so.6",
        "libstdc++.so.6",
    ):
        (first / name).write_text(name)
    (first / "libcuda.so.1").symlink_to("libcuda.so.570.86.15")
    (first / "libcuda.so").symlink_to("libcuda.so.1")
    (first / "libnvidia-ml.so.1").symlink_to("libnvidia-ml.so.570.86.15")
    (second / "libcuda.so.1").write_text("another driver")
    return first, second


def test_driver_hook_links_only_the_host_drivers_libraries(tmp_path: Path) -> None:
    first, second = fake_host(tmp_path)
    nixos = str(tmp_path / "no-such-nixos-driver")
    folder, err = driver_folder(
        tmp_path, ENVPARITY_NIXOS_DRIVER=nixos, ENVPARITY_HOST_LIBS=f"{first} {second}"
    )
    driver = tmp_path / ".envparity" / "nix-driver"
    assert folder == str(driver) and err == ""
    links = {p.name: os.readlink(p) for p in driver.iterdir()}
    assert links == {  # libc and libstdc++ stay out; the first folder's libcuda wins
        name: str(first / name)
        for name in (
            "libcuda.so", "libcuda.so.1", "libcuda.so.570.86.15",
            "libnvidia-ml.so.1", "libnvidia-ml.so.570.86.15",
        )
    }  # fmt: skip
    assert (driver / "libcuda.so.1").read_text() == "libcuda.so.570.86.15"

    # The driver changed (say, an upgrade removed the old version): the folder is remade.
    (first / "libnvidia-ml.so.570.86.15").unlink()
    (first / "libnvidia-ml.so.1").unlink()
    driver_folder(tmp_path, ENVPARITY_NIXOS_DRIVER=nixos, ENVPARITY_HOST_LIBS=str(first))
    assert sorted(p.name for p in driver.iterdir()) == [
        "libcuda.so",
        "libcuda.so.1",
        "libcuda.so.570.86.15",
    ]


def test_driver_hook_says_when_there_is_no_driver(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    folder, err = driver_folder(
        tmp_path,
        ENVPARITY_NIXOS_DRIVER=str(tmp_path / "none"),
        ENVPARITY_HOST_LIBS=str(empty),
    )
    assert folder == str(tmp_path / ".envparity" / "nix-driver")
    assert list(Path(folder).iterdir()) == []
    assert err == (
        "envparity: no NVIDIA driver (libcuda.so.1) found on this machine; "
        "CUDA will not be usable in this shell\n"
    )


def test_driver_hook_uses_the_nixos_driver_folder_when_there_is_one(tmp_path: Path) -> None:
    first, _ = fake_host(tmp_path)
    nixos = tmp_path / "run" / "opengl-driver" / "lib"
    nixos.mkdir(parents=True)
    folder, err = driver_folder(
        tmp_path, ENVPARITY_NIXOS_DRIVER=str(nixos), ENVPARITY_HOST_LIBS=str(first)
    )
    assert (folder, err) == (str(nixos), "")
    assert not (tmp_path / ".envparity").exists()


FAKE_LDCONFIG = """#!/bin/sh
# A stand-in for WSL2's ldconfig -p (its /etc/ld.so.conf.d/ld.wsl.conf lists /usr/lib/wsl/lib)
[ "$1" = -p ] || exit 1
echo "7 libs found in cache \\`/etc/ld.so.cache'"
for f in "$WSL"/*; do printf '\\t%s (libc6,x86-64) => %s\\n' "${f##*/}" "$f"; done
printf '\\tlibc.so.6 (libc6,x86-64, OS ABI: Linux 3.2.0) => /lib/x86_64-linux-gnu/libc.so.6\\n'
"""


def test_driver_hook_finds_wsl2s_driver_through_ldconfig_before_the_usual_folders(
    tmp_path: Path,
) -> None:
    # Stand-ins: a WSL2 driver folder (libcuda and libdxcore, files, not links, as WSL mounts
    # them) reported by a fake ldconfig, and a Linux driver wrongly installed in the distro.
    wsl = tmp_path / "usr" / "lib" / "wsl" / "lib"
    wsl.mkdir(parents=True)
    for name in ("libcuda.so", "libcuda.so.1", "libcuda.so.1.1", "libdxcore.so", "libnvwgf2umx.so"):
        (wsl / name).write_text(f"wsl {name}")
    linux, _ = fake_host(tmp_path)
    ldconfig = tmp_path / "ldconfig"
    ldconfig.write_text(FAKE_LDCONFIG)
    ldconfig.chmod(0o755)
    script = (
        f"WSL={wsl} ENVPARITY_LDCONFIG={ldconfig} HOST_DIRS={linux}; "
        + driver_hook().replace(
            "in ${ENVPARITY_HOST_LIBS:-", "in ${ENVPARITY_HOST_LIBS:-$HOST_DIRS "
        )
        + 'printf %s "$envparity_driver"'
    )
    env = {
        "PATH": os.environ["PATH"],
        "ENVPARITY_NIXOS_DRIVER": str(tmp_path / "none"),
        "WSL": str(wsl),
    }
    done = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    driver = Path(done.stdout)
    links = {p.name: os.readlink(p) for p in driver.iterdir()}
    assert done.stderr == ""
    assert links["libcuda.so.1"] == str(wsl / "libcuda.so.1")  # WSL's, not the distro's
    assert links["libdxcore.so"] == str(wsl / "libdxcore.so")  # WSL's libcuda needs it
    assert "libnvwgf2umx.so" not in links and "libc.so.6" not in links
    assert links["libnvidia-ml.so.1"] == str(linux / "libnvidia-ml.so.1")  # then the folders


def test_driver_hook_on_this_machine_asks_its_real_ldconfig_and_finds_no_driver(
    tmp_path: Path,
) -> None:
    # This machine's /sbin/ldconfig (no NVIDIA driver here) and the usual folders: nothing found.
    assert Path("/sbin/ldconfig").exists() or Path("/usr/sbin/ldconfig").exists()
    done = subprocess.run(
        ["bash", "-c", driver_hook() + 'printf %s "$envparity_driver"'],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "ENVPARITY_NIXOS_DRIVER": str(tmp_path / "none")},
        capture_output=True,
        text=True,
        check=True,
    )
    assert list(Path(done.stdout).iterdir()) == []
    assert "no NVIDIA driver (libcuda.so.1) found on this machine" in done.stderr


def test_hook_points_the_venvs_interpreter_at_the_flakes_python_with_libraries(
    tmp_path: Path,
) -> None:
    hook, _ = hook_project(tmp_path)
    wrapper = tmp_path / "python-with-libs"
    wrapper.write_text("#!/bin/sh\n")
    enter(tmp_path, hook, wrapper=str(wrapper))
    bin_dir = tmp_path / ".venv" / "bin"
    assert {n: os.readlink(bin_dir / n) for n in ("python", "python3", "python3.11")} == {
        n: str(wrapper) for n in ("python", "python3", "python3.11")
    }


def test_hook_installs_the_local_packages_after_the_lock_without_their_dependencies(
    tmp_path: Path,
) -> None:
    (tmp_path / "environment.toml").write_text(
        SPEC.replace(
            'numpy = "==2.4.6"\n',
            'numpy = "==2.4.6"\nlibrary = { path = "sd-scripts", editable = true }\n'
            'trainer = { path = ".", extras = ["train"] }\n',
        )
    )
    hook = _with_fake_uv(tmp_path)
    calls, _ = enter(tmp_path, hook)
    assert calls[2:] == [
        "uv pip install --python .venv/bin/python --no-deps --editable ./sd-scripts",
        "uv pip install --python .venv/bin/python --no-deps .[train]",
    ]
    assert calls[1].startswith("uv pip sync")
