"""``envparity init`` keeps the intent of each kind of input, and drops nothing silently.

One class per kind: CUDA builds and their sources, Poetry constraints and sources, uv's
indexes and sources, conda match specs, conda's spec lists, requirements that cannot be
locked with hashes, and the ``flavors`` key that keeps a dependency to one flavor.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import cli, init, lock, spec
from orchestrator.errors import SpecError
from tests.helpers import UNLOCKABLE

CPU = ("https://download.pytorch.org/whl/cpu", "index", ("cpu",))
pytestmark = pytest.mark.usefixtures("in_tmp")  # every test in its own folder


def convert(name: str, text: str) -> tuple[init.Converted, spec.Spec]:
    Path(name).write_text(text, encoding="utf-8")
    converted = init.convert(Path(name), name="demo")
    return converted, spec.loads(converted.text)


def deps(s: spec.Spec) -> dict[str, tuple[str, tuple[str, ...]]]:
    return {d.name: (d.requirement(), d.flavors) for d in s.dependencies}


def indexes(s: spec.Spec) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(i.url, i.kind, i.flavors) for i in s.indexes]


def not_converted(text: str) -> list[str]:
    prefix = "# not converted: "
    return [line.removeprefix(prefix) for line in text.splitlines() if line.startswith(prefix)]


def refused(name: str, text: str) -> str:
    Path(name).write_text(text, encoding="utf-8")
    with pytest.raises(SpecError) as info:
        init.convert(Path(name), name="demo")
    return str(info.value)


class TestCudaBuilds:
    """A CUDA build's pins and sources go to the CUDA flavor and set [cuda]; the cpu flavor
    shares only the public versions, and gets its own build's sources."""

    def test_local_labels_index_and_pyg_page(self) -> None:
        _, s = convert(
            "requirements.txt",
            "--extra-index-url https://download.pytorch.org/whl/cu118\n"
            "-f https://data.pyg.org/whl/torch-2.0.1+cu118.html\n"
            "torch==2.0.1+cu118\n"
            "torch-scatter==2.1.1+pt20cu118\n",
        )
        assert s.cuda == spec.Cuda(version="11.8")
        assert deps(s) == {
            "torch": ("torch==2.0.1", ()),
            "torch-scatter": ("torch-scatter==2.1.1", ()),
        }
        assert indexes(s) == [
            ("https://download.pytorch.org/whl/cu118", "index", ("cuda",)),
            ("https://data.pyg.org/whl/torch-2.0.1+cu118.html", "find-links", ("cuda",)),
            ("https://data.pyg.org/whl/torch-2.0.1+cpu.html", "find-links", ("cpu",)),
            CPU,
        ]
        assert lock.requirements(s, "cpu") == ["torch==2.0.1", "torch-scatter==2.1.1"]
        assert [i.url for i in lock.sources(s, "cpu")] == [
            "https://data.pyg.org/whl/torch-2.0.1+cpu.html",
            "https://download.pytorch.org/whl/cpu",
        ]

    def test_cuda_runtime_wheels_stay_in_the_cuda_flavor(self) -> None:
        _, s = convert(
            "requirements.txt",
            "torch==2.2.0\nnvidia-cuda-runtime-cu12==12.1.105\nnvidia-cudnn-cu12==8.9.2.26\n",
        )
        assert s.cuda == spec.Cuda(version="12.1")
        assert lock.requirements(s, "cpu") == ["torch==2.2.0"]
        assert lock.requirements(s, "cu121") == [
            "nvidia-cuda-runtime-cu12==12.1.105",
            "nvidia-cudnn-cu12==8.9.2.26",
            "torch==2.2.0",
        ]

    def test_cuda_runtime_wheels_without_a_toolkit_are_not_converted(self) -> None:
        converted, s = convert("requirements.txt", "torch==2.2.0\nnvidia-cudnn-cu12==8.9.2.26\n")
        assert s.cuda is None
        assert deps(s) == {"torch": ("torch==2.2.0", ())}
        assert not_converted(converted.text) == [
            "requirements.txt: nvidia-cudnn-cu12==8.9.2.26 (a CUDA-only package, and nothing "
            'says which CUDA toolkit; add [cuda] and this package with flavors = ["cuda"])'
        ]

    def test_the_all_builds_page_becomes_each_flavors_index(self) -> None:
        converted, s = convert(
            "requirements.txt",
            "-f https://download.pytorch.org/whl/torch_stable.html\ntorch==2.0.1+cu117\n",
        )
        assert indexes(s) == [("https://download.pytorch.org/whl/cu117", "index", ("cuda",)), CPU]
        assert (
            "# requirements.txt line 1: https://download.pytorch.org/whl/torch_stable.html lists "
            "every build of torch; the PyTorch index of each flavor's build is used instead"
        ) in converted.text

    def test_per_requirement_index_options(self) -> None:
        _, s = convert(
            "requirements.txt",
            "torch==2.2.1+cu118 --extra-index-url https://download.pytorch.org/whl/cu118\n",
        )
        assert indexes(s) == [("https://download.pytorch.org/whl/cu118", "index", ("cuda",)), CPU]

    def test_a_cuda_project_verifies_its_cpu_flavor_on_any_machine(self) -> None:
        converted, s = convert("requirements.txt", "torch==2.1.0+cu118\n")
        assert s.flavors == ("cu118", "cpu")
        assert {t: s.flavor_of(t) for t in s.targets} == {"host": "cpu", "venv": "cpu"}
        assert 'on a GPU machine set "cu118" (or remove the line)' in converted.text


class TestPoetry:
    @pytest.mark.parametrize(
        ("constraint", "pep440"),
        [
            ("^2.2.0+cu121", ">=2.2.0,<3.0.0"),
            ("^0.17.0+cpu", ">=0.17.0,<0.18.0"),
            ("2.1.0+cu118", "==2.1.0"),
            ("~1.2", ">=1.2,<1.3"),
            ("1.*", "==1.*"),
            (">=1,<2", ">=1,<2"),
            ("^3.9,<3.12", ">=3.9,<3.12,<4.0"),
        ],
    )
    def test_constraints_as_poetry_writes_them(self, constraint: str, pep440: str) -> None:
        assert init.poetry_constraint(constraint) == pep440

    def test_a_cuda_label_sets_cuda_and_the_source_gives_the_flavor(self) -> None:
        _, s = convert(
            "pyproject.toml",
            "[tool.poetry.dependencies]\n"
            'python = "^3.11"\n'
            'torch = {version = "^2.2.0+cu121", source = "torch-cu"}\n'
            "[[tool.poetry.source]]\n"
            'name = "torch-cu"\nurl = "https://download.pytorch.org/whl/cu121"\n'
            'priority = "explicit"\n'
            "[[tool.poetry.source]]\n"
            'name = "mirror"\nurl = "https://pypi.example.com/simple"\n'
            'priority = "supplemental"\n',
        )
        assert s.cuda == spec.Cuda(version="12.1")
        assert deps(s) == {"torch": ("torch<3.0.0,>=2.2.0", ())}
        assert indexes(s) == [
            ("https://download.pytorch.org/whl/cu121", "index", ("cuda",)),
            ("https://pypi.example.com/simple", "index", ()),
            CPU,
        ]

    def test_cpu_and_cuda_alternatives_share_the_package(self) -> None:
        _, s = convert(
            "pyproject.toml",
            "[tool.poetry.dependencies]\n"
            "torch = [\n"
            '  { version = "2.3.1+cpu", source = "cpu", markers = "extra == \'cpu\'" },\n'
            '  { version = "2.3.1+cu121", source = "cu", markers = "extra == \'cuda\'" },\n'
            "]\n"
            '[[tool.poetry.source]]\nname = "cpu"\nurl = "https://download.pytorch.org/whl/cpu"\n'
            '[[tool.poetry.source]]\nname = "cu"\nurl = "https://download.pytorch.org/whl/cu121"\n',
        )
        assert deps(s) == {"torch": ("torch==2.3.1", ())}
        assert s.cuda == spec.Cuda(version="12.1")

    def test_an_optional_git_dependency_is_kept_as_a_comment(self) -> None:
        converted, s = convert(
            "pyproject.toml",
            "[tool.poetry.dependencies]\n"
            'numpy = "^1.26"\n'
            'clip = { git = "https://github.com/openai/CLIP.git", optional = true }\n',
        )
        assert deps(s) == {"numpy": ("numpy<2.0,>=1.26", ())}
        assert converted.unlockable == (
            'pyproject.toml: tool.poetry.dependencies.clip: "clip = { git = '
            "'https://github.com/openai/CLIP.git' } (optional)\": " + UNLOCKABLE,
        )


UV_EXTRAS = """\
[project]
name = "x"
requires-python = ">=3.11"
dependencies = ["numpy>=2"]
[project.optional-dependencies]
cpu = ["torch>=2.6"]
cu124 = ["torch>=2.6.0"]
cu128 = ["torch>=2.7", "nvidia-nccl-cu12"]
docs = ["sphinx"]
[tool.uv.sources]
torch = [
  { index = "pytorch-cpu", extra = "cpu" },
  { index = "pytorch-cu124", extra = "cu124" },
  { index = "pytorch-cu128", extra = "cu128" },
]
[[tool.uv.index]]
name = "pytorch-cpu"
url = "https://download.pytorch.org/whl/cpu"
explicit = true
[[tool.uv.index]]
name = "pytorch-cu124"
url = "https://download.pytorch.org/whl/cu124"
explicit = true
[[tool.uv.index]]
name = "pytorch-cu128"
url = "https://download.pytorch.org/whl/cu128"
explicit = true
"""


class TestUv:
    def test_sources_per_extra_become_flavors(self) -> None:
        converted, s = convert("pyproject.toml", UV_EXTRAS)
        assert s.cuda is not None
        assert s.flavors == ("cu128", "cpu")
        assert deps(s) == {
            "numpy": ("numpy>=2", ()),
            "torch": ("torch>=2.6,>=2.7", ()),
            "nvidia-nccl-cu12": ("nvidia-nccl-cu12", ("cuda",)),
        }
        assert lock.requirements(s, "cpu") == ["numpy>=2", "torch>=2.6,>=2.7"]
        assert not_converted(converted.text) == [
            "pyproject.toml tool.uv.sources.torch[1]: https://download.pytorch.org/whl/cu124 for "
            "the extra 'cu124' (another CUDA build; the spec has one CUDA flavor, from the extra "
            "'cu128')",
            "pyproject.toml project.optional-dependencies.cu124: torch>=2.6.0 (another CUDA "
            "build; the spec has one CUDA flavor, from the extra 'cu128')",
            "pyproject.toml project.optional-dependencies.docs: sphinx (an optional extra of "
            "the project; add what the environment needs to [dependencies])",
        ]

    def test_the_extras_indexes_have_their_flavors(self) -> None:
        _, s = convert("pyproject.toml", UV_EXTRAS)
        assert indexes(s) == [CPU, ("https://download.pytorch.org/whl/cu128", "index", ("cuda",))]

    def test_sources_per_marker_keep_linux(self) -> None:
        converted, s = convert(
            "pyproject.toml",
            "[project]\nname = 'x'\n"
            "dependencies = [\"torch==2.7.0+cu128; sys_platform == 'linux'\", "
            "\"torch==2.7.0; sys_platform == 'darwin'\"]\n"
            "[tool.uv.sources]\ntorch = [\n"
            "  { index = 'cu', marker = \"sys_platform == 'linux'\" },\n"
            "  { index = 'cpu', marker = \"sys_platform == 'darwin'\" },\n]\n"
            "[[tool.uv.index]]\nname = 'cu'\nurl = 'https://download.pytorch.org/whl/cu128'\n"
            "explicit = true\n"
            "[[tool.uv.index]]\nname = 'cpu'\nurl = 'https://download.pytorch.org/whl/cpu'\n"
            "explicit = true\n",
        )
        assert s.cuda == spec.Cuda(version="12.8")
        assert deps(s) == {"torch": ('torch==2.7.0; sys_platform == "linux"', ())}
        assert not_converted(converted.text) == [
            "pyproject.toml tool.uv.sources.torch[1]: index cpu for sys_platform == 'darwin' "
            "(envparity environments run on Linux)",
            'pyproject.toml project.dependencies[1]: torch==2.7.0; sys_platform == "darwin" '
            "(for another platform; envparity environments run on Linux)",
        ]

    def test_a_git_source_is_not_converted_and_named(self) -> None:
        converted, s = convert(
            "pyproject.toml",
            "[project]\nname = 'x'\ndependencies = ['deepface>=0.0.93', 'numpy']\n"
            "[tool.uv.sources]\ndeepface = { git = 'https://github.com/serengil/deepface' }\n"
            "[dependency-groups]\ndev = ['pytest']\n",
        )
        assert deps(s) == {"numpy": ("numpy", ())}
        assert converted.unlockable == (
            "pyproject.toml: project.dependencies[0]: 'deepface>=0.0.93': comes from its git "
            "source 'https://github.com/serengil/deepface' (pyproject.toml "
            "tool.uv.sources.deepface), which " + UNLOCKABLE,
        )
        assert not_converted(converted.text)[-1] == (
            "pyproject.toml dependency-groups.dev: pytest (a development group, left out of the "
            "environment under test; add what it needs to [dependencies])"
        )

    def test_malformed_uv_tables_are_refused_together(self) -> None:
        assert refused(
            "pyproject.toml",
            "[project]\nname = 'x'\ndependencies = ['six']\n[tool.uv]\nsources = 3\nindex = 'x'\n",
        ) == (
            "pyproject.toml: tool.uv.index: expected an array of tables\n"
            "pyproject.toml: tool.uv.sources: expected a table"
        )

    def test_an_unknown_index_is_refused(self) -> None:
        assert (
            refused(
                "pyproject.toml",
                "[project]\nname = 'x'\ndependencies = ['torch']\n"
                "[tool.uv.sources]\ntorch = { index = 'nope' }\n",
            )
            == "pyproject.toml: tool.uv.sources.torch: no [[tool.uv.index]] is named 'nope'"
        )


class TestConda:
    @pytest.mark.parametrize(
        ("item", "dependency", "cuda"),
        [
            ("pytorch::pytorch=2.0.0", ("torch", "torch==2.0.0"), None),
            ("pytorch-cuda=11.7", None, "11.7"),
            ("cudatoolkit=11.8", None, "11.8"),
            ("nvidia/label/cuda-12.1.0::cuda-toolkit", None, "12.1"),
            ("numpy[version='>=1.24']", ("numpy", "numpy>=1.24"), None),
            (
                "conda-forge::scipy[version='>=1.10,<2', build=py310*]",
                ("scipy", "scipy<2,>=1.10"),
                None,
            ),
            ("numpy=1.24", ("numpy", "numpy==1.24.*"), None),
            ("numpy 1.24.3 py310h5f9d8c6_0", ("numpy", "numpy==1.24.3"), None),
            ("pytorch=2.0.1=py3.10_cuda11.8_cudnn8.7.0_0", ("torch", "torch==2.0.1"), "11.8"),
            ("py-opencv", ("opencv-python", "opencv-python"), None),
            (
                "conda-forge::pytorch=2.1.2=cuda118_py310h6f4ad4e_300",
                ("torch", "torch==2.1.2"),
                "11.8",
            ),
            (
                "conda-forge::pytorch=2.1.2=cpu_mkl_py310hd7fc8f7_100",
                ("torch", "torch==2.1.2"),
                None,
            ),
            ("librosa=0.10.1", ("librosa", "librosa==0.10.1"), None),
            ("libjpeg-turbo=2.1.4=h166bdaf_0", None, None),  # a native build: conda-only
        ],
    )
    def test_match_specs(
        self, item: str, dependency: tuple[str, str] | None, cuda: str | None
    ) -> None:
        _, s = convert("environment.yml", f'dependencies:\n  - six\n  - "{item}"\n')
        expected = {"six": ("six", ())}
        if dependency:
            expected[dependency[0]] = (dependency[1], ())
        assert deps(s) == expected
        assert (s.cuda.version if s.cuda else None) == cuda

    @pytest.mark.parametrize(
        ("version_spec", "pep440", "note"),
        [
            (None, "", ""),
            ("*", "", ""),
            ("2.0.0.*", "==2.0.0", ""),  # conda's =2.0.0: a full release means that release
            ("1.24.*", "==1.24.*", ""),  # conda's =1.24: any 1.24.x
            ("==1.24.0", "==1.24.0", ""),
            (">=1.24,<2", ">=1.24,<2", ""),
            (">=1.2.*", ">=1.2", ""),
            ("1!2.0.*", "==1!2.0.*", ""),
            (
                ">=1.2|<1.0",
                ">=1.2",
                "conda's '|' (either) has no PEP 440 equivalent; kept the first alternative, >=1.2",
            ),
            ("==1.1.1w", None, ""),  # openssl's letters: no PEP 440 version
        ],
    )
    def test_versions_as_rattler_normalises_them(
        self, version_spec: str | None, pep440: str | None, note: str
    ) -> None:
        from orchestrator.init.conda import conda_specifier

        assert conda_specifier(version_spec) == (pep440, note)

    def test_either_keeps_the_first_alternative_and_says_so(self) -> None:
        converted, s = convert("environment.yml", "dependencies:\n  - pillow 9.*|10.*\n")
        assert deps(s) == {"pillow": ("pillow==9.*", ())}
        assert not_converted(converted.text) == [
            "environment.yml dependencies[0]: pillow 9.*|10.* (conda's '|' (either) has no "
            "PEP 440 equivalent; kept the first alternative, 9.*)"
        ]

    def test_a_bad_match_spec_is_refused(self) -> None:
        assert refused("environment.yml", 'dependencies:\n  - "numpy[version="\n') == (
            "environment.yml: dependencies[0]: 'numpy[version=' is not a conda package spec: "
            "invalid package name 'numpy[version': 'numpy[version' is not a valid package "
            "name. Package names can only contain 0-9, a-z, A-Z, -, _, or ."
        )

    def test_a_git_line_in_pip_converts_the_rest(self) -> None:
        converted, s = convert(
            "environment.yml",
            "dependencies:\n  - numpy\n  - pip:\n    - git+https://github.com/openai/CLIP.git\n",
        )
        assert deps(s) == {"numpy": ("numpy", ())}
        assert converted.unlockable == (
            "environment.yml: dependencies[1].pip[0]: 'git+https://github.com/openai/CLIP.git': "
            + UNLOCKABLE,
        )


class TestSpecLists:
    def test_conda_list_export(self) -> None:
        converted, s = convert(
            "spec-list.txt",
            "# platform: linux-64\n"
            "_libgcc_mutex=0.1=main\n"
            "numpy=1.26.0=py310h5f9d8c6_0\n"
            "python=3.10.13=h955ad1f_0\n"
            "pytorch=2.1.0=py3.10_cuda11.8_cudnn8.7.0_0\n"
            "zlib=1.2.13=h5eee18b_0\n",
        )
        assert s.environment.python == "3.10.13"
        assert s.cuda == spec.Cuda(version="11.8")
        assert deps(s) == {"numpy": ("numpy==1.26.0", ()), "torch": ("torch==2.1.0", ())}
        assert not_converted(converted.text) == [
            "spec-list.txt: build strings numpy py310h5f9d8c6_0, pytorch "
            "py3.10_cuda11.8_cudnn8.7.0_0 (conda builds have no spec equivalent; the versions "
            "are kept)",
            "spec-list.txt: _libgcc_mutex, zlib (conda-only packages: native libraries and "
            "installer tools that uv and the PyPI wheels provide)",
        ]

    def test_explicit_urls(self) -> None:
        converted, s = convert(
            "explicit.txt",
            "@EXPLICIT\n"
            "https://conda.anaconda.org/conda-forge/noarch/tqdm-4.66.1-pyhd8ed1ab_0.conda#abc\n",
        )
        assert deps(s) == {"tqdm": ("tqdm==4.66.1", ())}
        assert (
            "# explicit.txt is an @EXPLICIT list of conda package URLs: each package is taken "
            "from PyPI at the version of its file name, not from those URLs"
        ) in converted.text

    def test_a_spec_list_from_another_platform_is_noted(self) -> None:
        converted, _ = convert("list.txt", "# platform: osx-arm64\nsix=1.16.0=pyhd8ed1ab_0\n")
        assert "# list.txt line 1: written on osx-arm64; envparity environments run on Linux" in (
            converted.text
        )

    def test_a_bad_explicit_line_is_refused(self) -> None:
        assert refused("explicit.txt", "@EXPLICIT\nhttps://example.com/readme.html\n") == (
            "explicit.txt: line 2: 'https://example.com/readme.html' is not a conda package URL "
            "(.conda or .tar.bz2)"
        )


class TestUnlockable:
    """Lines that cannot be locked are kept as comments and named on stderr; exit 0."""

    @pytest.mark.parametrize(
        "line",
        [
            "git+https://github.com/openai/CLIP.git",
            "clip @ git+https://github.com/openai/CLIP.git@a1b2c3d",
            "https://example.com/x-1.0-py3-none-any.whl",
            "./vendor/pkg-1.0.tar.gz",
            "-e git+https://github.com/openai/CLIP.git#egg=clip",
        ],
    )
    def test_the_rest_is_converted(self, line: str, capsys: pytest.CaptureFixture[str]) -> None:
        Path("requirements.txt").write_text(f"numpy==2.2.0\n{line}\n", encoding="utf-8")
        assert cli.main(["init", "--from", "requirements.txt"]) == 0
        out, err = capsys.readouterr()
        assert out == "wrote environment.toml\n"
        why = UNLOCKABLE
        assert err == f"envparity: not converted: requirements.txt: line 2: {line!r}: {why}\n"
        text = Path("environment.toml").read_text(encoding="utf-8")
        assert not_converted(text) == [f"requirements.txt line 2: {line} ({why})"]
        assert [d.name for d in spec.load("environment.toml").dependencies] == ["numpy"]

    def test_nothing_convertible_is_refused_and_nothing_written(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        Path("requirements.txt").write_text("-e ../other\n./vendor/pkg.whl\n", encoding="utf-8")
        assert cli.main(["init", "--from", "requirements.txt"]) == 2
        out, err = capsys.readouterr()
        assert (out, err) == (
            "",
            "envparity: error\n"
            "requirements.txt: line 1: '-e ../other': a local package outside the folder of the "
            "spec (../other); the devcontainer and CI see only the repository: move it inside, "
            "or publish it\n"
            f"requirements.txt: line 2: './vendor/pkg.whl': {UNLOCKABLE}\n",
        )
        assert not Path("environment.toml").exists()

    def test_an_empty_file_is_refused(self) -> None:
        assert refused("requirements.txt", "# nothing yet\n") == (
            "requirements.txt: no packages to convert"
        )


class TestDependencyFlavors:
    """The spec's ``flavors`` key on a dependency: the locks of other flavors leave it out."""

    SPEC = (
        '[environment]\nname = "x"\npython = "3.11"\n[cuda]\nversion = "12.8"\n'
        '[dependencies]\ntorch = "==2.7.0"\n'
        'nvidia-nccl-cu12 = { version = ">=2.26", flavors = ["cuda"] }\n'
        'onnxruntime = { version = ">=1.18", flavors = ["cpu"] }\n'
    )

    def test_each_flavor_locks_its_own(self) -> None:
        s = spec.loads(self.SPEC)
        assert lock.requirements(s, "cu128") == ["nvidia-nccl-cu12>=2.26", "torch==2.7.0"]
        assert lock.requirements(s, "cpu") == ["onnxruntime>=1.18", "torch==2.7.0"]

    def test_an_unknown_flavor_is_refused(self) -> None:
        with pytest.raises(SpecError) as info:
            spec.loads(self.SPEC.replace('flavors = ["cpu"]', 'flavors = ["rocm"]'))
        assert str(info.value) == (
            "environment.toml: dependencies.onnxruntime.flavors[0]: 'rocm' is not a flavor of "
            "this spec (cpu, cu128, cuda)"
        )


def test_init_patterns_are_ascii_and_anchored_at_the_very_end() -> None:
    """Conversion patterns read other people's files: a Unicode digit ("cu١١٨") or a trailing
    newline must not pass for a CUDA tag, a version or a platform."""
    import re

    from orchestrator.init import conda, draft, pyproject, requirements

    patterns = [
        (module.__name__, name, value)
        for module in (conda, draft, pyproject, requirements)
        for name, value in vars(module).items()
        if isinstance(value, re.Pattern)
    ]
    assert len(patterns) >= 15
    for module, name, pattern in patterns:
        for unicode_class in (r"\d", r"\w"):
            assert unicode_class not in pattern.pattern, f"{module}.{name}: {unicode_class}"
        assert "$" not in pattern.pattern, f"{module}.{name}: '$' passes a trailing newline"
    assert draft._CUDA_TAG_RE.match("cu118")
    assert draft._CUDA_TAG_RE.match("cu\u0661\u0661\u0668") is None
    assert draft._CUDA_TAG_RE.match("cu118\n") is None


class TestPdm:
    """PDM's sources: a find_links one, one named pypi (which replaces PyPI in PDM), and
    package patterns the spec cannot keep an index to."""

    def test_sources(self) -> None:
        converted, s = convert(
            "pyproject.toml",
            '[project]\nname = "x"\ndependencies = ["numpy>=2", "acme-core==1.0"]\n'
            '[[tool.pdm.source]]\nname = "pypi"\nurl = "https://mirror.example.org/simple"\n'
            '[[tool.pdm.source]]\nname = "links"\nurl = "https://wheels.example.org/"\n'
            'type = "find_links"\n'
            '[[tool.pdm.source]]\nname = "corp"\nurl = "https://pypi.example.org/simple"\n'
            'include_packages = ["acme-core", "acme-*"]\n'
            '[tool.pdm.scripts]\nstart = "python main.py"\n',
        )
        assert [(i.url, i.kind, i.packages) for i in s.indexes] == [
            ("https://mirror.example.org/simple", "index", ()),
            ("https://wheels.example.org/", "find-links", ()),
            ("https://pypi.example.org/simple", "index", ("acme-core",)),
        ]
        assert (
            "# from pdm source 'pypi', which replaces PyPI in PDM (envparity keeps PyPI beside it)"
            in converted.text
        )
        assert not_converted(converted.text) == [
            "pyproject.toml tool.pdm.source[2]: include_packages = ['acme-core', 'acme-*'], "
            "exclude_packages = [] (package patterns have no spec equivalent; the spec keeps an "
            "index to packages it names)",
            "pyproject.toml tool.pdm.scripts: {'start': 'python main.py'} (no spec equivalent)",
        ]


class TestPixi:
    def test_git_packages_and_other_platforms_are_named(self) -> None:
        converted, s = convert(
            "pixi.toml",
            '[workspace]\nname = "x"\nchannels = ["conda-forge"]\nplatforms = ["linux-64", "osx-arm64"]\n'
            '[dependencies]\npython = "3.11.*"\nnumpy = ">=2"\n'
            '[pypi-dependencies]\nclip = { git = "https://github.com/openai/CLIP.git" }\n'
            '[target.osx-arm64.dependencies]\nllvm-openmp = "*"\n',
        )
        assert deps(s) == {"numpy": ("numpy>=2", ())}
        assert converted.unlockable == (
            "pixi.toml: pypi-dependencies.clip: \"clip = { git = 'https://github.com/openai/CLIP.git' }\": "
            + UNLOCKABLE,
        )
        assert (
            "pixi.toml target.osx-arm64: {'dependencies': {'llvm-openmp': '*'}} (for another platform; envparity environments run on Linux)"
            in not_converted(converted.text)
        )


class TestUvLock:
    def test_a_lock_without_the_project_is_refused(self) -> None:
        assert refused(
            "uv.lock",
            'version = 1\n[[package]]\nname = "six"\nversion = "1.16.0"\n'
            'source = { registry = "https://pypi.org/simple" }\n',
        ) == (
            'uv.lock: package: no package with source = { virtual = "." } or { editable = "." }: '
            "not the lock of a uv project"
        )
