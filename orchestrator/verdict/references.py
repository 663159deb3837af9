"""Runs against the committed references, and runs of several machines against each other.

A run is compared with the reference of its own hardware class with the spec's
``rtol``/``atol`` (bitwise by default) and with the reference of every other class with
``cross_device_rtol`` (``Tolerances.across_classes``). Stale references are noted, never
compared. The references themselves (what was recorded, and when it is stale) are
``orchestrator.references``; the words of each result are ``orchestrator.verdict.wording``.

``compare_with_references`` is what ``verify`` reports; ``compare_artifacts`` is what
``envparity compare --references DIR`` (the CI's compare job) reports: the runs of every
machine with each other and with the references.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import UsageError
from orchestrator.probe.fingerprint import Fingerprint
from orchestrator.references import (
    FOLDER,
    Reference,
    folder,
    hardware_class,
    load_all,
    stale_reason,
    target_of,
)
from orchestrator.spec import Spec
from orchestrator.tolerances import Tolerances
from orchestrator.verdict import wording
from orchestrator.verdict.compare import PairVerdict, compare


@dataclass(frozen=True)
class Comparison:
    """One run against one reference, or (``reference`` False) against another run."""

    target: str
    hw_class: str
    against: str  # "reference " + the reference's describe(), or "<target> (<file>)"
    same_class: bool
    pair: PairVerdict
    reference: bool = True

    @property
    def diverged(self) -> bool:
        return self.pair.kind == "diverged"

    def verdict(self, *, reason: bool = True) -> str:
        """``bitwise identical (same hardware class)``, ``DIVERGED at losses step 3: ...``
        (``wording.against_reference``)."""
        return wording.against_reference(self.pair, self.same_class, reason=reason)

    def line(self) -> str:
        return f"{self.target} vs {self.against}: {self.verdict()}"


@dataclass
class ReferenceReport:
    comparisons: list[Comparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # stale or missing references
    fingerprints: int = 0  # how many runs were given

    @property
    def kind(self) -> str | None:
        """The worst result of every comparison; None when nothing was compared."""
        return wording.worst(c.pair.kind for c in self.comparisons)

    @property
    def problems(self) -> list[str]:
        return [
            wording.diverged_from(c.target, c.against, c.pair)
            for c in self.comparisons
            if c.diverged
        ]

    def headline(self) -> str:
        """``bitwise identical (4 fingerprints, 2 reference comparisons)``."""
        return wording.headline(
            self.kind, self.fingerprints, sum(c.reference for c in self.comparisons)
        )

    def lines(self) -> list[str]:
        return [c.line() for c in self.comparisons] + self.notes

    def markdown(self, title: str = "envparity: fingerprints vs references") -> str:
        """The verdict as a Markdown table (for ``$GITHUB_STEP_SUMMARY``)."""
        out = [f"## {title}: {wording.word(self.kind)}", ""]
        out += [
            "| target | class | compared with | verdict | first difference | likely cause |",
            "|---|---|---|---|---|---|",
        ]
        for c in self.comparisons:
            first = c.pair.reason if c.diverged else "-"
            cause = c.pair.causes[0] if c.diverged and c.pair.causes else "-"
            out.append(
                f"| {c.target} | {c.hw_class} | {_md(c.against)} | "
                f"{_md(c.verdict(reason=False))} | {_md(first)} | {_md(cause)} |"
            )
        out += [""] + [f"- {_md(n)}" for n in self.notes]
        return "\n".join(out) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _pair(a: Fingerprint, b: Fingerprint, tol: Tolerances, same: bool) -> PairVerdict:
    return compare([a, b], tol if same else tol.across_classes()).pairs[0]


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
    compared. Raises ``FingerprintError`` naming a malformed reference file."""
    report = ReferenceReport(fingerprints=len(runs))
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
    report = ReferenceReport(fingerprints=len(runs))
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
        report.comparisons.append(
            Comparison(target, hw_class, against, same, pair, reference=False)
        )
    return report


def compare_artifacts(
    spec: Spec, fingerprints: Sequence[Fingerprint], tol: Tolerances, root: Path
) -> ReferenceReport:
    """``envparity compare --references ROOT``: runs of several machines (files named by
    ``references.run_file_name``, as ``verify --out`` writes them), each against the first of
    its hardware class and the first of each class against the first overall
    (``compare_runs``), then each target's first run against the references in ``root``
    (``compare_with_references``), each target's first run of each class. Raises
    ``UsageError`` when ``root`` is not a folder (the spec's own ``fingerprints/`` may not exist
    yet: no references, a note, as verify says)."""
    if not root.is_dir() and root.resolve() != folder(spec).resolve():
        raise UsageError(f"compare --references {root}: no such folder")
    runs = [(target_of(Path(fp.source)), fp) for fp in fingerprints]
    among = compare_runs(runs, tol)
    firsts: dict[tuple[str, str], tuple[str, Fingerprint]] = {}  # per target and class
    for name, fp in runs:
        firsts.setdefault((name, hardware_class(fp)), (name, fp))
    against = compare_with_references(spec, list(firsts.values()), tol, root=root)
    return ReferenceReport(
        among.comparisons + against.comparisons, among.notes + against.notes, len(fingerprints)
    )
