"""The runs of a CI pipeline, as its ``compare`` job sees them (``envparity compare --references
DIR FILE... [--report FILE] [--record-to DIR]``): fingerprints downloaded from every probe job,
named by the job that made them, shown in verify's HTML report, and written as references laid
out as ``fingerprints/<class>/`` (``references.record``) for the user to commit.

A probe job's fingerprints sit in its artifact folder ``fingerprints-<job>`` (``render.ci``),
as ``verify --out`` names them (``<target>-run<i>.json``).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import references
from orchestrator.probe.fingerprint import Fingerprint
from orchestrator.render.ci import ARTIFACT_PREFIX
from orchestrator.spec import Spec
from orchestrator.verdict.references import ReferenceReport


@dataclass
class JobRuns:
    """One probe job's runs: the job's name, the target it probed, its fingerprints in order."""

    job: str
    target: str
    runs: list[tuple[Path, Fingerprint]] = field(default_factory=list)


def job_of(path: Path) -> str:
    """The job that wrote ``path``: its folder ``fingerprints-<job>``; else the target in the
    file's name (``references.target_of``)."""
    folder = path.parent.name
    if folder.startswith(ARTIFACT_PREFIX) and folder != ARTIFACT_PREFIX:
        return folder.removeprefix(ARTIFACT_PREFIX)
    return references.target_of(path)


def by_job(fps: list[Fingerprint]) -> list[JobRuns]:
    """``fps`` (loaded from files: ``fp.source``) grouped by job, in the order first seen."""
    jobs: dict[str, JobRuns] = {}
    for fp in fps:
        path = Path(fp.source)
        job = jobs.setdefault(job_of(path), JobRuns(job_of(path), references.target_of(path)))
        job.runs.append((path, fp))
    return list(jobs.values())


def machine_of(fp: Fingerprint) -> str:
    """The machine that ran ``fp``, from its own capture: ``AMD EPYC 7B13 2 cpus; NVIDIA H100``."""
    platform = fp.environment.platform
    gpus = ", ".join(g.name for g in fp.environment.gpus)
    return f"{platform.get('cpu_model') or 'unknown CPU'} {platform.get('cpu_count')} cpus; {gpus}"


def record(spec: Spec, jobs: list[JobRuns], dest: Path, compared: Path) -> list[Path]:
    """Each target's first run of each hardware class that has no usable reference in
    ``compared`` (none, or a stale one) as a reference under ``dest/fingerprints/<class>/``
    (``references.record``, the machine read from the run), over a copy of the committed
    ``fingerprints/<class>/``, so that the folder replaces it whole. Returns the files written
    ([] when every run already has its reference)."""
    have = {
        (ref.hw_class, ref.target)
        for ref in references.load_all(compared)
        if references.stale_reason(spec, ref) is None
    }
    chosen: dict[tuple[str, str], Path] = {}
    for job in jobs:
        for path, fp in job.runs:
            key = (references.hardware_class(fp), job.target)
            if key not in have:
                chosen.setdefault(key, path)
    root = dest / references.FOLDER
    written: list[Path] = []
    for hw_class in sorted({c for c, _ in chosen}):
        committed = references.folder(spec) / hw_class
        if committed.is_dir() and not (root / hw_class).exists():
            shutil.copytree(committed, root / hw_class)
        items = [(t, p) for (c, t), p in sorted(chosen.items()) if c == hw_class]
        machine = machine_of(next(fp for j in jobs for p, fp in j.runs if p == items[0][1]))
        written += references.record(spec, items, machine=machine, root=root)
    return written


def render_report(spec: Spec, jobs: list[JobRuns], against: ReferenceReport) -> str:
    """verify's HTML report (``report.render_html``) over the jobs' runs: one row per job, its
    runs compared with each other, the first runs across jobs, the reference comparisons."""
    from orchestrator.errors import UsageError
    from orchestrator.probe.run import BUILTIN
    from orchestrator.report import render_html
    from orchestrator.verdict.compare import Verdict, compare
    from orchestrator.verify import Run, TargetResult, VerifyResult

    v = spec.verify

    def verdict(fps: list[Fingerprint]) -> tuple[Verdict | None, str]:
        if len(fps) < 2:
            return None, "one run: nothing to compare it with in this job"
        try:
            return compare(fps, v.tolerances, repeats=True), ""  # one job's runs: repeats
        except UsageError as exc:  # another probe or step count
            return None, str(exc)

    targets = []
    for job in jobs:
        within, why = verdict([fp for _, fp in job.runs])
        targets.append(
            TargetResult(
                name=job.job,
                status="ok" if within else "skipped",
                reason=why,
                runs=[Run(i, p, fp, False) for i, (p, fp) in enumerate(job.runs, 1)],
                verdict=within,
            )
        )
    across, _ = verdict([job.runs[0][1] for job in jobs])
    result = VerifyResult(
        spec, targets, across, strict=False, probe=v.probe or BUILTIN, references=against
    )
    return render_html(result)
