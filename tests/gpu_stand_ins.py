"""Stand-ins for NVIDIA's command-line tools, for tests on machines without a GPU.

They are shell scripts put first on ``PATH``: ``nvidia-smi`` answers the calls envparity makes
(``-L``, ``--query-gpu=name,compute_cap``, ``--query-gpu=name,driver_version``, ``-q``) and
``nvcc`` answers ``--version``, printing what the real tools print in those formats, with
the GPUs, driver and release a test asks for. The formats are copied from public bug reports:
``nvidia-smi -q`` from anderskm/gputil#38 and MatthiasSchinzel/sysmon#12 (the NVSMI LOG
header, "GPU <bus id>" sections, four-space fields, eight-space sub-fields); the CSV queries
as nvidia-smi prints them with ``--format=csv,noheader`` ("NAME, VALUE"); ``nvcc --version``
from the CUDA 12.4 toolkit as quoted in many reports ("Cuda compilation tools, release 12.4,
V12.4.131"). They are not the real tools: no driver, no GPU, nothing else of nvidia-smi.
Anything else they are asked prints nvidia-smi's usage error and exits 2.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StandInGpu:
    """One GPU the stand-in nvidia-smi lists: name, compute capability, NVML brand as
    ``nvidia-smi -q`` prints it ("GeForce", "NVIDIA", "Tesla", ...), PCI bus ID."""

    name: str
    capability: str = "9.0"
    brand: str = "NVIDIA"
    bus_id: str = "00000000:01:00.0"


H100 = StandInGpu("NVIDIA H100 80GB HBM3", "9.0", "NVIDIA", "00000000:1B:00.0")
RTX_4070 = StandInGpu("NVIDIA GeForce RTX 4070", "8.9", "GeForce", "00000000:01:00.0")
RTX_5090 = StandInGpu("NVIDIA GeForce RTX 5090", "12.0", "GeForce", "00000000:01:00.0")
RTX_A6000 = StandInGpu("NVIDIA RTX A6000", "8.6", "NVIDIA RTX", "00000000:41:00.0")


def _q_log(gpus: Sequence[StandInGpu], driver: str, cuda: str | None) -> str:
    """``nvidia-smi -q`` in the NVSMI LOG layout (fields abridged to those around the ones read)."""
    lines = [
        "",
        "==============NVSMI LOG==============",
        "",
        "Timestamp                                 : Fri Nov 21 09:29:49 2025",
        f"Driver Version                            : {driver}",
    ]
    if cuda is not None:
        lines.append(f"CUDA Version                              : {cuda}")
    lines += ["", f"Attached GPUs                             : {len(gpus)}"]
    for gpu in gpus:
        lines += [
            f"GPU {gpu.bus_id}",
            f"    Product Name                          : {gpu.name}",
            f"    Product Brand                         : {gpu.brand}",
            "    Display Mode                          : Disabled",
            "    Persistence Mode                      : Enabled",
            "    MIG Mode",
            "        Current                           : N/A",
            "        Pending                           : N/A",
            "    Driver Model",
            "        Current                           : N/A",
            "        Pending                           : N/A",
            "    Serial Number                         : N/A",
            "    Minor Number                          : 0",
        ]
    return "\n".join(lines) + "\n"


def nvidia_smi(
    bin_dir: Path, gpus: Sequence[StandInGpu], *, driver: str, cuda: str | None = None
) -> Path:
    """Write the stand-in ``nvidia-smi`` into ``bin_dir`` for ``gpus`` (in PCI bus order, as
    nvidia-smi lists them) on a driver ``driver`` that reports CUDA ``cuda`` (None: a driver
    whose ``-q`` prints no CUDA version)."""
    listed = "\n".join(f"GPU {i}: {g.name} (UUID: GPU-stand-in-{i})" for i, g in enumerate(gpus))
    caps = "\n".join(f"{g.name}, {g.capability}" for g in gpus)
    drivers = "\n".join(f"{g.name}, {driver}" for g in gpus)
    script = f"""#!/bin/sh
# A stand-in for nvidia-smi (tests/gpu_stand_ins.py): no driver, no GPU.
case "$*" in
  "-L") printf '%s\\n' {shlex.quote(listed)} ;;
  "--query-gpu=name,compute_cap --format=csv,noheader") printf '%s\\n' {shlex.quote(caps)} ;;
  "--query-gpu=name,driver_version --format=csv,noheader") printf '%s\\n' {shlex.quote(drivers)} ;;
  "-q") printf '%s' {shlex.quote(_q_log(gpus, driver, cuda))} ;;
  *) echo "Invalid combination of input arguments. Please run 'nvidia-smi -h' for help." >&2; exit 2 ;;
esac
"""
    path = bin_dir / "nvidia-smi"
    path.write_text(script, encoding="utf-8")
    path.chmod(0o755)
    return path


def nvcc(bin_dir: Path, release: str, build: str) -> Path:
    """Write the stand-in ``nvcc`` into ``bin_dir``: ``--version`` prints CUDA ``release``
    (``"12.4"``) with the build version ``build`` (``"12.4.131"``)."""
    text = (
        "nvcc: NVIDIA (R) Cuda compiler driver\n"
        "Copyright (c) 2005-2024 NVIDIA Corporation\n"
        "Built on Thu_Mar_28_02:18:24_PDT_2024\n"
        f"Cuda compilation tools, release {release}, V{build}\n"
        f"Build cuda_{release}.r{release}/compiler.34097967_0\n"
    )
    script = f"""#!/bin/sh
# A stand-in for nvcc (tests/gpu_stand_ins.py): it compiles nothing.
if [ "$1" = --version ]; then printf '%s' {shlex.quote(text)}; exit 0; fi
echo "nvcc fatal   : No input files specified; use option --help for more information" >&2
exit 1
"""
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / "nvcc"
    path.write_text(script, encoding="utf-8")
    path.chmod(0o755)
    return path
