"""The one place that asks the NVIDIA driver what GPUs there are (``nvidia-smi``)."""

from __future__ import annotations

import functools
import shutil

from orchestrator import process
from orchestrator.errors import EnvparityError


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
