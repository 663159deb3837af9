"""``envparity bisect A B``: experiments that prove which captured differences change the numbers.

Two fingerprints that diverge come with likely causes, ranked by heuristics
(``orchestrator.verdict.compare``). Bisect replaces the ranking with experiments on this machine:
it runs the probe again in A's configuration with B's values applied, and checks whether the
results become B's, bit for bit.

What it can apply (a ``Change``): launch variables (``launch.*``), probe options and the
``[determinism]`` settings (``probe.seed``, ``probe.device``, ``probe.world_size``,
``probe.determinism.*``; thread counts among them), and packages (``packages.*``: a hybrid
venv, A's packages with one from B, built by uv from its cache, from scratch for every
experiment; a package neither run imported, ``inputs.imported``, is not tried). Values
derived from those (``torch.num_threads``, ``torch.cpu_capability``, ``torch.config``,
``python.hash_seed``, the flags a determinism setting sets) are consequences, never toggled. The code, data files, the Python build and the hardware cannot be
applied here: "not applicable here".

The plan (``Bisection.run``), cheapest first:

1. one repeat of A: the only honest basis for "not repeatable" (a repeat that differs in the
   same environment ends the bisection, saying so);
2. each change alone, in parallel where the machine has cores (``Slots``: their threads
   never outnumber the cores);
3. the union of the changes that mattered alone (skipped when one of them alone gives B);
   when it gives B and several changes are in it, each whose own marks (initial parameters,
   data order, kernel outputs) do not show it in the union is taken out once to see whether
   the rest still give B (a change that does is *masked*);
4. ddmin (Zeller and Hildebrandt, "Simplifying and Isolating Failure-Inducing Input", 2002)
   only where interactions remain (the union is not B, everything together is): seeded by the
   singles (``_reduce``), plain ``ddmin`` if that does not settle it.

For n independent differences that each leave a mark that is n + 2 probe runs at most (a
repeat, n singles, a union; n + 1 when one alone gives B), one more per change that leaves
none. Each applicable change ends *proven* (alone, or as part of the
minimal set, it reproduces B bit for bit), *no effect*, *masked* (it changes the results alone
but not with the rest), *changes results* (it moves A's results, but B also needs what cannot
be applied here), or *unresolved* (a hybrid whose packages cannot be resolved, or the budget
ran out). When everything applicable still gives A's results, the remaining cause is what
cannot be applied here, named from the two captures: across machines, the hardware or the
platform, by elimination.

Prior art: Verrou's ``verrou_dd`` (ddmin over floating-point instructions; it samples each
configuration several times because its arithmetic is random: here one repeat of A decides
whether the probe is repeatable at all), and torch's ``CompilerBisector``
(``torch/_inductor/compiler_bisector.py``), which bisects inside ``torch.compile``: the report
hands over to it when the probe's code compiles (``flags.compile``).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator import process
from orchestrator.determinism import LAUNCH_VARIABLES
from orchestrator.determinism_settings import DeterminismSettings
from orchestrator.errors import EnvparityError, UsageError
from orchestrator.probe import fingerprint
from orchestrator.probe.capture import DISPATCH_PREFIXES, DISPATCH_VARIABLES, Difference, show
from orchestrator.probe.fingerprint import Fingerprint, JsonValue, printable
from orchestrator.probe.run import BUILTIN
from orchestrator.spec import Spec
from orchestrator.targets.base import RUNTIME_DIR, Context, Target

if TYPE_CHECKING:
    from orchestrator.verify import VerifyResult
from orchestrator.verdict import wording
from orchestrator.verdict.compare import category, compare, differences_between

# Verdicts of a captured difference.
PROVEN = "proven"
NO_EFFECT = "no effect"
MASKED = "masked"
CHANGES = "changes results"
NOT_APPLICABLE = "not applicable here"
UNRESOLVED = "unresolved"
CONSEQUENCE = "consequence"
VERDICTS = (PROVEN, MASKED, CHANGES, NO_EFFECT, UNRESOLVED, NOT_APPLICABLE, CONSEQUENCE)

# Outcomes of one experiment: its results are A's, B's, neither, or it could not run.
SAME_AS_A, SAME_AS_B, OTHER, FAILED = "A", "B", "other", "failed"

# Why a difference cannot be applied here, and how a summary names that kind of cause.
_CODE = "a module the probe ran differs: bisect runs A's code"
_DATA = "a data file differs: bisect runs on A's files"
_STATE = "set by the probe's code while it ran"
_HARDWARE = "the hardware or platform"
_NAMED = {_CODE: "the code", _DATA: "the data", _STATE: "state the probe's code set"}

# Packages a hybrid never installs: envparity itself reaches the probe on PYTHONPATH.
_NOT_HYBRID = frozenset({"envparity"})
# Flags that a [determinism] setting sets (the others are set by the probe's code).
_DETERMINISM_FLAGS = (
    "flags.deterministic_",
    "flags.cudnn.deterministic",
    "flags.cudnn.benchmark",
    "flags.cuda.matmul.",
    "flags.cudnn.conv.",
    "flags.cudnn.rnn.",
    "flags.mkldnn.matmul.",
    "flags.mkldnn.conv.",
    "flags.cudnn.allow_tf32",
    "flags.float32_matmul_precision",
)
_THREAD_CAUSES = (
    "launch.OMP_NUM_THREADS",
    "launch.MKL_NUM_THREADS",
    "launch.OPENBLAS_NUM_THREADS",
    "probe.determinism.threads",
    "platform.cpu_count",
)
# Derived values: key prefix -> the differences they follow from (key prefixes), first match.
_DERIVED: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("python.hash_seed", ("launch.PYTHONHASHSEED",)),
    ("torch.num_threads", _THREAD_CAUSES),
    ("torch.num_interop_threads", _THREAD_CAUSES),
    ("torch.cpu_capability", ("launch.ATEN_CPU_CAPABILITY", "platform.cpu_model")),
    ("torch.", ("packages.torch",)),
    ("numpy.", ("packages.numpy",)),
    ("collect_env.torch_version", ("packages.torch",)),
    ("collect_env.python_version", ("python.version",)),
    ("collect_env.is_cuda_available", ("probe.device", "gpus")),
    ("flags.", ("probe.determinism.",)),
)


# --------------------------------------------------------------------------- what differs


@dataclass(frozen=True)
class Change:
    """A captured difference bisect can apply to A's configuration: B's value for ``key``.

    ``kind``: ``"launch"`` (a variable set, or unset, at start-up), ``"option"`` (a probe
    option or ``[determinism]`` setting) or ``"package"`` (a distribution's version, in a
    hybrid venv). ``a``/``b``: the two runs' values (None: unset or absent).
    """

    key: str
    kind: str
    a: JsonValue
    b: JsonValue

    def __str__(self) -> str:
        return f"{printable(self.key)}: {show(self.a)} -> {show(self.b)}"


@dataclass(frozen=True)
class Judged:
    """A captured difference and what bisect found about it."""

    difference: Difference
    verdict: str  # one of VERDICTS
    note: str = ""  # why (not applicable: what it is; consequence: of what; the evidence)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.difference.key,
            "a": self.difference.a,
            "b": self.difference.b,
            "verdict": self.verdict,
            "note": self.note,
        }


def classify(
    differences: Sequence[Difference],
    *,
    gpu_here: bool,
    packages: bool,
    imported: frozenset[str] | None = None,
) -> tuple[list[Change], list[Judged]]:
    """Split the captured differences into changes bisect can apply, and the rest judged
    already: consequences of other differences (never toggled), what cannot be applied here
    (code, data, Python, hardware), and packages neither run imported (``imported``: the
    distributions either run imported, ``inputs.imported``; None when a run did not record
    them): those cannot have changed a number, and are not tried. ``packages``: whether
    hybrid venvs can be built for A (a local interpreter); ``gpu_here``: whether a CUDA run
    can happen here."""
    keys = [d.key for d in differences]
    changes: list[Change] = []
    judged: list[Judged] = []
    for d in differences:
        name = d.key.removeprefix("packages.")
        if d.key.startswith("packages.") and imported is not None and name not in imported:
            judged.append(Judged(d, NO_EFFECT, "neither run imported it: not tried"))
            continue
        kind, reason = _kind(d, gpu_here=gpu_here, packages=packages)
        if kind:
            changes.append(Change(d.key, kind, d.a, d.b))
            continue
        causes = _causes_of(d.key, keys)
        if causes:
            judged.append(Judged(d, CONSEQUENCE, f"follows from {', '.join(causes)}"))
        else:
            judged.append(Judged(d, NOT_APPLICABLE, reason))
    return changes, judged


def _kind(d: Difference, *, gpu_here: bool, packages: bool) -> tuple[str, str]:
    """The change kind of a difference ("" when bisect cannot apply it) and, if not, why."""
    key = d.key
    if key.startswith("launch."):
        return "launch", ""
    if key in ("probe.seed", "probe.world_size") or key.startswith("probe.determinism."):
        return "option", ""
    if key == "probe.device":
        if "cuda" in (d.a, d.b) and not gpu_here:
            return "", "a CUDA run, and no GPU is visible here"
        return "option", ""
    if key.startswith("packages."):
        if key.removeprefix("packages.") in _NOT_HYBRID:
            return "", "envparity itself, which reaches the probe on PYTHONPATH"
        if not packages:
            return "", "a package, and A's environment is not a local interpreter for a hybrid venv"
        return "package", ""
    what = category(key)
    if key.startswith("code."):
        return "", _CODE
    if key.startswith("data."):
        return "", _DATA
    if key.startswith("flags."):
        return "", _STATE
    if key.startswith("python."):
        return "", "another Python: a hybrid keeps A's interpreter"
    if what in ("device", "cpu_kernels", "platform") or key.startswith(("platform.", "gpus")):
        return "", _HARDWARE
    return "", "not a setting bisect can change"


def _causes_of(key: str, keys: Sequence[str]) -> list[str]:
    """The other differences (keys) that a derived ``key`` follows from; [] if none differ."""
    for prefix, causes in _DERIVED:
        if key.startswith(prefix):
            if prefix == "flags." and not key.startswith(_DETERMINISM_FLAGS):
                return []  # set by code, not by a setting
            return [k for k in keys if k != key and k.startswith(causes)]
    return []


# --------------------------------------------------------------------------- A's configuration


@dataclass(frozen=True)
class Setup:
    """How a probe run is configured: what bisect starts from (A's) and changes.

    ``launch``: every captured start-up variable (None: unset); ``packages``: the installed
    distributions (a hybrid venv is built when they are not A's).
    """

    probe: str
    steps: int
    device: str
    world_size: int | None
    settings: DeterminismSettings
    launch: Mapping[str, str | None]
    packages: Mapping[str, str]

    @classmethod
    def of(cls, fp: Fingerprint) -> Setup:
        """The configuration ``fp`` ran with, as its fingerprint records it."""
        flags = {k: v for k, v in fp.determinism.items() if k in DeterminismSettings().flags()}
        try:
            settings = DeterminismSettings.from_dict({**flags, "seed": fp.seed})
        except ValueError as exc:
            raise UsageError(f"{printable(fp.source)}: probe.determinism: {exc}") from None
        return cls(
            probe=fp.probe,
            steps=fp.steps,
            device=fp.device,
            world_size=fp.world_size,
            settings=settings,
            launch=dict(fp.environment.launch),
            packages=dict(fp.environment.packages),
        )

    def apply(self, changes: Iterable[Change]) -> Setup:
        """This configuration with B's value for each change."""
        launch, packages = dict(self.launch), dict(self.packages)
        values: dict[str, Any] = {}
        flags = self.settings.to_dict()
        for c in changes:
            name = c.key.split(".", 1)[1]
            if c.kind == "launch":
                launch[name] = None if c.b is None else str(c.b)
            elif c.kind == "package":
                if c.b is None:
                    packages.pop(name, None)
                else:
                    packages[name] = str(c.b)
            elif c.key.startswith("probe.determinism."):
                flag = c.key.removeprefix("probe.determinism.")
                default = DeterminismSettings().to_dict()[flag]
                flags[flag] = default if c.b is None else c.b
            else:
                values[name] = c.b
        return dataclasses.replace(
            self,
            launch=launch,
            packages=packages,
            settings=DeterminismSettings.from_dict({**flags, **_seed(values)}),
            device=str(values.get("device", self.device)),
            world_size=values.get("world_size", self.world_size),
        )

    def argv(self, out: str) -> list[str]:
        """``python -m orchestrator probe`` with this configuration's options."""
        args = ["python", "-m", "orchestrator", "probe", "--out", out, "--steps", str(self.steps)]
        args += ["--probe", self.probe, "--device", self.device]
        args += self.settings.probe_arguments()
        if self.world_size is not None:
            args += ["--world-size", str(self.world_size)]
        return args

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """``base`` (this process's environment) with every captured start-up variable set to
        this configuration's value or removed, so that nothing set here leaks in."""
        env = {
            k: v
            for k, v in base.items()
            if k not in ("PYTHONPATH", "VIRTUAL_ENV")
            and k not in LAUNCH_VARIABLES
            and k not in DISPATCH_VARIABLES
            and not k.startswith(DISPATCH_PREFIXES)
        }
        env.update({k: v for k, v in self.launch.items() if v is not None})
        return env


def _seed(values: Mapping[str, Any]) -> dict[str, Any]:
    return {"seed": values["seed"]} if values.get("seed") is not None else {}


# --------------------------------------------------------------------------- running probes


@dataclass(frozen=True)
class Probed:
    """One probe run of an experiment: its fingerprint, or why it has none."""

    fingerprint: Fingerprint | None
    seconds: float
    problem: str = ""  # why it did not run (a hybrid that could not be built)


class Slots:
    """How many probes may run at once: ``cores // threads`` (at least one), so that their
    threads never outnumber the cores. Probes are not pinned to cores: a library that sizes
    its thread pool from the affinity mask changes its numbers when pinned (seen: NumPy's
    OpenBLAS, 2 threads unpinned, 1 when pinned to one core, another sgemm result)."""

    def __init__(self, threads: int, cores: int | None = None) -> None:
        self.count = max(1, (cores or os.cpu_count() or 1) // max(1, threads))
        self._free = threading.Semaphore(self.count)

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Held while one probe runs."""
        with self._free:
            yield


class LocalRunner:
    """Runs probes in A's environment on this machine: A's interpreter (``python``), or a hybrid
    venv when an experiment changes packages; ``wrap`` turns a command into one that runs
    inside A's target (identity for a local interpreter).

    ``runtime``: a folder holding the ``orchestrator`` package (put on PYTHONPATH, with
    ``cwd`` for a user probe); ``work``: where fingerprints and hybrids are made; ``sources``:
    uv's package-source arguments for hybrids (``lock.source_args``).
    """

    def __init__(
        self,
        *,
        python: str,
        cwd: Path,
        runtime: Path,
        work: Path,
        base: Setup,
        sources: Sequence[str] = (),
        slots: Slots | None = None,
        wrap: Callable[[list[str], dict[str, str]], tuple[list[str], dict[str, str]]] | None = None,
        timeout: float | None = None,
    ) -> None:
        self.python, self.cwd, self.runtime, self.work = python, cwd, runtime, work
        self.base, self.sources = base, list(sources)
        self.slots = slots or Slots(1, 1)
        self.wrap = wrap
        self.timeout = timeout
        self._count = 0
        self._lock = threading.Lock()

    def _name(self, what: str) -> Path:
        with self._lock:
            self._count += 1
            return self.work / f"{self._count:03d}-{what}"

    def probe(self, setup: Setup) -> Probed:
        """Run the probe once in ``setup``; a hybrid venv is built first (and removed after)
        when its packages are not A's."""
        start = time.monotonic()
        out = self._name("run").with_suffix(".json")
        hybrid: Path | None = None
        try:
            python = self.python
            if dict(setup.packages) != dict(self.base.packages):
                hybrid = self._name("hybrid")
                try:
                    python = self._hybrid(hybrid, setup.packages)
                except (EnvparityError, OSError) as exc:  # uv refused, or could not run
                    return Probed(None, time.monotonic() - start, _last_line(str(exc)))
            argv = setup.argv(str(out))
            argv[0] = python
            env = setup.environment(os.environ)
            paths = [str(self.runtime)] + ([str(self.cwd)] if setup.probe != BUILTIN else [])
            env["PYTHONPATH"] = os.pathsep.join(paths)
            if hybrid is not None:
                env["VIRTUAL_ENV"] = str(hybrid)
            if self.wrap is not None:
                argv, env = self.wrap(argv, env)
            with self.slots.slot():
                process.run(argv, env=env, cwd=self.cwd, timeout=self.timeout)
            return Probed(fingerprint.load(out), time.monotonic() - start)
        finally:
            if hybrid is not None:
                shutil.rmtree(hybrid, ignore_errors=True)

    def _hybrid(self, folder: Path, packages: Mapping[str, str]) -> str:
        """A fresh venv of A's interpreter holding exactly ``packages`` (no dependency
        resolution: ``--no-deps``), from uv's cache where it can; its interpreter's path."""
        process.run(["uv", "venv", "--quiet", "--python", self.python, str(folder)])
        python = str(folder / "bin" / "python")
        pins = [f"{n}=={v}" for n, v in sorted(packages.items()) if n not in _NOT_HYBRID]
        install = ["uv", "pip", "install", "--quiet", "--no-deps", "--python", python]
        process.run(
            [*install, *self.sources, *pins],
            timeout=self.timeout,
        )
        return python


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else text


# --------------------------------------------------------------------------- experiments


@dataclass(frozen=True)
class Experiment:
    """One probe run of A's configuration with ``applied`` (change keys) set to B's values."""

    applied: frozenset[str]
    label: str  # "repeat of A", "launch.MKL_CBWR alone", "union of 3", "ddmin: 2 of 11"
    outcome: str  # SAME_AS_A, SAME_AS_B, OTHER, FAILED
    where: str = ""  # how the results differ from A's (``wording.result``)
    seconds: float = 0.0
    note: str = ""  # FAILED: why; a confound the capture shows

    def to_dict(self) -> dict[str, Any]:
        return {
            "applied": sorted(self.applied),
            "label": self.label,
            "outcome": self.outcome,
            "where": self.where,
            "seconds": round(self.seconds, 3),
            "note": self.note,
        }

    def line(self, a: str, b: str) -> str:
        said = {
            SAME_AS_A: f"same results as {a}",
            SAME_AS_B: f"same results as {b}",
            OTHER: f"{self.where} from {a}, not {b}'s results",
            FAILED: f"did not run: {self.note}",
        }[self.outcome]
        if self.outcome == SAME_AS_B and self.where:
            said += f" ({self.where} from {a})"
        note = f"; {self.note}" if self.note and self.outcome != FAILED else ""
        return f"{self.label}: {said}{note} ({self.seconds:.1f} s)"


class BudgetSpent(Exception):
    """The ``--budget`` would be exceeded by another experiment."""


@dataclass
class Report:
    """What bisect found: the status, every captured difference judged, the minimal set, and
    every experiment run. ``status``: ``identical`` (nothing to explain), ``explained`` (a
    minimal set of applied changes reproduces B), ``eliminated`` (nothing applicable changes A's
    results: the cause is what cannot be applied, named in ``remaining``), ``not repeatable``
    (the repeat of A differs), ``not reproduced`` (the repeat ran in another environment than
    A's), ``unresolved`` (B not reproduced: what is missing is in ``summary``)."""

    a: str
    b: str
    status: str
    summary: str
    judged: list[Judged] = field(default_factory=list)
    minimal: tuple[str, ...] = ()
    remaining: tuple[str, ...] = ()
    experiments: list[Experiment] = field(default_factory=list)
    seconds: float = 0.0
    hint: str = ""  # where to look next (torch's CompilerBisector)

    @property
    def runs(self) -> int:
        return len(self.experiments)

    @property
    def exit_code(self) -> int:
        return 0 if self.status in ("identical", "explained", "eliminated") else 1

    def verdict_of(self, key: str) -> str | None:
        return next((j.verdict for j in self.judged if j.difference.key == key), None)

    @property
    def proven(self) -> list[Judged]:
        """The differences an experiment proved, in the order judged."""
        return [j for j in self.judged if j.verdict == PROVEN]

    def brief(self) -> str:
        """One line for verify's table and report: ``bisect: explained in 3 probe runs: ...``."""
        return f"bisect: {self.status} in {self.runs} probe run(s): {self.summary}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "status": self.status,
            "summary": self.summary,
            "minimal": list(self.minimal),
            "remaining": list(self.remaining),
            "differences": [j.to_dict() for j in self.judged],
            "experiments": [e.to_dict() for e in self.experiments],
            "runs": self.runs,
            "seconds": round(self.seconds, 3),
            "hint": self.hint,
        }

    def lines(self) -> list[str]:
        """The report as printed: a headline, the summary, each difference by verdict, then
        every experiment in the order it ran."""
        a, b = printable(self.a), printable(self.b)
        lines = [
            f"bisect {a} -> {b}: {self.status}, {self.runs} probe run(s) in {self.seconds:.1f} s",
            f"  {printable(self.summary)}",
        ]
        if self.minimal:
            lines.append(f"  minimal set turning {a} into {b}: {', '.join(self.minimal)}")
        if self.remaining:
            lines.append("  remaining, by elimination (cannot be applied here):")
            lines += [f"    {printable(r)}" for r in self.remaining]
        order = {v: i for i, v in enumerate(VERDICTS)}
        shown = sorted(self.judged, key=lambda j: (order[j.verdict], j.difference.key))
        if shown:
            lines.append("  differences:")
            width = max(len(j.verdict) for j in shown)
            for j in shown:
                note = f" ({printable(j.note)})" if j.note else ""
                lines.append(f"    {j.verdict:<{width}}  {j.difference}{note}")
        if self.experiments:
            lines.append("  experiments:")
            lines += [f"    {i}. {e.line(a, b)}" for i, e in enumerate(self.experiments, 1)]
        if self.hint:
            lines.append(f"  {printable(self.hint)}")
        return lines


class Bisection:
    """The experiments for one pair: ``run()`` returns the ``Report`` (plan: module doc).

    ``runner.probe(setup)`` runs one probe; ``runner.slots.count`` of them may run at once.
    ``budget``: seconds after which no experiment is started (None: no limit);
    ``progress``: called with a line before and after each experiment.
    """

    def __init__(
        self,
        a: Fingerprint,
        b: Fingerprint,
        runner: LocalRunner,
        *,
        gpu_here: bool = False,
        packages: bool = True,
        budget: float | None = None,
        progress: Callable[[str], None] = lambda line: None,
    ) -> None:
        compare([a, b])  # UsageError when the runs are not comparable (probe, steps)
        self.a, self.b, self.runner = a, b, runner
        self.budget, self.progress = budget, progress
        self.differences = differences_between(a, b)
        imported = (
            frozenset(a.inputs.imported) | frozenset(b.inputs.imported)
            if a.inputs.imported and b.inputs.imported
            else None
        )
        self.changes, self.judged = classify(
            self.differences, gpu_here=gpu_here, packages=packages, imported=imported
        )
        self.by_key = {c.key: c for c in self.changes}
        self.base = Setup.of(a)
        self.results: dict[frozenset[str], Experiment] = {}
        self.fingerprints: dict[frozenset[str], Fingerprint] = {}
        self.order: list[Experiment] = []
        self._start = time.monotonic()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ running

    def _outcome(self, fp: Fingerprint) -> tuple[str, str]:
        to_a = compare([self.a, fp]).worst
        if to_a.kind == "bitwise":
            return SAME_AS_A, ""
        said = wording.result(to_a)
        if compare([self.b, fp]).worst.kind == "bitwise":
            return SAME_AS_B, said
        return OTHER, said

    def _confound(self, fp: Fingerprint, setup: Setup) -> str:
        """What the run's capture shows that the configuration did not ask for: a launch value
        or a package that is not the one asked for ("" when none)."""
        found = []
        launch = fp.environment.launch
        for name in sorted(set(setup.launch) | set(launch)):
            if launch.get(name) != setup.launch.get(name):
                found.append(
                    f"launch.{name}: {show(launch.get(name))}, not {show(setup.launch.get(name))}"
                )
        installed = {k: v for k, v in fp.environment.packages.items() if k not in _NOT_HYBRID}
        wanted = {k: v for k, v in setup.packages.items() if k not in _NOT_HYBRID}
        for name in sorted(set(installed) | set(wanted)):
            if installed.get(name) != wanted.get(name):
                found.append(
                    f"packages.{name}: {show(installed.get(name))}, not {show(wanted.get(name))}"
                )
        return "; ".join(found)

    def _check_budget(self) -> None:
        if self.budget is None:
            return
        done = [e.seconds for e in self.order]
        estimate = sum(done) / len(done) if done else 0.0
        if time.monotonic() - self._start + estimate > self.budget:
            raise BudgetSpent

    def _one(self, applied: frozenset[str], label: str) -> Experiment:
        self._check_budget()
        self.progress(f"experiment: {label}")
        setup = self.base.apply(self.by_key[k] for k in sorted(applied))
        try:
            probed = self.runner.probe(setup)
        except EnvparityError as exc:
            probed = Probed(None, 0.0, _last_line(str(exc)))
        if probed.fingerprint is None:
            done = Experiment(applied, label, FAILED, seconds=probed.seconds, note=probed.problem)
        else:
            outcome, where = self._outcome(probed.fingerprint)
            confound = self._confound(probed.fingerprint, setup)
            if confound:  # the run is not the configuration asked for: no evidence
                outcome = FAILED
            done = Experiment(applied, label, outcome, where, probed.seconds, confound)
        with self._lock:
            self.results[applied] = done
            self.order.append(done)
            if probed.fingerprint is not None:
                self.fingerprints[applied] = probed.fingerprint
        self.progress(f"  {done.line('A', 'B')}")
        return done

    def batch(self, wanted: Sequence[tuple[frozenset[str], str]]) -> list[Experiment]:
        """Run the configurations not run yet, as many at once as there are slots; return every
        one's experiment in order. ``BudgetSpent`` when the budget stops one."""
        todo = [(s, label) for s, label in dict(wanted).items() if s not in self.results]
        if self.runner.slots.count > 1 and len(todo) > 1:
            with ThreadPoolExecutor(max_workers=self.runner.slots.count) as pool:
                for future in [pool.submit(self._one, s, label) for s, label in todo]:
                    future.result()
        else:
            for s, label in todo:
                self._one(s, label)
        return [self.results[s] for s, _ in wanted]

    def test(self, subset: frozenset[str], label: str) -> Experiment:
        return self.batch([(subset, label)])[0]

    # ------------------------------------------------------------------ the plan

    def run(self) -> Report:
        a, b = self.a.source, self.b.source
        pair = compare([self.a, self.b]).worst
        if pair.kind == "bitwise":
            same = {
                c.key: (NO_EFFECT, "A and B have the same results with it") for c in self.changes
            }
            return self._report("identical", f"{a} and {b}: {wording.result(pair)}", same)
        try:
            return self._plan()
        except BudgetSpent:
            return self._finish_unresolved(
                f"the budget of {self.budget:g} s was spent after {len(self.order)} probe run(s)"
            )

    def _plan(self) -> Report:
        a = self.a.source
        repeat = self.test(frozenset(), f"repeat of {a}")
        if repeat.outcome != SAME_AS_A:
            return self._refuse(repeat)
        keys = [c.key for c in self.changes]
        if not keys:
            return self._eliminated()
        singles = self.batch([(frozenset({k}), f"{k} alone") for k in keys])
        ran = [e for e in singles if e.outcome != FAILED]
        effects = [next(iter(e.applied)) for e in ran if e.outcome != SAME_AS_A]
        alone_b = [next(iter(e.applied)) for e in ran if e.outcome == SAME_AS_B]
        usable = frozenset(next(iter(e.applied)) for e in ran)
        if alone_b:
            return self._explained((alone_b[0],), effects)
        if effects:
            union = self.test(frozenset(effects), f"union of the {len(effects)} that mattered")
            if union.outcome == SAME_AS_B:
                return self._explained(self._necessary(effects), effects)
        everything = self.test(usable, f"all {len(usable)} applicable together")
        if everything.outcome == SAME_AS_A:
            return self._eliminated(effects)
        if everything.outcome == SAME_AS_B:
            return self._explained(self._reduce(sorted(usable), effects), effects)
        return self._finish_unresolved(
            f"every applicable difference together gives results that are neither "
            f"{a}'s nor {self.b.source}'s ({everything.where} from {a}): {self.b.source} also "
            "needs what cannot be applied here",
            effects,
        )

    def _necessary(self, effects: list[str]) -> tuple[str, ...]:
        """The union of ``effects`` gives B; which of them does it need? A change whose own
        marks (``_marks``: initial parameters, data order, kernel outputs) it alone changes
        and no other change alone touches, and which the union shows unchanged, is seen in
        B's results: kept without a run. Each other one is taken out once, in order: if the
        rest still give B, it is masked by them and stays out."""
        kept = list(effects)
        if len(kept) < 2:
            return tuple(kept)
        union = self.fingerprints.get(frozenset(effects))
        for key in effects:
            if union is not None and self._visible(key, effects, union):
                continue
            rest = frozenset(k for k in kept if k != key)
            if self.test(rest, f"union without {key}").outcome == SAME_AS_B:
                kept.remove(key)
        return tuple(kept)

    def _visible(self, key: str, effects: Sequence[str], union: Fingerprint) -> bool:
        """Whether ``key``'s effect shows in the union: one of the marks it changes alone (a
        witness) is changed by no other effect alone, and has in the union the value it has
        with ``key`` alone (so taking ``key`` out would change it back)."""
        base = _marks(self.a)
        mine = self.fingerprints.get(frozenset({key}))
        if mine is None:
            return False
        own, together = _marks(mine), _marks(union)
        others = [self.fingerprints.get(frozenset({k})) for k in effects if k != key]
        if any(fp is None for fp in others):
            return False
        touched = {
            m for fp in others if fp is not None for m, v in _marks(fp).items() if base.get(m) != v
        }
        return any(
            v != base.get(m) and m not in touched and together.get(m) == v for m, v in own.items()
        )

    def _reduce(self, changes: list[str], effects: Sequence[str]) -> tuple[str, ...]:
        """Every applicable change together gives B, the union of those that mattered alone
        does not: an interaction. ddmin, started from what the singles showed: each change
        that mattered alone is taken out of the whole once (if the rest still give B, it is
        masked and stays out); then the changes that did nothing alone are taken out together
        (one complement test); plain ``_ddmin`` only if B then needs some of them."""
        current = list(changes)
        for key in effects:
            rest = [k for k in current if k != key]
            if self.test(frozenset(rest), f"all without {key}").outcome == SAME_AS_B:
                current = rest
        mattered = [k for k in current if k in effects]
        if mattered and len(mattered) < len(current):
            label = f"the {len(mattered)} that mattered, without the masked"
            if self.test(frozenset(mattered), label).outcome == SAME_AS_B:
                return tuple(mattered)
        return self._ddmin(current)

    def _ddmin(self, changes: list[str]) -> tuple[str, ...]:
        def gives_b(subsets: list[frozenset[str]]) -> list[bool]:
            labelled = [(s, f"ddmin: {len(s)} of {len(changes)}") for s in subsets]
            return [e.outcome == SAME_AS_B for e in self.batch(labelled)]

        return ddmin(changes, gives_b, parallel=self.runner.slots.count)

    # ------------------------------------------------------------------ conclusions

    def _refuse(self, repeat: Experiment) -> Report:
        a = self.a.source
        if repeat.outcome == FAILED:
            return self._report("unresolved", f"the repeat of {a} did not run: {repeat.note}")
        confound = self._environment_differs(repeat)
        if confound:
            return self._report(
                "not reproduced",
                f"the repeat of {a} here gives other results ({repeat.where}) and ran in "
                f"another environment ({confound}): {a} was recorded elsewhere; bisect starts "
                "from a run of this machine (pass one as A)",
            )
        outside = sorted(set(self.a.inputs.outside))
        read = f": it read {', '.join(outside[:3])}" if outside else ""
        return self._report(
            "not repeatable",
            f"a repeat of {a} here, in the environment its capture records, {repeat.where} "
            "from it: the probe is not repeatable (an unseeded RNG, a DataLoader without a "
            "seeded generator, a nondeterministic kernel), or it depends on something the "
            f"capture does not record (a variable it reads, a file outside the project{read}); "
            "no experiment can prove a cause until a repeat gives its results",
        )

    def _environment_differs(self, repeat: Experiment) -> str:
        """How the repeat's capture differs from A's, beyond what a rerun changes ("" if not)."""
        fp = self.fingerprints.get(repeat.applied)
        if fp is None:
            return ""
        found = [
            str(d)
            for d in differences_between(self.a, fp)
            if not d.key.startswith(("code.orchestrator", "python.executable"))
        ]
        return "; ".join(found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")

    def _explained(self, minimal: Sequence[str], effects: Sequence[str]) -> Report:
        minimal_set = set(minimal)
        verdicts: dict[str, tuple[str, str]] = {}
        for change in self.changes:
            alone = self.results.get(frozenset({change.key}))
            if change.key in minimal_set:
                how = (
                    "alone it gives B"
                    if alone and alone.outcome == SAME_AS_B
                    else "in the minimal set"
                )
                verdicts[change.key] = (PROVEN, self._evidence(alone, how))
            elif change.key in effects:
                verdicts[change.key] = (
                    MASKED,
                    self._evidence(alone, "not needed with the minimal set"),
                )
            else:
                verdicts[change.key] = self._unchanged(change.key)
        n = len(minimal)
        summary = (
            f"{n} of {len(self.changes)} applicable difference(s) proven: with "
            f"{'it' if n == 1 else 'them'} applied, A's configuration gives "
            f"{self.b.source}'s results bit for bit"
        )
        return self._report("explained", summary, verdicts, minimal=tuple(minimal))

    def _eliminated(self, effects: Sequence[str] = ()) -> Report:
        """Everything applicable together gives A's results: what differs is what cannot be
        applied here (named from the captures), unless a change could not be tried."""
        verdicts = {
            c.key: (
                MASKED,
                self._evidence(self.results.get(frozenset({c.key})), "undone by the rest"),
            )
            if c.key in effects
            else self._unchanged(c.key)
            for c in self.changes
        }
        untried = [k for k, (verdict, _) in verdicts.items() if verdict == UNRESOLVED]
        rest = [j for j in self.judged if j.verdict == NOT_APPLICABLE]
        remaining = tuple(str(j.difference) for j in rest)
        a = self.a.source
        if untried:
            return self._report(
                "unresolved",
                f"the other differences give {a}'s results, but {len(untried)} could not be "
                f"tried ({', '.join(untried)})",
                verdicts,
                remaining=remaining,
            )
        if not rest:
            return self._report(
                "unresolved",
                f"no applicable difference changes {a}'s results and nothing else differs in "
                "the captures: the cause is not captured (a file read outside the project, "
                "state set by code the capture does not record)",
                verdicts,
            )
        kinds = list(dict.fromkeys(_NAMED.get(j.note, j.note) for j in rest))
        tried = f" ({len(self.changes)} applied, alone and together)" if self.changes else ""
        what = (
            f"{kinds[0]}, by elimination"
            if len(kinds) == 1
            else f"among what cannot be applied here, by elimination: {', '.join(kinds)}"
        )
        summary = (
            f"no applicable difference changes {a}'s results{tried}: the remaining cause is {what}"
        )
        return self._report("eliminated", summary, verdicts, remaining=remaining)

    def _finish_unresolved(self, why: str, effects: Sequence[str] = ()) -> Report:
        verdicts: dict[str, tuple[str, str]] = {}
        for change in self.changes:
            alone = self.results.get(frozenset({change.key}))
            if alone is None:
                verdicts[change.key] = (UNRESOLVED, "not run")
            elif change.key in effects:
                verdicts[change.key] = (CHANGES, self._evidence(alone, "B not reproduced"))
            else:
                verdicts[change.key] = self._unchanged(change.key)
        return self._report("unresolved", why, verdicts)

    def _unchanged(self, key: str) -> tuple[str, str]:
        alone = self.results.get(frozenset({key}))
        if alone is None:
            return UNRESOLVED, "not run"
        if alone.outcome == FAILED:
            return UNRESOLVED, alone.note
        return NO_EFFECT, "alone it gives A's results"

    @staticmethod
    def _evidence(alone: Experiment | None, how: str) -> str:
        if alone is None or alone.outcome == FAILED:
            return how
        return f"alone: {alone.where or 'same results as A'}; {how}"

    def _report(
        self,
        status: str,
        summary: str,
        verdicts: Mapping[str, tuple[str, str]] | None = None,
        *,
        minimal: tuple[str, ...] = (),
        remaining: tuple[str, ...] = (),
    ) -> Report:
        judged = list(self.judged)
        for change in self.changes:
            verdict, note = (verdicts or {}).get(change.key, (UNRESOLVED, "not run"))
            judged.append(Judged(Difference(change.key, change.a, change.b), verdict, note))
        hint = ""
        compiled = str(self.a.environment.flags.get("compile", "not called"))
        if (
            compiled != "not called"
            or str(self.b.environment.flags.get("compile", "not called")) != "not called"
        ):
            hint = (
                "the probe calls torch.compile: a cause inside compile is narrowed by torch's "
                "own bisector, 'python -m torch._inductor.compiler_bisector run CMD' (CMD exits "
                "non-zero when the results differ, e.g. envparity probe then envparity compare)"
            )
        return Report(
            a=self.a.source,
            b=self.b.source,
            status=status,
            summary=summary,
            judged=judged,
            minimal=minimal,
            remaining=remaining,
            experiments=list(self.order),
            seconds=time.monotonic() - self._start,
            hint=hint,
        )


def ddmin(
    changes: Sequence[str],
    gives_b: Callable[[list[frozenset[str]]], list[bool]],
    *,
    parallel: int = 1,
) -> tuple[str, ...]:
    """ddmin (Zeller and Hildebrandt, "Simplifying and Isolating Failure-Inducing Input", IEEE
    TSE 28(2), 2002): the smallest subset of ``changes`` (which as a whole give B) found by
    trying, at doubling granularity n, each of n parts, then each part's complement; the result
    is 1-minimal (taking out any one change no longer gives B). ``gives_b`` tests subsets, up
    to ``parallel`` at a time; the first that gives B (in order) is taken."""
    current, n = list(changes), 2

    def first(candidates: list[frozenset[str]]) -> frozenset[str] | None:
        step = max(1, parallel)
        for i in range(0, len(candidates), step):
            chunk = candidates[i : i + step]
            for subset, hit in zip(chunk, gives_b(chunk), strict=True):
                if hit:
                    return subset
        return None

    while len(current) >= 2:
        parts = _split(current, n)
        found = first([frozenset(p) for p in parts])
        if found is not None:
            current, n = [c for c in current if c in found], 2
            continue
        if n > 2:  # with two parts, each complement is the other part: tried already
            found = first([frozenset(current) - frozenset(p) for p in parts])
            if found is not None:
                current, n = [c for c in current if c in found], max(n - 1, 2)
                continue
        if n >= len(current):
            break
        n = min(len(current), 2 * n)
    return tuple(current)


def _marks(fp: Fingerprint) -> dict[str, str]:
    """What a run's results are made of, each on its own: the initial parameters, the data
    order, and every kernel output (``rec.output``), by name -> digest."""
    marks = {
        "initial_params": fp.stages.initial_params,
        "data_order": ",".join(fp.stages.data_order),
    }
    marks.update({f"outputs.{n}": o.digest for n, o in fp.stages.outputs.items()})
    return marks


def _split(items: list[str], n: int) -> list[list[str]]:
    """``items`` in ``n`` nearly equal consecutive parts."""
    size, extra = divmod(len(items), n)
    parts, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        parts.append(items[start:end])
        start = end
    return [p for p in parts if p]


# --------------------------------------------------------------------------- entry points


def hybrid_sources(spec: Spec | None, fp: Fingerprint) -> list[str]:
    """uv's package-source arguments for A's hybrids: the spec's sources for the flavor of A's
    torch (its local version, ``+cpu``), mirrors applied (``lock.source_args``); without a
    spec, the PyTorch index of that flavor (mirrored when ``ENVPARITY_MIRRORS`` says so)."""
    from orchestrator import compat, lock

    tag = str(fp.environment.packages.get("torch", "")).partition("+")[2]
    if spec is not None:
        return lock.source_args(spec, tag if tag in spec.flavors else spec.default_flavor)
    if not tag:
        return []
    url = compat.PYTORCH_INDEX + tag
    location = lock.mirrors().get(url, url)
    folder = lock.local_folder(location)
    return ["--extra-index-url", lock.simple_index(folder, mirror_of=url) if folder else location]


def bisect(
    a: str,
    b: str,
    *,
    spec: Spec | None,
    budget: float | None = None,
    progress: Callable[[str], None] = lambda line: None,
    cwd: Path | None = None,
) -> Report:
    """``envparity bisect A B``: ``a`` and ``b`` are two fingerprint files, or two targets of
    ``spec`` (each provisioned and probed once first). Experiments run in ``cwd`` (default:
    the current folder; a user probe is imported from there). Raises ``UsageError`` for
    arguments that are neither, or runs that cannot be compared (another probe or steps)."""
    from orchestrator.spec import TARGET_NAMES

    here = (cwd or Path.cwd()).resolve()
    files_given = [Path(x).is_file() for x in (a, b)]
    if all(files_given):
        return _bisect_files(fingerprint.load(a), fingerprint.load(b), spec, budget, progress, here)
    if a in TARGET_NAMES and b in TARGET_NAMES and not any(files_given):
        if spec is None:
            raise UsageError(f"bisect {a} {b}: targets need a spec (environment.toml)")
        return _bisect_targets(spec, a, b, budget, progress)
    bad = next(x for x, f in zip((a, b), files_given, strict=True) if not f)
    raise UsageError(
        f"bisect: {fingerprint.printable(bad)} is neither a fingerprint file nor a target "
        f"({', '.join(TARGET_NAMES)}); give two fingerprints or two targets"
    )


@contextmanager
def _workspace(root: Path) -> Iterator[tuple[Path, Path]]:
    """The runtime copy of the orchestrator package and a scratch folder for one bisection
    (under ``.envparity``, removed afterwards)."""
    import tempfile

    from orchestrator import verify

    cache = root / RUNTIME_DIR
    verify.make_cache(cache)
    runtime = verify.prepare_runtime(cache)
    (cache / "bisect").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=cache / "bisect"))
    try:
        yield runtime, work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _threads(*fps: Fingerprint) -> int:
    return max(int(fp.environment.torch.get("num_threads") or 1) for fp in fps)


def _bisect_files(
    fa: Fingerprint,
    fb: Fingerprint,
    spec: Spec | None,
    budget: float | None,
    progress: Callable[[str], None],
    cwd: Path,
) -> Report:
    from orchestrator import gpus, interpreter

    python = fa.environment.python.executable
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        python = interpreter.user_interpreter().executable
        progress(f"{printable(fa.source)}'s interpreter is not here: probing with {python}")
    root = spec.root if spec is not None else cwd
    with _workspace(root) as (runtime, work):
        runner = LocalRunner(
            python=python,
            cwd=cwd,
            runtime=runtime,
            work=work,
            base=Setup.of(fa),
            sources=hybrid_sources(spec, fa),
            slots=Slots(_threads(fa, fb)),
        )
        return Bisection(
            fa, fb, runner, gpu_here=gpus.visible(), budget=budget, progress=progress
        ).run()


def _bisect_targets(
    spec: Spec, a: str, b: str, budget: float | None, progress: Callable[[str], None]
) -> Report:
    """Provision targets ``a`` and ``b`` (as verify does), probe each once, and bisect from
    ``a``: in its interpreter (host, venv; hybrids for packages) or through its command
    (devcontainer, nix; packages not applicable there)."""
    from orchestrator import verify
    from orchestrator.targets import TARGETS

    chosen = verify.choose_targets(spec, [a, b])
    if len(chosen) < 2:
        raise UsageError(f"bisect {a} {b}: two different targets are needed")
    spec = verify.with_defaults(spec, chosen)
    with _workspace(spec.root) as (runtime, work):
        ctx = Context(spec=spec, cache=spec.root / RUNTIME_DIR, runtime=runtime, progress=progress)
        targets = [TARGETS[name](ctx) for name in chosen]
        runs = []
        for target in targets:
            reason = target.unavailable()
            if reason:
                raise UsageError(f"bisect: {reason}")
            target.provision()
            out = work / f"{target.name}.json"
            progress(f"{target.name}: probe run")
            verify.probe_once(target, ctx, out)
            runs.append(fingerprint.load(out))
        fa, fb = (
            dataclasses.replace(fp, source=t.name) for fp, t in zip(runs, targets, strict=True)
        )
        return bisect_from_target(
            fa, fb, targets[0], ctx, work=work, budget=budget, progress=progress
        )


def bisect_from_target(
    fa: Fingerprint,
    fb: Fingerprint,
    target: Target,
    ctx: Context,
    *,
    work: Path,
    budget: float | None = None,
    progress: Callable[[str], None] = lambda line: None,
) -> Report:
    """Bisect ``fa`` (a run of ``target``, provisioned) against ``fb``: experiments in the
    target's interpreter (host, venv: hybrids for packages) or through its command
    (devcontainer, nix: packages not applicable there); fingerprints and hybrids in ``work``.
    What ``envparity bisect T1 T2`` and ``verify --bisect`` run."""
    from orchestrator import gpus, interpreter

    local = {"host": interpreter.user_interpreter().executable}
    if target.name == "venv":
        local["venv"] = str(target.python)  # type: ignore[attr-defined]

    def inside(argv: list[str], env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        return target.command(argv, env=env)

    runner = LocalRunner(
        python=local.get(target.name, "python"),
        cwd=ctx.spec.root,
        runtime=ctx.runtime,
        work=work,
        base=Setup.of(fa),
        sources=hybrid_sources(ctx.spec, fa),
        slots=Slots(_threads(fa, fb)),
        wrap=None if target.name in local else inside,
    )
    return Bisection(
        fa,
        fb,
        runner,
        gpu_here=gpus.visible(),
        packages=target.name in local,
        budget=budget,
        progress=progress,
    ).run()


def after_verify(
    result: VerifyResult,
    *,
    budget: float | None = None,
    progress: Callable[[str], None] = lambda line: None,
) -> dict[tuple[str, str], Report]:
    """``verify --bisect``: bisect each diverged pair of ``result``, keyed by the names its
    lines give the pair: across targets (A: the first target's first run, B: the other's), and
    each target against a reference it diverged from (A: the target's first run, B: the
    reference). Experiments run in the A target's environment, provisioned by verify.
    ``budget``: seconds for each pair."""
    from orchestrator.targets import TARGETS

    spec = result.spec
    pairs: list[tuple[str, str, Fingerprint, Fingerprint]] = []
    if result.across is not None:
        for pair in result.across.pairs:
            if pair.kind == "diverged":
                a, b = result.pair_names(pair)
                pairs.append((a, b, _first_run(result, a), _first_run(result, b)))
    if result.references is not None:
        for c in result.references.comparisons:
            if c.diverged and c.reference:
                reference = dataclasses.replace(fingerprint.load(c.pair.other), source=c.against)
                pairs.append((c.target, c.against, _first_run(result, c.target), reference))
    if not pairs:
        return {}
    found: dict[tuple[str, str], Report] = {}
    with _workspace(spec.root) as (runtime, work):
        ctx = Context(spec=spec, cache=spec.root / RUNTIME_DIR, runtime=runtime, progress=progress)
        for a, b, fa, fb in pairs:
            progress(f"bisect {a} vs {b}")
            found[(a, b)] = bisect_from_target(
                fa, fb, TARGETS[a](ctx), ctx, work=work, budget=budget, progress=progress
            )
    return found


def _first_run(result: VerifyResult, name: str) -> Fingerprint:
    return dataclasses.replace(result.target(name).runs[0].fingerprint, source=name)
