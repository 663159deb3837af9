"""The probe on Apple hardware, as far as this Linux machine can show it: ``--device mps`` is
refused here with what it needs (real torch, no MPS device), and a Mac's CPU is named by its
model ("Apple M2 Pro"), read with ``sysctlbyname`` as macOS has it. The Mac is a stand-in
(``sys.platform`` and the sysctl answer patched); no probe has run on MPS or on a Mac."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import pytest

from orchestrator import process
from orchestrator.probe import capture
from tests.helpers import CLI, REPO


def test_probe_on_mps_is_refused_where_torch_sees_no_mps_device(tmp_path: Path) -> None:
    import torch

    done = process.run(
        [*CLI, "probe", "--device", "mps", "--steps", "1", "--out", str(tmp_path / "a.json")],
        check=False,
        cwd=REPO,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "envparity: --device mps: torch sees no MPS device here (Apple GPUs, macOS 12.3 or "
        f"newer; torch {torch.__version__} on {sys.platform} {platform.machine()})"
    )
    assert not (tmp_path / "a.json").exists()


def test_a_macs_cpu_is_named_by_its_model(monkeypatch: pytest.MonkeyPatch) -> None:
    # This machine's C library has no sysctlbyname (Linux): the real call says so.
    assert capture.sysctl_string("machdep.cpu.brand_string") is None
    # A stand-in Mac: sys.platform "darwin", and sysctlbyname answering as an M2 Pro does.
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(
        capture,
        "sysctl_string",
        lambda name: "Apple M2 Pro" if name == "machdep.cpu.brand_string" else None,
    )
    assert capture._cpu_model() == "Apple M2 Pro"
    monkeypatch.setattr(sys, "platform", "linux")
    assert capture._cpu_model() != "Apple M2 Pro"  # Linux: /proc/cpuinfo's model name
