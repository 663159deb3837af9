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
import site
import sys
from dataclasses import dataclass
from typing import Any

from orchestrator.determinism import LAUNCH_VARIABLES, hash_seed_state, startup_environment
from orchestrator.probe.fingerprint import (
    CAPTURE_FORMAT,
    CAPTURE_VERSION,
    Environment,
    JsonValue,
    Scalar,
    capture_from_dict,
    printable,
)

# Variables that choose CPU kernels, BLAS code paths or threading in the libraries torch
# ships (recorded at start-up, None when unset), beyond the launch variables envparity sets.
# Sources: oneDNN "CPU dispatcher control" (DNNL_/ONEDNN_MAX_CPU_ISA, *_DEFAULT_FPMATH_MODE),
# MKL "Instruction set specific dispatching" (MKL_ENABLE_INSTRUCTIONS, MKL_CBWR,
# MKL_DEBUG_CPU_TYPE), OpenBLAS README (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE), PyTorch
# "CPU threading" and ATen dispatch (ATEN_CPU_CAPABILITY), Intel OpenMP (KMP_*).
DISPATCH_VARIABLES = (
    "ATEN_CPU_CAPABILITY",
    "DNNL_MAX_CPU_ISA",
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_DEFAULT_FPMATH_MODE",
    "ONEDNN_DEFAULT_FPMATH_MODE",
    "DNNL_CPU_ISA_HINTS",
    "ONEDNN_CPU_ISA_HINTS",
    "MKL_ENABLE_INSTRUCTIONS",
    "MKL_CBWR",
    "MKL_DEBUG_CPU_TYPE",
    "MKL_DYNAMIC",
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "OMP_DYNAMIC",
    "OMP_PROC_BIND",
    "OMP_SCHEDULE",
    "KMP_DETERMINISTIC_REDUCTION",
    "KMP_AFFINITY",
    "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE",
)
# Any other variable set at start-up with one of these prefixes is recorded too, so a
# spelling not listed above still shows as a difference.
DISPATCH_PREFIXES = ("ATEN_", "DNNL_", "ONEDNN_", "MKL_", "OPENBLAS_", "KMP_", "OMP_", "GOMP_")


def capture(compiled: CompileCalls | None = None) -> dict[str, Any]:
    """This process's environment as JSON-ready data (imports torch and numpy); checked
    against the format (``fingerprint.capture_from_dict``) before it is returned.

    ``compiled``: the ``torch.compile`` calls a probe run made (``watch_compile``), recorded as
    ``flags.compile``; ``None`` (``envparity capture``, no code ran) leaves the key out.
    """
    import numpy as np
    import torch

    data = _capture(np, torch)
    if compiled is not None:
        data["flags"].update(compiled.flags(torch))
    capture_from_dict(data, "this process's capture")
    return data


class CompileCalls:
    """The ``torch.compile`` calls made while a probe ran: backend and mode, in call order.

    ``watch_compile`` wraps ``torch.compile`` before the probe's module is imported (so a
    module-level ``@torch.compile`` is seen too). A call is not yet a compilation (that
    happens at the first call of the compiled function); ``flags`` adds how many frames
    TorchDynamo compiled, read from its counters when it was imported.
    """

    def __init__(self) -> None:
        self.calls: list[str] = []

    def flags(self, torch: Any) -> dict[str, Scalar]:
        """``compile``: ``"not called"`` or the distinct ``backend mode=...`` calls joined by
        ``"; "``; ``compile.frames``: frames compiled (0 when TorchDynamo was never imported)."""
        frames = 0
        dynamo = sys.modules.get("torch._dynamo.utils")
        if dynamo is not None:
            frames = int(getattr(dynamo, "counters", {}).get("stats", {}).get("unique_graphs", 0))
        called = "; ".join(dict.fromkeys(self.calls)) or "not called"
        return {"compile": called, "compile.frames": frames}


def watch_compile() -> CompileCalls:
    """Wrap ``torch.compile`` so that each call's backend and mode are recorded (imports torch,
    not TorchDynamo); the wrapper passes every argument through unchanged."""
    import functools

    import torch

    calls = CompileCalls()
    original = torch.compile

    @functools.wraps(original)
    def compile(*args: Any, **kwargs: Any) -> Any:
        backend = kwargs.get("backend", "inductor")
        name = backend if isinstance(backend, str) else getattr(backend, "__name__", "custom")
        calls.calls.append(f"{name} mode={kwargs.get('mode') or 'default'}")
        return original(*args, **kwargs)

    torch.compile = compile
    return calls


def launch_values(start: dict[str, str]) -> dict[str, str | None]:
    """Start-up values of every variable that changes the numbers (None: unset)."""
    names = set(LAUNCH_VARIABLES) | set(DISPATCH_VARIABLES)
    names |= {n for n in start if n.startswith(DISPATCH_PREFIXES)}
    return {name: start.get(name) for name in sorted(names)}


def _capture(np: Any, torch: Any) -> dict[str, Any]:
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
        "launch": launch_values(start),
        "numpy": {"version": np.__version__},
        "torch": _torch(torch),
        "flags": _flags(torch),
        "gpus": _gpus(torch),
        "collect_env": _collect_env(),
        "packages": _packages(),
    }


def _cpu_model() -> str:
    """The CPU's model name: on macOS ``machdep.cpu.brand_string`` ("Apple M2 Pro"), where
    ``platform.processor()`` says only "arm"; Linux's ``/proc/cpuinfo``; else
    ``platform.processor()``."""
    if sys.platform == "darwin":
        found = sysctl_string("machdep.cpu.brand_string")
        if found:
            return found
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def sysctl_string(name: str) -> str | None:
    """A string from the BSD/macOS ``sysctlbyname(3)`` (what ``sysctl -n NAME`` prints), read
    through ctypes: no subprocess, the standard library only (the probe runs in bare targets).
    None where the C library has no ``sysctlbyname`` (Linux) or the name is unknown."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        call = libc.sysctlbyname
    except (OSError, AttributeError):
        return None
    size = ctypes.c_size_t(0)
    if call(name.encode(), None, ctypes.byref(size), None, 0) != 0 or not size.value:
        return None
    buffer = ctypes.create_string_buffer(size.value)
    if call(name.encode(), buffer, ctypes.byref(size), None, 0) != 0:
        return None
    return buffer.value.decode("utf-8", "replace").strip() or None


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
        # less its "CPU capability usage" line: that is cpu_capability, set by ATEN_CPU_CAPABILITY
        "config": "\n".join(
            line
            for line in torch.__config__.show().splitlines()
            if "CPU capability usage" not in line
        ),
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
        # What code sets in the running process that changes the numbers:
        "default_dtype": str(torch.get_default_dtype()).removeprefix("torch."),
        "mkldnn.enabled": backends.mkldnn.enabled,
        "flush_denormal": flush_denormal(torch),
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


def flush_denormal(torch: Any) -> bool:
    """Whether this thread flushes float32 denormals to zero (``torch.set_flush_denormal(True)``,
    the x86 FTZ/DAZ bits; torch has no getter): 2**-140, a denormal, times 1 is zero then."""
    tiny = torch.tensor([2.0**-140], dtype=torch.float32)
    return bool((tiny * 1.0).item() == 0.0)


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


def install_paths() -> list[str]:
    """The folders distributions are installed into: site-packages and dist-packages of this
    interpreter (and its base, for a venv that includes it) and the user site. Not the rest
    of ``sys.path``: importing setuptools adds its ``_vendor`` folder there, whose bundled
    .dist-info folders are not installed packages."""
    paths = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        paths.append(site.getusersitepackages())
    paths += [p for p in sys.path if os.path.basename(p) in ("site-packages", "dist-packages")]
    return list(dict.fromkeys(p for p in paths if os.path.isdir(p)))


def _packages() -> dict[str, str]:
    """Installed distributions (``importlib.metadata`` over ``install_paths``), normalised
    names; the first found wins, as for imports."""
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions(path=install_paths()):
        name, version = _name_and_version(dist)
        if name and version is not None:
            found.setdefault(normalise(name), version)
    return dict(sorted(found.items()))


def _name_and_version(dist: importlib.metadata.Distribution) -> tuple[str | None, str | None]:
    """``Name`` and ``Version`` from the head of a distribution's metadata: the header fields
    end at the first empty line (core metadata, RFC 822 style), so the long description after
    it is never parsed. ``dist.metadata`` parses the whole file with the email package: 0.06 s
    for torch's 120 distributions against 0.005 s. Falls back to it for a file without those
    fields."""
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break
        key, sep, value = line.partition(":")
        if sep and key in ("Name", "Version") and key not in fields:
            fields[key] = value.strip()
    if len(fields) < 2:
        return dist.metadata["Name"], dist.version
    return fields["Name"], fields["Version"]


def normalise(name: str) -> str:
    """A distribution name as the capture keys it: lower case, ``_`` and ``.`` as ``-``."""
    return name.lower().replace("_", "-").replace(".", "-")


# --------------------------------------------------------------------------- diff


@dataclass(frozen=True)
class Difference:
    """One value that differs between two captures, with its dotted key path."""

    key: str  # e.g. "packages.numpy", "launch.PYTHONHASHSEED", "torch.num_threads"
    a: JsonValue
    b: JsonValue

    def __str__(self) -> str:
        return f"{printable(self.key)}: {show(self.a)} vs {show(self.b)}"


def show(value: JsonValue) -> str:
    """A value on one line: long or multi-line text as its length; control characters escaped."""
    if value is None:
        return "(absent)"
    text = str(value)
    if len(text) == 71 and text.startswith("sha256:"):
        return text[:19]  # sha256: and 12 hex digits name a file version well enough
    return printable(text) if len(text) <= 60 and "\n" not in text else f"<{len(text)} characters>"


# Keys that name the run rather than the environment: never reported as differences.
_IGNORED = frozenset({"python.executable"})


# Keys every capture records now but older ones did not (2026-12-08): absent from one
# capture, such a key was not recorded there, which is no difference.
_RECORDED_SINCE = frozenset(
    {
        "flags.default_dtype",
        "flags.mkldnn.enabled",
        "flags.flush_denormal",
        "flags.compile",
        "flags.compile.frames",
        "launch.CUDA_DEVICE_ORDER",
    }
)


def diff(a: Environment, b: Environment) -> list[Difference]:
    """Every leaf value that differs between two captures, sorted by key (a key only one of
    them records, because the other predates it, is not a difference)."""
    left, right = dict(a.leaves()), dict(b.leaves())
    return [
        Difference(key, left.get(key), right.get(key))
        for key in sorted(set(left) | set(right))
        if key not in _IGNORED
        and left.get(key) != right.get(key)
        and not (key in _RECORDED_SINCE and (key not in left or key not in right))
    ]
