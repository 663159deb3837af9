"""``envparity verify``: provision every target, probe each twice in fresh processes, compare.

Within a target, runs must agree bitwise (or within the spec's ``rtol``/``atol``); across
targets, the first run of each is compared with the cross-device tolerance where the devices
differ; and each first run is compared with the committed references (``references``).
Targets are provisioned concurrently (threads) and probed one at a time, each as soon as it
is ready, so a container build does not hold up the venv's probes and probes never share the
CPU. A CUDA-flavor target on a machine without a GPU is probed on the CPU, noted as such.
Fingerprints are cached under ``.envparity/fingerprints`` by everything that determines
them; a file lock keeps two verify runs from writing the cache at once.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import os
import platform
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import files, gpus, lock, process, references
from orchestrator.errors import CheckFailed, EnvparityError, UsageError
from orchestrator.messages import quote
from orchestrator.probe import fingerprint, inputs
from orchestrator.probe.run import BUILTIN, check_reference
from orchestrator.spec import DEFAULT_TARGETS, TARGET_NAMES, Spec
from orchestrator.targets import TARGETS
from orchestrator.targets.base import RUNTIME_DIR, Context, Target
from orchestrator.verdict import wording
from orchestrator.verdict.compare import PairVerdict, Verdict, compare
from orchestrator.verdict.references import ReferenceReport, compare_with_references


@dataclass
class Run:
    index: int
    path: Path
    fingerprint: fingerprint.Fingerprint
    cached: bool


@dataclass
class TargetResult:
    name: str
    status: str  # "ok", "skipped", "failed"
    reason: str = ""
    required: bool = False
    runs: list[Run] = field(default_factory=list)
    verdict: Verdict | None = None  # runs of this target against each other
    notes: list[str] = field(default_factory=list)  # e.g. a cached fingerprint discarded
    drift: list[str] = field(default_factory=list)  # how the environment differs from the spec
    drift_accepted: bool = False  # --accept-host-drift: reported, not a failure

    @property
    def fingerprints(self) -> list[fingerprint.Fingerprint]:
        return [r.fingerprint for r in self.runs]


@dataclass
class VerifyResult:
    spec: Spec
    targets: list[TargetResult]
    across: Verdict | None  # the first run of each target against the first target's
    strict: bool
    probe: str = BUILTIN  # the probe that ran ("module:function")
    references: ReferenceReport | None = None  # against fingerprints/
    recorded: list[Path] = field(default_factory=list)  # written by --record

    @property
    def problems(self) -> list[str]:
        out = []
        for t in self.targets:
            if t.status == "failed":
                out.append(f"{t.name}: failed: {t.reason}")
            elif t.status == "skipped" and (self.strict or t.required):
                why = "required by the spec" if t.required else "--strict"
                out.append(f"{t.name}: skipped ({t.reason}), but {why}")
            elif t.verdict is not None and not t.verdict.equivalent:
                out.append(wording.runs_diverged(t.name, t.verdict.worst))
            if t.drift and not t.drift_accepted:
                out.append(
                    f"{t.name}: does not match the spec ({'; '.join(t.drift)}); "
                    "fix it (envparity doctor says how) or pass --accept-host-drift"
                )
        if self.across is not None:  # each pair named by its targets (first runs' files)
            out += [
                wording.pair_line(*self.pair_names(p), p)
                for p in self.across.pairs
                if p.kind == "diverged"
            ]
        if not any(t.status == "ok" for t in self.targets):
            out.append("no target could run")
        if self.references is not None:
            out += self.references.problems
        return out

    @property
    def exit_code(self) -> int:
        return 1 if self.problems else 0

    def pair_names(self, pair: PairVerdict) -> tuple[str, str]:
        """The targets an across-targets pair compares, found by their first runs' files."""
        name = {t.runs[0].fingerprint.source: t.name for t in self.targets if t.runs}
        return name.get(pair.reference, pair.reference), name.get(pair.other, pair.other)

    def target(self, name: str) -> TargetResult:
        return next(t for t in self.targets if t.name == name)


def _required_keys(spec: Spec, target: str) -> str:
    """The settings a target needs, as lines that load (pin the image by digest after)."""
    from orchestrator import compat
    from orchestrator.spec import EXAMPLE_NIXPKGS

    if target == "nix":
        return f'nixpkgs = "{EXAMPLE_NIXPKGS}"'
    image = compat.example_image(None if spec.cuda is None else spec.cuda.version)
    return f'image = "{image}"   # the base image; pin it with @sha256:<digest>'


def choose_targets(spec: Spec, names: list[str] | None) -> list[str]:
    """The targets to verify, in the spec's order: those named, or else every target the spec
    has a table for, or else host and venv. host and venv run with their defaults when the
    spec has no table for them; devcontainer and nix need their settings (``UsageError``
    naming the table and keys to add)."""
    if not names:
        return [n for n in TARGET_NAMES if n in spec.targets] or list(DEFAULT_TARGETS)
    for n in names:
        if n not in TARGET_NAMES:
            raise UsageError(f"unknown target {quote(n)}; targets are {', '.join(TARGET_NAMES)}")
        if n not in spec.targets and n not in DEFAULT_TARGETS:
            raise UsageError(
                f"target {n!r} needs settings {spec.path.name} does not have; add:\n"
                f"  [targets.{n}]\n  {_required_keys(spec, n)}\n"
                "then run 'envparity render'"
            )
    return list(dict.fromkeys(names))


def with_defaults(spec: Spec, chosen: list[str]) -> Spec:
    """``spec`` with a default table for each chosen target it has none for (host, venv)."""
    from dataclasses import replace

    from orchestrator.spec import Target as TargetSettings

    missing = {n: TargetSettings(name=n) for n in chosen if n not in spec.targets}
    return replace(spec, targets={**spec.targets, **missing}) if missing else spec


def make_cache(cache: Path) -> None:
    """Create the cache folder (``.envparity``) keeping itself out of git, as ``.venv`` and
    ``.nox`` do: a ``.gitignore`` holding ``*`` inside it, written when it is missing."""
    cache.mkdir(parents=True, exist_ok=True)
    ignore = cache / ".gitignore"
    if not ignore.exists():
        files.atomic_write(ignore, "# Created by envparity: caches, never committed.\n*\n")


# What verify and its targets write or delete under .envparity: refused through a link.
RUNTIME_PATHS = (
    ".gitignore",
    "verify.lock",
    "runtime",
    "venvs",
    "fingerprints",
    "devcontainer",
    "report.html",
)


@contextmanager
def exclusive(cache: Path, progress: Callable[[str], None]) -> Iterator[None]:
    """Hold the cache's lock: a second verify waits instead of writing the same files."""
    make_cache(cache)
    with open(cache / "verify.lock", "a") as handle:  # "a": never truncate what is there
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress("waiting for another envparity verify to finish")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare_runtime(cache: Path) -> Path:
    """A copy of the orchestrator package inside the workspace, for PYTHONPATH in targets."""
    source = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    sources = sorted(p for p in source.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for p in sources:
        digest.update(str(p.relative_to(source)).encode() + b"\0" + p.read_bytes())
    runtime = cache / "runtime" / digest.hexdigest()[:16]
    if not (runtime / "orchestrator" / "__init__.py").is_file():
        tmp = runtime.with_name(runtime.name + f".tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp / "orchestrator", ignore=shutil.ignore_patterns("__pycache__"))
        runtime.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(runtime, ignore_errors=True)
        os.replace(tmp, runtime)
        for old in runtime.parent.iterdir():  # copies of earlier envparity versions
            if old != runtime and ".tmp-" not in old.name:
                shutil.rmtree(old, ignore_errors=True)
    return runtime


def hardware() -> str:
    """What the numbers depend on beyond software: CPU model and GPUs (when nvidia-smi exists)."""
    cpu = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    listed = (gpus.nvidia_smi("-L") or "").strip()
    return f"{cpu} {os.cpu_count()} cpus; {listed}"


def effective_launch(ctx: Context) -> dict[str, str | None]:
    """Every variable the probe's numbers depend on, as the probe will see it: the spec's
    launch environment over whatever this shell has set (OMP_NUM_THREADS, MKL_CBWR, ...)."""
    from orchestrator.determinism import LAUNCH_VARIABLES

    return {k: ctx.launch_env.get(k, os.environ.get(k)) for k in LAUNCH_VARIABLES}


def run_key(target: Target, ctx: Context, hw: str) -> str:
    v = ctx.spec.verify
    return files.inputs_hash(
        {
            "target": target.name,
            "environment": target.key(),
            "runtime": ctx.runtime.name,
            "probe": v.probe or "",
            "probe_source": inputs.probe_source(v.probe, ctx.spec.root),  # what the probe is
            "steps": v.steps,
            "determinism": ctx.spec.to_dict()["determinism"],
            "launch": effective_launch(ctx),
            "hardware": hw,
        }
    )[:20]


def determinism_flags(spec: Spec) -> list[str]:
    """The spec's [determinism] as probe options, the seed included."""
    return spec.determinism.probe_arguments()


def probe_once(target: Target, ctx: Context, out: Path) -> None:
    v = ctx.spec.verify
    argv = [
        "python",
        "-m",
        "orchestrator",
        "probe",
        "--out",
        target.inside(out),
        "--steps",
        str(v.steps),
    ]
    if v.probe:
        argv += ["--probe", v.probe]
    argv += determinism_flags(ctx.spec)
    argv += ["--device", probe_device(ctx.spec, target.name)[0]]
    env = {
        **ctx.launch_env,
        "PYTHONPATH": target.inside(ctx.runtime)
        + (os.pathsep + target.inside(ctx.spec.root) if v.probe else ""),
    }
    command, host_env = target.command(argv, env=env)
    base = {k: val for k, val in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    process.run(command, env={**base, **host_env}, cwd=ctx.spec.root)


def reusable(path: Path, root: Path) -> tuple[fingerprint.Fingerprint | None, str]:
    """A cached fingerprint if it can stand for a new run, else None and why not: it does
    not load (corrupt, truncated, an older format), or a project file it recorded reading
    (code or data, ``inputs``) changed since."""
    try:
        fp = fingerprint.load(path)
    except fingerprint.FingerprintError as exc:
        first, *more = str(exc).removeprefix(f"{fingerprint.printable(path)}: ").splitlines()
        problem = first + (f"; and {len(more)} more" if more else "")
        return None, f"cached fingerprint {path.name} is unreadable ({problem}); probing again"
    changed = inputs.stale(fp.inputs, root)
    if changed:
        shown = ", ".join(changed[:3]) + (
            f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        )
        return None, f"{shown} changed since the cached run"
    return fp, ""


GPU_NOT_VERIFIED = "GPU part not verified here"


def probe_device(spec: Spec, target: str) -> tuple[str, str]:
    """The device a target's probe runs on, and a note for the report ("" when none).

    The flavor decides: a cpu target trains on the CPU even on a GPU box; a CUDA target on the
    GPU when one is visible (and fails if the target cannot reach it), else on the CPU (CUDA
    builds of torch run there too) with the note "GPU part not verified here".
    """
    flavor = spec.flavor_of(target)
    if not flavor.startswith("cu"):
        return "cpu", ""
    if gpus.visible():
        return "cuda", ""
    return "cpu", f"{GPU_NOT_VERIFIED}: no NVIDIA GPU visible, the {flavor} build ran on the CPU"


def provision_target(target: Target, ctx: Context) -> TargetResult:
    """Is the target available, and provision it: "ok", or "skipped"/"failed" with a reason."""
    spec = ctx.spec
    result = TargetResult(target.name, "ok", required=spec.targets[target.name].required)
    reason = target.unavailable()
    if reason:
        result.status, result.reason = "skipped", reason
        return result
    note = probe_device(spec, target.name)[1]
    result.notes += [note] if note else []
    try:
        ctx.progress(f"{target.name}: provisioning")
        target.provision()
    except EnvparityError as exc:
        result.status, result.reason = "failed", str(exc)
    return result


def verify_target(target: Target, ctx: Context, hw: str) -> TargetResult:
    return probe_target(target, ctx, hw, provision_target(target, ctx))


def probe_target(target: Target, ctx: Context, hw: str, result: TargetResult) -> TargetResult:
    """Probe a provisioned target ``spec.verify.runs`` times (cached runs reused); compare."""
    spec = ctx.spec
    if result.status != "ok":
        return result
    try:
        key = run_key(target, ctx, hw)
        runs_dir = ctx.cache / "fingerprints"
        target.make_writable(runs_dir)
        for i in range(1, spec.verify.runs + 1):
            path = runs_dir / f"{target.name}-{key}-{i}.json"
            fp: fingerprint.Fingerprint | None = None
            if path.is_file() and not ctx.fresh and not target.built:
                fp, why = reusable(path, spec.root)
                if fp is None:
                    result.notes.append(why)
                    ctx.progress(f"{target.name}: {fingerprint.printable(why)}")
                    path.unlink(missing_ok=True)
            cached = fp is not None
            if fp is None:
                ctx.progress(f"{target.name}: probe run {i} of {spec.verify.runs}")
                tmp = path.with_name(path.stem + ".partial.json")
                tmp.unlink(missing_ok=True)
                probe_once(target, ctx, tmp)
                os.replace(tmp, path)
                fp = fingerprint.load(path)
            result.runs.append(Run(i, path, fp, cached))
    except EnvparityError as exc:
        result.status, result.reason = "failed", str(exc)
        return result
    # the target's runs repeat one environment: only they can show the probe unrepeatable
    result.verdict = compare(result.fingerprints, spec.verify.tolerances, repeats=True)
    return result


def preflight(spec: Spec, chosen: list[str]) -> list[str]:
    """Refuse impossible specs; fail on stale locks or generated files (verify would test
    those), by the same answer check and doctor give (``freshness.freshness``). Returns how
    the host differs from the spec when it is chosen ([] when it conforms, or is not chosen)."""
    from orchestrator import freshness
    from orchestrator.interpreter import user_interpreter

    lock.refuse_incompatible(spec)
    state = freshness.freshness(spec)
    if not state.current:
        fixes = (
            f"; run {' and '.join(repr(f) for f in state.fixes)}{state.force_note}"
            if state.fixes
            else ""
        )
        raise CheckFailed(
            f"verify would test stale files{fixes}:\n  " + "\n  ".join(state.problems)
        )
    if "host" not in chosen:
        return []
    return freshness.conformance(spec, user_interpreter()).problems


def verify(
    spec: Spec,
    *,
    names: list[str] | None = None,
    strict: bool = False,
    fresh: bool = False,
    probe: str | None = None,
    accept_host_drift: bool = False,
    record: bool = False,
    out: Path | None = None,
    concurrent: bool = True,
    progress: Callable[[str], None] = lambda message: None,
) -> VerifyResult:
    """Verify ``names`` (default: every target of the spec); ``probe`` (``module:function``)
    overrides the spec's ``[verify] probe``; ``record`` writes the runs as references
    (``references.record``) when every target agrees; ``out`` gets a copy of each run's
    fingerprint (``references.run_file_name``); ``concurrent`` provisions in threads."""
    if probe is not None:
        check_reference(probe)
        spec = dataclasses.replace(spec, verify=dataclasses.replace(spec.verify, probe=probe))
    chosen = choose_targets(spec, names)
    spec = with_defaults(spec, chosen)
    host_drift = preflight(spec, chosen)
    cache = spec.root / RUNTIME_DIR
    # What verify and its targets write or delete under .envparity: never through a link.
    files.refuse_links(spec.root, *(f"{RUNTIME_DIR}/{p}" for p in RUNTIME_PATHS))
    with exclusive(cache, progress):
        ctx = Context(
            spec=spec, cache=cache, runtime=prepare_runtime(cache), fresh=fresh, progress=progress
        )
        hw = hardware()
        results = run_targets([TARGETS[name](ctx) for name in chosen], ctx, hw, concurrent)
    for t in results:
        if t.name == "host" and t.status == "ok":  # a host that did not run proves nothing
            t.drift, t.drift_accepted = host_drift, accept_host_drift
    firsts = [t.runs[0].fingerprint for t in results if t.status == "ok" and t.runs]
    across = compare(firsts, spec.verify.tolerances) if len(firsts) > 1 else None
    result = VerifyResult(spec, results, across, strict, probe=spec.verify.probe or BUILTIN)
    if out is not None:
        export_runs(results, out)
    ok = [(t.name, t.runs[0]) for t in results if t.status == "ok" and t.runs]
    if record and not result.problems:
        result.recorded = references.record(
            spec, [(name, run.path) for name, run in ok], machine=hw
        )
    result.references = compare_with_references(
        spec, [(name, run.fingerprint) for name, run in ok], spec.verify.tolerances
    )
    if record and result.problems and not result.recorded:
        result.references.notes.append("nothing recorded: verify found the problems below")
    return result


def run_targets(
    targets: list[Target], ctx: Context, hw: str, concurrent: bool = True
) -> list[TargetResult]:
    """Provision every target (concurrently: one thread each), probe them one at a time in the
    order they become ready, and return the results in the order of ``targets``."""
    if not concurrent or len(targets) < 2:
        return [verify_target(t, ctx, hw) for t in targets]
    finished: dict[str, TargetResult] = {}
    with ThreadPoolExecutor(max_workers=len(targets), thread_name_prefix="provision") as pool:
        futures = {pool.submit(provision_target, t, ctx): t for t in targets}
        for future in as_completed(futures):  # the main thread probes, one target at a time
            target = futures[future]
            finished[target.name] = probe_target(target, ctx, hw, future.result())
    return [finished[t.name] for t in targets]


def export_runs(results: list[TargetResult], out: Path) -> list[Path]:
    """Copy each target's run fingerprints to ``out`` (for CI artifacts)."""
    written = []
    for t in results:
        for run in t.runs:
            path = out / references.run_file_name(t.name, run.index)
            files.atomic_write(path, run.path.read_text(encoding="utf-8"))
            written.append(path)
    return written
