"""Run a probe (the built-in one or ``package.module:function``) and build its fingerprint."""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

from orchestrator.determinism import audit
from orchestrator.errors import UsageError
from orchestrator.probe import fingerprint, inputs
from orchestrator.probe.recorder import DeterminismSettings, Recorder, default_determinism

BUILTIN = "orchestrator.probe.workload:train"
DEFAULT_STEPS = 30
DEFAULT_SEED = 0
MAX_SEED = 2**32 - 1  # the spec's [determinism] seed range; NumPy's legacy seeding takes no more
MAX_THREADS = 1024  # the spec's [determinism] threads range

_REF = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")


def check_reference(reference: str) -> None:
    """``package.module:function`` in ASCII, or ``UsageError`` (before anything is imported)."""
    if not _REF.fullmatch(reference):
        raise UsageError(
            f"--probe {fingerprint.printable(repr(reference))}: expected 'package.module:function'"
        )


def resolve(reference: str) -> Callable[[Recorder], None]:
    """Import ``package.module:function`` with the current folder first on the import path
    (as ``python -m`` has it, and the ``envparity`` script does not); ``UsageError`` if it is
    not there or is not a Python function taking one argument (``os:system`` is refused)."""
    check_reference(reference)
    module_name, _, function_name = reference.partition(":")
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.insert(0, here)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"--probe {reference}: cannot import {module_name}: {exc}") from None
    function = getattr(module, function_name, None)
    if function is None:
        raise UsageError(f"--probe {reference}: {module_name} has no function {function_name}")
    if not (inspect.isfunction(function) or inspect.ismethod(function)):
        raise UsageError(
            f"--probe {reference}: {module_name}.{function_name} is not a probe: a probe is a "
            f"Python function train(rec) (this is a {type(function).__name__})"
        )
    try:
        inspect.signature(function).bind(None)
    except TypeError:
        raise UsageError(
            f"--probe {reference}: {module_name}.{function_name}{inspect.signature(function)} "
            "is not a probe: a probe takes one argument, the Recorder"
        ) from None
    return function


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
) -> fingerprint.Fingerprint:
    """Run the probe in this process; return its fingerprint (``source`` is ``"<this run>"``).

    ``determinism`` (default: the spec's defaults) reaches the probe as ``rec.determinism``
    and is recorded in the fingerprint's ``probe`` section. The code and data files the run
    read under the current folder are recorded in ``inputs`` (``orchestrator.probe.inputs``).
    """
    from orchestrator.probe.capture import capture

    settings = default_determinism() if determinism is None else determinism
    check_arguments(seed, steps, settings)
    reference = probe or BUILTIN
    train = resolve(reference)
    rec = Recorder(
        seed=seed, steps=steps, device=pick_device(device), name=reference, determinism=settings
    )
    with inputs.recording() as opened:
        start = time.perf_counter()
        train(rec)
        seconds = time.perf_counter() - start
    stages = rec.stages()
    read = inputs.collect(Path.cwd(), opened.paths, getattr(train, "__module__", ""))
    data = {
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
        "inputs": read.to_dict(),
        "seconds": round(seconds, 3),
    }
    return fingerprint.Fingerprint.from_dict(data, "<this run>")
