"""``envparity check``: is everything generated from the spec current and possible?

Compatibility problems are refusals (exit 2, like any bad spec); stale locks, drifted files,
stale references in ``fingerprints/`` (``references.stale``) and nox sessions a CI file calls but
the project's noxfile does not register (``render.ci.session_problems``) are check failures
(exit 1); pinning advice is printed as warnings (exit 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator import compat, freshness, references
from orchestrator.errors import SpecError
from orchestrator.render.flake import flake_warnings
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
    """Compatibility (refused: ``SpecError``, exit 2), then freshness (``freshness.freshness``,
    the same answer doctor and verify use): diffs and stale files make exit 1."""
    problems = compat.check(spec)
    if problems:
        raise SpecError(problems)
    report = Report()
    report.lines += [f"warning: {w}" for w in compat.warnings(spec)]
    report.lines += pinning_warnings(spec)
    report.lines += [f"warning: {w}" for w in flake_warnings(spec)]
    report.lines += [f"warning: {w}" for w in spec.determinism.warnings()]
    state = freshness.freshness(spec)
    # not part of freshness: verify must still run (--record is the fix); judged against the
    # locks as they are now
    stale_refs = references.stale(spec)
    sessions = _ci_sessions(spec)  # read from the noxfile; a nox process only when unsure
    report.lines += [d.diff.rstrip("\n") for d in state.drift]
    report.lines += list(state.orphans) + list(state.stale_locks)
    report.lines += stale_refs
    report.lines += sessions
    if state.current and not stale_refs and not sessions:
        report.lines.append(f"ok: {state.summary}")
        return report
    if not state.files_current:
        report.lines.append(state.summary)
    if stale_refs:
        report.lines.append(f"{len(stale_refs)} stale reference(s); run: envparity verify --record")
    if state.flake_lock:  # flake.lock is written by nix and committed: reported, never rewritten
        report.lines.append(state.flake_lock)
    report.exit_code = 1
    return report


def _ci_sessions(spec: Spec) -> list[str]:
    """Sessions the CI files on disk call that the noxfile lacks (``render.ci.session_problems``:
    the noxfile read with ``ast``, nox run only when that reading is not enough)."""
    if spec.ci is None:
        return []
    from orchestrator.render import CI_FILES
    from orchestrator.render.ci import session_problems

    return session_problems(spec, [CI_FILES[p] for p in spec.ci.providers])
