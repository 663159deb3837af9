"""Generated files judged by the real tools: Nix (parse, and ``nix flake check`` against a stand-in
nixpkgs), the official devcontainer.json schema and the devcontainer CLI, hadolint; golden
files for the repository's own spec; deterministic output.

Set ``ENVPARITY_UPDATE_GOLDEN=1`` to rewrite tests/golden/ from the current renderers.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import real_tools
import tomllib

from orchestrator import cli

REPO = real_tools.REPO
PIN = "github:NixOS/nixpkgs/c59305bab2065cfecc4944690d9eedbb56f3a9fa"  # nixos-unstable 2026-10-01
GOLDEN = Path(__file__).resolve().parent / "golden" / "dogfood"

CPU_MINIMAL = """\
[environment]
name = "cpu-minimal"
python = "3.12"

[dependencies]
numpy = ">=2"

[targets.nix]
nixpkgs = "{pin}"

[targets.devcontainer]
image = "python:3.12-slim-bookworm"
""".replace("{pin}", PIN)

CUDA_12_8 = """\
[environment]
name = "vision_train"
python = "3.12"

[cuda]
version = "12.8"
cudnn = "9"
compute_capabilities = ["8.9", "12.0"]

[dependencies]
torch = "==2.10.0"
numpy = { version = ">=2.2,<2.5", markers = "python_version >= '3.10'" }
pillow = { version = ">=11", extras = ["avif"] }

[[index]]
url = "https://download.pytorch.org/whl/cu128"
flavors = ["cu128"]

[[index]]
url = "https://download.pytorch.org/whl/cpu"
flavors = ["cpu"]

[[index]]
url = "file:///srv/wheels"
kind = "find-links"

[system]
packages = ["build-essential", "git", "libgl1", "ffmpeg", "openssh-client", "curl"]
nix = { curl = "curl" }
apt = { curl = "curl" }

[determinism]
seed = 1234
threads = 4
tf32 = false

[variables]
DATA_PATH = { default = "./data", required = true, description = "where the datasets live" }
WANDB_API_KEY = { secret = true, description = "Weights & Biases key; never committed" }
RUN_NAME = "baseline"

[targets.venv]
flavor = "cpu"

[targets.devcontainer]
image = "nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04@sha256:{digest}"
extensions = ["ms-python.python", "ms-toolsai.jupyter"]
user = "researcher"

[targets.nix]
nixpkgs = "{pin}"
""".replace("{digest}", "0123456789abcdef" * 4).replace("{pin}", PIN)

MULTI_SYSTEM = """\
[environment]
name = "multi.arch"
python = "3.13.1"
systems = ["x86_64-linux", "aarch64-linux"]

[dependencies]
numpy = "==2.3.*"

[system]
packages = ["git", "jq"]

[determinism]
deterministic_algorithms = false
tf32 = true

[targets.nix]
nixpkgs = "{pin}"

[targets.devcontainer]
image = "ghcr.io/example/base:2.1"
extensions = []
""".replace("{pin}", PIN)

SPECS = {
    "dogfood": (REPO / "environment.toml").read_text(encoding="utf-8"),
    "cpu-minimal": CPU_MINIMAL,
    "cuda-12.8": CUDA_12_8,
    "multi-system": MULTI_SYSTEM,
}


def render_into(folder: Path, text: str) -> Path:
    """Write the spec into ``folder`` (no locks: rendering never resolves) and render it
    through the CLI; return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = folder / "environment.toml"
    spec.write_text(text, encoding="utf-8")
    assert cli.main(["--spec", str(spec), "render"]) == 0
    return folder


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("rendered")
    return {name: render_into(base / name, text) for name, text in SPECS.items()}


def generated(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): p.read_text(encoding="utf-8")
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "environment.toml"
    }


@pytest.mark.parametrize("name", SPECS)
def test_every_spec_renders_all_four_files(rendered: dict[str, Path], name: str) -> None:
    expected = {"flake.nix", ".devcontainer/devcontainer.json", ".devcontainer/Dockerfile"}
    if name in ("dogfood", "cuda-12.8"):
        expected.add(".env.example")
    if name == "dogfood":  # its [ci] table: the CI workflow
        expected.add(".github/workflows/envparity.yml")
    if name == "multi-system":  # aarch64-linux: the Apple Silicon configuration too
        expected |= {".devcontainer/arm64/devcontainer.json", ".devcontainer/arm64/Dockerfile"}
    assert set(generated(rendered[name])) == expected


@pytest.mark.slow
@pytest.mark.parametrize("name", SPECS)
def test_flake_parses_and_passes_flake_check_against_the_standin(
    rendered: dict[str, Path], name: str
) -> None:
    real_tools.nix_parse(rendered[name] / "flake.nix")
    real_tools.nix_flake_check(rendered[name])


@pytest.mark.slow
def test_multi_system_flake_has_a_dev_shell_for_each_system(rendered: dict[str, Path]) -> None:
    shells = real_tools.nix_eval_json(
        "builtins.mapAttrs (s: v: v.default.name) "
        "((import ./flake.nix).outputs { self = { }; inherit nixpkgs; }).devShells",
        cwd=rendered["multi-system"],
    )
    assert shells == {"aarch64-linux": "multi.arch", "x86_64-linux": "multi.arch"}


def _shell(folder: Path, attr: str, shell: str = "default") -> object:
    return real_tools.nix_eval_json(
        "((import ./flake.nix).outputs { self = { }; inherit nixpkgs; })"
        f".devShells.x86_64-linux.{shell}.{attr}",
        cwd=folder,
    )


@pytest.mark.slow
def test_cuda_flake_takes_the_split_cuda_packages_and_maps_apt_names(
    rendered: dict[str, Path],
) -> None:
    # build-essential, git, libgl1, ffmpeg, openssh-client, curl (overridden as itself)
    names = real_tools.nix_eval_json(
        "map (p: p.name) ((import ./flake.nix).outputs { self = { }; inherit nixpkgs; })"
        ".devShells.x86_64-linux.cu128.nativeBuildInputs",
        cwd=rendered["cuda-12.8"],
    )
    assert names == [
        "python312", "uv",
        "curl", "ffmpeg", "gcc", "git", "gnumake", "libglvnd", "openssh",
        "cuda12.8-cuda_nvcc", "cuda12.8-cuda_cudart", "cuda12.8-cuda_cccl",
        "cuda12.8-libcublas", "cuda12.8-cudnn",
    ]  # fmt: skip


@pytest.mark.slow
def test_the_shell_library_path_holds_the_driver_alone_and_python_gets_the_libraries(
    rendered: dict[str, Path],
) -> None:
    # The CUDA shell: only the driver folder on the shell's LD_LIBRARY_PATH; CPU shells: none.
    hook = str(_shell(rendered["cuda-12.8"], "shellHook", "cu128"))
    exports = [line.strip() for line in hook.splitlines() if "LD_LIBRARY_PATH=" in line]
    assert exports == [
        'export LD_LIBRARY_PATH="$envparity_driver${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"'
    ]
    for name in SPECS:
        cpu_hook = str(_shell(rendered[name], "shellHook", "cpu"))
        assert "LD_LIBRARY_PATH" not in cpu_hook and "envparity_driver" not in cpu_hook, name
    # The wheels' libraries are set by the venv's interpreter for itself and its children:
    # stdenv.cc.cc.lib, zlib, then the apt library packages (ffmpeg, libgl1 -> libglvnd).
    text = str(_shell(rendered["cuda-12.8"], "ENVPARITY_PYTHON_WRAPPER.text", "cpu"))
    shebang, export, run = text.splitlines()
    assert (
        shebang == "#!/bin/bash"
        and run.startswith('exec -a "$0" /')
        and run.endswith('-python312/bin/python3.12 "$@"')
    )
    folders = [  # /nix/store/<hash>-<name>/lib -> <name>/lib
        Path(p).parent.name.split("-", 1)[1] + "/lib"
        for p in export.removeprefix('export LD_LIBRARY_PATH="').split("${")[0].split(":")
    ]
    assert folders == [
        "gcc-unwrapped-lib/lib",
        "zlib-lib/lib",
        "ffmpeg-lib/lib",
        "libglvnd-lib/lib",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("name", SPECS)
def test_devcontainer_json_is_valid_and_read_by_the_devcontainer_cli(
    rendered: dict[str, Path], name: str
) -> None:
    data = real_tools.validate_devcontainer(rendered[name] / ".devcontainer" / "devcontainer.json")
    read = real_tools.devcontainer_read_configuration(rendered[name])
    for key in ("name", "build", "containerEnv", "remoteUser", "customizations"):
        assert read[key] == data[key], key


@pytest.mark.slow
@pytest.mark.parametrize("name", SPECS)
def test_hadolint_passes_every_dockerfile(rendered: dict[str, Path], name: str) -> None:
    real_tools.hadolint(rendered[name] / ".devcontainer" / "Dockerfile")


@pytest.mark.parametrize("name", SPECS)
def test_dockerfile_pins_uv_by_digest_and_keeps_uv_cache_between_builds(
    rendered: dict[str, Path], name: str
) -> None:
    """As BuildKit's parser reads it: uv's image is a build argument defaulting to the digest
    pin, a stage of its own; the lock is installed with uv's cache as a cache mount."""
    from orchestrator.render.devcontainer import UV_IMAGE

    spec = tomllib.loads(SPECS[name])
    steps = real_tools.dockerfile_instructions(rendered[name] / ".devcontainer" / "Dockerfile")
    assert [(c.cmd.upper(), c.value) for c in steps[:3]] == [
        ("ARG", (f"UV_IMAGE={UV_IMAGE}",)),
        ("FROM", ("${UV_IMAGE}", "AS", "uv")),
        ("FROM", (spec["targets"]["devcontainer"]["image"],)),
    ]
    assert "@sha256:" in UV_IMAGE
    copy = [c for c in steps if c.cmd.upper() == "COPY" and c.flags]
    assert [(c.flags, c.value) for c in copy] == [
        (("--from=uv",), ("/uv", "/uvx", "/usr/local/bin/"))
    ]
    sync = [c for c in steps if c.cmd.upper() == "RUN" and "uv pip sync" in c.value[0]]
    assert [c.flags for c in sync] == [("--mount=type=cache,target=/root/.cache/uv",)]


def test_dockerfile_env_matches_devcontainer_container_env(rendered: dict[str, Path]) -> None:
    folder = rendered["cuda-12.8"]
    container_env = real_tools.load_json5(folder / ".devcontainer" / "devcontainer.json")[
        "containerEnv"
    ]
    env = real_tools.dockerfile_pairs(folder / ".devcontainer" / "Dockerfile", "ENV", container_env)
    assert container_env == {
        "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "MKL_NUM_THREADS": "4",
        "NVIDIA_TF32_OVERRIDE": "0",
        "OMP_NUM_THREADS": "4",
        "OPENBLAS_NUM_THREADS": "4",
        "PYTHONHASHSEED": "1234",
        # for extensions built in the container: the spec's compute_capabilities
        "TORCH_CUDA_ARCH_LIST": "8.9;12.0",
    }
    assert env == container_env


def test_dogfood_output_matches_golden_files(rendered: dict[str, Path]) -> None:
    files = generated(rendered["dogfood"])
    if os.environ.get("ENVPARITY_UPDATE_GOLDEN") == "1":
        shutil.rmtree(GOLDEN, ignore_errors=True)
        for path, text in files.items():
            (GOLDEN / path).parent.mkdir(parents=True, exist_ok=True)
            (GOLDEN / path).write_text(text, encoding="utf-8")
    golden = generated(GOLDEN) if GOLDEN.is_dir() else {}
    assert set(files) == set(golden), (
        "rerun with ENVPARITY_UPDATE_GOLDEN=1 to rewrite tests/golden/"
    )
    for path, text in files.items():
        assert text == golden[path], f"{path} differs from tests/golden/dogfood/{path}"


@pytest.mark.parametrize("name", SPECS)
def test_rendering_is_deterministic_across_processes(
    rendered: dict[str, Path], tmp_path: Path, name: str
) -> None:
    # A second render in another interpreter, with another hash seed (set iteration order)
    # and time zone: the same bytes, and no date in any file.
    spec = tmp_path / "environment.toml"
    spec.write_text(SPECS[name], encoding="utf-8")
    real_tools.process.run(
        [sys.executable, "-m", "orchestrator", "--spec", str(spec), "render"],
        extra_env={"PYTHONHASHSEED": "12345", "TZ": "Pacific/Kiritimati"},
        cwd=REPO,
    )
    assert generated(tmp_path) == generated(rendered[name])
    today = datetime.date.today()
    for text in generated(tmp_path).values():
        assert today.isoformat() not in text and str(today.year) not in text


def test_standin_knows_exactly_the_cuda_package_sets_and_pythons_of_the_compat_table() -> None:
    table = tomllib.loads(
        (REPO / "orchestrator" / "data" / "compat.toml").read_text(encoding="utf-8")
    )
    standin = real_tools.nix_eval_json(
        'let pkgs = import nixpkgs { system = "x86_64-linux"; };'
        " names = builtins.attrNames pkgs; in {"
        ' cuda = builtins.filter (n: builtins.match "cudaPackages_.*" n != null'
        " && (builtins.tryEval pkgs.${n}).success) names;"
        ' python = builtins.filter (n: builtins.match "python3[0-9]+" n != null) names; }',
        cwd=REPO,
    )
    present = [v for v, c in table["cuda"].items() if c["nixpkgs"] == "present"]
    assert sorted(standin["cuda"]) == sorted("cudaPackages_" + v.replace(".", "_") for v in present)
    pythons = {
        p for t in table["torch"].values() for p in t["python"] + t.get("python_index_only", [])
    }
    assert sorted(standin["python"]) == sorted("python" + p.replace(".", "") for p in pythons)


BROKEN_FLAKES = {
    "a misspelt package": ("pkgs.uv\n", "pkgs.uvv\n", "attribute 'uvv' missing"),
    "a CUDA set nixpkgs removed": (
        "cudaPackages_12_8",
        "cudaPackages_12_4",
        "removed from Nixpkgs",
    ),
    "an unfree package outside CUDA": ('pkgs."git"', 'pkgs."unrar"', "has an unfree license"),
    "an unknown nixpkgs config option": (
        "allowUnfreePredicate =",
        "allowUnfreePredicat =",
        "allowUnfreePredicat unknown",
    ),
    "no unfree predicate (CUDA is unfree)": (
        "pkgs._cuda.lib.allowUnfreeCudaPredicate",
        "(p: false)",
        "'cuda12.8-cuda_nvcc' has an unfree license",
    ),
    "a CUDA package the set does not have": (
        "cuda.cuda_cccl",
        "cuda.cuda_ccl",
        "attribute 'cuda_ccl' missing",
    ),
    "a misspelt lib function": (
        "makeLibraryPath",
        "makeLibPath",
        "attribute 'makeLibPath' missing",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", BROKEN_FLAKES)
def test_flake_check_against_the_standin_fails_on(
    rendered: dict[str, Path], tmp_path: Path, case: str
) -> None:
    old, new, message = BROKEN_FLAKES[case]
    text = (rendered["cuda-12.8"] / "flake.nix").read_text(encoding="utf-8")
    assert old in text
    (tmp_path / "flake.nix").write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(AssertionError, match=message):
        real_tools.nix_flake_check(tmp_path)


# --------------------------------------------------------------------------- system packages


@pytest.mark.slow
def test_every_nixpkgs_attribute_of_the_apt_map_is_in_the_standin() -> None:
    from orchestrator.render.escape import nix_list
    from orchestrator.render.flake import system_package_map

    attrs = sorted({a for p in system_package_map().values() for a in p.nix})
    found = real_tools.nix_eval_json(
        f'let pkgs = import nixpkgs {{ system = "x86_64-linux"; }}; in '
        f"builtins.filter (n: !(pkgs ? ${{n}})) {nix_list(attrs)}",
        cwd=REPO,
    )
    assert found == []


UNMAPPED = CPU_MINIMAL.replace(
    "[targets.nix]", '[system]\npackages = ["git", "libfoo7", "libsm6"]\n\n[targets.nix]'
)
UNMAPPED_WARNING = (
    "envparity: warning: environment.toml: system.packages: 'libfoo7' has no known nixpkgs "
    "attribute; flake.nix uses pkgs.libfoo7, which may not exist: add [system] nix = "
    '{ "libfoo7" = "<nixpkgs attribute>" }\n'
)


def test_render_and_check_warn_about_an_unmapped_system_package(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    render_into(tmp_path, UNMAPPED)
    assert capsys.readouterr().err == UNMAPPED_WARNING + "render: wrote 3 of 3 generated file(s)\n"
    text = (tmp_path / "flake.nix").read_text(encoding="utf-8")
    assert 'pkgs."libfoo7"' in text and 'pkgs."libsm"' in text  # passed through; mapped
    libs = (
        'pythonWithLibs pkgs python [ pkgs.stdenv.cc.cc.lib pkgs.zlib pkgs."libfoo7" pkgs."libsm" ]'
    )
    assert libs in text  # lib* names count as libraries
    cli.main(["--spec", str(tmp_path / "environment.toml"), "check"])
    out = capsys.readouterr().out
    assert UNMAPPED_WARNING.removeprefix("envparity: ") in out

    fixed = UNMAPPED.replace('"libsm6"]', '"libsm6"]\nnix = { "libfoo7" = "foo" }')
    render_into(tmp_path, fixed)
    assert "warning" not in capsys.readouterr().err
    assert 'pkgs."foo"' in (tmp_path / "flake.nix").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- flake.lock


def _flake_lock(rev: str) -> str:
    return json.dumps(
        {
            "nodes": {
                "nixpkgs": {
                    "locked": {"owner": "NixOS", "repo": "nixpkgs", "rev": rev, "type": "github"},
                    "original": {"owner": "NixOS", "repo": "nixpkgs", "rev": rev, "type": "github"},
                },
                "root": {"inputs": {"nixpkgs": "nixpkgs"}},
            },
            "root": "root",
            "version": 7,
        }
    )


@pytest.fixture(scope="module")
def locked_cpu(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CPU_MINIMAL locked (uv, PyPI metadata) and rendered: what `check` finds current."""
    folder = render_into(tmp_path_factory.mktemp("locked"), CPU_MINIMAL)
    assert cli.main(["--spec", str(folder / "environment.toml"), "lock"]) == 0
    return render_into(folder, CPU_MINIMAL)  # the files record the lock they were made from


@pytest.mark.parametrize(
    ("lock_text", "expected"),
    [
        (None, None),
        (_flake_lock(PIN.rsplit("/", 1)[1]), None),
        (
            _flake_lock("0" * 40),
            f"flake.lock: nixpkgs is locked at {'0' * 40} but environment.toml pins "
            f"targets.nix.nixpkgs = '{PIN}'; run: nix flake update nixpkgs (or delete "
            "flake.lock; the next nix develop writes it)",
        ),
        (
            "{}",
            "flake.lock: cannot read the nixpkgs input's locked revision (KeyError('nodes')); "
            "run: nix flake update nixpkgs (or delete flake.lock; the next nix develop writes it)",
        ),
    ],
    ids=["absent", "at the pin", "another revision", "unreadable"],
)
def test_check_reports_a_flake_lock_that_is_not_at_the_pin(
    locked_cpu: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    lock_text: str | None,
    expected: str | None,
) -> None:
    shutil.copytree(locked_cpu, tmp_path, dirs_exist_ok=True)
    if lock_text is not None:
        (tmp_path / "flake.lock").write_text(lock_text, encoding="utf-8")
    capsys.readouterr()
    code = cli.main(["--spec", str(tmp_path / "environment.toml"), "check"])
    out = capsys.readouterr().out.splitlines()
    if expected is None:
        assert code == 0 and not any(line.startswith("flake.lock") for line in out)
    else:
        assert code == 1 and out[-1] == expected


# The predicate flakes used before (licences as a list of shortNames) and nixpkgs' own.
OLD_PREDICATE = (
    'pkg: builtins.all (l: l.free or false || builtins.elem (l.shortName or "") '
    '[ "CUDA EULA" "cuDNN EULA" ]) (nixpkgs.lib.toList (pkg.meta.license or [ ]))'
)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("predicate", "accepted"),
    [("pkgs._cuda.lib.allowUnfreeCudaPredicate", True), (OLD_PREDICATE, False)],
    ids=["nixpkgs' predicate", "the hand-written one"],
)
def test_a_compound_licence_with_a_cuda_part_needs_nixpkgs_predicate(
    predicate: str, accepted: bool
) -> None:
    # `CUDA EULA OR unfreeRedistributable` (compound licences: lib/licenses/operators.nix); the
    # hand-written predicate sees one attribute set with no shortName and refuses it.
    result = real_tools.nix_eval_json(
        'let pkgs = import nixpkgs { system = "x86_64-linux"; '
        f"config = {{ pkgs, ... }}: {{ allowUnfreePredicate = {predicate}; }}; }}; in "
        "(builtins.tryEval pkgs.envparity-compound-licence.name).success",
        cwd=REPO,
    )
    assert result is accepted


def test_a_flake_lock_pointing_at_a_local_nixpkgs_is_reported_with_its_path(
    locked_cpu: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(locked_cpu, tmp_path, dirs_exist_ok=True)
    lock = json.loads(_flake_lock("0" * 40))
    lock["nodes"]["nixpkgs"]["locked"] = {"path": "/src/nixpkgs", "type": "path"}
    (tmp_path / "flake.lock").write_text(json.dumps(lock), encoding="utf-8")
    assert cli.main(["--spec", str(tmp_path / "environment.toml"), "check"]) == 1
    assert (
        capsys.readouterr()
        .out.splitlines()[-1]
        .startswith(
            f"flake.lock: nixpkgs is locked at path:/src/nixpkgs but environment.toml pins "
            f"targets.nix.nixpkgs = '{PIN}'; "
        )
    )


APPLE_SILICON = CUDA_12_8.replace(
    'python = "3.12"\n',
    'python = "3.12"\nsystems = ["x86_64-linux", "aarch64-linux", "aarch64-darwin"]\n',
    1,
)


@pytest.mark.slow
def test_apple_silicon_gets_a_linux_arm64_configuration_without_gpu_requests(
    tmp_path: Path,
) -> None:
    folder = render_into(tmp_path, APPLE_SILICON)
    main = real_tools.validate_devcontainer(folder / ".devcontainer" / "devcontainer.json")
    arm = real_tools.validate_devcontainer(folder / ".devcontainer" / "arm64" / "devcontainer.json")
    assert main["hostRequirements"] == {"gpu": True}  # the CUDA flavor, as before
    assert "hostRequirements" not in arm and not any("gpu" in a for a in arm["runArgs"])
    assert arm["name"] == "vision_train (arm64, cpu)"
    assert arm["build"] == {
        "context": "../../locks",
        "dockerfile": "Dockerfile",
        "options": ["--platform=linux/arm64"],
    }
    steps = real_tools.dockerfile_instructions(folder / ".devcontainer" / "arm64" / "Dockerfile")
    copies = [c.value for c in steps if c.cmd.upper() == "COPY" and not c.flags]
    assert copies == [("cpu-aarch64.txt", "/tmp/envparity-lock.txt")]  # the cpu flavor's arm64 lock
    labels = real_tools.dockerfile_pairs(
        folder / ".devcontainer" / "arm64" / "Dockerfile", "LABEL", ["dev.envparity.flavor"]
    )
    assert labels == {"dev.envparity.flavor": "cpu"}
    # the main image takes the CUDA flavor's lock of its machine; no macOS lock goes in
    main_copies = [
        c.value
        for c in real_tools.dockerfile_instructions(folder / ".devcontainer" / "Dockerfile")
        if c.cmd.upper() == "COPY" and not c.flags
    ]
    assert main_copies == [("cu128.txt", "cu128-aarch64.txt", "/tmp/envparity-locks/")]
    read = real_tools.devcontainer_read_configuration(folder)  # the CLI reads the main one
    assert read["name"] == "vision_train"
    real_tools.hadolint(folder / ".devcontainer" / "arm64" / "Dockerfile")


@pytest.mark.slow
def test_compute_capabilities_reach_nixpkgs_and_extension_builds(tmp_path: Path) -> None:
    assert 'compute_capabilities = ["8.9", "12.0"]' in CUDA_12_8
    folder = render_into(tmp_path, CUDA_12_8)
    flake = (folder / "flake.nix").read_text(encoding="utf-8")
    assert flake.count('cudaCapabilities = [ "8.9" "12.0" ];') == 1  # nixpkgs' config, Linux
    assert _shell(folder, "TORCH_CUDA_ARCH_LIST", "cu128") == "8.9;12.0"
    cpu = real_tools.nix_eval_json(
        "((import ./flake.nix).outputs { self = { }; inherit nixpkgs; })"
        ".devShells.x86_64-linux.cpu ? TORCH_CUDA_ARCH_LIST",
        cwd=folder,
    )
    assert cpu is False  # the cpu shell builds no CUDA extension
    real_tools.nix_flake_check(folder)


@pytest.mark.slow
def test_darwin_shells_have_no_cuda_and_no_driver(tmp_path: Path) -> None:
    folder = render_into(tmp_path, APPLE_SILICON)
    report = real_tools.nix_flake_check(folder)
    assert "checking derivation devShells.aarch64-darwin.default" in report
    shells = real_tools.nix_eval_json(
        "builtins.mapAttrs (n: s: { inputs = map (p: p.name) s.nativeBuildInputs;"
        ' hook = s.shellHook or ""; wrapper = s ? ENVPARITY_PYTHON_WRAPPER; })'
        " ((import ./flake.nix).outputs { self = { }; inherit nixpkgs; }).devShells.aarch64-darwin",
        cwd=folder,
    )
    assert sorted(shells) == ["cpu", "default"]  # no CUDA flavor on macOS; pure once locked
    for shell in shells.values():
        assert not any(name.startswith("cuda") for name in shell["inputs"])
        assert "envparity_driver" not in shell["hook"] and "LD_LIBRARY_PATH" not in shell["hook"]
        assert shell["wrapper"] is False  # macOS wheels need no library path
        assert "locks/cpu-aarch64-darwin.txt" in shell["hook"]


def test_torch_cuda_arch_list_only_for_a_cuda_devcontainer_with_compute_capabilities() -> None:
    from orchestrator.render.devcontainer import build_env
    from orchestrator.spec import loads

    def env(cuda: str, target: str = "") -> dict[str, str]:
        return build_env(
            loads(
                '[environment]\nname = "g"\npython = "3.12"\n[cuda]\nversion = "12.8"\n'
                f'{cuda}[dependencies]\nnumpy = ">=2"\n[targets.devcontainer]\n'
                f'image = "nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04"\n{target}',
                path="environment.toml",
            )
        )

    listed = 'compute_capabilities = ["8.6", "9.0"]\n'
    assert env(listed) == {"TORCH_CUDA_ARCH_LIST": "8.6;9.0"}
    assert env("") == {}
    assert env(listed, 'flavor = "cpu"\n') == {}  # a CPU devcontainer builds no CUDA code
