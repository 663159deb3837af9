"""``envparity check``: is everything generated from the spec current and possible?

Compatibility problems are refusals (exit 2, like any bad spec); stale locks and drifted files
are check failures (exit 1) shown as diffs; pinning advice is printed as warnings (exit 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator import compat, files, lock, render
from orchestrator.errors import SpecError
from orchestrator.render.flake import flake_lock_drift, flake_warnings
from orchestrator.spec import DevcontainerTarget, NixTarget, Spec


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    exit_code: int = 0


def pinning_warnings(spec: Spec) -> list[str]:
    out = []
    dc = spec.targets.get("devcontainer")
    if isinstance(dc, DevcontainerTarget) and not dc.pinned:
        out.append(
            f"warning: targets.devcontainer.image {dc.image!r} is not pinned by digest; "
            "append @sha256:<digest> (from `docker buildx imagetools inspect IMAGE`)"
        )
    nx = spec.targets.get("nix")
    if isinstance(nx, NixTarget) and spec.environment.python.count(".") == 2:
        out.append(
            f"warning: environment.python {spec.environment.python!r} is an exact release, but the "
            f"flake takes nixpkgs' python{spec.environment.python_minor.replace('.', '')}, whose "
            "patch release is whatever the pinned nixpkgs commit has"
        )
    if isinstance(nx, NixTarget) and not nx.pinned:
        out.append(
            f"warning: targets.nix.nixpkgs {nx.nixpkgs!r} is not pinned to a commit; "
            "use github:NixOS/nixpkgs/<40-hex commit>"
        )
    return out


def check(spec: Spec) -> Report:
    problems = compat.check(spec)
    if problems:
        raise SpecError(problems)
    report = Report()
    report.lines += [f"warning: {w}" for w in compat.warnings(spec)]
    report.lines += pinning_warnings(spec)
    report.lines += [f"warning: {w}" for w in flake_warnings(spec)]
    stale = lock.stale_locks(spec)
    generated = render.render_all(spec)
    drift = files.drift(spec.root, generated)
    for d in drift:
        report.lines.append(d.diff.rstrip("\n"))
    for path in render.orphans(spec, generated):
        drift.append(files.Drift(path, ""))
        report.lines.append(f"{path}: no longer produced by {spec.path.name}")
    report.lines += stale
    if stale or drift:
        fixes = (["envparity lock"] if stale else []) + (["envparity render"] if drift else [])
        report.lines.append(
            f"{len(stale)} stale lock(s), {len(drift)} drifted file(s); run: {' && '.join(fixes)}"
        )
        report.exit_code = 1
    else:
        n = len(lock.lock_targets(spec)) + len(generated)
        report.lines.append(f"ok: {n} generated files match {spec.path.name}")
    lock_drift = flake_lock_drift(spec)
    if lock_drift:  # flake.lock is written by nix and committed: reported, never rewritten
        report.lines.append(lock_drift)
        report.exit_code = 1
    return report
