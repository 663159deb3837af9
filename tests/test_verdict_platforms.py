"""Mac against Linux in the verdict. The Linux fingerprint is real (the built-in probe run here
with torch 2.13.0+cpu); the Mac ones are **stand-ins** made from it, as an Apple Silicon run
would record itself: ``Darwin``/``arm64``, CPU "Apple M2 Pro", PyPI's torch 2.13.0 built with
BLAS "accelerate" (PyTorch's cmake/Modules/FindBLAS.cmake names Apple's Accelerate so), its
losses a little (or far) apart. No probe has run on a Mac or on MPS."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator import process
from orchestrator.probe import fingerprint
from orchestrator.references import hardware_class
from orchestrator.verdict.compare import blas, compare
from tests.helpers import CLI, REPO


@pytest.fixture(scope="module")
def linux(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("linux") / "linux.json"
    process.run([*CLI, "probe", "--steps", "3", "--device", "cpu", "--out", str(out)], cwd=REPO)
    return out


def as_a_mac(linux: Path, out: Path, *, apart: float, device: str = "cpu") -> Path:
    """A stand-in for the same probe on an M2 Pro: its capture, and losses ``apart``."""
    data: dict[str, Any] = json.loads(linux.read_text(encoding="utf-8"))
    env = data["environment"]
    env["platform"].update(
        system="Darwin", machine="arm64", cpu_model="Apple M2 Pro", libc="-", release="24.6.0"
    )
    torch = env["torch"]
    assert "BLAS_INFO=mkl" in torch["config"]  # what this machine's torch says
    torch.update(
        version="2.13.0",
        config=torch["config"].replace("BLAS_INFO=mkl", "BLAS_INFO=accelerate"),
        cpu_capability="DEFAULT",
        mkl=False,
    )
    env["packages"]["torch"] = "2.13.0"
    data["probe"]["device"] = device
    stages = data["stages"]
    stages["losses"] = [(float.fromhex(x) * (1 + apart)).hex() for x in stages["losses"]]
    stages["final_params"] = "sha256:" + "0" * 64  # other kernels: other final bits
    out.write_text(json.dumps(data), encoding="utf-8")
    return out


def test_a_mac_within_the_cross_device_tolerance_is_judged_so_naming_platform_and_blas(
    linux: Path, tmp_path: Path
) -> None:
    mac = as_a_mac(linux, tmp_path / "mac.json", apart=3e-7)
    done = process.run([*CLI, "compare", str(linux), str(mac)], cwd=REPO, check=False)
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert lines[:3] == [
        "within tolerance (2 fingerprints)",
        f"{linux} vs {mac}: within tolerance",
        "  different platforms (Linux x86_64, "
        + json.loads(linux.read_text())["environment"]["platform"]["cpu_model"]
        + ", BLAS MKL vs Darwin arm64, Apple M2 Pro, BLAS Accelerate): CPU kernels and BLAS "
        "differ, so bitwise equality is not expected; losses compared with rtol=0.0001",
    ]
    assert "    torch.blas: MKL vs Accelerate" in lines


def test_a_mac_far_apart_diverges_with_the_platform_and_blas_ranked_first(
    linux: Path, tmp_path: Path
) -> None:
    mac = as_a_mac(linux, tmp_path / "mac.json", apart=1e-2)
    verdict = compare([fingerprint.load(linux), fingerprint.load(mac)])
    pair = verdict.pairs[0]
    assert pair.kind == "diverged" and pair.stage == "losses" and pair.step == 0
    top = [c.split(": ", 2)[1] for c in pair.causes[:4]]
    assert set(top) == {
        "platform.cpu_model",
        "torch.blas",
        "torch.cpu_capability",
        "platform.machine",
    }


def test_the_hardware_class_names_apple_cpus_and_mps_is_another_device(
    linux: Path, tmp_path: Path
) -> None:
    mac = fingerprint.load(as_a_mac(linux, tmp_path / "mac.json", apart=0.0))
    assert hardware_class(mac) == "cpu-apple-m2-pro-default"
    assert blas(mac) == "Accelerate" and blas(fingerprint.load(linux)) == "MKL"
    on_mps = fingerprint.load(as_a_mac(linux, tmp_path / "mps.json", apart=3e-7, device="mps"))
    assert on_mps.device == "mps"
    pair = compare([mac, on_mps]).pairs[0]
    assert pair.kind == "tolerance"
    assert pair.reason.startswith("different devices (cpu vs mps Apple M2 Pro): ")
