"""Reference fingerprints: results recorded once per hardware class, compared ever after.

``envparity verify --record`` copies the first-run fingerprint of each target into the
committed folder ``fingerprints/``::

    fingerprints/<class>/reference.json   when, on which machine, from which spec inputs and lock
    fingerprints/<class>/<target>.json    the fingerprint itself (format: docs/probe.md)

The hardware class is read from the fingerprint's own environment capture (what the probe saw,
not what the host guesses), by ``hardware_class``:

- CPU runs: ``cpu-<CPU model slug>-<ISA>``, the model from ``/proc/cpuinfo`` ``model name`` and the
  ISA from ``torch.backends.cpu.get_cpu_capability()`` (the kernels torch dispatches to), e.g.
  ``cpu-amd-epyc-avx512``;
- CUDA runs: ``gpu-<GPU model slug>-sm<compute capability>-driver<major>``, from
  ``torch.cuda.get_device_properties`` and collect_env's ``nvidia_driver_version``, e.g.
  ``gpu-nvidia-h200-sm90-driver570``.

A later run is compared with the reference of its own class with the spec's ``rtol``/``atol``
(bitwise by default) and with the reference of every other class with ``cross_device_rtol``.
A reference recorded from other spec inputs (seed, determinism, steps, probe) or another lock
is *stale*: it is listed (by ``check`` as a failure, by ``verify`` as a note) and never compared.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator import files
from orchestrator.errors import UsageError
from orchestrator.probe import fingerprint
from orchestrator.probe.compare import PairVerdict, compare
from orchestrator.probe.fingerprint import Fingerprint, FingerprintError

if TYPE_CHECKING:
    from orchestrator.spec import Spec

FOLDER = "fingerprints"  # under the spec's folder; committed
META = "reference.json"
META_FORMAT = "envparity-reference"
META_VERSION = 1
RECORD_HINT = "run 'envparity verify --record' to record it again"


# --------------------------------------------------------------------------- hardware classes


def _slug(text: str) -> str:
    text = re.sub(r"\((r|tm|c)\)", " ", text.lower())
    text = re.sub(r"\b(cpu|processor|\d+-core)\b|@.*$", " ", text)
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "unknown"


def hardware_class(fp: Fingerprint) -> str:
    """The hardware class of the run that wrote ``fp`` (see the module docstring).

    Raises ``FingerprintError`` when the capture lacks what the key is made of.
    """
    env = fp.environment
    if fp.device == "cuda":
        if not env.gpus:
            raise FingerprintError(f"{fp.source}: a CUDA run without environment.gpus")
        gpu = env.gpus[0]
        cc = gpu.capability.replace(".", "")
        driver = str(env.collect_env.get("nvidia_driver_version") or "unknown")
        return f"gpu-{_slug(gpu.name)}-sm{cc}-driver{driver.split('.')[0]}"
    model = str(env.platform.get("cpu_model") or "unknown")
    isa = str(env.torch.get("cpu_capability") or "unknown")
    return f"cpu-{_slug(model)}-{_slug(isa)}"


# --------------------------------------------------------------------------- what a reference is


@dataclass(frozen=True)
class Reference:
    """One recorded fingerprint and what it was recorded from."""

    hw_class: str
    target: str
    fingerprint: Fingerprint
    recorded_at: str  # ISO 8601, UTC
    machine: str  # CPU model, core count, GPUs (``verify.hardware()``)
    inputs: str  # ``reference_inputs`` when it was recorded
    lock: str  # the lock's content hash when it was recorded
    lock_file: str  # which lock, relative to the spec's folder

    @property
    def name(self) -> str:
        return f"{self.hw_class}/{self.target}"

    def describe(self) -> str:
        """``cpu-amd-epyc-avx512/venv (recorded 2026-11-30T05:10:02Z on AMD EPYC 2 cpus,
        locks/cpu.txt sha256:0123abcd)``"""
        return (
            f"{self.name} (recorded {self.recorded_at} on {self.machine}, "
            f"{self.lock_file} sha256:{self.lock[:8]})"
        )


def reference_inputs(spec: Spec, target: str) -> tuple[str, str, str]:
    """What a target's fingerprints depend on besides hardware: (inputs hash, lock content
    hash, lock path). The inputs are the seed and [determinism], the probe and its source (for
    the built-in probe, envparity's ``probe/workload.py`` and ``probe/recorder.py``), the steps
    and the target's flavor."""
    from orchestrator import lock
    from orchestrator.verify import probe_source

    flavor = spec.flavor_of(target)
    data = spec.to_dict()
    inputs = files.inputs_hash(
        {
            "determinism": data["determinism"],
            "steps": spec.verify.steps,
            "probe": spec.verify.probe or "",
            "probe_source": probe_source(spec) or _builtin_probe_source(),
            "flavor": flavor,
        }
    )
    lock_path = lock.LockTarget(flavor, spec.systems_of(flavor)[0]).path
    return inputs, lock.lock_digest(spec, flavor), lock_path


def _builtin_probe_source() -> str:
    """A hash of the built-in probe's code: a change to it is a new probe, not a divergence."""
    here = Path(__file__).resolve().parent / "probe"
    return files.inputs_hash(
        {name: files.sha256((here / name).read_text(encoding="utf-8")) for name in _BUILTIN}
    )


_BUILTIN = ("workload.py", "recorder.py")


def stale_reason(spec: Spec, ref: Reference) -> str | None:
    """Why ``ref`` cannot be compared under ``spec`` (None when it can).

    Stale: the target is gone; the spec inputs differ (``reference_inputs``); the target now
    installs another flavor's lock; or the lock pins another version of a package the
    reference's run had installed (packages added to the lock since do not count: the
    recorded run did not have them, so they did not take part in its numbers). ``host``
    installs nothing from the lock: a changed host shows as a divergence, with its cause.
    """
    from orchestrator.verify import DEFAULT_TARGETS  # host and venv run without a table

    if ref.target not in spec.targets and ref.target not in DEFAULT_TARGETS:
        return f"target {ref.target!r} is no longer in {spec.path.name}"
    inputs, lock_digest, lock_path = reference_inputs(spec, ref.target)
    if ref.inputs != inputs:
        return (
            f"recorded from other {spec.path.name} inputs (seed, determinism, steps or probe) "
            "or another version of the probe's code"
        )
    if ref.target == "host" or ref.lock == lock_digest:
        return None
    if ref.lock_file != lock_path:
        return (
            f"recorded from another lock ({ref.lock_file}; {ref.target} now installs {lock_path})"
        )
    changed = changed_pins(spec, ref, lock_path)
    if changed:
        more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
        return f"recorded from another lock: {lock_path} now pins {changed[0]}{more}"
    return None


def _canonical(name: str) -> str:
    from packaging.utils import canonicalize_name

    return str(canonicalize_name(name))


def changed_pins(spec: Spec, ref: Reference, lock_path: str) -> list[str]:
    """``"numpy 2.4.6 (the reference ran with 2.4.5)"`` for each package of the reference's
    run that the lock at ``lock_path`` now pins at another version; [] when none (or no lock)."""
    from orchestrator import lock

    text = files.read(spec.root / lock_path, lock_path)
    if text is None:
        return [f"nothing ({lock_path} is missing)"]
    header = files.read_header(text)
    pins = lock.pinned(header.body if header else text)
    had = {
        _canonical(name): str(version)
        for name, version in ref.fingerprint.environment.packages.items()
    }
    return [
        f"{name} {version} (the reference ran with {had[name]})"
        for name, version in sorted(pins.items())
        if name in had and had[name] != version
    ]


# --------------------------------------------------------------------------- loading and saving


def folder(spec: Spec) -> Path:
    return spec.root / FOLDER


def load_all(root: Path) -> list[Reference]:
    """Every reference under ``root`` (the ``fingerprints/`` folder), sorted by class and target.

    Raises ``FingerprintError`` (exit 2) naming the file for a malformed one.
    """
    if not root.is_dir():
        return []
    out: list[Reference] = []
    for meta_path in sorted(root.glob(f"*/{META}")):
        meta = _meta(meta_path)
        if meta.get("format") != META_FORMAT or meta.get("version") != META_VERSION:
            raise FingerprintError(
                f"{meta_path}: not an envparity reference (format {meta.get('format')!r} "
                f"version {meta.get('version')!r}; expected {META_FORMAT!r} version {META_VERSION})"
            )
        targets = meta.get("targets")
        if not isinstance(targets, dict):
            raise FingerprintError(f"{meta_path}: targets: expected an object")
        hw_class = meta_path.parent.name
        for target, entry in sorted(targets.items()):
            keys = ("recorded_at", "machine", "inputs", "lock", "lock_file")
            if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in keys):
                raise FingerprintError(
                    f"{meta_path}: targets.{target}: expected an object with string "
                    + ", ".join(keys)
                )
            out.append(
                Reference(
                    hw_class=hw_class,
                    target=target,
                    fingerprint=fingerprint.load(meta_path.parent / f"{target}.json"),
                    **{k: entry[k] for k in keys},
                )
            )
    return out


def _meta(path: Path) -> dict[str, Any]:
    data = fingerprint.read_json(path)
    if not isinstance(data, dict):
        raise FingerprintError(f"{path}: not an envparity reference (not a JSON object)")
    return data


def record(
    spec: Spec,
    recorded: Sequence[tuple[str, Path]],
    *,
    machine: str,
    now: str | None = None,
    root: Path | None = None,
) -> list[Path]:
    """Write ``(target, fingerprint file)`` pairs as the references of their hardware classes,
    in ``root`` (default: the spec's ``fingerprints/``; CI's compare job writes elsewhere).

    A class's other targets keep their references. Returns the files written.
    """
    machine = re.sub(r"[;\s]+$", "", machine)  # verify.hardware() ends in "; " without GPUs
    now = now or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    by_class: dict[str, list[tuple[str, Path]]] = {}
    for target, path in recorded:
        by_class.setdefault(hardware_class(fingerprint.load(path)), []).append((target, path))
    written: list[Path] = []
    # Committed files: never written through a symbolic link (orchestrator.files' policy).
    if root is None:
        files.refuse_links(spec.root, *(f"{FOLDER}/{c}/{META}" for c in by_class))
    else:
        files.refuse_links(root, *(f"{c}/{META}" for c in by_class))
    for hw_class, items in sorted(by_class.items()):
        where = (root or folder(spec)) / hw_class
        meta_path = where / META
        meta: dict[str, Any] = (
            _meta(meta_path)
            if meta_path.is_file()
            else {"format": META_FORMAT, "version": META_VERSION, "targets": {}}
        )
        meta.setdefault("targets", {})
        for target, path in items:
            inputs, lock_digest, lock_path = reference_inputs(spec, target)
            files.atomic_write(where / f"{target}.json", path.read_text(encoding="utf-8"))
            meta["targets"][target] = {
                "recorded_at": now,
                "machine": machine,
                "inputs": inputs,
                "lock": lock_digest,
                "lock_file": lock_path,
            }
            written.append(where / f"{target}.json")
        files.atomic_write(meta_path, fingerprint.dumps(meta))
        written.append(meta_path)
    return written


def stale(spec: Spec) -> list[str]:
    """``check``'s view: one line per stale reference, [] when all can be compared."""
    return [
        f"{FOLDER}/{ref.name}: stale reference: {reason}; {RECORD_HINT}"
        for ref in load_all(folder(spec))
        if (reason := stale_reason(spec, ref))
    ]


# --------------------------------------------------------------------------- comparing


@dataclass(frozen=True)
class Tolerances:
    rtol: float = 0.0
    atol: float = 0.0
    cross_device_rtol: float = 1e-4


@dataclass(frozen=True)
class Comparison:
    """One run against one reference (or, ``reference`` None, against another run)."""

    target: str
    hw_class: str
    against: str  # the reference's describe(), or the other run's file
    same_class: bool
    pair: PairVerdict

    @property
    def diverged(self) -> bool:
        return self.pair.kind == "diverged"

    def verdict(self, *, first_difference: bool = True) -> str:
        """``bitwise identical (same hardware class)``, ``DIVERGED at losses step 3: ...``
        (without ``first_difference``: ``DIVERGED (same hardware class)``)."""
        text = {"bitwise": "bitwise identical", "tolerance": "within tolerance"}.get(
            self.pair.kind, "DIVERGED"
        )
        if self.diverged and first_difference:
            text += f" at {self.first_difference()}"
        how = (
            "same hardware class"
            if self.same_class
            else f"other hardware class, cross_device_rtol={self.pair.tolerance.get('rtol', 0):g}"
        )
        return f"{text} ({how})"

    def first_difference(self) -> str:
        """``losses step 3: loss differs ...``; "" when nothing diverged."""
        if not self.diverged:
            return ""
        step = f" step {self.pair.step}" if self.pair.step is not None else ""
        return f"{self.pair.stage}{step}: {self.pair.reason}"

    def line(self) -> str:
        return f"{self.target} vs {self.against}: {self.verdict()}"


@dataclass
class ReferenceReport:
    comparisons: list[Comparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # stale or missing references

    @property
    def problems(self) -> list[str]:
        return [f"{c.target}: diverged from {c.against}" for c in self.comparisons if c.diverged]

    def lines(self) -> list[str]:
        return [c.line() for c in self.comparisons] + self.notes

    def markdown(self, title: str = "envparity: fingerprints vs references") -> str:
        """The verdict as a Markdown table (for ``$GITHUB_STEP_SUMMARY``)."""
        verdict = "DIVERGED" if self.problems else "equivalent"
        out = [f"## {title}: {verdict}", ""]
        out += [
            "| target | class | compared with | verdict | first difference | likely cause |",
            "|---|---|---|---|---|---|",
        ]
        for c in self.comparisons:
            cause = c.pair.causes[0] if c.diverged and c.pair.causes else "-"
            out.append(
                f"| {c.target} | {c.hw_class} | {_md(c.against)} | "
                f"{_md(c.verdict(first_difference=False))} | "
                f"{_md(c.first_difference() or '-')} | {_md(cause)} |"
            )
        out += [""] + [f"- {_md(n)}" for n in self.notes]
        return "\n".join(out) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _pair(a: Fingerprint, b: Fingerprint, tol: Tolerances, same: bool) -> PairVerdict:
    rtol = tol.rtol if same else tol.cross_device_rtol
    verdict = compare([a, b], rtol=rtol, atol=tol.atol, cross_device_rtol=tol.cross_device_rtol)
    return verdict.pairs[0]


def _pick(refs: Iterable[Reference], target: str) -> Reference | None:
    """The class's reference of ``target``, else the class's first (all targets of one class
    agreed when they were recorded)."""
    refs = list(refs)
    return next((r for r in refs if r.target == target), refs[0] if refs else None)


def compare_with_references(
    spec: Spec,
    runs: Sequence[tuple[str, Fingerprint]],
    tol: Tolerances,
    *,
    root: Path | None = None,
) -> ReferenceReport:
    """Each ``(target, first-run fingerprint)`` against the reference of its class (spec
    tolerance) and of every other class (cross-device tolerance), the references read from
    ``root`` (default: the spec's ``fingerprints/``). Stale references are noted, never
    compared."""
    report = ReferenceReport()
    usable: dict[str, list[Reference]] = {}
    for ref in load_all(root or folder(spec)):
        reason = stale_reason(spec, ref)
        if reason:
            report.notes.append(f"reference {ref.describe()} is stale, not compared: {reason}")
        else:
            usable.setdefault(ref.hw_class, []).append(ref)
    missing: set[str] = set()
    for target, fp in runs:
        own = hardware_class(fp)
        if own not in usable:
            missing.add(own)
        for hw_class, refs in sorted(usable.items()):
            chosen = _pick(refs, target)
            assert chosen is not None
            same = hw_class == own
            try:
                pair = _pair(fp, chosen.fingerprint, tol, same)  # names and values: target first
            except UsageError as exc:  # another probe or step count: not comparable
                report.notes.append(f"{target}: not compared with {chosen.describe()}: {exc}")
                continue
            against = f"reference {chosen.describe()}"
            report.comparisons.append(Comparison(target, own, against, same, pair))
    report.notes += [
        f"no reference for hardware class {c} in {FOLDER}/ yet (run 'envparity verify --record' "
        "on this machine and commit it)"
        for c in sorted(missing)
    ]
    return report


def compare_runs(runs: Sequence[tuple[str, Fingerprint]], tol: Tolerances) -> ReferenceReport:
    """Runs of several machines (CI artifacts) with each other: each against the first run of
    its class (spec tolerance) and the first run of each class against the very first run
    (cross-device tolerance)."""
    report = ReferenceReport()
    firsts: dict[str, tuple[str, Fingerprint]] = {}
    for target, fp in runs:
        hw_class = hardware_class(fp)
        if hw_class not in firsts:
            firsts[hw_class] = (target, fp)
            if len(firsts) == 1:
                continue
            base_target, base = next(iter(firsts.values()))
            same = False
        else:
            base_target, base = firsts[hw_class]
            same = True
        try:
            pair = _pair(fp, base, tol, same)  # names and values: target first
        except UsageError as exc:
            report.notes.append(f"{target} ({fp.source}) not compared: {exc}")
            continue
        against = f"{base_target} ({base.source})"
        report.comparisons.append(Comparison(target, hw_class, against, same, pair))
    return report


# --------------------------------------------------------------------------- run files (CI)


def run_file_name(target: str, index: int) -> str:
    """How verify --out names a run's fingerprint, and how ``target_of`` reads it back."""
    return f"{target}-run{index}.json"


def target_of(path: Path) -> str:
    """The target that wrote ``path`` (a ``run_file_name``); the stem when it is not one."""
    stem = path.stem
    head, sep, tail = stem.rpartition("-run")
    return head if sep and tail.isdigit() else stem
