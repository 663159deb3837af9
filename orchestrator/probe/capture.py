"""Capture the environment a probe runs in, and explain how two captures differ.

A capture holds what ``python -m torch.utils.collect_env`` reports plus what it misses:
determinism and precision flags, start-up values of the launch variables, the CPU capability
torch dispatches to, the BLAS/oneDNN build configuration, thread counts, the hash-seed state,
GPU models, SM counts and driver, and every installed distribution with its version.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from dataclasses import dataclass
from typing import Any

from orchestrator.determinism import LAUNCH_VARIABLES, hash_seed_state, startup_environment

CAPTURE_FORMAT = "envparity-capture"
CAPTURE_VERSION = 1


def capture() -> dict[str, Any]:
    """This process's environment as JSON-ready data (imports torch and numpy)."""
    import numpy as np
    import torch

    start = startup_environment()
    return {
        "format": CAPTURE_FORMAT,
        "version": CAPTURE_VERSION,
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
            "hash_seed": hash_seed_state(),
        },
        "platform": {
            "system": platform.system(),
            "machine": platform.machine(),
            "release": platform.release(),
            "libc": "-".join(platform.libc_ver()),
            "cpu_model": _cpu_model(),
            "cpu_count": os.cpu_count(),
        },
        "launch": {name: start.get(name) for name in LAUNCH_VARIABLES},
        "numpy": {"version": np.__version__},
        "torch": _torch(torch),
        "flags": _flags(torch),
        "gpus": _gpus(torch),
        "collect_env": _collect_env(),
        "packages": _packages(),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _torch(torch: Any) -> dict[str, Any]:
    cudnn = torch.backends.cudnn
    return {
        "version": torch.__version__,
        "git_version": torch.version.git_version,
        "cuda": torch.version.cuda,
        "hip": torch.version.hip,
        "cudnn": cudnn.version() if cudnn.is_available() else None,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkl": torch.backends.mkl.is_available(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "config": torch.__config__.show(),
        "num_threads": torch.get_num_threads(),
        "num_interop_threads": torch.get_num_interop_threads(),
    }


def _flags(torch: Any) -> dict[str, Any]:
    backends = torch.backends
    flags: dict[str, Any] = {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn.enabled": backends.cudnn.enabled,
        "cudnn.deterministic": backends.cudnn.deterministic,
        "cudnn.benchmark": backends.cudnn.benchmark,
    }
    if hasattr(backends.cuda.matmul, "fp32_precision"):
        for name in ("cuda.matmul", "cudnn.conv", "cudnn.rnn", "mkldnn.matmul", "mkldnn.conv"):
            owner, attr = name.split(".")
            flags[f"{name}.fp32_precision"] = getattr(getattr(backends, owner), attr).fp32_precision
    else:
        flags["cuda.matmul.allow_tf32"] = backends.cuda.matmul.allow_tf32
        flags["cudnn.allow_tf32"] = backends.cudnn.allow_tf32
        flags["float32_matmul_precision"] = torch.get_float32_matmul_precision()
    return flags


def _gpus(torch: Any) -> list[dict[str, Any]]:
    """One entry per visible GPU (CUDA code path: not run on these CPU-only machines)."""
    if not torch.cuda.is_available():
        return []
    gpus = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        gpus.append(
            {
                "name": props.name,
                "capability": f"{props.major}.{props.minor}",
                "sm_count": props.multi_processor_count,
                "memory": props.total_memory,
            }
        )
    return gpus


def _collect_env() -> dict[str, Any]:
    """``torch.utils.collect_env``'s report, less the package lists (see ``packages``)."""
    from unittest import mock

    from torch.utils import collect_env

    # Its `pip list` subprocess costs ~0.65 s of its ~0.72 s and repeats `packages`: skipped.
    with mock.patch.object(collect_env, "get_pip_packages", lambda *a, **k: ("", "")):
        info = collect_env.get_env_info()._asdict()  # type: ignore[no-untyped-call]
    for name in ("pip_packages", "conda_packages", "pip_version"):
        info.pop(name, None)
    return dict(sorted(info.items()))


def _packages() -> dict[str, str]:
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(_normalise(name), dist.version)
    return dict(sorted(found.items()))


def _normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


# --------------------------------------------------------------------------- diff


@dataclass(frozen=True)
class Difference:
    """One value that differs between two captures, with its dotted key path."""

    key: str  # e.g. "packages.numpy", "launch.PYTHONHASHSEED", "torch.num_threads"
    a: Any
    b: Any

    def __str__(self) -> str:
        return f"{self.key}: {_show(self.a)} vs {_show(self.b)}"


def _show(value: Any) -> str:
    if value is None:
        return "(absent)"
    text = str(value)
    return text if len(text) <= 60 and "\n" not in text else f"<{len(text)} characters>"


# Keys that name the run rather than the environment: never reported as differences.
_IGNORED = frozenset({"python.executable"})


def diff(a: dict[str, Any], b: dict[str, Any]) -> list[Difference]:
    """Every leaf value that differs between two captures, sorted by key."""
    found: list[Difference] = []
    _walk(a, b, "", found)
    return sorted(found, key=lambda d: d.key)


def _walk(a: Any, b: Any, path: str, found: list[Difference]) -> None:
    if path in _IGNORED or path in ("format", "version"):
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            _walk(a.get(key), b.get(key), f"{path}.{key}" if path else str(key), found)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _walk(x, y, f"{path}[{i}]", found)
    elif a != b:
        found.append(Difference(path, a, b))
