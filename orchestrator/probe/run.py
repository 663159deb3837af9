"""Run a probe (the built-in one or ``package.module:function``) and build its fingerprint."""

from __future__ import annotations

import importlib
import inspect
import os
import platform
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

from orchestrator.determinism import audit, flag_findings
from orchestrator.determinism_settings import MAX_STEPS, DeterminismSettings
from orchestrator.errors import UsageError
from orchestrator.messages import quote
from orchestrator.probe import fingerprint, inputs
from orchestrator.probe.recorder import Recorder

BUILTIN = "orchestrator.probe.workload:train"
DEFAULT_STEPS = 30
MAX_WORLD_SIZE = 8  # data-parallel processes the built-in probe starts at most

_REF = re.compile(
    r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*", re.ASCII
)


def check_reference(reference: str) -> None:
    """``package.module:function`` in ASCII, or ``UsageError`` (before anything is imported)."""
    if not _REF.fullmatch(reference):
        raise UsageError(
            f"--probe {fingerprint.printable(quote(reference))}: expected 'package.module:function'"
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
    """``auto`` -> ``cuda`` when a GPU is usable, else ``cpu``; ``cuda`` without one: error;
    ``mps`` (Apple GPUs, macOS) only when ``torch.backends.mps.is_available()``, never chosen
    by ``auto``: the fingerprint records the device the probe ran on."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError(
            "--device cuda: torch sees no CUDA device here "
            f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})"
        )
    mps = getattr(torch.backends, "mps", None)
    if device == "mps" and not (mps is not None and mps.is_available()):
        raise UsageError(
            "--device mps: torch sees no MPS device here (Apple GPUs, macOS 12.3 or newer; "
            f"torch {torch.__version__} on {sys.platform} {platform.machine()})"
        )
    return device


def check_arguments(steps: int, world_size: int | None) -> None:
    """The ranges the settings do not own, checked before anything is imported or trained."""
    if not 1 <= steps <= MAX_STEPS:  # the spec's [verify] steps range
        raise UsageError(f"--steps {steps}: not between 1 and {MAX_STEPS}")
    if world_size is not None and not 1 <= world_size <= MAX_WORLD_SIZE:
        raise UsageError(f"--world-size {world_size}: not between 1 and {MAX_WORLD_SIZE}")


def run_probe(
    *,
    probe: str | None = None,
    steps: int = DEFAULT_STEPS,
    device: str = "auto",
    determinism: DeterminismSettings | None = None,
    world_size: int | None = None,
) -> fingerprint.Fingerprint:
    """Run the probe in this process; return its fingerprint (``source`` is ``"<this run>"``).

    ``determinism`` (default: the spec's defaults, seed 0) reaches the probe as
    ``rec.determinism``; its seed as ``rec.seed``; both are recorded in the fingerprint's
    ``probe`` section. ``world_size`` (``None``: one process) asks for data-parallel training
    with that many processes (``rec.world_size``), recorded as ``probe.world_size``. The code
    and data files the run read under the current folder are recorded in ``inputs``
    (``orchestrator.probe.inputs``). Raises ``UsageError`` for bad arguments, before anything
    is trained.
    """
    from orchestrator.probe.capture import capture, watch_compile

    settings = DeterminismSettings() if determinism is None else determinism
    seed = settings.seed
    check_arguments(steps, world_size)
    reference = probe or BUILTIN
    compiled = watch_compile()  # before the probe's module runs its module-level code
    train = resolve(reference)
    rec = Recorder(
        seed=seed,
        steps=steps,
        device=pick_device(device),
        name=reference,
        determinism=settings,
        world_size=world_size,
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
            "determinism": settings.flags(),
            **({} if world_size is None else {"world_size": world_size}),
        },
        "stages": stages,
        "audit": [str(f) for f in [*audit(), *flag_findings(rec.flag_history())]],
        "environment": capture(compiled),
        "inputs": read.to_dict(),
        "seconds": round(seconds, 3),
    }
    return fingerprint.Fingerprint.from_dict(data, "<this run>")
