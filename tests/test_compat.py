"""The compatibility table and the check of a spec against it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from orchestrator import compat
from orchestrator.errors import Problem, SpecError
from orchestrator.spec import Spec, loads
from tests import gpu_stand_ins

ROOT = Path(__file__).resolve().parent.parent
F = "environment.toml"


def make(
    torch: str | None, python: str = "3.11", cuda: str | None = None, cudnn: str | None = None
) -> Spec:
    text = f'[environment]\nname = "t"\npython = "{python}"\n'
    if cuda is not None:
        text += f'[cuda]\nversion = "{cuda}"\n'
        if cudnn is not None:
            text += f'cudnn = "{cudnn}"\n'
    if torch is not None:
        text += f'[dependencies]\ntorch = "{torch}"\n'
    return loads(text, path=F)


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("torch", "python", "cuda", "cudnn", "expected"),
    [
        pytest.param(
            "==2.1.0",
            "3.11",
            "12.4",
            None,
            "environment.toml: cuda.version: torch 2.1.0 has no CUDA 12.4 build; it has 11.8 "
            'and 12.1 (use cuda.version = "12.1" or torch 2.4.0, the nearest release with a '
            "CUDA 12.4 build)",
            id="pinned-no-build",
        ),
        pytest.param(
            ">=2.1,<2.3",
            "3.11",
            "12.4",
            None,
            "environment.toml: cuda.version: torch 2.1.0 to 2.2.2 (admitted by '<2.3,>=2.1') "
            'have no CUDA 12.4 build; they have 11.8 and 12.1 (use cuda.version = "12.1" or '
            "torch 2.4.0, the nearest release with a CUDA 12.4 build)",
            id="range-no-build",
        ),
        pytest.param(
            "==2.9.1",
            "3.11",
            "11.8",
            None,
            "environment.toml: cuda.version: torch 2.9.1 has no CUDA 11.8 build; it has 12.6, "
            '12.8 and 13.0 (use cuda.version = "12.6" or torch 2.7.1, the nearest release with '
            "a CUDA 11.8 build)",
            id="dropped-old-cuda",
        ),
        pytest.param(
            "==2.15.0",
            "3.10",
            None,
            None,
            "environment.toml: environment.python: torch 2.15.0 has no wheels for Python 3.10; "
            'it has 3.11, 3.12, 3.13, 3.14 and 3.15 (use python = "3.11" or torch 2.14.1, the '
            "nearest release with Python 3.10 wheels)",
            id="cpu-only-python",
        ),
        pytest.param(
            "==2.0.1",
            "3.12",
            "11.8",
            None,
            "environment.toml: environment.python: torch 2.0.1 has no wheels for Python 3.12; "
            'it has 3.8, 3.9, 3.10 and 3.11 (use python = "3.11" or torch 2.2.0, the nearest '
            "release with Python 3.12 wheels and a CUDA 11.8 build)",
            id="python-too-new",
        ),
        pytest.param(
            ">=2.0",
            "3.8",
            "12.8",
            None,
            "environment.toml: environment.python: torch 2.7.0 to 2.11.0, the admitted "
            "releases with a CUDA 12.8 build, have no wheels for Python 3.8; they have 3.9, "
            '3.10, 3.11, 3.12, 3.13 and 3.14 (use python = "3.9")',
            id="python-and-cuda-never-together",
        ),
        pytest.param(
            "==2.13.0",
            "3.11",
            "13.0",
            "8",
            "environment.toml: cuda.cudnn: torch 2.13.0's CUDA 13.0 build uses cuDNN 9.20.0.48, "
            'not 8 (use cudnn = "9", or leave cudnn out to take what torch pins)',
            id="cudnn-major",
        ),
        pytest.param(
            "==2.7.1",
            "3.11",
            "12.6",
            "9.1",
            "environment.toml: cuda.cudnn: torch 2.7.1's CUDA 12.6 build uses cuDNN 9.5.1.17, "
            'not 9.1 (use cudnn = "9", or leave cudnn out to take what torch pins)',
            id="cudnn-minor-is-not-a-prefix-of-9.5",
        ),
        pytest.param(
            "==2.0.1",
            "3.11",
            "12.7",
            None,
            "environment.toml: cuda.version: CUDA 12.7 is not a toolkit release in the "
            "compatibility table; it knows 11.6, 11.7, 11.8, 12.0, 12.1, 12.2, 12.3, 12.4, 12.5, 12.6, "
            '12.8, 12.9, 13.0, 13.1, 13.2 and 13.3 (nearest: cuda.version = "12.8")',
            id="unknown-cuda",
        ),
        pytest.param(
            "==2.1.0+cu118",
            "3.11",
            "12.1",
            None,
            "environment.toml: dependencies.torch: ==2.1.0+cu118 asks for the '+cu118' build "
            "but the spec has cuda.version '12.1' (flavor 'cu121'); drop the label or use "
            "'+cu121'",
            id="local-label-contradicts-cuda",
        ),
        pytest.param(
            "==2.13.0+cu130",
            "3.11",
            None,
            None,
            "environment.toml: dependencies.torch: ==2.13.0+cu130 asks for the '+cu130' build "
            "but the spec has no [cuda] table (flavor 'cpu'); drop the label or use '+cpu'",
            id="cuda-label-on-cpu-spec",
        ),
    ],
)
def test_refusals(
    torch: str, python: str, cuda: str | None, cudnn: str | None, expected: str
) -> None:
    assert [str(p) for p in compat.check(make(torch, python, cuda, cudnn))] == [expected]


@pytest.mark.parametrize(
    ("torch", "python", "cuda", "cudnn"),
    [
        ("==2.13.0", "3.11", None, None),  # CPU only: torch x Python
        ("==2.13.0+cpu", "3.11", None, None),
        ("==2.13.0", "3.11", "13.0", "9"),
        ("==2.13.0", "3.11.9", "12.6", "9.10.2.21"),
        ("==2.14.1+cu132", "3.14", "13.2", "9.24"),
        ("==2.0.1", "3.8", "11.7", "8.5"),
        ("==2.8.0", "3.9", "12.9", None),
        (">=2.1,<2.5", "3.12", "12.4", None),  # only 2.4.x has it: a warning, not a refusal
        ("~=2.4.0", "3.10", "11.8", "9.1.0.70"),
        ("", "3.11", "11.7", None),  # unpinned: 2.0.x has a cu117 build
        ("==2.15.0", "3.12", "12.6", None),  # 2.15's build list is unverified: warning only
        ("==2.13.0", "3.15", "13.0", None),  # matrix: 3.15 on download.pytorch.org only
        ("==1.12.1", "3.10", None, None),  # outside the table: nothing to refuse
        ("==1.13.1", "3.10", "11.6", None),
    ],
)
def test_existing_or_unprovable_combinations_pass(
    torch: str, python: str, cuda: str | None, cudnn: str | None
) -> None:
    assert compat.check(make(torch, python, cuda, cudnn)) == []


def test_problems_are_problems_with_the_spec_file() -> None:
    (problem,) = compat.check(make("==2.1.0", cuda="12.4"))
    assert isinstance(problem, Problem)
    assert (problem.file, problem.key) == (F, "cuda.version")


def test_spec_without_torch_checks_only_the_toolkit() -> None:
    assert compat.check(make(None, cuda="12.8")) == []
    assert [p.key for p in compat.check(make(None, cuda="12.7"))] == ["cuda.version"]


def test_the_loader_already_refuses_a_malformed_cuda_version() -> None:
    with pytest.raises(SpecError):
        make("==2.13.0", cuda="12")


# --------------------------------------------------------------------------- warnings


@pytest.mark.parametrize(
    ("torch", "python", "cuda", "expected"),
    [
        pytest.param(
            ">=2.1,<2.5",
            "3.12",
            "12.4",
            [
                "environment.toml: dependencies.torch: '<2.5,>=2.1' admits torch releases without "
                "a CUDA 12.4 build; only 2.4.0 to 2.4.1 have one",
                "environment.toml: cuda.version: nixpkgs no longer has cudaPackages_12_4 (removed "
                "2025-08-08): the nix target needs a nixpkgs commit from before then",
            ],
            id="mixed-range",
        ),
        pytest.param(
            ">=2.15",
            "3.12",
            "13.2",
            [
                "environment.toml: dependencies.torch: '>=2.15' also admits torch releases newer "
                "than 2.15.0, which the compatibility table does not cover"
            ],
            id="beyond-the-table",
        ),
        pytest.param(
            "==1.12.1",
            "3.10",
            None,
            [
                "environment.toml: dependencies.torch: '==1.12.1' admits no torch release in the "
                "compatibility table (1.13.0 to 2.15.0): nothing was checked"
            ],
            id="before-the-table",
        ),
        pytest.param(
            "==2.13.0",
            "3.15",
            None,
            [
                "environment.toml: environment.python: torch 2.13.0 has no Python 3.15 wheels on "
                "PyPI; the release matrix lists them as experimental on download.pytorch.org only "
                "(unverified here)"
            ],
            id="index-only-python",
        ),
        pytest.param(
            None,
            "3.11",
            "12.8",
            [
                "environment.toml: dependencies: no torch dependency: only the CUDA "
                "toolkit version is checked against the compatibility table"
            ],
            id="no-torch",
        ),
        pytest.param("==2.13.0", "3.11", None, [], id="pinned-cpu-is-quiet"),
        pytest.param("==2.13.0", "3.11", "13.0", [], id="pinned-cuda-is-quiet"),
    ],
)
def test_warnings(torch: str | None, python: str, cuda: str | None, expected: list[str]) -> None:
    assert compat.warnings(make(torch, python, cuda)) == expected


def test_unverified_build_list_warns_instead_of_refusing() -> None:
    notes = compat.warnings(make("==2.15.0", "3.12", "12.6"))
    assert len(notes) == 1
    assert notes[0].startswith(
        "environment.toml: cuda.version: no CUDA 12.6 build of torch "
        "2.15.0 is recorded, but the table's build list for it is "
        "unverified ("
    )


def test_unpinned_torch_warns() -> None:
    notes = compat.warnings(make("", "3.11", None))
    assert notes == [
        "environment.toml: dependencies.torch: torch is unpinned: the lock takes "
        "the newest release its index offers; the check covers every release in "
        "the table (1.13.0 to 2.15.0)"
    ]


# --------------------------------------------------------------------------- lookups


@pytest.mark.parametrize(
    ("cuda", "driver"),
    [("11.8", "520.61.05"), ("12.8", "570.26"), ("13.0", "580.65.06"), ("12.7", None)],
)
def test_min_driver(cuda: str, driver: str | None) -> None:
    assert compat.min_driver(cuda) == driver


@pytest.mark.parametrize(
    ("cuda", "torch", "cudnn"),
    [
        ("13.0", "2.13.0", "9.20.0.48"),
        ("13.0", "2.13.0+cu130", "9.20.0.48"),
        ("12.1", "2.1.2", "8.9.2.26"),
        ("12.4", "2.1.0", None),
        ("12.8", "1.13.1", None),
        ("12.1", None, "9.1.0.70"),  # the newest release with a cu121 build is 2.5
        ("13.2", None, "9.26.0.51"),
        ("12.7", None, None),
    ],
)
def test_cudnn_for(cuda: str, torch: str | None, cudnn: str | None) -> None:
    assert compat.cudnn_for(cuda, torch) == cudnn


@pytest.mark.parametrize(
    ("torch", "cuda"),
    [
        ("2.0.1", "11.7"),
        ("2.4.1", "12.1"),
        ("2.7.0", "12.6"),
        ("2.13.0", "13.0"),
        ("2.13.0+cpu", "13.0"),
        ("2.15.0", "13.2"),
        ("1.13.1", "11.7"),
        ("1.12.1", None),
    ],
)
def test_pypi_default_cuda(torch: str, cuda: str | None) -> None:
    assert compat.pypi_default_cuda(torch) == cuda


# --------------------------------------------------------------------------- the table itself


def test_table_covers_every_minor_release_from_1_13_to_the_newest() -> None:
    t = compat.table()
    newest = Version(t.newest_on_pypi)
    assert t.versions[-1] == t.newest_on_pypi
    minors = [r.minor for r in t.releases]
    assert minors == ["1.13"] + [f"2.{m}" for m in range(newest.minor + 1)]
    for release in t.releases:
        patches = [Version(v).micro for v in release.versions]
        assert patches == list(range(len(patches))), release.minor
        assert all(v.startswith(release.minor + ".") for v in release.versions)


def test_every_fact_has_a_source() -> None:
    t = compat.table()
    assert all(t.sources.values())
    for release in t.releases:
        assert release.python_source and release.pypi_source, release.minor
        assert release.builds, release.minor
        assert release.pypi_cuda in release.builds, release.minor
        assert not release.unverified or release.note, release.minor
        for build in release.builds.values():
            assert build.source, (release.minor, build.cuda)
            assert build.cuda in t.toolkits, (release.minor, build.cuda)
            assert build.unverified or build.cudnn, (release.minor, build.cuda)
    for toolkit in t.toolkits.values():
        assert toolkit.source and toolkit.nixpkgs in ("present", "removed"), toolkit.version
        assert Version(toolkit.driver) <= Version(toolkit.driver_latest), toolkit.version
        assert Version(toolkit.minor_compat) <= Version(toolkit.driver), toolkit.version


def test_pypi_build_cudnn_is_the_pinned_one() -> None:
    # The PyPI wheel's cuDNN is proven by its metadata: each source says so.
    for release in compat.table().releases:
        build = release.builds[release.pypi_cuda]
        assert "PyPI metadata" in build.source, release.minor
        assert build.cudnn is not None and build.cudnn in release.pypi_source, release.minor


def test_table_is_loaded_once() -> None:
    assert compat.table() is compat.table()


def test_docs_render_the_table() -> None:
    docs = (ROOT / "docs" / "compatibility.md").read_text(encoding="utf-8")
    assert compat.render_matrix() in docs


def test_check_imports_neither_torch_nor_numpy() -> None:
    code = (
        "import sys\n"
        "from orchestrator import compat\n"
        "from orchestrator.spec import loads\n"
        's = loads(\'[environment]\\nname="t"\\npython="3.11"\\n[cuda]\\nversion="13.0"\\n'
        '[dependencies]\\ntorch="==2.13.0"\\n\')\n'
        "assert compat.check(s) == [] and compat.warnings(s) == []\n"
        "assert 'torch' not in sys.modules and 'numpy' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


# --------------------------------------------------------------------------- properties

_versions = st.sampled_from(
    [
        "0",
        "1.13.1",
        "2",
        "2.0",
        "2.1.0",
        "2.4.1",
        "2.9",
        "2.13.0",
        "2.13.0+cpu",
        "2.13.0+cu130",
        "2.15.0",
        "2.16.0",
        "3.0",
        "2.5.0rc1",
        "2.*",
        "2.13.*",
        "1!2.0",
    ]
)
_clauses = st.tuples(st.sampled_from(["==", "!=", ">=", "<=", ">", "<", "~=", "==="]), _versions)


@st.composite
def _specifiers(draw: st.DrawFn) -> str:
    clauses = draw(st.lists(_clauses, max_size=3))
    text = ",".join(op + v for op, v in clauses)
    try:
        return str(SpecifierSet(text))
    except InvalidSpecifier:
        return ""


@settings(max_examples=300, deadline=None)
@given(
    torch=_specifiers(),
    python=st.sampled_from(["3.8", "3.10", "3.11.9", "3.15", "3.99"]),
    cuda=st.one_of(st.none(), st.sampled_from(["11.7", "12.4", "12.7", "13.0", "13.2", "99.9"])),
    cudnn=st.one_of(st.none(), st.sampled_from(["8", "9", "9.1", "9.20.0.48", "10"])),
)
def test_check_never_raises(torch: str, python: str, cuda: str | None, cudnn: str | None) -> None:
    spec = make(torch, python, cuda, cudnn if cuda else None)
    problems = compat.check(spec)
    notes = compat.warnings(spec)
    assert all(isinstance(p, Problem) and p.file == F for p in problems)
    assert all(n.startswith(F + ": ") for n in notes)
    # A refusal is always about something the table proves: never about a spec it cannot see.
    if (
        not any(
            v in SpecifierSet(torch) or f"{v}+cpu" in SpecifierSet(torch)
            for v in compat.table().versions
        )
        and "+" not in torch
    ):
        assert all(p.key == "cuda.version" for p in problems)


def test_an_unverified_release_does_not_excuse_verified_ones_that_lack_the_build() -> None:
    s = loads(
        '[environment]\nname = "x"\npython = "3.11"\n[cuda]\nversion = "12.5"\n'
        '[dependencies]\ntorch = ""\n',
        path="environment.toml",
    )
    assert [str(p) for p in compat.check(s)] == [
        "environment.toml: cuda.version: torch 1.13.0 to 2.15.0 (admitted by 'any version') have no "
        "CUDA 12.5 build; they have 11.6, 11.7, 11.8, 12.1, 12.4, 12.6, 12.8, 12.9, 13.0 and 13.2 "
        '(use cuda.version = "12.6")'
    ]


# --------------------------------------------------------------------------- GPU architectures

RTX_5090 = "12.0"  # compute capability of the GeForce RTX 50 series (sm_120)
CU121_ARCHS = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]


@pytest.mark.parametrize(
    ("archs", "capability", "expected"),
    [
        (("5.0", "8.6", "9.0"), "8.9", "native"),  # sm_86 code runs on Ada (8.9)
        (("5.0", "8.6", "9.0"), "8.0", None),  # sm_86 code does not run on 8.0
        (("5.0", "8.6", "9.0"), "12.0", None),
        (("7.5", "9.0", "10.0", "12.0+PTX"), "12.0", "native"),
        (("7.5", "9.0+PTX"), "12.0", "ptx"),  # PTX compiles for newer GPUs
        (("7.5", "12.0+PTX"), "10.0", None),  # but not for older ones
    ],
)
def test_runs_on_follows_binary_and_ptx_compatibility(
    archs: tuple[str, ...], capability: str, expected: str | None
) -> None:
    assert compat.runs_on(archs, capability) == expected


def test_archs_from_torch_reads_get_arch_list() -> None:
    assert compat.archs_from_torch(["sm_86", "sm_90a", "sm_120", "compute_120"]) == (
        "8.6",
        "9.0",
        "12.0",
        "12.0+PTX",
    )
    assert compat.archs_from_torch([]) == ()  # a CPU build


def test_every_arch_list_has_a_source() -> None:
    for release in compat.table().releases:
        for build in release.builds.values():
            assert not build.archs or build.archs_source, (release.minor, build.cuda)


def spec_with_gpus(torch: str, cuda: str, *capabilities: str) -> Spec:
    listed = ", ".join(f'"{c}"' for c in capabilities)
    return loads(
        f'[environment]\nname = "t"\npython = "3.11"\n[cuda]\nversion = "{cuda}"\n'
        f'compute_capabilities = [{listed}]\n[dependencies]\ntorch = "{torch}"\n',
        path=F,
    )


def test_an_rtx_5090_with_torch_2_5_1_cu121_is_refused_naming_builds_that_work() -> None:
    assert [str(p) for p in compat.check(spec_with_gpus("==2.5.1", "12.1", RTX_5090))] == [
        "environment.toml: cuda.compute_capabilities: torch 2.5.1+cu121 has no kernels for "
        "compute capability 12.0 (sm_120; it is built for sm_50, sm_60, sm_70, sm_75, sm_80, "
        "sm_86, sm_90): 'no kernel image is available'; torch builds that have them: "
        "2.11+cu128, 2.11+cu130 (unverified), 2.10+cu128, 2.8+cu128 (unverified), "
        "2.8+cu129 (unverified)"
    ]


@pytest.mark.parametrize(
    ("torch", "cuda", "capabilities"),
    [
        ("==2.5.1", "12.1", ("8.9", "9.0")),  # Ada runs sm_86 code; Hopper has sm_90
        ("==2.10.0", "12.8", (RTX_5090,)),
        ("==2.9.0", "12.8", (RTX_5090,)),  # no list in the table: a warning at most
        ("==2.8.0", "12.6", (RTX_5090,)),  # an unverified list: a warning at most
    ],
)
def test_gpus_the_build_runs_or_cannot_be_proven_not_to_pass(
    torch: str, cuda: str, capabilities: tuple[str, ...]
) -> None:
    assert compat.check(spec_with_gpus(torch, cuda, *capabilities)) == []


def test_the_loader_refuses_a_malformed_compute_capability() -> None:
    with pytest.raises(SpecError) as info:
        spec_with_gpus("==2.5.1", "12.1", "sm_120")
    assert [str(p) for p in info.value.problems] == [
        "environment.toml: cuda.compute_capabilities[0]: 'sm_120' is not a compute capability "
        'major.minor such as "8.6" or "12.0"'
    ]


@pytest.fixture
def rtx_5090(stand_in_bin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project with a torch 2.5.1 + CUDA 12.1 spec on a machine whose nvidia-smi (a
    stand-in, tests/gpu_stand_ins.py) reports one RTX 5090 on driver 570.86.10."""
    gpu_stand_ins.nvidia_smi(
        stand_in_bin, [gpu_stand_ins.RTX_5090], driver="570.86.10", cuda="12.8"
    )
    project = tmp_path / "project"
    project.mkdir()
    (project / "environment.toml").write_text(
        '[environment]\nname = "g"\npython = "3.11"\n[cuda]\nversion = "12.1"\n'
        '[dependencies]\ntorch = "==2.5.1"\n'
    )
    monkeypatch.chdir(project)
    return project


def test_gpus_reads_compute_capabilities_from_nvidia_smi(rtx_5090: Path) -> None:
    from orchestrator import gpus

    assert gpus.compute_capabilities() == [("NVIDIA GeForce RTX 5090", "12.0")]


def test_doctor_fails_an_rtx_5090_under_torch_2_5_1_cu121_from_the_table(
    rtx_5090: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """torch here is a CPU build (get_arch_list() is empty): the table decides."""
    from orchestrator import cli

    assert cli.main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert (
        "  FAIL  NVIDIA GeForce RTX 5090: torch 2.5.1+cu121 has no kernels for compute "
        "capability 12.0 (sm_120; it is built for sm_50, sm_60, sm_70, sm_75, sm_80, sm_86, "
        "sm_90): 'no kernel image is available'; torch builds that have them: 2.11+cu128, "
    ) in out


@pytest.mark.parametrize(
    ("arch_list", "line"),
    [
        (
            CU121_ARCHS,
            "  FAIL  NVIDIA GeForce RTX 5090 (sm_120): torch 2.5.1+cu121 has no kernels for it "
            "(built for sm_50, sm_60, sm_70, sm_75, sm_80, sm_86, sm_90)\n"
            "        -> install a torch build that has them: 2.11+cu128, 2.11+cu130 "
            "(unverified), 2.10+cu128, 2.8+cu128 (unverified), 2.8+cu129 (unverified)",
        ),
        (
            [*CU121_ARCHS, "compute_90"],
            "  warn  NVIDIA GeForce RTX 5090 (sm_120): torch 2.5.1+cu121 has no kernels for it "
            "(built for sm_50, sm_60, sm_70, sm_75, sm_80, sm_86, sm_90, sm_90 (+PTX)) except "
            "PTX compiled at start-up",
        ),
        (
            ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"],
            "  ok    NVIDIA GeForce RTX 5090 (sm_120): torch 2.5.1+cu121 has kernels for it",
        ),
    ],
    ids=["cu121-fails", "ptx-warns", "cu128-ok"],
)
def test_doctor_uses_the_running_torchs_arch_list(
    arch_list: list[str],
    line: str,
    rtx_5090: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from orchestrator import cli, doctor

    archs = compat.archs_from_torch(arch_list)
    monkeypatch.setattr(doctor, "_runtime_archs", lambda: ("2.5.1+cu121", archs))
    cli.main(["doctor"])
    assert line in capsys.readouterr().out


# --------------------------------------------------------------------------- what could not be checked


@pytest.mark.parametrize(
    ("torch", "cuda", "capabilities", "expected"),
    [
        (
            "==2.13.0",
            "13.0",
            ("6.1", "9.0"),
            [
                "environment.toml: cuda.compute_capabilities: which GPUs torch 2.13.0 cu130 has "
                "kernels for is not in the compatibility table: compute capabilities 6.1 and "
                "9.0 not checked"
            ],
        ),
        (
            "==2.8.0",
            "12.6",
            (RTX_5090,),
            [
                "environment.toml: cuda.compute_capabilities: torch 2.8.0+cu126 has no kernels "
                "for compute capability 12.0 (sm_120; it is built for sm_50, sm_60, sm_70, sm_75, "
                "sm_80, sm_86, sm_90), as far as the table knows; torch builds with sm_120: "
                "2.11+cu128, 2.11+cu130 (unverified), 2.10+cu128, 2.8+cu128 (unverified), "
                "2.8+cu129 (unverified)"
            ],
        ),
        (
            "==1.9.0",
            "11.8",
            ("8.6",),
            [
                "environment.toml: cuda.compute_capabilities: '==1.9.0' admits no torch release "
                "in the compatibility table: compute capability 8.6 not checked"
            ],
        ),
        ("==2.5.1", "12.1", ("8.9", "9.0"), []),  # both run natively: nothing to say
    ],
    ids=["no-list", "unverified-list", "torch-outside-table", "native"],
)
def test_architecture_warnings_say_what_was_not_checked(
    torch: str, cuda: str, capabilities: tuple[str, ...], expected: list[str]
) -> None:
    spec = spec_with_gpus(torch, cuda, *capabilities)
    assert compat.architecture_warnings(spec) == expected
    assert set(expected) <= set(compat.warnings(spec))  # check and doctor print warnings()


def test_every_verb_prints_the_compute_capabilities_it_could_not_check(
    stand_in_bin: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 20 / 15: torch 2.13 + cu130 with compute_capabilities ["6.1", "9.0"] printed
    nothing. The cpu flavor locks packaging alone (torch is in the CUDA flavor only), so the
    lock resolves in a second against PyPI. No GPU here: stand_in_bin keeps the machine's
    NVIDIA tools out of doctor's way."""
    from orchestrator import cli

    (tmp_path / "environment.toml").write_text(
        '[environment]\nname = "g"\npython = "3.11"\n'
        '[cuda]\nversion = "13.0"\ncompute_capabilities = ["6.1", "9.0"]\n'
        '[dependencies]\ntorch = { version = "==2.13.0", flavors = ["cuda"] }\n'
        'packaging = "==24.2"\n',
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    line = (
        "environment.toml: cuda.compute_capabilities: which GPUs torch 2.13.0 cu130 has kernels "
        "for is not in the compatibility table: compute capabilities 6.1 and 9.0 not checked"
    )
    assert cli.main(["lock", "--flavor", "cpu"]) == 0
    assert f"envparity: warning: {line}\n" in capsys.readouterr().err
    assert cli.main(["render"]) == 0
    assert f"envparity: warning: {line}\n" in capsys.readouterr().err
    assert cli.main(["check"]) == 1  # locks/cu130.txt is missing
    assert f"warning: {line}\n" in capsys.readouterr().out
    cli.main(["doctor"])
    assert f"  warn  {line}\n" in capsys.readouterr().out


# --------------------------------------------------------------------------- ABI pairs

NUMPY_1 = (
    "torch builds before 2.3 were compiled against NumPy 1.x; beside NumPy 2, 'import torch' "
    "prints 'A module that was compiled using NumPy 1.x cannot be run in NumPy 2...' and "
    "torch.from_numpy() and Tensor.numpy() raise 'RuntimeError: Numpy is not available'"
)


def numpy_spec(torch: str, numpy: str | None) -> Spec:
    text = f'[environment]\nname = "t"\npython = "3.11"\n[dependencies]\ntorch = "{torch}"\n'
    if numpy is not None:
        text += f'numpy = "{numpy}"\n'
    return loads(text, path=F)


@pytest.mark.parametrize(
    ("torch", "numpy", "bounded"),
    [
        ("==2.2.2", "*", True),  # issue 20: this locked NumPy 2.4
        ("==2.2.2", ">=1.20", True),
        ("==2.2.2", None, True),  # numpy pulled in by another package: bound all the same
        ("==2.2.2+cpu", "*", True),
        (">=2.1,<2.3", "*", True),
        ("==1.13.1", "*", True),  # outside the table, still below 2.3
        ("==2.2.2", "<1.27", False),  # already inside the bound
        ("==2.3.0", "*", False),  # built against NumPy 2.0: either works
        (">=2.2", "*", False),  # the lock's pins are checked instead (abi_conflicts)
        ("", "*", False),
    ],
)
def test_abi_bounds(torch: str, numpy: str | None, bounded: bool) -> None:
    bounds = compat.abi_bounds(numpy_spec(torch, numpy))
    assert [f"{b.package}{b.requires}" for b in bounds] == (["numpy<2"] if bounded else [])


def test_abi_note_says_what_the_lock_takes_and_why() -> None:
    assert compat.abi_notes(numpy_spec("==2.2.2", "*")) == [
        "environment.toml: dependencies.numpy: the locks take numpy <2 (1.26.4 is the newest): "
        f"torch '==2.2.2' needs it; {NUMPY_1}"
    ]
    assert compat.abi_notes(numpy_spec("==2.2.2", None))[0].startswith(
        "environment.toml: dependencies.torch: the locks take numpy <2"
    )


@pytest.mark.parametrize(
    ("torch", "numpy", "said"),
    [
        ("==2.2.2", ">=2", "'>=2' admits no numpy <2, which torch '==2.2.2' needs"),
        (">=2.1,<2.3", "==2.1.0", "'==2.1.0' admits no numpy <2, which torch '<2.3,>=2.1' needs"),
    ],
)
def test_a_numpy_requirement_torch_cannot_load_is_refused(
    torch: str, numpy: str, said: str
) -> None:
    assert [str(p) for p in compat.check(numpy_spec(torch, numpy))] == [
        f'environment.toml: dependencies.numpy: {said} (use numpy = "<2", 1.26.4 being the '
        f"newest, or torch 2.3 or newer): {NUMPY_1}"
    ]


def test_abi_conflicts_judge_a_locks_pins() -> None:
    assert compat.abi_conflicts({"torch": "2.2.2+cpu", "numpy": "2.4.6"}) == [
        'torch 2.2.2+cpu beside numpy 2.4.6 (add numpy = "<2" to [dependencies], 1.26.4 being '
        f"the newest, or use torch 2.3 or newer): {NUMPY_1}"
    ]
    assert compat.abi_conflicts({"torch": "2.2.2", "numpy": "1.26.4"}) == []
    assert compat.abi_conflicts({"torch": "2.3.0", "numpy": "2.4.6"}) == []
    assert compat.abi_conflicts({"numpy": "2.4.6"}) == []


def test_every_abi_bound_names_its_source() -> None:
    for bound in compat.table().abi:
        assert bound.source and bound.symptom and bound.newest, bound.package
        assert SpecifierSet(bound.requires).contains(bound.newest)
