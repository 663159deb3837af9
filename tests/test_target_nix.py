"""The ``nix`` target: why it is unavailable here (no Nix, a Nix older than 2.18, no flake, an
unreachable nixpkgs), the exact command it runs, and the generated flake entered for real with
``nix develop`` (Nix >= 2.18: Debian trixie's, from .ci/nix-trixie), offline, on a stand-in
nixpkgs.

GitHub is not reachable from these machines, so the pinned nixpkgs cannot be fetched. The
stand-in below lets Nix evaluate and build the generated flake's devShell, run its shell hook
(which builds ``.venv`` from the lock with uv, and for a CUDA flake links the host driver's
libraries) and run the probe in it. Its packages are links to this machine's Python and uv (the
CUDA packages are empty), and its mkShell is a plain derivation with a bash builder (as
``nix develop`` requires): it proves the flake, the hook and the target's commands work, not
that nixpkgs' own python311, uv and CUDA packages do.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from orchestrator import files, lock, process, render
from orchestrator.errors import ToolError
from orchestrator.render.escape import nix_string
from orchestrator.spec import load
from orchestrator.targets.base import Context
from orchestrator.targets.nix import INSTALL_NIX, NixTarget
from tests.helpers import REPO, mirror, torch_spec, torch_wheel, wheel_spec
from tests.real_tools import nix_on_path, require

PINNED = "github:NixOS/nixpkgs/c59305bab2065cfecc4944690d9eedbb56f3a9fa"
STEPS = 5


def nix_spec(nixpkgs: str = PINNED, *, cuda: bool = False) -> str:
    """The test spec with ``[targets.nix] nixpkgs``; with ``cuda``, CUDA 13.0 in the flake
    (packages, caches, driver links) and the shell's .venv from the cpu lock."""
    spec = wheel_spec("nix-probe", seed=5) + f'\n[targets.nix]\nnixpkgs = "{nixpkgs}"\n'
    if cuda:
        spec = spec.replace("[dependencies]", '[cuda]\nversion = "13.0"\n\n[dependencies]')
        spec += 'flavor = "cpu"\n'
    return spec


STANDIN_FLAKE = """\
{
  description = "nixpkgs stand-in whose python311 and uv are this machine's (envparity tests)";
  outputs = { self }: { lib = import ./lib.nix; };
}
"""

# The live stand-in's lib is the structural stand-in's (tests/nix/nixpkgs-standin/lib.nix).
STANDIN_LIB = (REPO / "tests" / "nix" / "nixpkgs-standin" / "lib.nix").read_text(encoding="utf-8")

# `import nixpkgs { inherit system; }`: only the attributes a CPU-only generated flake uses.
STANDIN = """\
{{ system, config ? {{ }} }}:
let
  lib = import ./lib.nix;
  PATH = "/usr/bin:/bin";  # builders start with none
  sh = name: script:
    derivation {{ inherit name system PATH; builder = "/bin/sh"; args = [ "-c" script ]; }};
  link = name: file: sh name "mkdir -p $out/bin && ln -s ${{file}} $out/bin/${{name}}";
  libs = name: derivation {{
    inherit name system PATH;
    outputs = [ "out" "lib" ];
    builder = "/bin/sh";
    args = [ "-c" "mkdir -p $out/lib $lib/lib" ];
  }};
in
{{
  inherit lib;
  python311 = link "python3.11" {python};
  uv = link "uv" {uv};
  zlib = libs "zlib";
  stdenv.cc.cc = libs "gcc-unwrapped";
  # A CUDA flake's: the split packages (empty here) and nixpkgs' unfree predicate.
  _cuda.lib.allowUnfreeCudaPredicate = pkg: true;
  cudaPackages_13_0 = lib.genAttrs [ "cuda_nvcc" "cuda_cudart" "cuda_cccl" "libcublas" "cudnn" ]
    (name: sh "cuda13.0-${{name}}" "mkdir -p $out");
  # The trivial builders and fetchurl, built for real: runCommand runs its script with bash and
  # its nativeBuildInputs' bin/ on PATH; fetchurl is Nix's own builtin fetcher (a fixed-output
  # derivation checked against the sha256), as nixpkgs' fetchurl is a fixed-output one.
  runtimeShell = "/bin/bash";
  runCommand = name: env: script: derivation (builtins.removeAttrs env [ "nativeBuildInputs" ] // {{
    inherit name system script;
    PATH = builtins.concatStringsSep ":" (map (p: "${{p}}/bin") (env.nativeBuildInputs or [ ])) + ":${{PATH}}";
    builder = "/bin/bash";
    args = [ "-c" "eval \\"$script\\"" ];
  }});
  writeScript = name: text: derivation {{
    inherit name system text PATH;
    builder = "/bin/bash";
    args = [ "-c" "printf %s \\"$text\\" > $out && chmod +x $out" ];
  }};
  writeShellScriptBin = name: text: sh name "mkdir -p $out/bin";
  fetchurl = {{ url, sha256, name }}: import <nix/fetchurl.nix> {{ inherit url sha256 name; }};
  nixfmt = sh "nixfmt" "mkdir -p $out/bin";
  # nix develop needs a derivation built by bash that declares its outputs, as nixpkgs' do.
  mkShell = {{ name, packages ? [ ], ... }}@args:
    derivation (builtins.removeAttrs args [ "packages" ] // {{
    inherit system;
    nativeBuildInputs = packages;
    # as stdenv's setup does: the packages' bin/ first on the shell's PATH
    PATH = builtins.concatStringsSep ":" (map (p: "${{p}}/bin") packages) + ":${{PATH}}";
    outputs = [ "out" ];
    builder = "/bin/bash";
    args = [ "-c" "echo > $out" ];
  }});
}}
"""


def _project(root: Path, nixpkgs: str, *, cuda: bool = False) -> Context:
    (root / "environment.toml").write_text(nix_spec(nixpkgs, cuda=cuda), encoding="utf-8")
    spec = load(root / "environment.toml")
    lock.lock(spec, flavors=[spec.flavor_of("nix")])
    files.write_all(root, render.render_all(spec))
    return Context(spec=spec, cache=root / ".envparity", runtime=REPO)


def _standin(folder: Path) -> Path:
    folder.mkdir()
    python = Path(sys.executable).resolve()
    uv = shutil.which("uv")
    assert uv is not None, "uv is not on PATH"
    (folder / "flake.nix").write_text(STANDIN_FLAKE, encoding="utf-8")
    (folder / "lib.nix").write_text(STANDIN_LIB, encoding="utf-8")
    text = STANDIN.format(python=nix_string(str(python)), uv=nix_string(uv))
    (folder / "default.nix").write_text(text, encoding="utf-8")
    return folder


def test_command_enters_the_flake_from_its_folder_and_sets_the_environment_there(
    tmp_path: Path,
) -> None:
    (tmp_path / "environment.toml").write_text(nix_spec(), encoding="utf-8")
    target = NixTarget(
        Context(spec=load(tmp_path / "environment.toml"), cache=tmp_path, runtime=REPO)
    )
    argv, host_env = target.command(
        ["python", "-m", "orchestrator", "probe"], env={"PYTHONHASHSEED": "5", "B": "x y"}
    )
    assert argv == [
        "env", f"--chdir={tmp_path}",
        "nix", "develop", str(tmp_path), "--extra-experimental-features", "nix-command flakes",
        "--accept-flake-config", "--command", "env", "B=x y", "PYTHONHASHSEED=5",
        f"{tmp_path}/.venv/bin/python", "-m", "orchestrator", "probe",
    ]  # fmt: skip
    assert host_env == {}
    assert target.command(["true"], env={})[0][-2:] == ["env", "true"]


def test_unavailable_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec_path = tmp_path / "environment.toml"
    spec_path.write_text(nix_spec(), encoding="utf-8")
    target = NixTarget(Context(spec=load(spec_path), cache=tmp_path, runtime=REPO))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert target.unavailable() == f"nix: not installed; {INSTALL_NIX}"
    monkeypatch.undo()
    nix_on_path(monkeypatch)
    assert target.unavailable() == "nix: flake.nix is missing (run 'envparity render')"
    files.write_all(tmp_path, render.render_all(target.ctx.spec))
    assert target.unavailable() == "nix: locks/cpu.txt is missing (run 'envparity lock')"

    without = nix_spec().split("[targets.nix]")[0]
    spec_path.write_text(without, encoding="utf-8")
    bare = NixTarget(Context(spec=load(spec_path), cache=tmp_path, runtime=REPO))
    assert bare.unavailable() == "nix: the spec has no [targets.nix]"


FAKE_NIX = """#!/bin/sh
[ "$1" = --version ] && echo '{version}'
"""


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("nix (Nix) 2.8.0", "nix: Nix 2.8.0 is too old (nixpkgs needs 2.18 or newer); "),
        ("nix (Nix) 2.17", "nix: Nix 2.17 is too old (nixpkgs needs 2.18 or newer); "),
        ("something else", "nix: `nix --version` does not give a version; "),
        ("nix (Nix) 2.18.0", "nix: flake.nix is missing (run 'envparity render')"),
        (
            "nix (Determinate Nix 3.8.2) 2.30.1",
            "nix: flake.nix is missing (run 'envparity render')",
        ),
    ],
    ids=["debian 12", "2.17", "no version", "2.18", "a vendor's build"],
)
def test_unavailable_when_nix_is_older_than_nixpkgs_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str, expected: str
) -> None:
    (tmp_path / "environment.toml").write_text(nix_spec(), encoding="utf-8")
    target = NixTarget(
        Context(spec=load(tmp_path / "environment.toml"), cache=tmp_path, runtime=REPO)
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nix").write_text(FAKE_NIX.format(version=version), encoding="utf-8")
    (bin_dir / "nix").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    reason = target.unavailable()
    if expected.endswith("; "):
        assert reason == expected + INSTALL_NIX
    else:
        assert reason == expected


@pytest.mark.slow
def test_pinned_nixpkgs_cannot_be_fetched_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nix_on_path(monkeypatch)
    target = NixTarget(_project(tmp_path, PINNED))
    reason = target.unavailable()
    assert reason is not None, "GitHub was reachable: run the nix target for real here"
    assert reason.startswith(f"nix: nixpkgs {PINNED} cannot be fetched (")
    assert "unable to download 'https://github.com/NixOS/nixpkgs/archive/" in reason


@pytest.mark.slow
def test_probe_runs_twice_in_the_devshell_of_the_generated_flake(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nix_on_path(monkeypatch)
    monkeypatch.setenv("NIX_CONFIG", "substituters =")  # no binary cache is reachable here
    standin = _standin(tmp_path / "standin")
    root = tmp_path / "project"
    root.mkdir()
    messages: list[str] = []
    ctx = _project(root, f"path:{standin}")
    # In a git repository Nix copies only tracked files to the store; in a bare folder it would
    # copy all of it, .venv (torch) included, on every `nix develop`.
    git = require("git")
    process.run([git, "init", "--quiet", str(root)])
    process.run([git, "-C", str(root), "add", "environment.toml", "flake.nix", "locks"])
    ctx = Context(spec=ctx.spec, cache=ctx.cache, runtime=REPO, progress=messages.append)
    target = NixTarget(ctx)
    assert target.unavailable() is None

    start = time.perf_counter()
    target.provision()
    cold = time.perf_counter() - start
    assert messages[0] == "nix: building the devShell and .venv (nix develop --command true)"
    assert messages[1].startswith("nix: devShell and .venv ready in ")
    marker = (root / ".venv" / ".envparity-lock").read_text(encoding="utf-8").strip()
    assert marker == files.sha256((root / "locks" / "cpu.txt").read_text(encoding="utf-8"))

    env = {**ctx.launch_env, "PYTHONPATH": str(REPO)}
    show = (
        "import json, os, sys, torch; print(json.dumps([sys.prefix, torch.__version__,"
        " os.environ['PYTHONHASHSEED'], os.environ['CUBLAS_WORKSPACE_CONFIG'], os.getcwd()]))"
    )
    argv, host_env = target.command(["python", "-c", show], env=env)
    seen = json.loads(process.run(argv, extra_env=host_env, cwd=tmp_path).stdout.splitlines()[-1])
    assert seen == [str(root / ".venv"), "2.13.0+cpu", "5", ":4096:8", str(root)]

    prints = []
    probe_seconds = []
    for n in (1, 2):
        out = tmp_path / f"{n}.json"
        argv, host_env = target.command(
            ["python", "-m", "orchestrator", "probe", "--steps", str(STEPS), "--device", "cpu",
             "--out", str(out)], env=env,
        )  # fmt: skip
        start = time.perf_counter()
        process.run(argv, extra_env=host_env)
        probe_seconds.append(time.perf_counter() - start)
        prints.append(json.loads(out.read_text(encoding="utf-8")))
    assert prints[0]["stages"] == prints[1]["stages"]
    start = time.perf_counter()
    target.provision()
    warm = time.perf_counter() - start
    print(
        f"\nnix develop (stand-in nixpkgs): provision cold {cold:.2f}s, warm {warm:.2f}s; "
        f"probe ({STEPS} steps) " + ", ".join(f"{s:.1f}s" for s in probe_seconds)
    )

    # A broken lock: the hook cannot build .venv, and provision says so instead of going on.
    lock_file = root / "locks" / "cpu.txt"
    lock_file.write_text(
        lock_file.read_text(encoding="utf-8") + "no-such-package==1\n", encoding="utf-8"
    )
    with pytest.raises(
        ToolError, match=r"^nix: the devShell's hook did not build .venv from locks/cpu.txt"
    ):
        target.provision()


@pytest.mark.slow
def test_cuda_flake_shell_puts_only_the_host_drivers_libraries_on_the_library_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nix_on_path(monkeypatch)
    monkeypatch.setenv("NIX_CONFIG", "substituters =")
    standin = _standin(tmp_path / "standin")
    root = tmp_path / "project"
    root.mkdir()
    ctx = _project(root, f"path:{standin}", cuda=True)
    git = require("git")
    process.run([git, "init", "--quiet", str(root)])
    process.run([git, "-C", str(root), "add", "environment.toml", "flake.nix", "locks"])
    host = tmp_path / "host-lib"  # a driver among other host libraries
    host.mkdir()
    for name in ("libcuda.so.580.65.06", "libnvidia-ml.so.580.65.06", "libc.so.6", "libz.so.1"):
        (host / name).write_text(name)
    (host / "libcuda.so.1").symlink_to("libcuda.so.580.65.06")
    (host / "libnvidia-ml.so.1").symlink_to("libnvidia-ml.so.580.65.06")

    show = 'printf "%s\\n" "$LD_LIBRARY_PATH"; ls .envparity/nix-driver'
    argv = NixTarget(ctx).develop(["sh", "-c", show])
    argv[argv.index(str(root))] = f"{root}#cu130"  # the CUDA shell (the default one is cpu)
    result = process.run(
        argv,
        extra_env={
            "ENVPARITY_HOST_LIBS": str(host),
            "ENVPARITY_NIXOS_DRIVER": str(tmp_path / "not-nixos"),
            "LD_LIBRARY_PATH": "",
        },
    )
    path, *links = result.stdout.splitlines()[-5:]  # the hook says what it builds on stderr
    # the driver folder alone: the wheels' libraries are the venv's interpreter's business
    assert path == str(root / ".envparity" / "nix-driver")
    assert links == [
        "libcuda.so.1", "libcuda.so.580.65.06", "libnvidia-ml.so.1", "libnvidia-ml.so.580.65.06",
    ]  # fmt: skip
    assert str(host) not in path


def _locked_flake(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec_text: str, *, vendor: bool = False
) -> tuple[Path, Path]:
    """(nix's bin folder, project): ``spec_text`` locked by uv and rendered against the live
    stand-in, in a git repository with its files tracked (``vendor``: with a copy of
    envparity's ``orchestrator/``, as a project that vendors it has)."""
    nix = nix_on_path(monkeypatch)
    monkeypatch.setenv("NIX_CONFIG", "substituters =")
    standin = _standin(tmp_path / "standin")
    root = tmp_path / "project"
    root.mkdir()
    (root / "environment.toml").write_text(
        spec_text.format(nixpkgs=f"path:{standin}"), encoding="utf-8"
    )
    spec = load(root / "environment.toml")
    lock.lock(spec)
    files.write_all(root, render.render_all(spec))
    if vendor:
        shutil.copytree(REPO / "orchestrator", root / "orchestrator",
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    git = require("git")
    process.run([git, "init", "--quiet", str(root)])
    process.run([git, "-C", str(root), "add", "."])
    return nix, root


PURE_SPEC = """\
[environment]
name = "pure-env"
python = "3.11"
systems = ["x86_64-linux", "aarch64-darwin"]

[dependencies]
numpy = "==2.4.6"
six = "==1.17.0"

[determinism]
seed = 5

[targets.nix]
nixpkgs = "{nixpkgs}"
"""


@pytest.mark.slow
def test_pure_environment_is_built_by_nix_from_the_pylock_with_wheels_nix_fetches_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """numpy and six locked by uv against PyPI (real metadata and hashes); Nix fetches each
    wheel from files.pythonhosted.org itself (fixed-output, the pylock's sha256), the stand-in's
    runCommand installs them offline with uv into the store, and the flake's checks build."""
    nix, root = _locked_flake(tmp_path, monkeypatch, PURE_SPEC)
    flake = ["--extra-experimental-features", "nix-command flakes", "--no-write-lock-file"]

    built = process.run(
        [str(nix / "nix"), "build", *flake, "--no-link", "--print-out-paths",
         f"{root}#checks.x86_64-linux.python-cpu", f"{root}#checks.x86_64-linux.locks"],
        timeout=600,
    )  # fmt: skip
    env_out = Path(built.stdout.split()[0])
    assert (env_out / "pyvenv.cfg").is_file()
    # The interpreter is the flake's python with the wheels' libraries (a wrapper, in the store)
    assert os.readlink(env_out / "bin" / "python").endswith("-envparity-python3.11")
    shown = process.run(
        [str(env_out / "bin" / "python"), "-c",
         "import numpy, six, sys; print(numpy.__version__, six.__version__, sys.prefix)"],
    ).stdout.split()  # fmt: skip
    assert shown == ["2.4.6", "1.17.0", str(env_out)]

    # The wheels came through Nix's own fetcher, one store path per wheel, named by the pylock.
    wheels = sorted(p.name.split("-", 1)[1] for p in Path(env_out).parent.glob("*.whl"))
    assert "six-1.17.0-py2.py3-none-any.whl" in wheels
    assert "numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl" in wheels

    # nix develop .#cpu-pure: the environment's python first on PATH, no network needed.
    inside = process.run(
        [str(nix / "nix"), "develop", *flake, f"{root}#cpu-pure", "--command",
         "python", "-c", "import os, sys; print(sys.prefix, os.environ['PYTHONHASHSEED'])"],
        timeout=300,
    ).stdout.split()  # fmt: skip
    assert inside == [str(env_out), "5"]

    # A lock edited by hand: checks.locks fails, naming it and the fix.
    pylock_file = root / "locks" / "pylock.cpu.toml"
    pylock_file.write_text(pylock_file.read_text() + "\n", encoding="utf-8")
    failed = process.run(
        [str(nix / "nix"), "build", *flake, "--no-link", f"{root}#checks.x86_64-linux.locks"],
        check=False,
        timeout=300,
    )
    assert failed.returncode != 0
    assert (
        "locks/pylock.cpu.toml: edited by hand since envparity wrote it; run: envparity lock --force"
        in failed.stderr
    )


# the demo spec that trains (torch from the CPU index, its mirror here), for the flake's checks
PROBE_SPEC = torch_spec("probe-check", steps=5) + '\n[targets.nix]\nnixpkgs = "{nixpkgs}"\n'


@pytest.mark.slow
def test_the_flakes_probe_check_trains_in_the_pure_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """checks.<system>.probe where it can run: a project vendoring envparity's orchestrator/,
    torch 2.13.0+cpu locked through the CPU index's mirror (the local wheel; the pylock names
    the index's own URL, which is not reachable here), numpy from PyPI. The mirror for Nix is
    its store: the wheel is added as the fixed-output path the flake's fetchurl names (same
    name, same sha256), so Nix takes it from there instead of downloading. Nix builds the pure
    environment and runs the probe in its sandbox; the fingerprint is the check's output.
    About 2 minutes cold here (copying torch into the store), seconds when Nix has it."""
    monkeypatch.setenv("ENVPARITY_MIRRORS", mirror())
    nix, root = _locked_flake(tmp_path, monkeypatch, PROBE_SPEC, vendor=True)
    pylock_text = (root / "locks" / "pylock.cpu.toml").read_text(encoding="utf-8")
    assert "https://download.pytorch.org/whl/cpu/torch-2.13.0%2Bcpu-" in pylock_text
    process.run([str(nix / "nix-store"), "--add-fixed", "sha256", str(torch_wheel())])
    built = process.run(
        [str(nix / "nix"), "build", "--extra-experimental-features", "nix-command flakes",
         "--no-write-lock-file", "--no-link", "--print-out-paths",
         f"{root}#checks.x86_64-linux.probe"],
        timeout=900,
    )  # fmt: skip
    fingerprint = json.loads(
        (Path(built.stdout.strip()) / "fingerprint.json").read_text(encoding="utf-8")
    )
    env = fingerprint["environment"]
    assert env["python"]["executable"].endswith("-probe-check-cpu-python/bin/python")
    assert env["python"]["hash_seed"] == "fixed:0"
    assert fingerprint["stages"]
