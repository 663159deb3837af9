"""orchestrator/cuda_host.py and the GPU section of doctor, on machines without a GPU.

nvidia-smi and nvcc here are stand-ins (tests/gpu_stand_ins.py): shell scripts that print
what the real tools print, in the formats of public bug reports, for the GPUs and driver a
test names. What they stand for is named in each test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator import cli, compat, cuda_host, gpus
from orchestrator.cuda_host import HostFacts, requirement_holds
from tests import gpu_stand_ins
from tests.gpu_stand_ins import H100, RTX_4070, RTX_A6000, StandInGpu

# NVIDIA_REQUIRE_CUDA as the images carry it, copied from public copies of their Dockerfiles:
# dist/12.6.3/ubuntu2404/base/Dockerfile, dist/12.8.0/ubuntu2404/base/Dockerfile and
# dist/12.4.1 (UBI 9) of gitlab.com/nvidia/container-images/cuda.
REQUIRE_12_6_3 = (
    "cuda>=12.6 brand=unknown,driver>=470,driver<471 brand=grid,driver>=470,driver<471 "
    "brand=tesla,driver>=470,driver<471 brand=nvidia,driver>=470,driver<471 "
    "brand=quadro,driver>=470,driver<471 brand=quadrortx,driver>=470,driver<471 "
    "brand=nvidiartx,driver>=470,driver<471 brand=vapps,driver>=470,driver<471 "
    "brand=vpc,driver>=470,driver<471 brand=vcs,driver>=470,driver<471 "
    "brand=vws,driver>=470,driver<471 brand=cloudgaming,driver>=470,driver<471 "
    "brand=unknown,driver>=535,driver<536 brand=grid,driver>=535,driver<536 "
    "brand=tesla,driver>=535,driver<536 brand=nvidia,driver>=535,driver<536 "
    "brand=quadro,driver>=535,driver<536 brand=quadrortx,driver>=535,driver<536 "
    "brand=nvidiartx,driver>=535,driver<536 brand=vapps,driver>=535,driver<536 "
    "brand=vpc,driver>=535,driver<536 brand=vcs,driver>=535,driver<536 "
    "brand=vws,driver>=535,driver<536 brand=cloudgaming,driver>=535,driver<536 "
    "brand=unknown,driver>=550,driver<551 brand=grid,driver>=550,driver<551 "
    "brand=tesla,driver>=550,driver<551 brand=nvidia,driver>=550,driver<551 "
    "brand=quadro,driver>=550,driver<551 brand=quadrortx,driver>=550,driver<551 "
    "brand=nvidiartx,driver>=550,driver<551 brand=vapps,driver>=550,driver<551 "
    "brand=vpc,driver>=550,driver<551 brand=vcs,driver>=550,driver<551 "
    "brand=vws,driver>=550,driver<551 brand=cloudgaming,driver>=550,driver<551"
)
REQUIRE_12_8_0 = (
    "cuda>=12.8 brand=unknown,driver>=470,driver<471 brand=grid,driver>=470,driver<471 "
    "brand=tesla,driver>=470,driver<471 brand=nvidia,driver>=470,driver<471 "
    "brand=quadro,driver>=470,driver<471 brand=quadrortx,driver>=470,driver<471 "
    "brand=nvidiartx,driver>=470,driver<471 brand=vapps,driver>=470,driver<471 "
    "brand=vpc,driver>=470,driver<471 brand=vcs,driver>=470,driver<471 "
    "brand=vws,driver>=470,driver<471 brand=cloudgaming,driver>=470,driver<471 "
    "brand=unknown,driver>=535,driver<536 brand=grid,driver>=535,driver<536 "
    "brand=tesla,driver>=535,driver<536 brand=nvidia,driver>=535,driver<536 "
    "brand=quadro,driver>=535,driver<536 brand=quadrortx,driver>=535,driver<536 "
    "brand=nvidiartx,driver>=535,driver<536 brand=vapps,driver>=535,driver<536 "
    "brand=vpc,driver>=535,driver<536 brand=vcs,driver>=535,driver<536 "
    "brand=vws,driver>=535,driver<536 brand=cloudgaming,driver>=535,driver<536 "
    "brand=unknown,driver>=550,driver<551 brand=grid,driver>=550,driver<551 "
    "brand=tesla,driver>=550,driver<551 brand=nvidia,driver>=550,driver<551 "
    "brand=quadro,driver>=550,driver<551 brand=quadrortx,driver>=550,driver<551 "
    "brand=nvidiartx,driver>=550,driver<551 brand=vapps,driver>=550,driver<551 "
    "brand=vpc,driver>=550,driver<551 brand=vcs,driver>=550,driver<551 "
    "brand=vws,driver>=550,driver<551 brand=cloudgaming,driver>=550,driver<551 "
    "brand=unknown,driver>=560,driver<561 brand=grid,driver>=560,driver<561 "
    "brand=tesla,driver>=560,driver<561 brand=nvidia,driver>=560,driver<561 "
    "brand=quadro,driver>=560,driver<561 brand=quadrortx,driver>=560,driver<561 "
    "brand=nvidiartx,driver>=560,driver<561 brand=vapps,driver>=560,driver<561 "
    "brand=vpc,driver>=560,driver<561 brand=vcs,driver>=560,driver<561 "
    "brand=vws,driver>=560,driver<561 brand=cloudgaming,driver>=560,driver<561 "
    "brand=unknown,driver>=565,driver<566 brand=grid,driver>=565,driver<566 "
    "brand=tesla,driver>=565,driver<566 brand=nvidia,driver>=565,driver<566 "
    "brand=quadro,driver>=565,driver<566 brand=quadrortx,driver>=565,driver<566 "
    "brand=nvidiartx,driver>=565,driver<566 brand=vapps,driver>=565,driver<566 "
    "brand=vpc,driver>=565,driver<566 brand=vcs,driver>=565,driver<566 "
    "brand=vws,driver>=565,driver<566 brand=cloudgaming,driver>=565,driver<566"
)
REQUIRE_12_4_1 = (
    "cuda>=12.4 brand=tesla,driver>=470,driver<471 brand=unknown,driver>=470,driver<471 "
    "brand=nvidia,driver>=470,driver<471 brand=nvidiartx,driver>=470,driver<471 "
    "brand=geforce,driver>=470,driver<471 brand=geforcertx,driver>=470,driver<471 "
    "brand=quadro,driver>=470,driver<471 brand=quadrortx,driver>=470,driver<471 "
    "brand=titan,driver>=470,driver<471 brand=titanrtx,driver>=470,driver<471 "
    "brand=tesla,driver>=525,driver<526 brand=unknown,driver>=525,driver<526 "
    "brand=nvidia,driver>=525,driver<526 brand=nvidiartx,driver>=525,driver<526 "
    "brand=geforce,driver>=525,driver<526 brand=geforcertx,driver>=525,driver<526 "
    "brand=quadro,driver>=525,driver<526 brand=quadrortx,driver>=525,driver<526 "
    "brand=titan,driver>=525,driver<526 brand=titanrtx,driver>=525,driver<526 "
    "brand=tesla,driver>=535,driver<536 brand=unknown,driver>=535,driver<536 "
    "brand=nvidia,driver>=535,driver<536 brand=nvidiartx,driver>=535,driver<536 "
    "brand=geforce,driver>=535,driver<536 brand=geforcertx,driver>=535,driver<536 "
    "brand=quadro,driver>=535,driver<536 brand=quadrortx,driver>=535,driver<536 "
    "brand=titan,driver>=535,driver<536 brand=titanrtx,driver>=535,driver<536"
)


@pytest.mark.parametrize(
    ("cuda", "real"),
    [("12.8", REQUIRE_12_8_0), ("12.6", REQUIRE_12_6_3), ("12.4", REQUIRE_12_4_1)],
)
def test_the_table_rebuilds_the_images_variable_exactly(cuda: str, real: str) -> None:
    assert compat.table().images[cuda].expression == real


def test_every_recorded_image_requirement_names_its_source() -> None:
    images = compat.table().images
    assert sorted(images) == ["11.8", "12.4", "12.6", "12.8", "12.9", "13.0"]
    for requirement in images.values():
        assert requirement.source and requirement.branches and requirement.brands


@pytest.mark.parametrize(
    ("facts", "holds"),
    [
        # WSL2 with a GeForce on Windows driver 551.78 (CUDA 12.4), as in SyneRBI/PETRIC2#27
        (HostFacts(cuda="12.4", driver="551.78", brand="geforce"), False),
        # a driver that reports 12.8
        (HostFacts(cuda="12.8", driver="570.86.15", brand="geforce"), True),
        # a data-centre GPU on the 535 branch: forward compatibility
        (HostFacts(cuda="12.2", driver="535.104.05", brand="nvidia"), True),
        # the same branch on a GeForce: not among the image's brands
        (HostFacts(cuda="12.2", driver="535.104.05", brand="geforce"), False),
        # brand unknown: the answer depends on it
        (HostFacts(cuda="12.2", driver="535.104.05", brand=None), None),
        # a branch outside the list decides without the brand
        (HostFacts(cuda="12.5", driver="555.42.06", brand=None), False),
    ],
)
def test_requirement_holds_as_the_container_toolkit_evaluates_it(
    facts: HostFacts, holds: bool | None
) -> None:
    assert requirement_holds(compat.table().images["12.8"].expression, facts) is holds


def test_versions_compare_number_by_number_and_trailing_zeros_do_not_count() -> None:
    facts = HostFacts(cuda="12.10", driver="570.0")
    assert requirement_holds("cuda>=12.9", facts) is True  # 10 > 9, not "12.10" < "12.9"
    assert requirement_holds("driver=570", facts) is True
    assert requirement_holds("driver!=570.0.0", facts) is False
    assert requirement_holds("BRAND=GeForce", HostFacts(None, None, brand="geforce")) is True


@pytest.mark.parametrize("expression", ["cuda>>12", "colour=red", "brand>tesla", "cuda>="])
def test_an_unreadable_condition_is_refused(expression: str) -> None:
    with pytest.raises(ValueError, match="not a requirement condition"):
        requirement_holds(expression, HostFacts(cuda="12.4", driver="550.1"))


@pytest.mark.parametrize(
    ("printed", "word"),
    [
        ("GeForce", "geforce"),
        ("GeForce RTX", "geforcertx"),
        ("NVIDIA RTX", "nvidiartx"),
        ("NVIDIA", "nvidia"),
        ("NVIDIA Virtual Compute Server", "vcs"),
        ("NVIDIA Cloud Gaming", "cloudgaming"),
        (None, None),
    ],
)
def test_brand_words(printed: str | None, word: str | None) -> None:
    assert cuda_host.brand_word(printed) == word


def test_driver_reads_nvidia_smi_q(stand_in_bin: Path) -> None:
    gpu_stand_ins.nvidia_smi(stand_in_bin, [H100, RTX_A6000], driver="550.54.15", cuda="12.4")
    assert gpus.driver() == gpus.Driver(
        version="550.54.15",
        cuda="12.4",
        gpus=(
            gpus.Gpu(name="NVIDIA H100 80GB HBM3", bus_id="00000000:1B:00.0", brand="NVIDIA"),
            gpus.Gpu(name="NVIDIA RTX A6000", bus_id="00000000:41:00.0", brand="NVIDIA RTX"),
        ),
    )


def test_no_driver_no_answer(stand_in_bin: Path) -> None:
    assert gpus.driver() is None  # no nvidia-smi on PATH


# --------------------------------------------------------------------------- doctor


@dataclass
class Host:
    """A machine for doctor: stand-ins go into ``bin`` (first on PATH), the project into
    ``folder`` (the working directory)."""

    bin: Path
    folder: Path
    monkeypatch: pytest.MonkeyPatch
    capsys: pytest.CaptureFixture[str]

    def project(
        self,
        *,
        cuda: str = "12.8",
        torch: str = "==2.7.0",
        image: str | None = "nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04",
    ) -> None:
        text = (
            f'[environment]\nname = "g"\npython = "3.11"\n[cuda]\nversion = "{cuda}"\n'
            f'[dependencies]\ntorch = "{torch}"\n'
        )
        if image is not None:
            text += f'[targets.devcontainer]\nimage = "{image}"\n'
        (self.folder / "environment.toml").write_text(text, encoding="utf-8")
        self.monkeypatch.chdir(self.folder)

    def doctor(self) -> tuple[int, str]:
        code = cli.main(["doctor"])
        return code, self.capsys.readouterr().out


@pytest.fixture
def host(
    stand_in_bin: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Host:
    return Host(stand_in_bin, tmp_path, monkeypatch, capsys)


def test_doctor_fails_a_cuda_12_8_image_on_a_wsl_driver_that_runs_cuda_12_4(
    host: Host,
) -> None:
    """Stand-in for the host of SyneRBI/PETRIC2#27: a GeForce on WSL2, Windows driver 551.78,
    whose nvidia-smi says CUDA 12.4; the generated devcontainer uses a CUDA 12.8 image."""
    gpu_stand_ins.nvidia_smi(host.bin, [RTX_4070], driver="551.78", cuda="12.4")
    host.project()
    code, out = host.doctor()
    assert code == 1
    assert (
        "  FAIL  devcontainer image nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04 requires "
        "cuda>=12.8 (its NVIDIA_REQUIRE_CUDA); driver 551.78 runs CUDA 12.4, and no "
        "forward-compatibility clause of the image holds for NVIDIA GeForce RTX 4070 (GeForce): "
        "the NVIDIA container toolkit refuses to start it ('unsatisfied condition: cuda>=12.8, "
        "please update your driver to a newer version, or use an earlier cuda container')\n"
        "        -> install a driver that runs CUDA 12.8 or newer (Linux: 570.26 or newer); or an "
        'image this driver runs: cuda.version = "11.8" and an nvidia/cuda:11.8.0-* tag (torch '
        "2.7.0 has a CUDA 11.8 build); by hand, `docker run -e NVIDIA_DISABLE_REQUIRE=1` skips "
        "the check: this driver runs CUDA 12.8 programs under minor-version compatibility "
        "(torch's wheels, not PTX compiled for newer GPUs)\n"
    ) in out


def test_doctor_takes_the_drivers_cuda_from_the_table_when_nvidia_smi_omits_it(
    host: Host,
) -> None:
    """Stand-in nvidia-smi whose -q has no "CUDA Version" line: 550.54.15 is 12.4's driver."""
    gpu_stand_ins.nvidia_smi(host.bin, [RTX_4070], driver="550.54.15", cuda=None)
    host.project()
    _, out = host.doctor()
    assert "driver 550.54.15 runs CUDA 12.4, and no forward-compatibility clause" in out


@pytest.mark.parametrize(
    ("gpu", "driver", "cuda", "line"),
    [
        (
            RTX_4070,
            "570.86.15",
            "12.8",
            "  ok    devcontainer image nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04 requires "
            "cuda>=12.8: driver 570.86.15 runs CUDA 12.8\n",
        ),
        (
            H100,
            "535.104.05",
            "12.2",
            "  ok    devcontainer image nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04 requires "
            "cuda>=12.8; driver 535.104.05 runs CUDA 12.2, and it starts through CUDA forward "
            "compatibility (the image's cuda-compat libraries, on this GPU brand and driver "
            "branch)\n",
        ),
        (
            StandInGpu("NVIDIA H100 80GB HBM3", brand=""),
            "535.104.05",
            "12.2",
            "  warn  devcontainer image nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04 requires "
            "cuda>=12.8; driver 535.104.05 runs CUDA 12.2: whether it starts through forward "
            "compatibility depends on the brand of NVIDIA H100 80GB HBM3, which 'nvidia-smi -q' "
            "did not print\n",
        ),
    ],
    ids=["driver-new-enough", "forward-compatibility", "brand-unknown"],
)
def test_doctor_passes_an_image_the_toolkit_starts(
    gpu: StandInGpu,
    driver: str,
    cuda: str,
    line: str,
    host: Host,
) -> None:
    """Stand-in nvidia-smi: one GPU on ``driver`` reporting CUDA ``cuda``."""
    gpu_stand_ins.nvidia_smi(host.bin, [gpu], driver=driver, cuda=cuda)
    host.project()
    assert line in host.doctor()[1]


def test_doctor_cannot_check_an_image_that_is_not_nvidia_cuda(
    host: Host,
) -> None:
    gpu_stand_ins.nvidia_smi(host.bin, [RTX_4070], driver="551.78", cuda="12.4")
    host.project(image="pytorch/pytorch:2.7.0-cuda12.8-cudnn9-devel")
    assert (
        "  warn  devcontainer image pytorch/pytorch:2.7.0-cuda12.8-cudnn9-devel: not an "
        "nvidia/cuda tag, so its NVIDIA_REQUIRE_CUDA is not known here: whether the NVIDIA "
        "container toolkit starts it on this driver was not checked\n"
        "        -> docker inspect --format '{{json .Config.Env}}' "
        "pytorch/pytorch:2.7.0-cuda12.8-cudnn9-devel shows it\n"
    ) in host.doctor()[1]


@pytest.mark.parametrize(
    ("release", "build", "cuda", "line"),
    [
        (
            "12.4",
            "12.4.131",
            "13.0",
            "  FAIL  host nvcc 12.4 ({nvcc}) is not cuda.version 13.0: torch.utils.cpp_extension "
            "refuses to build extensions such as flash-attn against torch's CUDA ('The detected "
            "CUDA version (12.4) mismatches the version that was used to compile PyTorch "
            "(13.0)')\n        -> build extensions in the nix shell or the devcontainer (nvcc "
            "13.0), or point CUDA_HOME at a CUDA 13.0 toolkit\n",
        ),
        (
            "12.4",
            "12.4.131",
            "12.8",
            "  warn  host nvcc 12.4 ({nvcc}) is not cuda.version 12.8: torch.utils.cpp_extension "
            "builds with it after a warning ('minor version mismatch'), but an nvcc older than "
            "torch's CUDA may not know the GPU targets and headers torch was built with, and "
            "extension builds such as flash-attn's then fail\n",
        ),
        ("12.8", "12.8.93", "12.8", "  ok    host nvcc 12.8 ({nvcc}) is cuda.version 12.8\n"),
    ],
    ids=["major-differs", "older-minor", "same"],
)
def test_doctor_compares_the_host_nvcc_with_cuda_version(
    release: str,
    build: str,
    cuda: str,
    line: str,
    host: Host,
) -> None:
    """Stand-ins: nvcc ``release`` on PATH (as flash-attn's build would find it, through
    torch's CUDA_HOME search), and an H100 on a driver new enough for ``cuda``."""
    nvcc = gpu_stand_ins.nvcc(host.bin, release, build)
    gpu_stand_ins.nvidia_smi(host.bin, [H100], driver="580.95.05", cuda="13.0")
    torch = "==2.13.0" if cuda == "13.0" else "==2.7.0"
    host.project(cuda=cuda, torch=torch, image=None)
    assert line.format(nvcc=nvcc) in host.doctor()[1]


def test_doctor_follows_cuda_home_like_torch(
    host: Host,
) -> None:
    """CUDA_HOME wins over the nvcc on PATH (torch.utils.cpp_extension._find_cuda_home)."""
    gpu_stand_ins.nvcc(host.bin, "12.4", "12.4.131")
    home = host.folder / "cuda-12.8"
    nvcc = gpu_stand_ins.nvcc(home / "bin", "12.8", "12.8.93")
    host.monkeypatch.setenv("CUDA_HOME", str(home))
    host.project(image=None)
    assert f"  ok    host nvcc 12.8 ({nvcc}) is cuda.version 12.8\n" in host.doctor()[1]
    host.monkeypatch.setenv("CUDA_HOME", str(host.folder / "empty"))
    (host.folder / "empty").mkdir()
    assert (
        f"  warn  {host.folder / 'empty'} has no bin/nvcc: torch.utils.cpp_extension fails there"
    ) in host.doctor()[1]


def test_doctor_without_a_toolkit_says_where_it_looked(
    host: Host,
) -> None:
    host.project(image=None)
    assert (
        "  ok    no CUDA toolkit on this host (CUDA_HOME, CUDA_PATH, nvcc on PATH, "
        "/usr/local/cuda): extensions are built where nvcc 12.8 is, the nix shell or the "
        "devcontainer\n"
    ) in host.doctor()[1]


def test_doctor_warns_on_mixed_gpus_without_pci_bus_order(
    host: Host,
) -> None:
    """Stand-in nvidia-smi listing an RTX A6000 and an H100 (PCI bus order: H100 first)."""
    gpu_stand_ins.nvidia_smi(host.bin, [H100, RTX_A6000], driver="570.86.15", cuda="12.8")
    host.project(image=None)
    warning = (
        "  warn  GPUs of 2 models (NVIDIA H100 80GB HBM3, NVIDIA RTX A6000) and "
        "CUDA_DEVICE_ORDER is not set: CUDA numbers them fastest first, nvidia-smi by PCI bus "
        "ID, so CUDA_VISIBLE_DEVICES=1 (or cuda:1) is another GPU for torch than for "
        "nvidia-smi\n        -> set CUDA_DEVICE_ORDER=PCI_BUS_ID before Python starts "
        "('envparity run', the nix shell and the devcontainer set it)\n"
    )
    assert warning in host.doctor()[1]
    host.monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    out = host.doctor()[1]
    assert warning not in out
    assert (
        "  ok    GPUs of 2 models (NVIDIA H100 80GB HBM3, NVIDIA RTX A6000), numbered by PCI "
        "bus ID in CUDA too\n"
    ) in out


def test_one_gpu_model_needs_no_device_order(
    host: Host,
) -> None:
    two = [H100, StandInGpu(H100.name, bus_id="00000000:2A:00.0")]
    gpu_stand_ins.nvidia_smi(host.bin, two, driver="570.86.15", cuda="12.8")
    host.project(image=None)
    assert "GPUs of" not in host.doctor()[1]
