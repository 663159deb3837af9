"""``envparity init`` on files in the shapes of real projects (``tests/init_corpus/``).

Each file is converted and the spec checked field by field against what the file says:
packages and versions (with markers, extras and flavors), Python, CUDA, indexes, system
packages, targets, and the lines kept as ``# not converted:``. The CPU ones are taken through
``lock`` (the real uv, PyPI and the local PyTorch CPU wheels), ``render`` and ``check``.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from orchestrator import init, lock, spec
from tests.helpers import CPU_INDEX as CPU
from tests.helpers import envparity

CORPUS = Path(__file__).parent / "init_corpus"
THIS_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


@dataclass(frozen=True)
class Expected:
    python: str
    deps: dict[str, str]  # name -> requirement line; a flavored one ends in " [cuda]"/" [cpu]"
    indexes: list[tuple[str, str, tuple[str, ...]]]
    cuda: str | None = None
    cudnn: str | None = None
    name: str = "corpus"
    system: tuple[str, ...] = ()
    not_converted: int = 0  # how many '# not converted:' lines
    unlockable: int = 0  # how many of them are named on stderr
    mentions: tuple[str, ...] = field(default_factory=tuple)  # text the spec must hold


def _cuda_index(tag: str) -> tuple[str, str, tuple[str, ...]]:
    return (f"https://download.pytorch.org/whl/{tag}", "index", ("cuda",))


CPU_INDEX = (CPU, "index", ("cpu",))

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
            "triton": "triton==2.2.0",
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
        not_converted=5,
        unlockable=5,
        mentions=("git+https://github.com/openai/CLIP.git", "./third_party/apex"),
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
        python="3.9",
        cuda="12.1",
        deps={
            "numpy": "numpy>=1.24.2,<2.0.0",
            "hydra-core": "hydra-core>=1.3,<1.4",
            "pandas": "pandas==1.*",
            "scipy": "scipy>=1.10,<2",
            "torch": "torch>=2.2.0,<3.0.0",
            "torchvision": "torchvision>=0.17.0,<0.18.0",
        },
        indexes=[_cuda_index("cu121"), CPU_INDEX],
        not_converted=1,
    ),
    "poetry_cpu_cuda.toml": Expected(
        name="speech-service",
        python="3.10",
        cuda="12.1",
        deps={"torch": "torch>=2.3.1,<3.0.0", "librosa": "librosa>=0.10.1,<0.11.0"},
        indexes=[CPU_INDEX, _cuda_index("cu121"), ("https://pypi.example.com/simple", "index", ())],
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
        indexes=[CPU_INDEX],
        mentions=("poetry source 'pytorch-cpu', priority explicit, named by torch, torchvision",),
    ),
    "pep621_uv_extras.toml": Expected(
        name="expert-kit",
        python="3.12",
        cuda="12.8",
        deps={
            "accelerate": "accelerate>=1.6.0",
            "safetensors": "safetensors>=0.5.3",
            "transformers": "transformers>=4.51.3",
            "torch": "torch==2.7.0",
            "torchvision": "torchvision==0.22.0",
            "nvidia-nccl-cu12": "nvidia-nccl-cu12>=2.26 [cuda]",
        },
        indexes=[CPU_INDEX, _cuda_index("cu128")],
        not_converted=1,
    ),
    "pep621_uv_markers.toml": Expected(
        name="sample-project",
        python="3.10",
        cuda="12.8",
        deps={"torch": 'torch==2.7.0; platform_system == "Linux"', "numpy": "numpy>=1.26"},
        indexes=[_cuda_index("cu128"), CPU_INDEX],
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
        indexes=[CPU_INDEX],
    ),
}
CPU_CASES = [name for name, case in CASES.items() if case.cuda is None and not case.unlockable]


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
        folder.mkdir()
        shutil.copy(CORPUS / name, folder / name)
        monkeypatch.chdir(folder)
        return init.convert(Path(name), name=None)

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
        assert [(i.url, i.kind, i.flavors) for i in s.indexes] == case.indexes
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
        "poetry2_project_source.toml",
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
