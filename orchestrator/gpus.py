"""The one place that asks the NVIDIA driver what GPUs there are (``nvidia-smi``)."""

from __future__ import annotations

import functools
import re
import shutil
from dataclasses import dataclass

from orchestrator import process
from orchestrator.errors import EnvparityError

_CAPABILITY = re.compile(r"^[0-9]{1,2}\.[0-9]$")


@functools.cache
def nvidia_smi(*args: str) -> str | None:
    """``nvidia-smi ARGS``'s output; None where there is no NVIDIA driver or it fails."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        return process.run(["nvidia-smi", *args], timeout=30).stdout
    except EnvparityError:
        return None


def visible() -> bool:
    """Whether an NVIDIA GPU answers here."""
    listed = nvidia_smi("-L")
    return bool(listed and "GPU" in listed)


def compute_capabilities() -> list[tuple[str, str]] | None:
    """``[(name, "12.0"), ...]`` per GPU, from ``nvidia-smi --query-gpu=name,compute_cap``;
    None where there is no driver or it is too old to report ``compute_cap`` (before 510)."""
    out = nvidia_smi("--query-gpu=name,compute_cap", "--format=csv,noheader")
    if out is None:
        return None
    found: list[tuple[str, str]] = []
    for line in out.strip().splitlines():
        name, _, capability = (part.strip() for part in line.rpartition(","))
        if not _CAPABILITY.match(capability):  # an old driver answers "[N/A]" or an error
            return None
        found.append((name, capability))
    return found


@dataclass(frozen=True)
class Gpu:
    """One GPU as ``nvidia-smi -q`` names it: ``bus_id`` ``"00000000:01:00.0"``, ``brand``
    its NVML brand as printed (``"GeForce"``, ``"NVIDIA"``, ``"Tesla"``; None if not printed)."""

    name: str
    bus_id: str
    brand: str | None


@dataclass(frozen=True)
class Driver:
    """The NVIDIA driver: ``version`` (``"551.78"``), the newest CUDA it runs (``cuda``,
    ``"12.4"``: what ``cuDriverGetVersion`` reports, and what the container toolkit compares
    an image's ``cuda>=`` with; None if not printed) and its GPUs in PCI bus order."""

    version: str
    cuda: str | None
    gpus: tuple[Gpu, ...]


_Q_FIELD = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z][A-Za-z0-9 ]*?)\s*: (?P<value>.*?)\s*$")
_Q_GPU = re.compile(
    r"^GPU (?P<bus>[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-9A-Fa-f])\s*$"
)


def driver() -> Driver | None:
    """The driver and its GPUs from ``nvidia-smi -q`` (its "Driver Version", "CUDA Version",
    each "GPU <bus id>" section's "Product Name" and "Product Brand"); None where there is no
    driver or it prints no driver version."""
    out = nvidia_smi("-q")
    if out is None:
        return None
    top: dict[str, str] = {}
    gpus: list[dict[str, str]] = []
    for line in out.splitlines():
        gpu = _Q_GPU.match(line)
        if gpu:
            gpus.append({"bus": gpu["bus"]})
            continue
        field = _Q_FIELD.match(line)
        if field is None:
            continue
        depth = len(field["indent"])
        if depth == 0:
            top.setdefault(field["key"], field["value"])
        elif gpus and depth == 4:  # the GPU's own fields, not those of its sub-sections
            gpus[-1].setdefault(field["key"], field["value"])
    version = top.get("Driver Version", "")
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)*", version):
        return None
    cuda = top.get("CUDA Version")
    return Driver(
        version=version,
        cuda=cuda if cuda and re.fullmatch(r"[0-9]+\.[0-9]+", cuda) else None,
        gpus=tuple(
            Gpu(
                name=g.get("Product Name", "an NVIDIA GPU"),
                bus_id=g["bus"],
                brand=g.get("Product Brand") or None,
            )
            for g in gpus
        ),
    )
