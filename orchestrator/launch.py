"""The launch environment: settings that only work when set before the interpreter starts.

``PYTHONHASHSEED`` is read once, when CPython starts: setting ``os.environ["PYTHONHASHSEED"]``
inside a running interpreter (as many seed-everything recipes do) changes nothing for that
interpreter's ``hash()`` of strings; only child processes see it. ``CUBLAS_WORKSPACE_CONFIG``
is read when cuBLAS creates its handle, and the thread-count variables when the OpenMP/BLAS
runtimes start. So these are set by whoever launches Python: ``envparity run``, the flake's
shell, the devcontainer's ``containerEnv`` and Dockerfile ``ENV``, and the verify targets all
use this one function.

Stdlib only: it is imported inside bare target environments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.determinism_settings import DeterminismSettings

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# Every variable launch_environment() may set.
SET_AT_LAUNCH = (
    "PYTHONHASHSEED",
    "CUDA_DEVICE_ORDER",
    "CUBLAS_WORKSPACE_CONFIG",
    "NVIDIA_TF32_OVERRIDE",
    *THREAD_VARIABLES,
)


def launch_environment(settings: DeterminismSettings) -> dict[str, str]:
    """The variables to set before starting Python for ``settings``, sorted by name.

    ``settings.launch_env()`` is the usual way to call this.
    """
    env = {"PYTHONHASHSEED": str(settings.seed)}
    # CUDA numbers GPUs fastest first unless told otherwise, nvidia-smi (and NVML, and the
    # container toolkit) by PCI bus ID: on a machine with two GPU models CUDA_VISIBLE_DEVICES=1
    # is then another GPU for torch than for nvidia-smi. Read when the CUDA driver initialises.
    # Source: CUDA C++ Programming Guide, "CUDA Environment Variables" (CUDA_DEVICE_ORDER:
    # FASTEST_FIRST, the default, or PCI_BUS_ID).
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    if settings.deterministic:  # true or "warn"
        # cuBLAS picks reduction strategies per stream unless its workspace is fixed; torch
        # refuses deterministic mode on CUDA >= 10.2 without this (":16:8" also works, slower).
        env["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    if not settings.tf32:
        # Ampere+ GPUs may run float32 matmuls/convolutions in TF32; this turns that off in
        # cuBLAS and cuDNN for every library in the process, not only torch.
        env["NVIDIA_TF32_OVERRIDE"] = "0"
    if settings.threads is not None:
        for name in THREAD_VARIABLES:
            env[name] = str(settings.threads)
    return dict(sorted(env.items()))
