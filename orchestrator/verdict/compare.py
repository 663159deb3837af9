"""The verdict over fingerprints: bitwise, within tolerance, or diverged (where, and why).

Each fingerprint is compared with the first. Stages are checked in the order the run made
them, so the first difference points at its cause:

* ``initial_params``/``rng_initial``: seeding, RNG implementations (torch/NumPy versions),
  CPU kernels used for sampling;
* ``data_order``: the data pipeline: hash seed, worker seeding, the loader's generator;
* ``losses`` step k, ``final_params``, ``metrics``: numerics: threads, BLAS/oneDNN, CPU
  capability, device, versions, flags.

Likely causes are the differences between the two runs' code and data files, probe
settings and environment captures, ranked by how well each explains a difference at that
stage: changed code or data first, then variables set at launch before what they cause
(``ATEN_CPU_CAPABILITY`` before ``torch.cpu_capability``), and CUDA-only flags last when both
runs were on the CPU. A difference that changed no result (an RNG state that differs while
every result is identical) is a warning beside an equivalent verdict. The words a user reads
for a verdict come from ``orchestrator.verdict.wording``. Stdlib only (it imports what a bare
target has: ``envparity compare`` and the GPU checks run wherever a fingerprint is).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.errors import UsageError
from orchestrator.probe.capture import Difference, diff
from orchestrator.probe.fingerprint import Fingerprint, printable
from orchestrator.probe.inputs import outside_note
from orchestrator.tolerances import DEFAULTS, Tolerances

KINDS = ("bitwise", "tolerance", "diverged")
STAGES = (
    "initial_params",
    "rng_initial",
    "data_order",
    "losses",
    "final_params",
    "metrics",
    "rng_final",
)
_PHASE = {
    "initial_params": "init",
    "rng_initial": "init",
    "data_order": "data",
    "losses": "numerics",
    "final_params": "numerics",
    "metrics": "numerics",
    "rng_final": "data",
}

# How well a difference of each category explains a first difference in each phase (0-100).
_WEIGHTS: dict[str, dict[str, int]] = {
    "code": {"init": 100, "data": 100, "numerics": 100},
    "data": {"init": 100, "data": 100, "numerics": 100},
    "seed": {"init": 100, "data": 100, "numerics": 100},
    "hash_seed": {"init": 5, "data": 95, "numerics": 20},
    "torch": {"init": 90, "data": 80, "numerics": 80},
    "numpy": {"init": 40, "data": 85, "numerics": 50},
    "python": {"init": 30, "data": 70, "numerics": 30},
    "threads": {"init": 10, "data": 10, "numerics": 90},
    "cpu_kernels": {"init": 70, "data": 60, "numerics": 85},
    "device": {"init": 50, "data": 10, "numerics": 95},
    "flags": {"init": 10, "data": 10, "numerics": 75},
    "packages": {"init": 20, "data": 30, "numerics": 40},
    "platform": {"init": 15, "data": 15, "numerics": 30},
    "probe_itself": {"init": 50, "data": 60, "numerics": 50},
    "not_captured": {"init": 50, "data": 60, "numerics": 50},
    "parallel": {"init": 10, "data": 60, "numerics": 95},
}

# Capture keys -> category; the first matching prefix wins.
_CATEGORIES = (
    ("code.", "code"),
    ("data.", "data"),
    ("probe.seed", "seed"),
    ("probe.world_size", "parallel"),
    ("probe.determinism.threads", "threads"),
    ("probe.determinism.", "flags"),
    ("python.hash_seed", "hash_seed"),
    ("launch.PYTHONHASHSEED", "hash_seed"),
    ("packages.torch", "torch"),
    ("torch.version", "torch"),
    ("torch.git_version", "torch"),
    ("collect_env.torch_version", "torch"),
    ("torch.config", "torch"),
    ("packages.numpy", "numpy"),
    ("numpy.", "numpy"),
    ("python.", "python"),
    ("collect_env.python_version", "python"),
    ("torch.num_threads", "threads"),
    ("torch.num_interop_threads", "threads"),
    ("launch.OMP_NUM_THREADS", "threads"),
    ("launch.MKL_NUM_THREADS", "threads"),
    ("launch.OPENBLAS_NUM_THREADS", "threads"),
    ("torch.cpu_capability", "cpu_kernels"),
    ("launch.ATEN_CPU_CAPABILITY", "cpu_kernels"),
    ("launch.MKL_CBWR", "cpu_kernels"),
    ("launch.ONEDNN_MAX_CPU_ISA", "cpu_kernels"),
    ("launch.DNNL_", "cpu_kernels"),
    ("launch.ONEDNN_", "cpu_kernels"),
    ("launch.MKL_", "cpu_kernels"),
    ("launch.OPENBLAS_", "cpu_kernels"),
    ("launch.ATEN_", "cpu_kernels"),
    ("launch.OMP_", "threads"),
    ("launch.KMP_", "threads"),
    ("launch.GOMP_", "threads"),
    ("launch.TORCH_ALLOW_TF32", "flags"),
    ("platform.cpu_model", "cpu_kernels"),
    ("platform.machine", "cpu_kernels"),  # x86_64 and arm64 run other kernels
    ("collect_env.cpu_info", "cpu_kernels"),
    ("torch.mkl", "cpu_kernels"),
    ("torch.blas", "cpu_kernels"),
    ("probe.device", "device"),
    ("gpus", "device"),
    ("torch.cuda", "device"),
    ("torch.cudnn", "device"),
    ("torch.hip", "device"),
    ("collect_env.nvidia", "device"),
    ("collect_env.cuda", "device"),
    ("collect_env.cudnn", "device"),
    ("collect_env.is_cuda_available", "device"),
    ("launch.CUDA_VISIBLE_DEVICES", "device"),
    ("launch.CUDA_DEVICE_ORDER", "device"),  # which GPU an index names
    ("flags.", "flags"),
    ("launch.CUBLAS_WORKSPACE_CONFIG", "flags"),
    ("launch.NVIDIA_TF32_OVERRIDE", "flags"),
    ("launch.CUDA_LAUNCH_BLOCKING", "flags"),
    ("packages.", "packages"),
)
_MAX_CAUSES = 8
# Among equal weights: what the user changed (code, data, seed) before what it changes.
_TIE_ORDER = ("code", "data", "seed")
# Flags of CUDA libraries: they cannot change a run on the CPU.
_CUDA_ONLY = (
    "flags.cuda.",
    "flags.cudnn.",
    "launch.CUBLAS_",
    "launch.NVIDIA_TF32_OVERRIDE",
    "launch.CUDA_DEVICE_ORDER",
)


@dataclass(frozen=True)
class PairVerdict:
    """One fingerprint against the reference (the first)."""

    reference: str
    other: str
    kind: str  # one of KINDS
    stage: str | None = None  # the first stage that differs; None when bitwise
    step: int | None = None  # the step (losses) or batch (data_order) index, 0-based
    values: tuple[str, str] | None = None  # the reference's and the other's value there
    tolerance: dict[str, float] = field(default_factory=dict)
    reason: str = ""  # why this tolerance applies, or what the difference is
    causes: tuple[str, ...] = ()
    # bitwise/tolerance only: how the environments differ although the results agree
    differences: tuple[str, ...] = ()
    # bitwise/tolerance only: differences that changed no result but could (an RNG state)
    warnings: tuple[str, ...] = ()
    # kernel outputs (rec.output) that differ, by name: which kernel changed, and how far
    outputs: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "other": self.other,
            "kind": self.kind,
            "stage": self.stage,
            "step": self.step,
            "values": list(self.values) if self.values else None,
            "tolerance": self.tolerance,
            "reason": self.reason,
            "causes": list(self.causes),
            "differences": list(self.differences),
            "warnings": list(self.warnings),
            "outputs": list(self.outputs),
        }


@dataclass(frozen=True)
class Verdict:
    """The worst pair decides ``kind``; stage/step/values/causes come from that pair."""

    kind: str
    pairs: tuple[PairVerdict, ...]

    @property
    def equivalent(self) -> bool:
        return self.kind != "diverged"

    @property
    def worst(self) -> PairVerdict:
        return max(self.pairs, key=lambda p: KINDS.index(p.kind))

    def to_dict(self) -> dict[str, Any]:
        worst = self.worst
        return {
            "kind": self.kind,
            "equivalent": self.equivalent,
            "stage": worst.stage,
            "step": worst.step,
            "values": list(worst.values) if worst.values else None,
            "causes": list(worst.causes),
            "warnings": sorted({w for p in self.pairs for w in p.warnings}),
            "pairs": [p.to_dict() for p in self.pairs],
        }


def compare(
    fingerprints: list[Fingerprint], tolerances: Tolerances = DEFAULTS, *, repeats: bool = False
) -> Verdict:
    """Compare every fingerprint with the first.

    ``tolerances.rtol``/``atol`` apply between runs on the same device model (default:
    bitwise); ``cross_device_rtol`` between different devices (CPU vs CUDA, different GPU
    models). ``repeats``: the fingerprints are runs of one environment launched alike (verify's
    runs of a target), so a divergence with nothing captured differing shows that the probe
    is not repeatable; otherwise no verdict says so, since no repeat has shown it
    (``likely_causes``). Raises ``UsageError`` for fewer than two fingerprints, or two of
    different probes or step counts.
    """
    if len(fingerprints) < 2:
        raise UsageError("compare needs at least two fingerprints")
    ref = fingerprints[0]
    for fp in fingerprints[1:]:
        for what, a, b in (("probe", ref.probe, fp.probe), ("steps", ref.steps, fp.steps)):
            if a != b:
                raise UsageError(
                    f"{ref.source} and {fp.source} are not comparable: "
                    f"different {what} ({a} vs {b})"
                )
    pairs = tuple(_pair(ref, fp, tolerances, repeats) for fp in fingerprints[1:])
    return Verdict(kind=max((p.kind for p in pairs), key=KINDS.index), pairs=pairs)


def _device_model(fp: Fingerprint) -> str:
    if fp.device == "cuda":
        names = sorted({g.name for g in fp.environment.gpus})
        return "cuda " + (", ".join(names) or "(unknown GPU)")
    if fp.device == "mps":  # Apple's GPU: named by its chip
        return "mps " + str(fp.environment.platform.get("cpu_model") or "(unknown Apple GPU)")
    return "cpu"


# torch's build configuration names its BLAS: BLAS_INFO is set by PyTorch's
# cmake/Modules/FindBLAS.cmake ("mkl", "open" for OpenBLAS, "accelerate" for Apple's
# Accelerate, "veclib", ...), and torch.__config__.show() prints it; the capture keeps that text.
_BLAS_NAMES = {"mkl": "MKL", "open": "OpenBLAS", "accelerate": "Accelerate", "veclib": "vecLib"}


def blas(fp: Fingerprint) -> str:
    """The BLAS torch was built with, read from the capture (``torch.config``'s ``BLAS_INFO``):
    ``MKL``, ``OpenBLAS``, ``Accelerate``, another name as torch gives it, or ``unknown``."""
    config = str(fp.environment.torch.get("config") or "")
    start = config.find("BLAS_INFO=")
    if start < 0:
        return "unknown"
    name = config[start + len("BLAS_INFO=") :].split(",")[0].strip()
    return _BLAS_NAMES.get(name, name or "unknown")


def _platform(fp: Fingerprint) -> str:
    """``Darwin arm64`` / ``Linux x86_64``: the OS and machine the run's capture recorded."""
    p = fp.environment.platform
    return f"{p.get('system') or 'unknown OS'} {p.get('machine') or ''}".strip()


def _pair(
    ref: Fingerprint, fp: Fingerprint, tolerances: Tolerances, repeats: bool = False
) -> PairVerdict:
    model_a, model_b = _device_model(ref), _device_model(fp)
    rtol, atol = tolerances.rtol, tolerances.atol
    if model_a != model_b:
        tol = {"rtol": tolerances.cross_device_rtol, "atol": atol}
        reason = (
            f"different devices ({model_a} vs {model_b}): kernels differ, so bitwise "
            f"equality is not expected; losses compared with rtol={tolerances.cross_device_rtol:g}"
        )
    elif _platform(ref) != _platform(fp):  # a Mac and a Linux machine, say: other hardware
        tol = {"rtol": tolerances.cross_device_rtol, "atol": atol}
        model = [str(f.environment.platform.get("cpu_model") or "unknown CPU") for f in (ref, fp)]
        reason = (
            f"different platforms ({_platform(ref)}, {model[0]}, BLAS {blas(ref)} vs "
            f"{_platform(fp)}, {model[1]}, BLAS {blas(fp)}): CPU kernels and BLAS differ, so "
            f"bitwise equality is not expected; losses compared with "
            f"rtol={tolerances.cross_device_rtol:g}"
        )
    else:
        tol = {"rtol": rtol, "atol": atol}
        reason = (
            "same device model: bitwise equality expected"
            if tolerances.bitwise
            else f"same device model; tolerance rtol={rtol:g}, atol={atol:g} from the caller"
        )
    loose = tol["rtol"] > 0.0 or tol["atol"] > 0.0
    first = _first_difference(ref, fp, loose, tol)
    a, b = ref.source, fp.source
    outputs = tuple(_output_differences(ref, fp))
    if first is None:
        differences = tuple(str(d) for d in differences_between(ref, fp))
        warnings = tuple(_rng_warnings(ref, fp))
        if _first_difference(ref, fp, False, {"rtol": 0.0, "atol": 0.0}) is None:
            return PairVerdict(
                a,
                b,
                "bitwise",
                tolerance=tol,
                reason="every result identical",
                differences=differences,
                warnings=warnings,
                outputs=outputs,
            )
        return PairVerdict(
            a,
            b,
            "tolerance",
            tolerance=tol,
            reason=reason,
            differences=differences,
            warnings=warnings,
            outputs=outputs,
        )
    stage, step, values, what = first
    return PairVerdict(
        a,
        b,
        "diverged",
        stage=stage,
        step=step,
        values=values,
        tolerance=tol,
        reason=what,
        causes=tuple(likely_causes(ref, fp, stage, repeats=repeats)),
        outputs=outputs,
    )


def _output_differences(a: Fingerprint, b: Fingerprint) -> list[str]:
    """Kernel outputs (``rec.output``) recorded by both runs whose bytes differ, with how far
    apart their norms are: ``softmax_37: norm 0.99 vs 0.99 (relative difference 1e-07)``."""
    found = []
    for name in sorted(set(a.stages.outputs) & set(b.stages.outputs)):
        x, y = a.stages.outputs[name], b.stages.outputs[name]
        if x.digest == y.digest:
            continue
        if x.dtype != y.dtype:
            found.append(f"{name}: dtype {x.dtype} vs {y.dtype}")
            continue
        fx, fy = float.fromhex(x.norm), float.fromhex(y.norm)
        found.append(f"{name}: norm {fx!r} vs {fy!r} ({_rel(fx, fy)})")
    return found


def _first_difference(
    a: Fingerprint, b: Fingerprint, loose: bool, tol: dict[str, float]
) -> tuple[str, int | None, tuple[str, str] | None, str] | None:
    """The first result that differs, in run order; RNG states are not results (see
    ``_rng_warnings``)."""
    sa, sb = a.stages, b.stages
    if sa.initial_params != sb.initial_params:
        return (
            "initial_params",
            None,
            (sa.initial_params, sb.initial_params),
            "initial parameters differ",
        )
    # Loading checked each list against probe.steps, equal here: data_order differs in length
    # only when one probe recorded its batches and the other did not.
    da, db = sa.data_order, sb.data_order
    if len(da) != len(db):
        return (
            "data_order",
            None,
            (f"{len(da)} batches", f"{len(db)} batches"),
            "one run recorded its batches (rec.batch) and the other did not",
        )
    for i, (x, y) in enumerate(zip(da, db, strict=True)):
        if x != y:
            return "data_order", i, (x, y), f"batch {i} differs (order, contents or labels)"
    for i, (x, y) in enumerate(zip(sa.losses, sb.losses, strict=True)):
        if not _close(x, y, tol):
            fx, fy = float.fromhex(x), float.fromhex(y)
            return (
                "losses",
                i,
                (repr(fx), repr(fy)),
                f"loss at step {i} differs: {fx!r} vs {fy!r} ({_rel(fx, fy)})",
            )
    if not loose and sa.final_params != sb.final_params:
        return (
            "final_params",
            None,
            (sa.final_params, sb.final_params),
            "final parameters differ (every loss identical)",
        )
    for key in sorted(set(sa.metrics) | set(sb.metrics)):
        x, y = sa.metrics.get(key, "nan"), sb.metrics.get(key, "nan")
        if not _close(x, y, tol):
            fx, fy = float.fromhex(x), float.fromhex(y)
            return ("metrics", None, (repr(fx), repr(fy)), f"metric {key}: {fx!r} vs {fy!r}")
    return None


def _rng_differences(a: Mapping[str, str], b: Mapping[str, str]) -> list[str]:
    return [key for key in sorted(set(a) & set(b)) if a[key] != b[key]]


def _rng_warnings(a: Fingerprint, b: Fingerprint) -> list[str]:
    """RNG states that differ although every result is identical: an RNG that was not seeded
    (or seeded from something that varies) and that nothing drew from yet. Harmless in this
    run; code that draws from it would diverge."""
    out = []
    for stage, when in (("rng_initial", "after initialisation"), ("rng_final", "after training")):
        keys = _rng_differences(getattr(a.stages, stage), getattr(b.stages, stage))
        if keys:
            out.append(
                f"{stage}: the {'/'.join(keys)} RNG state {when} differs although every result "
                "is identical: it was not seeded (or was seeded from something that varies) "
                "and nothing drew from it; code that draws from it would diverge"
            )
    return out


def _close(x: str, y: str, tol: dict[str, float]) -> bool:
    if x == y:
        return True
    fx, fy = float.fromhex(x), float.fromhex(y)
    if math.isnan(fx) or math.isnan(fy):
        return False
    return abs(fx - fy) <= tol["atol"] + tol["rtol"] * abs(fx)


def _rel(x: float, y: float) -> str:
    if x == 0.0 or not math.isfinite(x) or not math.isfinite(y):
        return f"absolute difference {abs(x - y):.3g}"
    return f"relative difference {abs(x - y) / abs(x):.3g}"


# --------------------------------------------------------------------------- causes


def category(key: str) -> str:
    """The cause category of a capture key (``"packages.numpy"`` -> ``"numpy"``)."""
    return next((cat for prefix, cat in _CATEGORIES if key.startswith(prefix)), "platform")


def _code_digests(fp: Fingerprint) -> dict[str, str]:
    return {name: f.sha256 for name, f in fp.inputs.code.items()}


def differences_between(ref: Fingerprint, fp: Fingerprint) -> list[Difference]:
    """Every difference between two runs besides their results: code and data files (by
    digest), the probe's seed, device and ``[determinism]`` flags, and the environments."""
    found: list[Difference] = []
    # Version-1 files recorded no inputs (a version-2 file always has the probe's own module):
    # compare them only when both runs recorded them.
    if ref.inputs.code and fp.inputs.code:
        pairs = (
            ("code", _code_digests(ref), _code_digests(fp)),
            ("data", dict(ref.inputs.data), dict(fp.inputs.data)),
        )
        for kind, a_files, b_files in pairs:
            for key in sorted(set(a_files) | set(b_files)):
                if a_files.get(key) != b_files.get(key):
                    found.append(Difference(f"{kind}.{key}", a_files.get(key), b_files.get(key)))
    for what in ("seed", "device", "world_size"):
        a, b = getattr(ref, what), getattr(fp, what)
        if a != b:
            found.append(Difference(f"probe.{what}", a, b))
    if blas(ref) != blas(fp):  # named on its own: torch.config's long text hides it
        found.append(Difference("torch.blas", blas(ref), blas(fp)))
    for key in sorted(set(ref.determinism) | set(fp.determinism)):
        a, b = ref.determinism.get(key), fp.determinism.get(key)
        if a != b:
            found.append(Difference(f"probe.determinism.{key}", a, b))
    return found + diff(ref.environment, fp.environment)


def _score(d: Difference, phase: str, on_cpu: bool) -> tuple[int, int, int, str]:
    """Sort key: weight (higher first), what the user changed before what it causes, launch
    variables before the values they set, then the text."""
    cat = category(d.key)
    weight = _WEIGHTS[cat][phase]
    if on_cpu and d.key.startswith(_CUDA_ONLY):
        weight = 0
    tie = _TIE_ORDER.index(cat) if cat in _TIE_ORDER else len(_TIE_ORDER)
    return (-weight, tie, 0 if d.key.startswith(("launch.", "probe.")) else 1, d.key)


def likely_causes(
    ref: Fingerprint, fp: Fingerprint, stage: str, *, repeats: bool = False
) -> list[str]:
    """Differences between the runs ranked by how well they explain a first difference at
    ``stage`` (module doc). When nothing captured differs: with ``repeats`` (two runs of one
    environment, ``compare``), the probe is not repeatable; without, no captured difference
    explains it, bisect can find out, and what the capture does not record is named
    (``not_captured``)."""
    phase = _PHASE[stage]
    differences = differences_between(ref, fp)
    on_cpu = ref.device == fp.device == "cpu"
    scored: list[tuple[tuple[int, int, int, str], str]] = []
    for d in differences:
        note = (
            " (a CUDA setting: no effect on a CPU run)"
            if on_cpu and d.key.startswith(_CUDA_ONLY)
            else ""
        )
        scored.append((_score(d, phase, on_cpu), f"{category(d.key)}: {d}{note}"))
    hash_a = ref.environment.python.hash_seed
    hash_b = fp.environment.python.hash_seed
    if hash_a == hash_b == "random":
        scored.append(
            (
                (-_WEIGHTS["hash_seed"][phase], 3, 1, "python.hash_seed"),
                "hash_seed: PYTHONHASHSEED unset at start-up in both runs, so str hash "
                "order (set iteration) differs per process",
            )
        )
    # With different seeds every seeded RNG starts elsewhere: the seed, ranked above, is the
    # cause, and an "unseeded" RNG would be a red herring.
    unseeded = _rng_differences(ref.stages.rng_initial, fp.stages.rng_initial)
    if unseeded and ref.seed == fp.seed:
        scored.append(
            (
                (-90, 3, 1, "rng"),
                f"unseeded_rng: the {'/'.join(unseeded)} RNG state already differed right "
                "after initialisation: it was not seeded (or was seeded from something that "
                "varies); without generator=, a DataLoader shuffles and seeds its workers "
                "from torch's global RNG",
            )
        )
    shown = sorted(scored)
    causes = [text for _, text in shown[:_MAX_CAUSES]]
    if len(shown) > _MAX_CAUSES:
        causes.append(
            f"... {len(shown) - _MAX_CAUSES} more environment differences "
            f"('envparity diff {printable(ref.source)} {printable(fp.source)}')"
        )
    if not differences and repeats:
        causes.append(
            "probe_itself: two runs of one environment differ and nothing captured differs "
            "between them: the probe is not repeatable (an unseeded RNG, a DataLoader without "
            "a seeded generator, a nondeterministic kernel)"
        )
    elif not differences:
        causes.append(not_captured(ref, fp))
    return causes


def not_captured(ref: Fingerprint, fp: Fingerprint) -> str:
    """The cause of a divergence between runs whose captures, code and data agree, when no
    repeat has shown the probe unrepeatable: what bisect would try, and what no capture
    records (the files either run read outside the project first)."""
    a, b = printable(ref.source), printable(fp.source)
    outside = tuple(sorted(set(ref.inputs.outside) | set(fp.inputs.outside)))
    unrecorded = [outside_note(outside)] if outside else []
    unrecorded += [
        "variables the probe reads that are not launch variables",
        "files opened before the probe function ran, or by C code",
        "state its code sets beyond the recorded flags (a seed from the clock or os.urandom)",
    ]
    return (
        f"not_captured: no captured difference explains it; run 'envparity bisect {a} {b}' "
        f"(its repeat of {a} shows whether the probe repeats at all); not captured: "
        + "; ".join(unrecorded)
    )
