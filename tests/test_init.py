"""``envparity init``: the starter spec, the converters' existing cases, TOML escaping, writing.

New kinds of input (CUDA builds, uv and Poetry sources, conda spec lists, requirements that
cannot be locked) are in ``test_init_kinds.py``; files in the shapes of real projects in
``test_init_corpus.py``."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest
import tomlkit
from hypothesis import given
from hypothesis import strategies as st
from packaging.version import Version

from orchestrator import cli, init, spec
from orchestrator.errors import SpecError, UsageError
from tests.helpers import UNLOCKABLE

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

THIS_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
CPU_INDEX = ("https://download.pytorch.org/whl/cpu", "index", ("cpu",))
pytestmark = pytest.mark.usefixtures("in_tmp")  # every test in its own folder


def write(files: dict[str, str]) -> None:
    for name, text in files.items():
        Path(name).parent.mkdir(parents=True, exist_ok=True)
        Path(name).write_text(text, encoding="utf-8")


def convert(files: dict[str, str], source: str, name: str | None = None) -> tuple[str, spec.Spec]:
    write(files)
    text = init.spec_text(Path(source), name=name)
    return text, spec.loads(text)


def deps(s: spec.Spec) -> dict[str, str]:
    return {d.name: d.requirement() for d in s.dependencies}


def indexes(s: spec.Spec) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(i.url, i.kind, i.flavors) for i in s.indexes]


def not_converted(text: str) -> list[str]:
    prefix = "# not converted: "
    return [line.removeprefix(prefix) for line in text.splitlines() if line.startswith(prefix)]


def problems(files: dict[str, str], source: str) -> str:
    write(files)
    with pytest.raises(SpecError) as info:
        init.spec_text(Path(source), name=None)
    return str(info.value)


# --------------------------------------------------------------------------- from scratch


def test_starter_is_cpu_only_with_this_python_and_the_installed_torch_and_numpy(
    in_tmp: Path,
) -> None:
    s = spec.loads(init.spec_text(None, name="demo"))
    assert s.environment.name == "demo"
    assert s.environment.python == THIS_PYTHON
    assert s.cuda is None
    expected = {n: f"{n}=={Version(metadata.version(n)).public}" for n in ("torch", "numpy")}
    assert deps(s) == expected
    assert indexes(s) == [CPU_INDEX]
    assert list(s.targets) == ["host", "venv"]


def test_starter_without_torch_or_numpy_installed_uses_lower_bounds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def missing(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", missing)
    s = spec.loads(init.spec_text(None, name="demo"))
    assert deps(s) == {"torch": "torch>=2.0", "numpy": "numpy>=1.24"}


@pytest.mark.parametrize(
    ("folder", "name"),
    [("ml-project", "ml-project"), ("My Project (v2)", "My-Project-v2"), ("___", "project")],
)
def test_name_defaults_to_the_folder_made_valid(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch, folder: str, name: str
) -> None:
    (in_tmp / folder).mkdir()
    monkeypatch.chdir(in_tmp / folder)
    assert spec.loads(init.spec_text(None, name=None)).environment.name == name


def test_a_huge_invalid_name_in_the_source_is_quoted_short(in_tmp: Path) -> None:
    """A 100,000-character conda ``name:`` used to land whole in a comment of the spec."""
    text, s = convert(
        {"environment.yml": f"name: {'a' * 100_000}\ndependencies:\n  - numpy=1.26\n"},
        "environment.yml",
    )
    assert max(len(line) for line in text.splitlines()) < 400
    assert "(100000 characters) from environment.yml is not a valid name" in text
    assert s.environment.name == "a" * 64


@pytest.mark.parametrize("bad", ["my env", "-x", "a" * 65, 'x"y', "ü"])
def test_an_invalid_name_is_refused(bad: str) -> None:
    with pytest.raises(UsageError) as info:
        init.spec_text(None, name=bad)
    assert str(info.value) == (
        f"--name: {bad!r} is not a name (letters, digits, '.', '_', '-'; "
        "starting with a letter or digit; at most 64)"
    )


# --------------------------------------------------------------------------- requirements.txt

ARTICLE_REQUIREMENTS = """\
# python_version: 3.10
# Platform: linux

torch==2.1.0+cu118
numpy==1.24.0
transformers==4.35.0
scikit-learn==1.3.2

# Generate with: pip freeze > requirements.txt
"""


def test_requirements_from_the_article() -> None:
    text, s = convert({"requirements.txt": ARTICLE_REQUIREMENTS}, "requirements.txt", "ml")
    assert s.environment.python == "3.10"
    assert s.cuda == spec.Cuda(version="11.8")
    assert deps(s) == {
        "torch": "torch==2.1.0",
        "numpy": "numpy==1.24.0",
        "transformers": "transformers==4.35.0",
        "scikit-learn": "scikit-learn==1.3.2",
    }
    assert indexes(s) == [("https://download.pytorch.org/whl/cu118", "index", ("cuda",)), CPU_INDEX]
    assert not_converted(text) == []
    assert "# from the +cu118 of torch (requirements.txt line 4)" in text


def test_requirements_markers_extras_continuations_and_hashes() -> None:
    text, s = convert(
        {
            "requirements.txt": (
                'numpy>=1.24 ; python_version >= "3.10"   # why: the new RNG\n'
                "requests[socks,security]==2.31.0 \\\n"
                "    --hash=sha256:aaaa \\\n"
                "    --hash=sha256:bbbb\n"
                "zope.interface==5.0\n"
            )
        },
        "requirements.txt",
    )
    assert deps(s) == {
        "numpy": 'numpy>=1.24; python_version >= "3.10"',
        "requests": "requests[security,socks]==2.31.0",
        "zope.interface": "zope.interface==5.0",
    }
    assert s.environment.python == THIS_PYTHON
    assert f"# python {THIS_PYTHON}: this interpreter's, as requirements.txt names none\n" in text
    assert not_converted(text) == []


def test_local_and_editable_packages_become_local_packages(in_tmp: Path) -> None:
    """`-e ./sd-scripts`, `-e .[train]`, a folder and `name @ file://` are the project's own
    code: kept as [dependencies] tables with a path, named as their folder declares."""
    text, s = convert(
        {
            "requirements.txt": (
                "-e ./sd-scripts\n-e .[train]\n./vendor/apex\n"
                f"other @ {(in_tmp / 'vendor/other').as_uri()}\neinops==0.7.0\n"
            ),
            "sd-scripts/setup.py": 'from setuptools import setup\nsetup(name="library")\n',
            "pyproject.toml": '[project]\nname = "trainer"\nversion = "0"\n',
            "vendor/apex/setup.cfg": "[metadata]\nname = apex-lite\n",
        },
        "requirements.txt",
    )
    assert [(p.name, p.path, p.editable, p.extras) for p in s.local_packages] == [
        ("library", "sd-scripts", True, ()),
        ("trainer", ".", True, ("train",)),
        ("apex-lite", "vendor/apex", False, ()),
        ("other", "vendor/other", False, ()),
    ]
    assert deps(s) == {"einops": "einops==0.7.0"}
    assert 'library = {path = "sd-scripts", editable = true}\n' in text
    assert not_converted(text) == []


def test_requirements_includes_and_constraints_are_read_relative_to_their_file() -> None:
    text, s = convert(
        {
            "reqs/main.txt": "-r base/base.txt\n--constraint=constraints.txt\nnumpy>=1.20\n",
            "reqs/base/base.txt": "torch==2.13.0\n",
            "reqs/constraints.txt": "numpy==1.24.0\nscipy==1.11.0\n",
        },
        "reqs/main.txt",
    )
    assert deps(s) == {"torch": "torch==2.13.0", "numpy": "numpy==1.24.0,>=1.20"}
    assert not_converted(text) == [
        "reqs/constraints.txt line 2: constraint scipy==1.11.0 (no requirement names this package)"
    ]


def test_requirements_index_options_become_index_entries_without_credentials() -> None:
    text, s = convert(
        {
            "requirements.txt": (
                "--index-url https://user:s3cret@pypi.example.com/simple\n"
                "--extra-index-url=https://download.pytorch.org/whl/cu121\n"
                "-f /opt/wheels\n"
                "--find-links ./wheels\n"
                "--pre\n"
                "torch==2.5.1\n"
            )
        },
        "requirements.txt",
    )
    assert s.cuda == spec.Cuda(version="12.1")
    assert indexes(s) == [
        ("https://pypi.example.com/simple", "index", ()),
        ("https://download.pytorch.org/whl/cu121", "index", ("cuda",)),
        ("/opt/wheels", "find-links", ()),
        CPU_INDEX,
    ]
    assert "s3cret" not in text and "user" not in text
    assert (
        "# requirements.txt line 1: credentials removed from https://pypi.example.com/simple;"
        in (text)
    )
    assert not_converted(text) == [
        "requirements.txt line 4: --find-links ./wheels ([[index]] needs an http(s):// or "
        "file:// URL or an absolute path)",
        "requirements.txt line 5: --pre (a pip option with no spec equivalent)",
    ]


def test_credentials_never_reach_a_not_converted_comment() -> None:
    text, _ = convert(
        {
            "requirements.txt": "--extra-index-url https://${USER}:${TOKEN}@host.example/${PATH}\nsix\n"
        },
        "requirements.txt",
    )
    assert "TOKEN" not in text
    assert not_converted(text) == [
        "requirements.txt line 1: --extra-index-url https://host.example/${PATH} ([[index]] needs "
        "an http(s):// or file:// URL or an absolute path)"
    ]


@pytest.mark.parametrize(
    ("lines", "dependencies", "skipped"),
    [
        pytest.param(
            "numpy==1.24\nnumpy==1.26 ; python_version >= '3.12'\nnumpy==1.24\n",
            {"numpy": "numpy==1.24"},
            [
                'requirements.txt line 2: numpy==1.26; python_version >= "3.12" (a second entry '
                "for numpy; the spec holds one per package, kept numpy==1.24)"
            ],
            id="duplicates",
        ),
        pytest.param("torch==2.1.0+cpu\n", {"torch": "torch==2.1.0"}, [], id="cpu-local-version"),
        pytest.param(
            "# python_version: 2.7\nsix\n",
            {"six": "six"},
            ["requirements.txt line 1: python 2.7 (not a Python 3 version such as 3.11 or 3.11.9)"],
            id="python-2",
        ),
        pytest.param(
            "# platform: darwin\nsix\n",
            {"six": "six"},
            ["requirements.txt line 1: # platform: darwin (envparity environments run on Linux)"],
            id="platform",
        ),
        pytest.param(
            "six --config-settings=x=1 --hash=sha256:00\n",
            {"six": "six"},
            [
                "requirements.txt line 1: --config-settings=x=1 (per-requirement pip options "
                "have no spec equivalent)"
            ],
            id="per-requirement-option",
        ),
        pytest.param(
            "--trusted-host \x1bevil\nsix\n",
            {"six": "six"},
            [
                "requirements.txt line 1: --trusted-host '\\x1bevil' (a pip option with no spec "
                "equivalent)"
            ],
            id="control-character",
        ),
    ],
)
def test_requirements_cases(lines: str, dependencies: dict[str, str], skipped: list[str]) -> None:
    text, s = convert({"requirements.txt": lines}, "requirements.txt")
    assert deps(s) == dependencies
    assert not_converted(text) == skipped


@pytest.mark.parametrize(
    ("files", "message"),
    [
        pytest.param(
            {"requirements.txt": "-e git+https://github.com/org/fork.git#egg=fork\n"},
            "requirements.txt: line 1: '-e git+https://github.com/org/fork.git#egg=fork': cannot "
            "be locked with hashes; the spec lists released packages by name and version "
            "(publish it to an index, or put its wheel in a find-links [[index]] folder and "
            "require it by name)",
            id="editable",
        ),
        pytest.param(
            {"requirements.txt": "mypkg @ https://example.com/mypkg-1.0-py3-none-any.whl\n"},
            "requirements.txt: line 1: 'mypkg @ https://example.com/mypkg-1.0-py3-none-any.whl': cannot be locked with hashes; the spec lists released packages by name and version "
            "(publish it to an index, or put its wheel in a find-links [[index]] folder and "
            "require it by name)",
            id="direct-url",
        ),
        pytest.param(
            {"requirements.txt": "./vendor/pkg-1.0-py3-none-any.whl\n"},
            "requirements.txt: line 1: './vendor/pkg-1.0-py3-none-any.whl': cannot be locked with hashes; the spec lists released packages by name and version "
            "(publish it to an index, or put its wheel in a find-links [[index]] folder and "
            "require it by name)",
            id="path",
        ),
        pytest.param(
            {"requirements.txt": "-r missing.txt\n"},
            "requirements.txt: line 1: missing.txt: no such file (missing.txt)",
            id="missing-include",
        ),
        pytest.param(
            {"requirements.txt": "-r sub/a.txt\n", "sub/a.txt": "-r ../requirements.txt\n"},
            "sub/a.txt: line 1: ../requirements.txt includes itself (through "
            "sub/../requirements.txt)",
            id="include-loop",
        ),
        pytest.param(
            {"requirements.txt": "six\n--requirement\n"},
            "requirements.txt: line 2: --requirement needs a value",
            id="option-without-value",
        ),
        pytest.param(
            {"requirements.txt": "torch==2.1.0+cu118\ntorchvision==0.16.0+cu121\n"},
            "requirements.txt: line 2: CUDA 12.1 conflicts with CUDA 11.8 from the +cu118 of "
            "torch (requirements.txt line 1)",
            id="cuda-conflict",
        ),
        pytest.param(
            {"requirements.txt": '--index-url "https://a.example\n'},
            "requirements.txt: line 1: cannot parse '--index-url \"https://a.example': "
            "No closing quotation",
            id="unbalanced-quote",
        ),
        pytest.param(
            {"requirements.txt": "-e ../elsewhere\n-c nope.txt\n"},
            "requirements.txt: line 1: '-e ../elsewhere': a local package outside the folder of "
            "the spec (../elsewhere); the devcontainer and CI see only the repository: move it "
            "inside, or publish it\nrequirements.txt: line 2: nope.txt: no such file (nope.txt)",
            id="all-problems-together",
        ),
    ],
)
def test_bad_requirements_are_refused(files: dict[str, str], message: str) -> None:
    assert problems(files, "requirements.txt") == message


@pytest.mark.parametrize(
    ("files", "dependencies", "index_urls"),
    [
        pytest.param(
            {"requirements.txt": "-rbase.txt\n", "base.txt": "six\n"},
            {"six": "six"},
            [],
            id="attached-short-option",
        ),
        pytest.param(
            {"requirements.txt": "-i https://a.example/simple -f file:///srv/wheels\nsix\n"},
            {"six": "six"},
            ["https://a.example/simple", "file:///srv/wheels"],
            id="two-options-on-one-line",
        ),
        pytest.param(
            {"requirements.txt": "six\nsix\n-r again.txt\n", "again.txt": "six\n"},
            {"six": "six"},
            [],
            id="identical-entries-merge",
        ),
    ],
)
def test_requirements_option_forms(
    files: dict[str, str], dependencies: dict[str, str], index_urls: list[str]
) -> None:
    text, s = convert(files, "requirements.txt")
    assert deps(s) == dependencies
    assert [i.url for i in s.indexes] == index_urls
    assert not_converted(text) == []


def test_an_invalid_requirement_names_its_line() -> None:
    message = problems({"requirements.txt": "six\nnumpy>=\n"}, "requirements.txt")
    # the rest of the message is packaging's own, and its wording changes between releases
    assert message.startswith("requirements.txt: line 2: invalid requirement 'numpy>=': ")
    assert "\n" not in message


def test_a_file_that_is_not_utf8_is_refused() -> None:
    Path("requirements.txt").write_bytes(b"six\n\xff\n")
    with pytest.raises(SpecError) as info:
        init.spec_text(Path("requirements.txt"), name=None)
    assert str(info.value) == "requirements.txt: not UTF-8 text: invalid start byte at byte 4"


# --------------------------------------------------------------------------- conda

ARTICLE_CONDA = """\
name: ml-project
channels:
  - pytorch
  - conda-forge
  - defaults
dependencies:
  - python=3.10
  - pytorch=2.1.0
  - torchvision=0.16.0
  - cudatoolkit=11.8
  - numpy=1.24.0
  - pandas=2.1.0
  - scikit-learn=1.3.2
  - pip:
      - transformers==4.35.0
"""


def test_conda_from_the_article() -> None:
    text, s = convert({"environment.yml": ARTICLE_CONDA}, "environment.yml")
    assert s.environment.name == "ml-project"
    assert s.environment.python == "3.10"
    assert s.cuda == spec.Cuda(version="11.8")
    assert deps(s) == {
        "torch": "torch==2.1.0",
        "torchvision": "torchvision==0.16.0",
        "numpy": "numpy==1.24.0",
        "pandas": "pandas==2.1.0",
        "scikit-learn": "scikit-learn==1.3.2",
        "transformers": "transformers==4.35.0",
    }
    assert indexes(s) == [("https://download.pytorch.org/whl/cu118", "index", ("cuda",)), CPU_INDEX]
    assert (
        "# conda channels pytorch, conda-forge, defaults are not used: packages come from PyPI "
        "and the [[index]] entries"
    ) in text
    assert not_converted(text) == []


def test_conda_specs_map_to_the_spec() -> None:
    text, s = convert(
        {
            "env/environment.yaml": (
                "name: my env\n"
                "prefix: /opt/conda/envs/x\n"
                "variables:\n"
                "  DATA_PATH: ./data\n"
                "  QUOTED: 'a\"b\\c ${HOME} é'\n"
                '  MULTI: "one\\ntwo"\n'
                "dependencies:\n"
                "  - python>=3.9,<3.12\n"
                "  - pytorch::pytorch=2.1.0=py3.10_cuda11.8_cudnn8.7.0_0\n"
                "  - pytorch-cuda=11.8\n"
                "  - cudnn=8.9.2.26\n"
                "  - numpy=1.24\n"
                "  - conda-forge::scipy >=1.10,<2\n"
                "  - pandas 2.1.0 py310_0\n"
                "  - mkl\n"
                "  - git\n"
                "  - matplotlib-base\n"
                "  - foo 1.0|1.1\n"
                "  - pip:\n"
                "      - -r requirements.txt\n"
                "      - --extra-index-url https://example.com/simple\n"
            ),
            "env/requirements.txt": "rich>=13\n",
        },
        "env/environment.yaml",
    )
    assert s.environment.name == "my-env"
    assert s.environment.python == THIS_PYTHON  # inside >=3.9,<3.12, and torch 2.1 has wheels
    assert s.cuda == spec.Cuda(version="11.8", cudnn="8.9.2.26")
    assert deps(s) == {
        "torch": "torch==2.1.0",
        "numpy": "numpy==1.24.*",
        "scipy": "scipy<2,>=1.10",
        "pandas": "pandas==2.1.0",
        "matplotlib": "matplotlib",
        "foo": "foo==1.0",
        "rich": "rich>=13",
    }
    assert s.system.packages == ("git",)
    assert [(v.name, v.default) for v in s.variables] == [
        ("DATA_PATH", "./data"),
        ("QUOTED", 'a"b\\c ${HOME} é'),
    ]
    assert indexes(s)[0] == ("https://example.com/simple", "index", ())
    assert "# conda channels pytorch, conda-forge are not used" in text
    assert "# name: 'my env' from env/environment.yaml is not a valid name; using 'my-env'" in text
    assert not_converted(text) == [
        "env/environment.yaml prefix: '/opt/conda/envs/x' (no spec equivalent)",
        "env/environment.yaml variables: MULTI (a default must be one line of printable text)",
        "env/environment.yaml dependencies[10]: foo 1.0|1.1 (conda's '|' (either) has no PEP "
        "440 equivalent; kept the first alternative, ==1.0)",
        "env/environment.yaml dependencies: build strings pytorch py3.10_cuda11.8_cudnn8.7.0_0, "
        "pandas py310_0 (conda builds have no spec equivalent; the versions are kept)",
        "env/environment.yaml dependencies: mkl (conda-only packages: native libraries and "
        "installer tools that uv and the PyPI wheels provide)",
    ]


GPU_NOTE = (
    "# from pytorch-gpu (environment.yml dependencies[{i}]), conda-forge's CUDA build of torch; "
    "no CUDA version given, so the newest CUDA torch {minor} has a build for"
)


class TestCondaForgeTorchMetapackages:
    """conda-forge's pytorch-gpu pins a CUDA build of pytorch; pytorch-cpu a CPU one."""

    @pytest.mark.parametrize(
        ("packages", "channels", "torch", "cuda", "comment"),
        [
            pytest.param(
                ["pytorch-gpu=2.5.1"], "[conda-forge]", "torch==2.5.1", "12.4",
                GPU_NOTE.format(i=0, minor="2.5"), id="alone",
            ),
            pytest.param(
                ["pytorch=2.5.1", "pytorch-gpu=2.5.1"], "[conda-forge, nvidia]", "torch==2.5.1",
                "12.4", GPU_NOTE.format(i=1, minor="2.5"), id="beside-pytorch-nvidia",
            ),
            pytest.param(
                ["pytorch-gpu", "pytorch=2.4.1"], "[conda-forge]", "torch==2.4.1", "12.4",
                GPU_NOTE.format(i=0, minor="2.4"), id="unpinned-beside-pinned-pytorch",
            ),
            pytest.param(
                ["pytorch-gpu=2.5.1", "pytorch-cuda=12.1"], "[pytorch, nvidia]", "torch==2.5.1",
                "12.1",
                "# environment.yml dependencies[0]: pytorch-gpu (conda-forge's CUDA build of "
                "torch): torch, with the [cuda] below",
                id="with-pytorch-cuda",
            ),
            pytest.param(
                ["pytorch-gpu=2.5.1=cuda118_py311h1234567_0"], "[conda-forge]", "torch==2.5.1",
                "11.8",
                "# from the build cuda118_py311h1234567_0 of pytorch-gpu (environment.yml "
                "dependencies[0])",
                id="cuda-build-string",
            ),
        ],
    )  # fmt: skip
    def test_pytorch_gpu_keeps_cuda_intent(
        self, packages: list[str], channels: str, torch: str, cuda: str, comment: str
    ) -> None:
        yml = f"channels: {channels}\ndependencies:\n" + "".join(f"  - {p}\n" for p in packages)
        text, s = convert({"environment.yml": yml}, "environment.yml")
        assert s.cuda is not None and s.cuda.version == cuda
        assert deps(s) == {"torch": torch}
        assert comment in text.splitlines()
        assert indexes(s) == [
            (f"https://download.pytorch.org/whl/cu{cuda.replace('.', '')}", "index", ("cuda",)),
            CPU_INDEX,
        ]

    def test_pytorch_cpu_is_cpu_only(self) -> None:
        text, s = convert(
            {"environment.yml": "dependencies:\n  - pytorch-cpu=2.5.1\n"}, "environment.yml"
        )
        assert s.cuda is None
        assert deps(s) == {"torch": "torch==2.5.1"}
        assert (
            "# environment.yml dependencies[0]: pytorch-cpu (conda-forge's CPU build of torch): "
            "a CPU-only environment has no [cuda] table"
        ) in text.splitlines()
        assert indexes(s) == [CPU_INDEX]


def test_no_conda_package_disappears_without_a_trace() -> None:
    packages = [
        "python", "pytorch=2.5.1", "pytorch-gpu=2.5.1", "cuda-version=12.4",
        "nvidia::cuda-nvcc=12.4", "opencv", "py-opencv", "_openmp_mutex", "pip", "cmake=3.27",
        "cudnn", "libjpeg-turbo=3.0.0=hd590300_1", "pytorch-cuda", "matplotlib-base",
        "some-unknown-package",
    ]  # fmt: skip
    yml = "dependencies:\n" + "".join(f"  - {p}\n" for p in packages)
    text, s = convert({"environment.yml": yml}, "environment.yml")
    assert s.cuda == spec.Cuda(version="12.4")
    comments = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    values = {d.name for d in s.dependencies} | set(s.system.packages)
    for package in packages:
        name = package.split("::")[-1].split("=")[0]
        pypi = {"pytorch": "torch", "matplotlib-base": "matplotlib"}.get(name, name)
        assert name in comments or pypi in values, f"{package} left no trace"
    assert [line for line in text.splitlines() if "dependencies[" in line] == [
        "# environment.yml dependencies[0]: python pins no version",
        "# environment.yml dependencies[2]: pytorch-gpu is torch on PyPI, as pytorch is",
        "# environment.yml dependencies[4]: nvidia::cuda-nvcc=12.4 is CUDA 12.4, as [cuda] says",
        "# environment.yml dependencies[6]: py-opencv is opencv-python on PyPI, as opencv is",
        "# environment.yml dependencies[2]: pytorch-gpu (conda-forge's CUDA build of torch): "
        "torch, with the [cuda] below",
        "# from 'cuda-version=12.4' (environment.yml dependencies[3])",
        "# not converted: environment.yml dependencies[9]: cmake=3.27 ([system] packages come "
        "from each target's package set; the version is not kept)",
        "# not converted: environment.yml dependencies[10]: cudnn (cudnn needs one pinned "
        "version such as cudnn=8.9)",
        "# not converted: environment.yml dependencies[12]: pytorch-cuda (pytorch-cuda needs one "
        "pinned version such as pytorch-cuda=11.8)",
    ]
    assert deps(s) == {
        "torch": "torch==2.5.1",
        "opencv-python": "opencv-python",
        "matplotlib": "matplotlib",
        "some-unknown-package": "some-unknown-package",
    }


@pytest.mark.parametrize(
    ("yml", "message"),
    [
        pytest.param(
            "dependencies:\n  - numpy\n - bad indent\n",
            "environment.yml: line 3: YAML syntax error: expected <block end>, but found "
            "'<block sequence start>'",
            id="yaml-syntax",
        ),
        pytest.param(
            "- numpy\n",
            "environment.yml: dependencies: expected a conda environment: a mapping with a "
            "'dependencies' list",
            id="not-a-mapping",
        ),
        pytest.param(
            "dependencies:\n  - 42\n",
            "environment.yml: dependencies[0]: expected a conda package spec or a 'pip:' list, "
            "got 42",
            id="bad-item",
        ),
        pytest.param(
            "dependencies:\n  - python=3.10\n  - pip:\n      - -e git+https://x.org/a.git#egg=a\n",
            "environment.yml: dependencies[1].pip[0]: '-e git+https://x.org/a.git#egg=a': cannot "
            "be locked with hashes; the spec lists released packages by name and version "
            "(publish it to an index, or put its wheel in a find-links [[index]] folder and "
            "require it by name)",
            id="editable-in-pip",
        ),
        pytest.param(
            "dependencies:\n  - cudatoolkit=11.8\n  - pytorch-cuda=12.1\n",
            "environment.yml: dependencies[1]: CUDA 12.1 conflicts with CUDA 11.8 from "
            "'cudatoolkit=11.8' (environment.yml dependencies[0])",
            id="cuda-conflict",
        ),
    ],
)
def test_bad_conda_files_are_refused(yml: str, message: str) -> None:
    assert problems({"environment.yml": yml}, "environment.yml") == message


# --------------------------------------------------------------------------- pyproject

ARTICLE_POETRY = """\
[tool.poetry]
name = "ml-project"
version = "0.1.0"

[tool.poetry.dependencies]
python = "^3.10"
torch = {version = "^2.1.0", source = "pytorch"}
transformers = "^4.35.0"
numpy = "^1.24.0"
scikit-learn = "^1.3.0"

[tool.poetry.group.dev.dependencies]
pytest = "^7.4.0"
jupyter = "^1.0.0"

[[tool.poetry.source]]
name = "pytorch"
url = "https://download.pytorch.org/whl/cu118"
priority = "supplemental"
"""


def test_poetry_from_the_article() -> None:
    text, s = convert({"pyproject.toml": ARTICLE_POETRY}, "pyproject.toml")
    assert s.environment.name == "ml-project"
    assert s.environment.python == THIS_PYTHON  # ^3.10 allows it
    assert s.cuda == spec.Cuda(version="11.8")
    assert deps(s) == {
        "torch": "torch<3.0.0,>=2.1.0",
        "transformers": "transformers<5.0.0,>=4.35.0",
        "numpy": "numpy<2.0.0,>=1.24.0",
        "scikit-learn": "scikit-learn<2.0.0,>=1.3.0",
    }
    assert 'torch = ">=2.1.0,<3.0.0"' in text  # written lower bound first
    assert indexes(s) == [("https://download.pytorch.org/whl/cu118", "index", ("cuda",)), CPU_INDEX]
    assert (
        "# from poetry source 'pytorch', priority supplemental, named by torch; here it serves "
        "every package (pyproject.toml tool.poetry.source[0])"
    ) in text
    assert not_converted(text) == [
        "pyproject.toml tool.poetry.group.dev.dependencies: pytest ^7.4.0, jupyter ^1.0.0 (a "
        "development group, left out of the environment under test; add what it needs to "
        "[dependencies])"
    ]


@pytest.mark.parametrize(
    ("constraint", "pep440"),
    [
        ("^1.2.3", ">=1.2.3,<2.0.0"),
        ("^1.2", ">=1.2,<2.0"),
        ("^1", ">=1,<2"),
        ("^0.2.3", ">=0.2.3,<0.3.0"),
        ("^0.0.3", ">=0.0.3,<0.0.4"),
        ("^0.0", ">=0.0,<0.1"),
        ("^0", ">=0,<1"),
        ("^1.0.0rc1", ">=1.0.0rc1,<2.0.0"),
        ("~1.2.3", ">=1.2.3,<1.3.0"),
        ("~1.2", ">=1.2,<1.3"),
        ("~1", ">=1,<2"),
        ("~=1.2", "~=1.2"),
        ("1.2.3", "==1.2.3"),
        ("=1.2.3", "==1.2.3"),
        ("1.2.*", "==1.2.*"),
        ("*", ""),
        ("", ""),
        (">=1.2,<2.0", ">=1.2,<2.0"),
        (">= 1.2 < 2.0", ">=1.2,<2.0"),
        ("!=1.5", "!=1.5"),
    ],
)
def test_poetry_constraints_become_pep440(constraint: str, pep440: str) -> None:
    assert init.poetry_constraint(constraint) == pep440


@pytest.mark.parametrize(
    ("constraint", "message"),
    [
        ("^1.0 || ^2.0", "'^1.0 || ^2.0': '||' (either constraint) has no PEP 440 equivalent"),
        ("^abc", "'^abc': 'abc' is not a version"),
        ("1.0 foo bar", "'1.0 foo bar' is not a version constraint"),
        (">=1.0;", "'>=1.0;' is not a version constraint"),
    ],
)
def test_poetry_constraints_without_an_equivalent(constraint: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        init.poetry_constraint(constraint)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("files", "running", "chosen", "why"),
    [
        pytest.param(
            {"pyproject.toml": '[tool.poetry.dependencies]\npython = "^3.10"\nsix = "*"\n'},
            "3.11",
            "3.11",
            "this interpreter's, which python '^3.10' (pyproject.toml "
            "tool.poetry.dependencies.python) allows",
            id="poetry-caret",
        ),
        pytest.param(
            {
                "pyproject.toml": '[project]\nrequires-python = ">=3.8"\ndependencies = ["torch==2.7.0"]\n'
            },
            "3.11",
            "3.11",
            "this interpreter's, which requires-python '>=3.8' (pyproject.toml "
            "project.requires-python) allows; torch ==2.7.0 has wheels for 3.9 to 3.13",
            id="open-range",
        ),
        pytest.param(
            {
                "pyproject.toml": '[project]\nrequires-python = ">=3.10,<3.13"\ndependencies = ["torch==2.7.0"]\n'
            },
            "3.9",
            "3.12",
            "the newest minor that requires-python '>=3.10,<3.13' (pyproject.toml "
            "project.requires-python) allows and torch ==2.7.0 has wheels for 3.9 to 3.13 "
            "(this interpreter is 3.9)",
            id="interpreter-outside-the-range",
        ),
        pytest.param(
            {
                "pyproject.toml": '[project]\nrequires-python = ">=3.12"\ndependencies = ["torch>=2.2,<2.5"]\n'
            },
            "3.11",
            "3.12",
            "the newest minor that requires-python '>=3.12' (pyproject.toml "
            "project.requires-python) allows and torch >=2.2,<2.5 (2.2.0 to 2.4.1) has wheels "
            "for 3.8 to 3.12 (this interpreter is 3.11)",
            id="torch-caps-the-range",
        ),
        pytest.param(
            {
                "pyproject.toml": '[project]\nrequires-python = ">=3.13"\ndependencies = ["torch==2.4.1"]\n'
            },
            "3.11",
            "3.13",
            "the minor nearest to torch's that requires-python '>=3.13' (pyproject.toml "
            "project.requires-python) allows, though torch ==2.4.1 has wheels for 3.8 to 3.12 only",
            id="no-torch-wheels-in-the-range",
        ),
        pytest.param(
            {"requirements.txt": "torch==2.0.1\n"},
            "3.12",
            "3.11",
            "the newest minor that envparity knows allows and torch ==2.0.1 has wheels for 3.8 "
            "to 3.11 (this interpreter is 3.12)",
            id="no-python-in-the-source",
        ),
        pytest.param(
            {"pyproject.toml": '[tool.poetry.dependencies]\npython = "<3.12"\nsix = "*"\n'},
            "3.11",
            "3.11",
            "this interpreter's, which python '<3.12' (pyproject.toml "
            "tool.poetry.dependencies.python) allows",
            id="no-lower-bound",
        ),
    ],
)
def test_python_is_this_interpreter_or_the_newest_that_torch_has_wheels_for(
    files: dict[str, str], running: str, chosen: str, why: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("orchestrator.init.python.running", lambda: running)
    source = next(iter(files))
    text, s = convert(files, source)
    assert s.environment.python == chosen
    assert f"# python {chosen}: {why}\n" in text
    assert not_converted(text) == []


@pytest.mark.parametrize(
    ("python", "chosen"),
    [("~3.11", "3.11"), ("3.11.*", "3.11"), ("3.10.12", "3.10.12"), ("~2.7 || ^3.7", "3.11")],
)
def test_poetry_python_pins_are_kept(
    python: str, chosen: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("orchestrator.init.python.running", lambda: "3.11")
    _, s = convert(
        {"pyproject.toml": f'[tool.poetry.dependencies]\npython = "{python}"\nsix = "*"\n'},
        "pyproject.toml",
    )
    assert s.environment.python == chosen


def test_poetry_dependency_tables() -> None:
    text, s = convert(
        {
            "pyproject.toml": """\
[tool.poetry]
name = "demo"
package-mode = false

[tool.poetry.dependencies]
requests = {version = "~2.31", extras = ["socks"], python = "^3.10", platform = "linux"}
tqdm = {version = "*", markers = "sys_platform == 'linux' or sys_platform == 'darwin'"}
old = {version = "1.0", python = "~2.7 || ^3.6"}
opt = {version = "1.0", optional = true}
pre = {version = "1.0", allow-prereleases = true}
either = "^1.0 || ^2.0"
multi = [{version = "1.0", python = "<3.10"}, {version = "2.0", python = ">=3.10"}]

[tool.poetry.dev-dependencies]
black = "^23"

[tool.poetry.extras]
x = ["opt"]
"""
        },
        "pyproject.toml",
    )
    assert deps(s) == {
        "requests": 'requests[socks]<2.32,>=2.31; python_full_version >= "3.10" and '
        'python_full_version < "4.0" and sys_platform == "linux"',
        "tqdm": 'tqdm; sys_platform == "linux" or sys_platform == "darwin"',
        "old": 'old==1.0; (python_full_version >= "2.7" and python_full_version < "2.8") or '
        '(python_full_version >= "3.6" and python_full_version < "4.0")',
        "pre": "pre==1.0",
    }
    where = "pyproject.toml tool.poetry"
    assert not_converted(text) == [
        f"{where}.dependencies.opt: opt 1.0 (optional: installed only with an extra of the "
        "project)",
        f"{where}.dependencies.pre: allow-prereleases = True (no spec equivalent)",
        f"{where}.dependencies.either: either ^1.0 || ^2.0 ('||' (either constraint) has no PEP "
        "440 equivalent; choose one)",
        f"{where}.dependencies.multi: multi = [{{'version': '1.0', 'python': '<3.10'}}, "
        "{'version': '2.0', 'python': '>=3.10'}] (multiple-constraint dependencies have no spec "
        "equivalent; choose one)",
        f"{where}.dev-dependencies: black ^23 (a development group, left out of the environment "
        "under test; add what it needs to [dependencies])",
        f"{where}.extras: {{'x': ['opt']}} (not an environment setting)",
    ]


def test_pep621_project() -> None:
    text, s = convert(
        {
            "pyproject.toml": """\
[project]
name = "demo"
requires-python = ">=3.11"
dependencies = ["numpy>=2", "torch==2.13.0+cpu ; sys_platform == 'linux'"]
[project.optional-dependencies]
docs = ["sphinx"]
[dependency-groups]
test = ["pytest>=8"]
"""
        },
        "pyproject.toml",
    )
    assert s.environment.python == "3.11"
    assert deps(s) == {"numpy": "numpy>=2", "torch": 'torch==2.13.0; sys_platform == "linux"'}
    assert not_converted(text) == [
        "pyproject.toml project.optional-dependencies.docs: sphinx (an optional extra of the "
        "project; add what the environment needs to [dependencies])",
        "pyproject.toml dependency-groups.test: pytest>=8 (a development group, left out of the "
        "environment under test; add what it needs to [dependencies])",
    ]


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        pytest.param(
            "[tool.black]\nline-length = 100\n",
            "pyproject.toml: no [tool.poetry.dependencies], [project] dependencies or [tool.pixi] to "
            "convert",
            id="no-dependencies",
        ),
        pytest.param(
            "[tool.poetry.dependencies\n",
            "pyproject.toml: TOML syntax error: Expected ']' at the end of a table declaration "
            "(at line 1, column 26)",
            id="toml-syntax",
        ),
        pytest.param(
            '[tool.poetry.dependencies]\nmine = {path = "../mine", develop = true}\n',
            "pyproject.toml: tool.poetry.dependencies.mine: \"mine = { path = '../mine' }\": a "
            "local package outside the folder of the spec (../mine); the devcontainer and CI "
            "see only the repository: move it inside, or publish it",
            id="path-dependency",
        ),
        pytest.param(
            '[tool.poetry.dependencies]\ntorch = {version = "^2", source = "nope"}\n',
            "pyproject.toml: tool.poetry.dependencies.torch.source: no [[tool.poetry.source]] is "
            "named 'nope'",
            id="unknown-source",
        ),
        pytest.param(
            '[tool.poetry.dependencies]\npython = ">=4"\n',
            "pyproject.toml: tool.poetry.dependencies.python: python '>=4' allows no Python 3 "
            "version",
            id="python-4",
        ),
        pytest.param(
            '[tool.poetry.dependencies]\nnumpy = "^x.y"\n',
            "pyproject.toml: tool.poetry.dependencies.numpy: '^x.y': 'x.y' is not a version",
            id="bad-constraint",
        ),
        pytest.param(
            "[tool.poetry.dependencies]\nnumpy = 3\n",
            "pyproject.toml: tool.poetry.dependencies.numpy: expected a version string or a "
            "table, got 3",
            id="bad-type",
        ),
    ],
)
def test_bad_pyprojects_are_refused(toml: str, message: str) -> None:
    assert problems({"pyproject.toml": toml}, "pyproject.toml") == message


# --------------------------------------------------------------------------- choosing a format


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("missing.txt", "--from missing.txt: no such file"),
        (
            "setup.cfg",
            "--from setup.cfg: cannot tell the format from the name; expected a requirements "
            "file or a conda spec list (*.txt, *.in), a conda environment (*.yml, *.yaml), a pyproject.toml, a pixi.toml "
            "or a uv.lock",
        ),
        ("environment.toml", "--from environment.toml: this is already an envparity spec"),
        ("folder.txt", "--from folder.txt: not a file"),
    ],
)
def test_unusable_sources_are_refused(name: str, message: str) -> None:
    if name != "missing.txt":
        Path("setup.cfg").write_text("[metadata]\n")
        Path("environment.toml").write_text("")
        Path("folder.txt").mkdir()
    with pytest.raises(UsageError) as info:
        init.spec_text(Path(name), name=None)
    assert str(info.value) == message


# --------------------------------------------------------------------------- TOML text


@pytest.mark.parametrize(
    ("value", "rendered"),
    [
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("unicode é ☃ 𝄞", '"unicode é ☃ 𝄞"'),
        ("${HOME} $(id) `id`", '"${HOME} $(id) `id`"'),
        ("new\nline\r\n", '"new\\nline\\r\\n"'),
        ("\x7f\x00\x1b\t", '"\\u007F\\u0000\\u001B\\t"'),
        ("rtl\u202eoverride\u2028", '"rtl\\u202Eoverride\\u2028"'),
        ("tag\U000e0041", '"tag\\U000E0041"'),
    ],
)
def test_toml_strings_escape_what_is_not_printable(value: str, rendered: str) -> None:
    assert init.toml_string(value).as_string() == rendered
    assert tomllib.loads(f"k = {rendered}") == {"k": value}


@given(st.text(alphabet=st.characters(codec="utf-8")))
def test_any_text_round_trips_as_a_toml_string(value: str) -> None:
    assert tomllib.loads(f"k = {init.toml_string(value).as_string()}") == {"k": value}


@given(st.text())
def test_any_text_is_one_comment_line(value: str) -> None:
    comment = tomlkit.comment(init.comment_text(value)).as_string()
    assert len(comment.splitlines()) == 1
    assert tomllib.loads(comment + "\nk = 1\n") == {"k": 1}


def test_a_lone_surrogate_cannot_be_a_toml_string() -> None:
    with pytest.raises(ValueError, match="lone surrogate"):
        init.toml_string("a\ud800")


def test_dotted_package_names_are_quoted_keys() -> None:
    text, s = convert({"requirements.txt": "zope.interface==5.0\n"}, "requirements.txt")
    assert '"zope.interface" = "==5.0"' in text
    assert deps(s) == {"zope.interface": "zope.interface==5.0"}


# --------------------------------------------------------------------------- writing


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_write_creates_the_file_with_ordinary_permissions(in_tmp: Path, umask_022: None) -> None:
    path = in_tmp / "environment.toml"
    init.write_spec(path, "x = 1\n", force=False)
    assert path.read_text() == "x = 1\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in in_tmp.iterdir()) == ["environment.toml"]


def test_write_never_replaces_a_spec_without_force(in_tmp: Path) -> None:
    path = in_tmp / "environment.toml"
    path.write_text("mine\n")
    with pytest.raises(UsageError) as info:
        init.write_spec(path, "new\n", force=False)
    assert str(info.value) == f"{path} already exists; use --force to overwrite it"
    assert path.read_text() == "mine\n"


def test_write_with_force_replaces_and_keeps_the_mode(in_tmp: Path) -> None:
    path = in_tmp / "environment.toml"
    path.write_text("mine\n")
    path.chmod(0o600)
    init.write_spec(path, "new\n", force=True)
    assert path.read_text() == "new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in in_tmp.iterdir()) == ["environment.toml"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(src: str, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    path = in_tmp / "environment.toml"
    path.write_text("mine\n")
    with pytest.raises(UsageError) as info:
        init.write_spec(path, "new\n", force=True)
    assert str(info.value) == f"{path}: cannot write: No space left on device"
    assert path.read_text() == "mine\n"
    assert sorted(p.name for p in in_tmp.iterdir()) == ["environment.toml"]


def test_write_into_a_missing_folder(in_tmp: Path) -> None:
    with pytest.raises(UsageError) as info:
        init.write_spec(in_tmp / "nope" / "environment.toml", "x\n", force=False)
    assert str(info.value) == f"{in_tmp}/nope/environment.toml: folder {in_tmp}/nope does not exist"


# --------------------------------------------------------------------------- the CLI


def test_cli_init_writes_once_then_needs_force(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["init", "--name", "demo"]) == 0
    assert capsys.readouterr().out == "wrote environment.toml\n"
    assert spec.load("environment.toml").environment.name == "demo"

    assert cli.main(["init", "--name", "other"]) == 2
    captured = capsys.readouterr()
    assert captured.err == (
        "envparity: environment.toml already exists; use --force to overwrite it\n"
    )
    assert spec.load("environment.toml").environment.name == "demo"

    assert cli.main(["init", "--force", "--name", "other"]) == 0
    assert spec.load("environment.toml").environment.name == "other"


def test_cli_init_from_requirements(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Path("requirements.txt").write_text(ARTICLE_REQUIREMENTS)
    assert cli.main(["init", "--from", "requirements.txt", "--name", "ml"]) == 0
    assert capsys.readouterr().out == "wrote environment.toml\n"
    assert spec.load("environment.toml").cuda == spec.Cuda(version="11.8")


def test_cli_init_says_the_lock_bounds_numpy_for_a_torch_built_against_numpy_1(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 20: torch 2.2 with an unpinned numpy locked NumPy 2; init says what lock does."""
    Path("requirements.txt").write_text("torch==2.2.2\nnumpy\n")
    assert cli.main(["init", "--from", "requirements.txt", "--name", "ml"]) == 0
    assert (
        "envparity: note: environment.toml: dependencies.numpy: the locks take numpy <2 "
        "(1.26.4 is the newest): torch '==2.2.2' needs it; torch builds before 2.3 were compiled "
        "against NumPy 1.x;"
    ) in capsys.readouterr().err


@pytest.mark.parametrize(
    ("files", "argv", "stderr"),
    [
        pytest.param(
            {"requirements.txt": "-e git+https://x.org/a.git#egg=a\n"},
            ["init", "--from", "requirements.txt"],
            "envparity: requirements.txt: line 1: '-e git+https://x.org/a.git#egg=a': "
            + UNLOCKABLE
            + "\n",
            id="editable",
        ),
        pytest.param(
            {"requirements.txt": "-e git+https://x.org/a.git#egg=a\n-r nope.txt\n"},
            ["init", "--from", "requirements.txt"],
            "envparity: error\nrequirements.txt: line 1: '-e git+https://x.org/a.git#egg=a': "
            + UNLOCKABLE
            + "\nrequirements.txt: line 2: nope.txt: no such file (nope.txt)\n",
            id="two-problems",
        ),
        pytest.param(
            {},
            ["init", "--from", "missing.yml"],
            "envparity: --from missing.yml: no such file\n",
            id="missing",
        ),
        pytest.param(
            {},
            ["init", "--name", "bad name"],
            "envparity: --name: 'bad name' is not a name (letters, digits, '.', '_', '-'; "
            "starting with a letter or digit; at most 64)\n",
            id="bad-name",
        ),
    ],
)
def test_cli_init_refuses_bad_input_and_writes_nothing(
    in_tmp: Path,
    capsys: pytest.CaptureFixture[str],
    files: dict[str, str],
    argv: list[str],
    stderr: str,
) -> None:
    write(files)
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", stderr)
    assert not Path("environment.toml").exists()


def test_host_target_comment_says_what_readme_says() -> None:
    text, _ = convert({"requirements.txt": "numpy==1.26.4\n"}, "requirements.txt")
    assert "[targets.host]\n# the interpreter your code runs in\n" in text
