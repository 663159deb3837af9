"""The one place that asks the NVIDIA driver what GPUs there are (``nvidia-smi``)."""

from __future__ import annotations

import functools
import re
import shutil

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
