"""Run a probe (the built-in one or ``package.module:function``) and build its fingerprint."""

from __future__ import annotations

import importlib
import re
import time
from collections.abc import Callable
from typing import Any

from orchestrator.determinism import audit
from orchestrator.errors import UsageError
from orchestrator.messages import quote
from orchestrator.probe import fingerprint
from orchestrator.probe.recorder import DeterminismSettings, Recorder, default_determinism

BUILTIN = "orchestrator.probe.workload:train"
DEFAULT_STEPS = 30
DEFAULT_SEED = 0
MAX_SEED = 2**32 - 1  # the spec's [determinism] seed range; NumPy's legacy seeding takes no more
MAX_THREADS = 1024  # the spec's [determinism] threads range

_REF = re.compile(
    r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*", re.ASCII
)


def resolve(reference: str) -> Callable[[Recorder], None]:
    """Import ``package.module:function``; a clear ``UsageError`` if it is not there."""
    if not _REF.fullmatch(reference):  # the whole value, no trailing newline
        raise UsageError(f"--probe {quote(reference)}: expected 'package.module:function'")
    module_name, _, function_name = reference.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"--probe {reference}: cannot import {module_name}: {exc}") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise UsageError(f"--probe {reference}: {module_name} has no function {function_name}")
    return function  # type: ignore[no-any-return]


def pick_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is usable, else ``cpu``; ``cuda`` without one: error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError(
            "--device cuda: torch sees no CUDA device here "
            f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})"
        )
    return device


def check_arguments(seed: int, steps: int, determinism: DeterminismSettings) -> None:
    """The spec's ranges, checked before anything is imported or trained."""
    if not 0 <= seed <= MAX_SEED:
        raise UsageError(f"--seed {seed}: outside 0..{MAX_SEED}")
    if steps < 1:
        raise UsageError(f"--steps {steps}: must be at least 1")
    threads = determinism["threads"]
    if threads is not None and not 1 <= threads <= MAX_THREADS:
        raise UsageError(f"--threads {threads}: not between 1 and {MAX_THREADS}")


def run_probe(
    *,
    probe: str | None = None,
    seed: int = DEFAULT_SEED,
    steps: int = DEFAULT_STEPS,
    device: str = "auto",
    determinism: DeterminismSettings | None = None,
) -> dict[str, Any]:
    """Run the probe in this process; return the fingerprint data (see ``fingerprint.load``).

    ``determinism`` (default: the spec's defaults) reaches the probe as ``rec.determinism``
    and is recorded in the fingerprint's ``probe`` section.
    """
    from orchestrator.probe.capture import capture

    settings = default_determinism() if determinism is None else determinism
    check_arguments(seed, steps, settings)
    reference = probe or BUILTIN
    train = resolve(reference)
    rec = Recorder(
        seed=seed, steps=steps, device=pick_device(device), name=reference, determinism=settings
    )
    start = time.perf_counter()
    train(rec)
    seconds = time.perf_counter() - start
    stages = rec.stages()
    return {
        "format": fingerprint.FORMAT,
        "version": fingerprint.VERSION,
        "probe": {
            "name": reference,
            "seed": seed,
            "steps": steps,
            "device": rec.device,
            "determinism": dict(settings),
        },
        "stages": stages,
        "audit": [str(f) for f in audit()],
        "environment": capture(),
        "seconds": round(seconds, 3),
    }
