"""``envparity doctor``: audit this machine and repository against the spec and the
reproducibility checklist (pinned dependencies, fixed seeds, launch environment, pinned
images, documented variables, matching driver). Exit 1 if anything fails; warnings do not."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import check, compat, cuda_host, files, freshness, gpus, lock
from orchestrator.interpreter import user_interpreter
from orchestrator.spec import Spec


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    failures: int = 0

    def ok(self, message: str) -> None:
        self.lines.append(f"  ok    {message}")

    def warn(self, message: str, fix: str = "") -> None:
        self.lines.append(f"  warn  {message}" + (f"\n        -> {fix}" if fix else ""))

    def fail(self, message: str, fix: str = "") -> None:
        self.failures += 1
        self.lines.append(f"  FAIL  {message}" + (f"\n        -> {fix}" if fix else ""))

    def section(self, title: str) -> None:
        self.lines.append(title)

    @property
    def exit_code(self) -> int:
        return 1 if self.failures else 0


def _generated(spec: Spec, r: Report) -> None:
    r.section("Generated files")
    for w in compat.warnings(spec):
        r.warn(w)
    for w in check.pinning_warnings(spec):
        r.warn(w.removeprefix("warning: "))
    state = freshness.freshness(spec)  # the same answer check and verify give
    for line in state.stale_locks:
        r.fail(line, "envparity lock")
    for line in [f"{d.path}: out of date or missing" for d in state.drift] + list(state.orphans):
        r.fail(line, "envparity render")
    if state.flake_lock:
        r.fail(state.flake_lock)
    if state.current:
        r.ok("locks and generated files match the spec")


def _interpreter(spec: Spec, r: Report) -> None:
    """The interpreter the user's code runs in (``interpreter.user_interpreter``), as verify's
    host target judges it."""
    interpreter = user_interpreter()
    r.section(f"The host interpreter ({interpreter.executable})")
    found = freshness.conformance(spec, interpreter)
    if found.python:
        r.fail(found.python, "use the nix shell, the devcontainer or the venv target")
    else:
        r.ok(
            f"Python {interpreter.version} matches environment.python = {spec.environment.python!r}"
        )
    here, judged = lock.this_system(), freshness.host_lock(spec)
    if here not in spec.environment.systems:
        r.warn(
            f"this machine ({here}) is not in environment.systems: its packages are judged "
            f"against {judged.path} ({judged.system})",
            f"add {here!r} to environment.systems and run 'envparity lock'",
        )
    if not found.lock:
        r.warn(f"{judged.path} is missing: installed packages not checked", "envparity lock")
    elif found.packages:
        r.fail(found.packages, freshness.install_command(spec, interpreter))
    else:
        r.ok(f"installed packages match {found.lock}")


def _launch(spec: Spec, r: Report) -> None:
    r.section("Launch environment (must be set before Python starts)")
    want = spec.determinism.launch_env()
    wrong = {k: v for k, v in want.items() if os.environ.get(k) != v}
    if wrong:
        r.warn(
            "not set as the spec says: " + ", ".join(f"{k}={v}" for k, v in wrong.items()),
            "run through 'envparity run -- CMD', 'nix develop' or the devcontainer",
        )
    else:
        r.ok("every launch variable is set as the spec says")
    for w in spec.determinism.warnings():
        r.warn(w)
    if importlib.util.find_spec("torch") is None:
        r.warn("torch is not importable here: the in-process determinism audit was skipped")
        return
    from orchestrator.determinism import audit

    findings = audit()
    for f in findings:
        (r.fail if f.severity == "error" else r.warn)(f.message, f.fix)
    if not findings:
        r.ok("determinism audit of this process found nothing")


def _variables(spec: Spec, r: Report) -> None:
    if not spec.variables:
        return
    r.section("Variables")
    defined = set(os.environ)
    for line in (files.read(spec.root / ".env", ".env") or "").splitlines():
        name, eq, _ = line.strip().removeprefix("export ").partition("=")
        if eq and not name.startswith("#"):
            defined.add(name.strip())
    missing = [
        v.name for v in spec.variables if v.required and v.default is None and v.name not in defined
    ]
    for name in missing:
        r.fail(
            f"required variable {name} is not set (environment or .env)",
            "copy .env.example to .env",
        )
    ignored = (files.read(spec.root / ".gitignore", ".gitignore") or "").splitlines()
    if not any(line.strip() in (".env", "/.env") for line in ignored):
        r.warn(".env is not in .gitignore: secrets could be committed", "add '.env' to .gitignore")
    if not missing:
        r.ok("required variables are set")


def _gpu(spec: Spec, r: Report) -> None:
    if spec.cuda is None:
        return
    r.section("GPU")
    need = compat.min_driver(spec.cuda.version)
    out = gpus.nvidia_smi("--query-gpu=name,driver_version", "--format=csv,noheader")
    if out is None:
        r.warn(
            f"no NVIDIA driver answers here: the CUDA {spec.cuda.version} flavor cannot run here",
            f"a driver >= {need} is needed" if need else "",
        )
        _finding(r, cuda_host.nvcc_verdict(spec))
        return
    floor = compat.min_driver_minor_compat(spec.cuda.version)
    names = []
    for line in out.strip().splitlines():
        name, _, driver = (part.strip() for part in line.partition(","))
        names.append(name)
        if floor and _version(driver) < _version(floor):
            r.fail(
                f"{name}: driver {driver} cannot run CUDA {spec.cuda.version} "
                f"(needs {floor} or newer; {need} for the full toolkit)",
                "update the NVIDIA driver",
            )
        elif need and _version(driver) < _version(need):
            r.warn(
                f"{name}: driver {driver} runs CUDA {spec.cuda.version} only under minor-version "
                f"compatibility (>= {floor}); the toolkit's own minimum is {need}",
                "fine for torch's wheels on the host; update the driver for nvcc-built PTX, new "
                "features and containers that require this CUDA",
            )
        else:
            r.ok(f"{name}: driver {driver}" + (f" >= {need}" if need else ""))
    _finding(r, cuda_host.image_verdict(spec, gpus.driver()))
    _finding(r, cuda_host.nvcc_verdict(spec))
    _finding(r, cuda_host.device_order_verdict(names))
    _gpu_architectures(spec, r)


def _finding(r: Report, finding: cuda_host.Finding | None) -> None:
    if finding is None:
        return
    if finding.level == "ok":
        r.ok(finding.message)
    elif finding.level == "warn":
        r.warn(finding.message, finding.fix)
    else:
        r.fail(finding.message, finding.fix)


def _gpu_architectures(spec: Spec, r: Report) -> None:
    """Each GPU's compute capability against the kernels of the torch build: the running
    torch's ``torch.cuda.get_arch_list()`` when it is a CUDA build, else the table's list for
    the spec's torch and CUDA (``compat.gpu_verdict``)."""
    found = gpus.compute_capabilities()
    if not found or spec.cuda is None:
        return
    runtime = _runtime_archs()
    for name, capability in found:
        sm = "sm_" + capability.replace(".", "")
        if runtime is not None:
            version, archs = runtime
            how = compat.runs_on(archs, capability)
            if how == "native":
                r.ok(f"{name} ({sm}): torch {version} has kernels for it")
                continue
            others = ", ".join(compat.builds_for(capability)) or compat.NO_KNOWN_BUILD
            what = (
                f"{name} ({sm}): torch {version} has no kernels for it (built for "
                f"{compat.sm_names(archs)})"
            )
            if how == "ptx":
                r.warn(
                    f"{what} except PTX compiled at start-up", f"torch builds with {sm}: {others}"
                )
            else:
                r.fail(what, f"install a torch build that has them: {others}")
            continue
        torch_dep = spec.dependency("torch")
        versions = compat.admitted_versions(spec)
        if torch_dep is None or not versions:
            continue
        refused, warning = compat.gpu_verdict(versions, spec.cuda.version, capability)
        if refused:
            r.fail(f"{name}: {refused}", "change [dependencies] torch or [cuda] version")
        elif warning:
            r.warn(f"{name}: {warning}")
        else:
            r.ok(f"{name} ({sm}): the spec's torch build has kernels for it")


def _runtime_archs() -> tuple[str, tuple[str, ...]] | None:
    """``(torch version, archs)`` of this interpreter's torch when it is a CUDA build; None
    when torch is missing or a CPU build (whose ``get_arch_list()`` is empty)."""
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    archs = compat.archs_from_torch(torch.cuda.get_arch_list())
    return (str(torch.__version__), archs) if archs else None


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def _targets(spec: Spec, r: Report) -> None:
    """The targets ``verify`` with no ``--targets`` would run (host and venv when the spec has
    no table), and whether each can run here."""
    from orchestrator import verify
    from orchestrator.targets import TARGETS
    from orchestrator.targets.base import RUNTIME_DIR, Context

    r.section("Targets")
    chosen = verify.choose_targets(spec, None)
    spec = verify.with_defaults(spec, chosen)
    ctx = Context(
        spec=spec, cache=spec.root / RUNTIME_DIR, runtime=spec.root / RUNTIME_DIR / "runtime"
    )
    for name in chosen:
        cls = TARGETS.get(name)
        reason = cls(ctx).unavailable() if cls else f"{name}: not supported by this envparity"
        if reason:
            (r.fail if spec.targets[name].required else r.warn)(reason)
        else:
            r.ok(f"{name}: available")


def doctor(spec_path: Path) -> Report:
    """Every check, in checklist order. A spec that does not load raises SpecError (exit 2)."""
    from orchestrator import spec as spec_module

    spec = spec_module.load(spec_path)
    problems = compat.check(spec)
    r = Report()
    r.section(f"Spec {spec_path}")
    for p in problems:
        r.fail(str(p))
    if not problems:
        r.ok(
            f"{spec.environment.name}: Python {spec.environment.python}, "
            + (f"CUDA {spec.cuda.version}" if spec.cuda else "CPU only")
            + f", flavors {', '.join(spec.flavors)}"
        )
    for part in (_generated, _interpreter, _launch, _variables, _gpu, _targets):
        part(spec, r)
    r.lines.append(f"{r.failures} problem(s)" if r.failures else "no problems")
    return r
