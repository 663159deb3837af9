"""The determinism settings: one typed value, from the spec to every place that applies it.

``DeterminismSettings`` holds the spec's ``[determinism]`` table (seed, deterministic mode,
TF32, cuDNN benchmark, thread count). It is the only place these five are spelled out:

* the spec loader builds it (``orchestrator.spec``; ``Spec.determinism``);
* ``launch_env()`` gives the variables to set before Python starts (``launch_environment``,
  below);
* ``probe_arguments()`` gives the ``envparity probe`` options that carry it into a target
  environment, and ``add_arguments``/``from_arguments`` read the same options back;
* the probe's ``Recorder`` hands it to the training code as ``rec.determinism``, which
  applies it with ``orchestrator.determinism.seed_everything(rec.determinism)``;
* ``flags()`` is what the fingerprint records under ``probe.determinism``.

The launch environment (``launch_environment``, ``SET_AT_LAUNCH``) is here too: settings that
only work when set before the interpreter starts. ``PYTHONHASHSEED`` is read once, when CPython
starts: setting ``os.environ["PYTHONHASHSEED"]`` inside a running interpreter (as many
seed-everything recipes do) changes nothing for that interpreter's ``hash()`` of strings; only
child processes see it. ``CUBLAS_WORKSPACE_CONFIG`` is read when cuBLAS creates its handle, and
the thread-count variables when the OpenMP/BLAS runtimes start. So these are set by whoever
launches Python: ``envparity run``, the flake's shell, the devcontainer's ``containerEnv`` and
Dockerfile ``ENV``, and the verify targets all use this one function. (It was
``orchestrator.launch`` until 0.1; that name still works, with a ``DeprecationWarning``.)

Stdlib only, and no import of torch: the probe imports this in bare target environments, and
``envparity check`` imports it through the spec.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

from orchestrator.schema import between, expected

# The spec's ranges. NumPy's legacy seeding (np.random.seed) takes no more than 2**32 - 1.
MAX_SEED = 2**32 - 1
MAX_THREADS = 1024
# [verify] steps and `envparity probe --steps`: training steps per probe run.
MAX_STEPS = 100_000

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# Every variable launch_environment() may set.
SET_AT_LAUNCH = (
    "PYTHONHASHSEED",
    "CUDA_DEVICE_ORDER",
    "CUBLAS_WORKSPACE_CONFIG",
    "NVIDIA_TF32_OVERRIDE",
    *THREAD_VARIABLES,
)

# torch.use_deterministic_algorithms(True), (True, warn_only=True) or (False).
DeterministicMode = bool | Literal["warn"]
_MODE_WORDS: dict[str, DeterministicMode] = {"true": True, "warn": "warn", "false": False}


def mode_word(mode: DeterministicMode) -> str:
    """``True`` -> ``"true"``, ``"warn"`` -> ``"warn"``, ``False`` -> ``"false"`` (the TOML words)."""
    return mode if isinstance(mode, str) else str(mode).lower()


# How rec.determinism was used before it became DeterminismSettings (a dict of these flags):
# ``seed_everything(rec.seed, **rec.determinism)``, documented until 2026-11-30.
_OLD_FORM = (
    "rec.determinism as a mapping (seed_everything(rec.seed, **rec.determinism), "
    "rec.determinism['threads']) is deprecated: pass the value itself, "
    "seed_everything(rec.determinism), and read its attributes (rec.determinism.threads)"
)


@dataclass(frozen=True, kw_only=True)
class DeterminismSettings(Mapping[str, object]):
    """The spec's ``[determinism]`` table; the defaults are the spec's.

    Deprecated, kept working for a release: the value is also a read-only mapping of
    ``flags()`` (``deterministic_algorithms``, ``tf32``, ``cudnn_benchmark``, ``threads``;
    not ``seed``), the dict ``rec.determinism`` used to be, so the formerly documented
    ``seed_everything(rec.seed, **rec.determinism)`` still runs; reading a key warns
    (``DeprecationWarning``).

    ``deterministic_algorithms``: ``True`` (torch raises on an op without a deterministic
    implementation), ``"warn"`` (torch's ``warn_only=True``: it warns and runs the
    nondeterministic op) or ``False``. ``threads``: intra-op threads, ``None`` for torch's
    default (the core count, which then changes CPU numerics between machines).

    Raises ``ValueError`` (naming the setting and the value) when a value is out of range;
    ``problems()`` lists them without raising, for loaders that name their own key paths.
    """

    seed: int = 0
    deterministic_algorithms: DeterministicMode = True
    tf32: bool = False
    cudnn_benchmark: bool = False
    threads: int | None = None

    def __post_init__(self) -> None:
        found = self.problems()
        if found:
            raise ValueError("; ".join(f"{key}: {message}" for key, message in found))

    def problems(self) -> list[tuple[str, str]]:
        """``(setting, message)`` for every value out of range (empty when all are valid)."""
        return check_values(self.to_dict())

    # ------------------------------------------------------------------ the old dict form

    def __getitem__(self, key: str) -> object:
        warnings.warn(_OLD_FORM, DeprecationWarning, stacklevel=2)
        flags = self.flags()
        if key not in flags:
            raise KeyError(key)
        return flags[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.flags())

    def __len__(self) -> int:
        return len(self.flags())

    # ------------------------------------------------------------------ derived views

    @property
    def deterministic(self) -> bool:
        """Whether deterministic kernels are asked for (``True`` or ``"warn"``)."""
        return self.deterministic_algorithms is not False

    @property
    def warn_only(self) -> bool:
        """torch's ``warn_only``: ``True`` for ``"warn"``."""
        return self.deterministic_algorithms == "warn"

    def warnings(self) -> list[str]:
        """Settings that leave results free to differ between machines or runs, one line each
        naming the ``[determinism]`` key (``envparity check`` prints them)."""
        out: list[str] = []
        if self.cudnn_benchmark:
            out.append(
                "determinism.cudnn_benchmark is true: cuDNN times candidate convolution "
                "algorithms in every process and may pick a different one each run; set it to "
                "false for repeatable results"
            )
        if self.threads is None:
            out.append(
                "determinism.threads is not set: torch then uses one thread per core, and the "
                "thread count changes CPU results (1 vs 2 threads diverge at step 2 of the "
                "built-in probe on 2 cores); set it, e.g. threads = 1, for the same numbers on "
                "every machine"
            )
        if self.deterministic_algorithms == "warn":
            out.append(
                'determinism.deterministic_algorithms is "warn": an op without a deterministic '
                "kernel runs anyway, with a warning; its results may differ between runs"
            )
        return out

    def launch_env(self) -> dict[str, str]:
        """The variables to set before Python starts, sorted (``launch_environment``)."""
        return launch_environment(self)

    def flags(self) -> dict[str, object]:
        """Everything but the seed, JSON-able: the fingerprint's ``probe.determinism``."""
        return {
            "deterministic_algorithms": self.deterministic_algorithms,
            "tf32": self.tf32,
            "cudnn_benchmark": self.cudnn_benchmark,
            "threads": self.threads,
        }

    def to_dict(self) -> dict[str, object]:
        """``{"seed": ..., **flags()}``; ``from_dict`` reads it back."""
        return {"seed": self.seed, **self.flags()}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> DeterminismSettings:
        """From ``to_dict()`` (or ``flags()`` plus a ``seed``); missing keys take the defaults.

        Raises ``ValueError`` naming an unknown key or a bad value.
        """
        unknown = sorted(set(data) - set(cls().to_dict()))
        if unknown:
            raise ValueError(f"unknown determinism setting(s): {', '.join(unknown)}")
        return cls(**data)  # type: ignore[arg-type]

    def probe_arguments(self) -> list[str]:
        """The ``envparity probe`` options carrying these settings (read by ``from_arguments``).

        Defaults are left out, except the seed, which is always passed.
        """
        args = ["--seed", str(self.seed)]
        if self.deterministic_algorithms is not True:
            args += ["--deterministic-algorithms", mode_word(self.deterministic_algorithms)]
        args += ["--tf32"] if self.tf32 else []
        args += ["--cudnn-benchmark"] if self.cudnn_benchmark else []
        args += ["--threads", str(self.threads)] if self.threads is not None else []
        return args

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> DeterminismSettings:
        """From the options ``add_arguments`` defined. Raises ``ValueError`` naming the option."""
        defaults = cls()
        values = {
            "seed": defaults.seed if args.seed is None else args.seed,
            "deterministic_algorithms": args.deterministic_algorithms,
            "tf32": args.tf32,
            "cudnn_benchmark": args.cudnn_benchmark,
            "threads": args.threads,
        }
        found = check_values(values)
        if found:
            key, message = found[0]
            message = message.removeprefix(f"{values[key]} is ")  # the option names the value
            raise ValueError(f"--{key.replace('_', '-')} {values[key]}: {message}")
        return cls(**values)


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


def check_values(values: Mapping[str, object]) -> list[tuple[str, str]]:
    """``(setting, message)`` for every value in ``values`` that the settings refuse."""
    out: list[tuple[str, str]] = []
    seed = values.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        out.append(("seed", expected("an integer", seed)))
    elif problem := between(0, MAX_SEED)(seed):
        out.append(("seed", problem))
    mode = values.get("deterministic_algorithms", True)
    if not (isinstance(mode, bool) or mode == "warn"):
        out.append(("deterministic_algorithms", expected('a boolean or "warn"', mode)))
    for name in ("tf32", "cudnn_benchmark"):
        if not isinstance(values.get(name, False), bool):
            out.append((name, expected("a boolean", values[name])))
    threads = values.get("threads")
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int):
            out.append(("threads", expected("an integer", threads)))
        elif problem := between(1, MAX_THREADS)(threads):
            out.append(("threads", problem))
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The probe's options for these settings; defaults are the spec's (``from_arguments``)."""
    parser.add_argument("--seed", type=int, default=None, help="default 0; 0..4294967295")
    parser.add_argument(
        "--deterministic-algorithms",
        type=_parse_mode,
        default=True,
        metavar="{true,warn,false}",
        help="torch.use_deterministic_algorithms: true (default), warn (warn_only) or false",
    )
    parser.add_argument(
        "--no-deterministic-algorithms",
        dest="deterministic_algorithms",
        action="store_const",
        const=False,
        # Deprecated: kept for older scripts, left out of --help and README; the same as
        # --deterministic-algorithms false.
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--tf32", action="store_true", help="allow TF32 for float32 matmuls/convs")
    parser.add_argument("--cudnn-benchmark", action="store_true", help="let cuDNN time algorithms")
    parser.add_argument(
        "--threads", type=int, default=None, metavar="N", help="intra-op threads (1..1024)"
    )


def _parse_mode(word: str) -> DeterministicMode:
    try:
        return _MODE_WORDS[word.lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"{word!r}: expected true, warn or false") from None
