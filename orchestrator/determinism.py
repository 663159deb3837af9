"""Seeding and determinism for training code: one call, what it set, and what still breaks.

Users import this in their own training scripts::

    from orchestrator.determinism import seed_everything, dataloader_kwargs

    report = seed_everything(42)            # random, NumPy, torch (CPU+CUDA), flags
    rng = report.numpy_generator            # a seeded numpy.random.Generator
    loader = DataLoader(ds, shuffle=True, num_workers=2, **dataloader_kwargs(42))

What a running interpreter cannot fix for itself (``PYTHONHASHSEED``,
``CUBLAS_WORKSPACE_CONFIG`` before CUDA starts, thread-count variables) belongs to
``orchestrator.determinism_settings.launch_environment``; ``audit()`` names what is still
wrong in this process.

Imports only the stdlib at module level; torch and numpy inside the functions that need them,
so this module works in bare target environments holding only the lock's packages.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from orchestrator.determinism_settings import SET_AT_LAUNCH, DeterminismSettings, DeterministicMode

# Variables that only take effect when set before the interpreter (or CUDA, or the OpenMP/BLAS
# runtimes) starts. The fingerprint records their start-up values.
LAUNCH_VARIABLES = (
    *SET_AT_LAUNCH,  # what envparity sets, and what else changes the numbers:
    "ATEN_CPU_CAPABILITY",
    "MKL_CBWR",
    "ONEDNN_MAX_CPU_ISA",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_LAUNCH_BLOCKING",
)


@dataclass(frozen=True)
class SeedReport:
    """What ``seed_everything`` set, and the seeded NumPy ``Generator`` it made."""

    seed: int
    settings: Mapping[str, object]
    numpy_generator: Any = field(repr=False, compare=False)

    def to_dict(self) -> dict[str, object]:
        return {"seed": self.seed, "settings": dict(self.settings)}


@dataclass(frozen=True)
class Finding:
    """One thing in the running process that breaks repeatability, and how to fix it."""

    code: str  # stable identifier, e.g. "hash-seed-random"
    severity: str  # "error": results will differ between runs; "warning": they may
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.message} ({self.fix})"


def seed_everything(
    seed: int | DeterminismSettings,
    *,
    deterministic_algorithms: DeterministicMode | None = None,
    tf32: bool | None = None,
    cudnn_benchmark: bool | None = None,
    threads: int | None = None,
) -> SeedReport:
    """Seed Python, NumPy and torch and set torch's determinism and precision flags.

    ``seed`` is a seed (the other settings then default to the spec's defaults) or a whole
    ``DeterminismSettings`` (a probe's ``rec.determinism``, a spec's ``spec.determinism``);
    keyword arguments given override it. ``deterministic_algorithms="warn"`` is torch's
    ``warn_only=True``: an op without a deterministic implementation warns instead of raising.
    Returns every setting made. ``PYTHONHASHSEED`` is deliberately not touched: setting it
    here would change nothing for this interpreter (see ``orchestrator.determinism_settings.launch_environment``).
    Raises ``ValueError`` for a value outside the spec's ranges.
    """
    import numpy as np
    import torch

    base = seed if isinstance(seed, DeterminismSettings) else DeterminismSettings(seed=seed)
    given: dict[str, Any] = {
        "deterministic_algorithms": deterministic_algorithms,
        "tf32": tf32,
        "cudnn_benchmark": cudnn_benchmark,
        "threads": threads,
    }
    s = replace(base, **{k: v for k, v in given.items() if v is not None})
    settings: dict[str, object] = {}
    random.seed(s.seed)
    settings["random.seed"] = s.seed
    np.random.seed(s.seed)
    settings["numpy.random.seed"] = s.seed
    generator = np.random.default_rng(s.seed)
    settings["numpy.random.default_rng"] = s.seed
    torch.manual_seed(s.seed)  # seeds every CUDA device too, lazily
    settings["torch.manual_seed"] = s.seed
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(s.seed)
        settings["torch.cuda.manual_seed_all"] = s.seed
    use_deterministic_algorithms(torch, s.deterministic, warn_only=s.warn_only)
    settings["torch.use_deterministic_algorithms"] = s.deterministic_algorithms
    torch.backends.cudnn.deterministic = s.deterministic
    settings["torch.backends.cudnn.deterministic"] = s.deterministic
    torch.backends.cudnn.benchmark = s.cudnn_benchmark
    settings["torch.backends.cudnn.benchmark"] = s.cudnn_benchmark
    settings.update(_set_tf32(torch, s.tf32))
    if s.threads is not None:
        torch.set_num_threads(s.threads)
        settings["torch.set_num_threads"] = s.threads
    return SeedReport(seed=s.seed, settings=settings, numpy_generator=generator)


_INDUCTOR_CONFIG = "torch._inductor.config"


def use_deterministic_algorithms(torch: Any, mode: bool, *, warn_only: bool = False) -> None:
    """``torch.use_deterministic_algorithms(mode, warn_only=...)``, without its import cost.

    torch's function (torch >= 2.5, ``torch/__init__.py``) also sets Inductor's
    ``torch._inductor.config.deterministic = mode``, importing ``torch._inductor`` (and
    ``torch._dynamo``, sympy, ...) to do it: 1.3-2.4 s here, more than training the probe. When
    Inductor is not imported yet, this sets the global flag alone
    (``torch._C._set_deterministic_algorithms``) and hands Inductor the same value when it
    is first imported (``_InductorDeterminism``), so a later ``torch.compile`` sees what
    torch's own function would have set. Where Inductor is already imported, or this torch
    lacks the private setter, torch's function runs as it is.
    """
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if _INDUCTOR_CONFIG in sys.modules or setter is None:
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
        return
    setter(mode, warn_only=warn_only)
    if not any(isinstance(f, _InductorDeterminism) for f in sys.meta_path):
        sys.meta_path.insert(0, _InductorDeterminism())


class _InductorDeterminism:
    """An import hook (``sys.meta_path``, PEP 451) that, when ``torch._inductor.config`` is
    first imported, sets its ``deterministic`` to torch's global flag at that moment, as
    ``torch.use_deterministic_algorithms`` would have; then it removes itself."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != _INDUCTOR_CONFIG:
            return None
        import importlib.machinery

        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            run(module)
            torch = sys.modules["torch"]
            module.deterministic = bool(torch.are_deterministic_algorithms_enabled())

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _set_tf32(torch: Any, tf32: bool) -> dict[str, object]:
    """TF32 on or off in whichever API this torch has; mixing the two APIs is an error."""
    settings: dict[str, object] = {}
    cudnn = torch.backends.cudnn
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):  # torch >= 2.9
        value = "tf32" if tf32 else "ieee"
        torch.backends.cuda.matmul.fp32_precision = value
        cudnn.conv.fp32_precision = value
        cudnn.rnn.fp32_precision = value
        settings["torch.backends.cuda.matmul.fp32_precision"] = value
        settings["torch.backends.cudnn.conv.fp32_precision"] = value
        settings["torch.backends.cudnn.rnn.fp32_precision"] = value
        if not tf32:  # oneDNN on CPU may otherwise run float32 matmuls in bf16/tf32
            torch.backends.mkldnn.matmul.fp32_precision = "ieee"
            torch.backends.mkldnn.conv.fp32_precision = "ieee"
            settings["torch.backends.mkldnn.matmul.fp32_precision"] = "ieee"
            settings["torch.backends.mkldnn.conv.fp32_precision"] = "ieee"
    else:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        cudnn.allow_tf32 = tf32
        torch.set_float32_matmul_precision("high" if tf32 else "highest")
        settings["torch.backends.cuda.matmul.allow_tf32"] = tf32
        settings["torch.backends.cudnn.allow_tf32"] = tf32
        settings["torch.set_float32_matmul_precision"] = "high" if tf32 else "highest"
    return settings


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed Python and NumPy in each worker from torch's seed.

    torch seeds its own RNG in each worker from the loader's generator; this does the same
    for the libraries torch does not own, so augmentation drawn with them repeats.
    """
    import numpy as np
    import torch

    worker_seed = torch.initial_seed() % 2**32
    random.seed(worker_seed)
    np.random.seed(worker_seed)


def dataloader_kwargs(seed: int) -> dict[str, Any]:
    """``generator`` and ``worker_init_fn`` for ``torch.utils.data.DataLoader``."""
    import torch

    generator = torch.Generator()
    generator.manual_seed(seed)
    worker_init_fn: Callable[[int], None] = seed_worker
    return {"generator": generator, "worker_init_fn": worker_init_fn}


# --------------------------------------------------------------------------- audit


def startup_environment() -> dict[str, str]:
    """The environment this process was started with, before any ``os.environ`` change.

    Linux keeps it in ``/proc/self/environ``; elsewhere this falls back to ``os.environ``,
    which cannot tell a start-up value from one set later.
    """
    try:
        raw = open("/proc/self/environ", "rb").read()  # noqa: SIM115 - one read, closed by GC
    except OSError:
        return dict(os.environ)
    env: dict[str, str] = {}
    for entry in raw.split(b"\0"):
        name, sep, value = entry.partition(b"=")
        if sep:
            env[name.decode(errors="replace")] = value.decode(errors="replace")
    return env


def hash_seed_state() -> str:
    """``"fixed:N"`` when str hashes repeat across processes, ``"random"`` when they do not.

    Reads what the interpreter used at start-up, not what ``os.environ`` says now.
    """
    if sys.flags.ignore_environment:
        return "random" if sys.flags.hash_randomization else "fixed:0"
    value = startup_environment().get("PYTHONHASHSEED", "random")
    if value == "random" or not value.isdigit():
        return "random"
    return f"fixed:{int(value)}"


def audit() -> list[Finding]:
    """Name what breaks repeatability in the running process.

    Looks at torch only if this process has imported it already: auditing never imports it.
    """
    findings: list[Finding] = []
    start = startup_environment()
    findings.extend(_audit_hash_seed(start))
    torch = sys.modules.get("torch")
    if torch is not None:
        findings.extend(_audit_torch(torch, start))
    return findings


def _audit_hash_seed(start: Mapping[str, str]) -> list[Finding]:
    fix = "start Python with PYTHONHASHSEED set, e.g. through 'envparity run -- CMD'"
    if hash_seed_state() != "random":
        return []
    if sys.flags.ignore_environment and "PYTHONHASHSEED" in start:
        message = "python was started with -E/-I, so PYTHONHASHSEED was ignored"
        return [Finding("hash-seed-ignored", "error", message, "drop -E/-I from the command")]
    now = os.environ.get("PYTHONHASHSEED")
    if now is not None and now != start.get("PYTHONHASHSEED"):
        message = (
            f"PYTHONHASHSEED={now} was set inside the running interpreter; str hashes "
            "(and set/dict-of-str iteration order) in this process are still random"
        )
        return [Finding("hash-seed-set-late", "error", message, fix)]
    message = (
        "PYTHONHASHSEED was not set at start-up: str hashes, and so the iteration order "
        "of sets of strings, differ in every process"
    )
    return [Finding("hash-seed-random", "error", message, fix)]


def _audit_torch(torch: Any, start: Mapping[str, str]) -> list[Finding]:
    findings: list[Finding] = []
    if not torch.are_deterministic_algorithms_enabled():
        findings.append(
            Finding(
                "deterministic-algorithms-off",
                "warning",
                "torch.use_deterministic_algorithms is off: nondeterministic kernels may run",
                "call seed_everything(seed) or torch.use_deterministic_algorithms(True)",
            )
        )
    if not torch.cuda.is_available():
        return findings
    cudnn = torch.backends.cudnn
    if cudnn.benchmark:
        findings.append(
            Finding(
                "cudnn-benchmark-on",
                "error",
                "torch.backends.cudnn.benchmark is on: convolution algorithms are timed and "
                "chosen per run",
                "set it to False",
            )
        )
    if not cudnn.deterministic:
        findings.append(
            Finding(
                "cudnn-nondeterministic",
                "warning",
                "torch.backends.cudnn.deterministic is off",
                "set it to True",
            )
        )
    workspace = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    if workspace not in (":4096:8", ":16:8"):
        findings.append(
            Finding(
                "cublas-workspace",
                "error",
                "CUBLAS_WORKSPACE_CONFIG is not ':4096:8' or ':16:8': cuBLAS reductions may "
                "differ between runs",
                "set it before starting Python ('envparity run -- CMD')",
            )
        )
    elif torch.cuda.is_initialized() and start.get("CUBLAS_WORKSPACE_CONFIG") != workspace:
        findings.append(
            Finding(
                "cublas-workspace-late",
                "warning",
                "CUBLAS_WORKSPACE_CONFIG was set after start-up and CUDA is initialised: it only "
                "applies if it was set before the first cuBLAS call",
                "set it before starting Python ('envparity run -- CMD')",
            )
        )
    if _tf32_enabled(torch):
        findings.append(
            Finding(
                "tf32-on",
                "warning",
                "TF32 is allowed for float32 matmuls or convolutions: results differ between GPU "
                "models and from CPU",
                "seed_everything(seed, tf32=False)",
            )
        )
    return findings


def _tf32_enabled(torch: Any) -> bool:
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        return "tf32" in (
            torch.backends.cuda.matmul.fp32_precision,
            torch.backends.cudnn.conv.fp32_precision,
        )
    return bool(torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32)


# --------------------------------------------------------------------------- flags during training

# A flag's value that breaks repeatability, and what it means (for flag_findings).
_BAD_FLAG_VALUES: dict[str, tuple[object, str]] = {
    "deterministic_algorithms": (False, "torch.use_deterministic_algorithms was off"),
    "cudnn_benchmark": (True, "torch.backends.cudnn.benchmark was on"),
    "cudnn_deterministic": (False, "torch.backends.cudnn.deterministic was off"),
    "tf32": (True, "TF32 was allowed"),
}


def torch_flags() -> dict[str, object]:
    """torch's determinism flags in this process now; ``{}`` if torch is not imported.

    ``deterministic_algorithms`` is ``True``, ``"warn"`` or ``False`` (as in the spec);
    ``tf32`` is whether cuBLAS or cuDNN may use TF32. Cheap (a few attribute reads): the
    probe's recorder calls it at every step.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return {}
    on = torch.are_deterministic_algorithms_enabled()
    warn = on and torch.is_deterministic_algorithms_warn_only_enabled()
    return {
        "deterministic_algorithms": "warn" if warn else bool(on),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "tf32": _tf32_enabled(torch),
    }


def flag_findings(history: list[tuple[str, dict[str, object]]]) -> list[Finding]:
    """Flags that were in a state breaking repeatability at some point but not at the end.

    ``history`` is ``Recorder.flag_history()``: ``(when, torch_flags())`` at each change.
    ``audit()`` at the end of a run sees only the final state; this names, e.g.,
    ``cudnn.benchmark`` switched on at step 3 and off again at step 5. Errors on a machine
    with CUDA (where the flags select kernels), warnings elsewhere.
    """
    if not history:
        return []
    final = history[-1][1]
    torch = sys.modules.get("torch")
    severity = "error" if torch is not None and torch.cuda.is_available() else "warning"
    findings: list[Finding] = []
    for flag, (bad, what) in _BAD_FLAG_VALUES.items():
        if final.get(flag) == bad:
            continue  # still bad at the end: audit() reports it
        when = [w for w, flags in history if flags.get(flag) == bad]
        if when:
            findings.append(
                Finding(
                    f"{flag.replace('_', '-')}-during-training",
                    severity,
                    f"{what} during training (from {when[0]}; "
                    f"{len(when)} change(s) to it), though not at the end",
                    "set it once, before training, and leave it",
                )
            )
    return findings
