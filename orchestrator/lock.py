"""Lock every Python package with hashes, one file per flavor, resolved by uv for the target
platform (not the machine running the resolver).

``locks/<flavor>.txt`` is for x86_64-linux; other systems get ``locks/<flavor>-<arch>.txt``.
The lock holds pins and hashes only: the package sources (``[[index]]``) are passed by
whoever installs it, so a mirror can stand in for an index without changing the lock.

Mirrors: ``ENVPARITY_MIRRORS="URL=LOCATION ..."`` makes resolution and installs read
``LOCATION`` wherever the spec names ``URL`` (an air-gapped mirror, or a local wheel folder
in tests). The lock is unchanged by a mirror: the files, and so the hashes, are the same.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from orchestrator import files
from orchestrator.errors import SpecError, ToolError, UsageError
from orchestrator.spec import Index, Spec

LOCK_DIR = "locks"
LOCK_FORMAT = 1
_PLATFORM = {"x86_64-linux": "x86_64-manylinux_2_28", "aarch64-linux": "aarch64-manylinux_2_28"}
_PIN_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


@dataclass(frozen=True)
class LockTarget:
    flavor: str
    system: str

    @property
    def path(self) -> str:
        suffix = "" if self.system == "x86_64-linux" else "-" + self.system.split("-")[0]
        return f"{LOCK_DIR}/{self.flavor}{suffix}.txt"

    @property
    def platform(self) -> str:
        return _PLATFORM[self.system]


def lock_targets(spec: Spec, flavors: list[str] | None = None) -> list[LockTarget]:
    chosen = list(spec.flavors)
    if flavors:
        unknown = [f for f in flavors if f not in spec.flavors]
        if unknown:
            raise UsageError(
                f"unknown flavor {unknown[0]!r}; this spec's flavors are {', '.join(spec.flavors)}"
            )
        chosen = [f for f in chosen if f in flavors]
    return [LockTarget(f, s) for f in chosen for s in spec.environment.systems]


def sources(spec: Spec, flavor: str) -> tuple[Index, ...]:
    return tuple(i for i in spec.indexes if i.applies_to(flavor))


def inputs(spec: Spec, target: LockTarget) -> str:
    """Hash of exactly what determines a lock's content."""
    return files.inputs_hash(
        {
            "format": LOCK_FORMAT,
            "flavor": target.flavor,
            "platform": target.platform,
            "python": spec.environment.python,
            "requirements": requirements(spec, target.flavor),
            "sources": [(i.kind, i.url) for i in sources(spec, target.flavor)],
        }
    )


def requirements(spec: Spec, flavor: str) -> list[str]:
    """The PEP 508 lines a flavor's lock resolves: every dependency that applies to it."""
    return [d.requirement() for d in spec.dependencies if d.applies_to(flavor)]


def mirrors() -> dict[str, str]:
    """``ENVPARITY_MIRRORS`` as {spec URL: location to read instead}."""
    out = {}
    for item in os.environ.get("ENVPARITY_MIRRORS", "").split():
        url, sep, location = item.partition("=")
        if not sep or not url or not location:
            raise UsageError(f"ENVPARITY_MIRRORS: {item!r} is not URL=LOCATION")
        out[url.rstrip("/")] = location
    return out


def source_args(spec: Spec, flavor: str) -> list[str]:
    """uv arguments naming the package sources of a flavor, with mirrors applied."""
    args: list[str] = []
    mirror = mirrors()
    for index in sources(spec, flavor):
        location = mirror.get(index.url.rstrip("/"), index.url)
        local = not re.match(r"^[a-z+]+://", location)
        if index.kind == "find-links" or local:
            args += ["--find-links", location]
        else:
            args += ["--extra-index-url", location]
    return args


def install_args(spec: Spec, flavor: str) -> list[str]:
    """Sources as written in generated files (no mirrors: those are this machine's business)."""
    args: list[str] = []
    for index in sources(spec, flavor):
        args += ["--find-links" if index.kind == "find-links" else "--extra-index-url", index.url]
    return args


def resolve(spec: Spec, target: LockTarget, *, previous: str | None, upgrade: bool) -> str:
    """Run ``uv pip compile`` for one flavor and system; return the lock body."""
    import tempfile

    from orchestrator import process  # subprocess and logging: only when resolving

    python = spec.environment.python
    with tempfile.TemporaryDirectory(prefix="envparity-lock-") as tmp:
        req = Path(tmp, "requirements.in")
        req.write_text("\n".join(requirements(spec, target.flavor)) + "\n", encoding="utf-8")
        out = Path(tmp, "lock.txt")
        if previous and not upgrade:
            out.write_text(previous, encoding="utf-8")  # uv keeps these pins where it can
        args = [
            "uv",
            "pip",
            "compile",
            str(req),
            "--output-file",
            str(out),
            "--generate-hashes",
            "--no-header",
            "--no-emit-index-url",
            "--no-emit-find-links",
            "--python-version",
            python,
            "--python-platform",
            target.platform,
            "--quiet",
            *source_args(spec, target.flavor),
        ]
        if upgrade:
            args.append("--upgrade")
        process.run(args, extra_env={"UV_CUSTOM_COMPILE_COMMAND": "envparity lock"})
        body = out.read_text(encoding="utf-8")
    body = body.replace(str(req), "environment.toml")
    _check_flavor(spec, target, body)
    return body


def _check_flavor(spec: Spec, target: LockTarget, body: str) -> None:
    """Refuse a lock whose packages are not the flavor's: CUDA in cpu, another CUDA in cuXY."""
    pins = pinned(body)
    # The CUDA runtime wheels a CUDA build of torch pulls in (other nvidia-* packages, such
    # as nvidia-ml-py, are fine in a cpu lock).
    cuda_pkgs = sorted(
        p
        for p in pins
        if re.fullmatch(r"nvidia-(cuda-runtime|cudnn|cublas)(-cu\d+)?|cuda-toolkit", p)
    )
    if "+cpu" in pins.get("torch", "+cpu"):
        cuda_pkgs = []  # torch is a CPU build (or absent): whatever else pulled them is the user's
    runtime = next(
        (v for p, v in pins.items() if re.fullmatch(r"nvidia-cuda-runtime(-cu\d+)?", p)), None
    )
    if spec.cuda is not None and target.flavor == spec.cuda.flavor and runtime is not None:
        got = ".".join(runtime.split(".")[:2])
        if got != spec.cuda.version:
            raise ToolError(
                f"{target.path}: the {target.flavor} flavor resolved the CUDA {got} runtime "
                f"(nvidia-cuda-runtime {runtime}), not CUDA {spec.cuda.version}: PyPI's torch is built "
                f"for CUDA {got}. Take torch from the PyTorch index for CUDA {spec.cuda.version}:\n"
                f'  [[index]]\n  url = "https://download.pytorch.org/whl/{target.flavor}"\n'
                '  flavors = ["cuda"]'
            )
    if target.flavor == "cpu" and cuda_pkgs:
        raise ToolError(
            f"{target.path}: the cpu flavor resolved CUDA packages ({', '.join(cuda_pkgs[:3])}, ...): "
            "on Linux, PyPI's torch is a CUDA build. Add the PyTorch CPU index to environment.toml:\n"
            '  [[index]]\n  url = "https://download.pytorch.org/whl/cpu"\n  flavors = ["cpu"]'
        )


def pinned(body: str) -> dict[str, str]:
    """{canonical name: version} of every pin in a lock body."""
    out = {}
    for line in body.splitlines():
        m = _PIN_RE.match(line)
        if m:
            out[re.sub(r"[-_.]+", "-", m[1]).lower()] = m[2]
    return out


def render_lock(spec: Spec, target: LockTarget, body: str) -> files.Generated:
    return files.Generated(
        path=target.path,
        body=body,
        inputs=inputs(spec, target),
        regenerate="envparity lock",
        spec_name=spec.path.name,
    )


def lock(
    spec: Spec, *, upgrade: bool = False, flavors: list[str] | None = None, force: bool = False
) -> list[str]:
    """Resolve every flavor and system; write all locks or none. Returns the paths written."""
    refuse_incompatible(spec)
    generated = []
    for target in lock_targets(spec, flavors):
        previous = read_lock_body(spec, target)
        generated.append(
            render_lock(spec, target, resolve(spec, target, previous=previous, upgrade=upgrade))
        )
    results = files.write_all(spec.root, generated, force=force)
    removed = [] if flavors else files.remove_orphans(spec.root, orphans(spec), force=force)
    return [f"{path} ({status})" for path, status in results] + [f"{p} (removed)" for p in removed]


def orphans(spec: Spec) -> list[str]:
    """Locks of flavors or systems the spec no longer has."""
    existing = [f"{LOCK_DIR}/{p.name}" for p in (spec.root / LOCK_DIR).glob("*.txt")]
    return files.orphans(spec.root, existing, [t.path for t in lock_targets(spec)])


def refuse_incompatible(spec: Spec) -> None:
    """Raise ``SpecError`` if the spec asks for a torch/CUDA/Python combination that does not exist."""
    from orchestrator import compat

    problems = compat.check(spec)
    if problems:
        raise SpecError(problems)


def read_lock_body(spec: Spec, target: LockTarget) -> str | None:
    text = files.read(spec.root / target.path, target.path)
    if text is None:
        return None
    header = files.read_header(text)
    return header.body if header else text


def stale_locks(spec: Spec) -> list[str]:
    """Why each lock is stale (missing, made from other inputs, or edited by hand); [] if none."""
    out = []
    for target in lock_targets(spec):
        text = files.read(spec.root / target.path, target.path)
        if text is None:
            out.append(f"{target.path}: missing")
            continue
        header = files.read_header(text)
        if header is None:
            out.append(f"{target.path}: has no envparity header")
        elif header.hand_edited:
            out.append(f"{target.path}: edited by hand since envparity wrote it")
        elif header.inputs != inputs(spec, target):
            out.append(f"{target.path}: stale (environment.toml changed since it was locked)")
    out += [f"{p}: no longer produced by {spec.path.name}" for p in orphans(spec)]
    return out


def lock_digest(spec: Spec, flavor: str) -> str:
    """The content hash recorded in a flavor's primary lock, for render inputs ("" if missing)."""
    target = LockTarget(flavor, spec.environment.systems[0])
    text = files.read(spec.root / target.path, target.path)
    if text is None:
        return ""
    header = files.read_header(text)
    return header.content if header else files.sha256(text)
