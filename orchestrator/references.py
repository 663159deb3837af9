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

A reference recorded from other spec inputs (seed, determinism, steps), another probe (what
``orchestrator.probe.inputs.probe_source`` hashes: the probe's code and envparity's modules
that decide the numbers) or another lock is *stale*: it is listed (by ``check`` as a failure,
by ``verify`` as a note) and never compared.

This module is the store: what a reference is, where it lives, how it is recorded and when it
is stale; ``envparity check`` uses it without importing the verdict. Comparing runs with the
references (the reference of a run's own class with the spec's ``rtol``/``atol``, bitwise by
default, and of every other class with ``cross_device_rtol``) is the verdict's:
``orchestrator.verdict.references``.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator import files, lock
from orchestrator.messages import quote
from orchestrator.names import canonical_name
from orchestrator.probe import fingerprint, inputs
from orchestrator.probe.fingerprint import Fingerprint, FingerprintError
from orchestrator.schema import Reader, expected, tables
from orchestrator.spec import DEFAULT_TARGETS, Spec

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
    hash, lock path). The inputs are the seed and [determinism], the probe, what the probe is
    (``inputs.probe_source``: its code and envparity's modules that decide the numbers, the
    same hash verify's cache key takes), the steps and the target's flavor."""
    flavor = spec.flavor_of(target)
    data = spec.to_dict()
    digest = files.inputs_hash(
        {
            "determinism": data["determinism"],
            "steps": spec.verify.steps,
            "probe": spec.verify.probe or "",
            "probe_source": inputs.probe_source(spec.verify.probe, spec.root),
            "flavor": flavor,
        }
    )
    lock_path = lock.LockTarget(flavor, spec.systems_of(flavor)[0]).path
    return digest, lock.lock_digest(spec, flavor), lock_path


def stale_reason(spec: Spec, ref: Reference) -> str | None:
    """Why ``ref`` cannot be compared under ``spec`` (None when it can).

    Stale: the target is gone; the spec inputs differ (``reference_inputs``); the target now
    installs another flavor's lock; or the lock pins another version of a package the
    reference's run had installed (packages added to the lock since do not count: the
    recorded run did not have them, so they did not take part in its numbers). ``host``
    installs nothing from the lock: a changed host shows as a divergence, with its cause.
    """
    if ref.target not in spec.targets and ref.target not in DEFAULT_TARGETS:
        return f"target {ref.target!r} is no longer in {spec.path.name}"
    digest, lock_digest, lock_path = reference_inputs(spec, ref.target)
    if ref.inputs != digest:
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


def changed_pins(spec: Spec, ref: Reference, lock_path: str) -> list[str]:
    """``"numpy 2.4.6 (the reference ran with 2.4.5)"`` for each package of the reference's
    run that the lock at ``lock_path`` now pins at another version; [] when none (or no lock)."""
    text = files.read(spec.root / lock_path, lock_path)
    if text is None:
        return [f"nothing ({lock_path} is missing)"]
    header = files.read_header(text)
    pins = lock.pinned(header.body if header else text)
    had = {
        canonical_name(name): str(version)
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
        for target, entry in sorted(_entries(meta_path).items()):
            out.append(
                Reference(
                    hw_class=meta_path.parent.name,
                    target=target,
                    fingerprint=fingerprint.load(meta_path.parent / f"{target}.json"),
                    **entry,
                )
            )
    return out


_ENTRY_KEYS = ("recorded_at", "machine", "inputs", "lock", "lock_file")


def _entries(meta_path: Path) -> dict[str, dict[str, str]]:
    """A ``reference.json``'s ``targets``: target -> its ``_ENTRY_KEYS``, read through the one
    reader (``FingerprintError`` naming the file and every bad key path)."""
    meta = _meta(meta_path)
    if meta.get("format") != META_FORMAT or meta.get("version") != META_VERSION:
        raise FingerprintError(
            f"{meta_path}: not an envparity reference (format {quote(meta.get('format'))} "
            f"version {quote(meta.get('version'))}; expected {META_FORMAT!r} version "
            f"{META_VERSION})"
        )

    def entry(r: Reader, t: dict[str, Any]) -> dict[str, str]:
        return {key: r.require(t, key, "", str) for key in _ENTRY_KEYS}

    r = Reader(str(meta_path))
    found = r.entries(meta, "targets", "", tables(entry), required=True)
    if r.problems:
        raise FingerprintError("\n".join(str(p) for p in r.problems))
    return found


def _meta(path: Path) -> dict[str, Any]:
    data = fingerprint.read_json(path)
    if not isinstance(data, dict):
        raise FingerprintError(f"{path}: not an envparity reference ({expected('a table', data)})")
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
            digest, lock_digest, lock_path = reference_inputs(spec, target)
            files.atomic_write(where / f"{target}.json", path.read_text(encoding="utf-8"))
            meta["targets"][target] = {
                "recorded_at": now,
                "machine": machine,
                "inputs": digest,
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


# --------------------------------------------------------------------------- run files (CI)


def run_file_name(target: str, index: int) -> str:
    """How verify --out names a run's fingerprint, and how ``target_of`` reads it back."""
    return f"{target}-run{index}.json"


def target_of(path: Path) -> str:
    """The target that wrote ``path`` (a ``run_file_name``); the stem when it is not one."""
    stem = path.stem
    head, sep, tail = stem.rpartition("-run")
    return head if sep and tail.isdigit() else stem
