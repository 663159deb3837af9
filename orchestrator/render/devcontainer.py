"""``.devcontainer/devcontainer.json`` and ``.devcontainer/Dockerfile``.

The Dockerfile installs the lock before anything else is copied (the layer is rebuilt only
when the lock changes), hash-checked by uv, into ``/opt/venv`` owned by a non-root user; the
launch environment is baked in with ``ENV`` and repeated in ``containerEnv``.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator import lock
from orchestrator.render.escape import dockerfile_string, json_text, shell_line
from orchestrator.spec import DevcontainerTarget, Spec

# uv is copied from its official image at this release (the image is pinned by tag: a digest
# would have to be looked up, and envparity never invents one).
UV_IMAGE = "ghcr.io/astral-sh/uv:0.13.9"
VENV = "/opt/venv"
LOCK_IN_IMAGE = "/tmp/envparity-lock.txt"
# system package name -> Debian/Ubuntu package, where they differ
APT_NAMES = {"gcc": "build-essential"}


def _target(spec: Spec) -> DevcontainerTarget:
    t = spec.targets.get("devcontainer")
    if not isinstance(t, DevcontainerTarget):  # pragma: no cover - render_all checks first
        raise ValueError("the spec has no [targets.devcontainer]")
    return t


def render_devcontainer_json(spec: Spec) -> str:
    t = _target(spec)
    data: dict[str, object] = {
        "name": spec.environment.name,
        # The build context is the locks folder alone: nothing else (caches, data, .env) is
        # sent to the builder, and the image depends on nothing but the lock.
        "build": {"dockerfile": "Dockerfile", "context": "../locks"},
        "containerEnv": spec.determinism.launch_env(),
        "customizations": {
            "vscode": {
                "extensions": list(t.extensions),
                "settings": {"python.defaultInterpreterPath": f"{VENV}/bin/python"},
            }
        },
        "remoteUser": t.user,
        "updateRemoteUserUID": True,
    }
    if spec.flavor_of("devcontainer").startswith("cu"):
        data["hostRequirements"] = {"gpu": True}
    return json_text(data)


def render_dockerfile(spec: Spec, inputs: str) -> str:
    t = _target(spec)
    flavor = spec.flavor_of("devcontainer")
    names = [Path(lock.LockTarget(flavor, system).path).name for system in spec.environment.systems]
    if len(names) == 1:
        copy_lock = [f"COPY {names[0]} {LOCK_IN_IMAGE}"]
    else:  # one lock per system: the build picks its machine's
        aarch64 = next(
            n
            for n, s in zip(names, spec.environment.systems, strict=True)
            if s.startswith("aarch64")
        )
        other = next(n for n in names if n != aarch64)
        copy_lock = [
            f"COPY {' '.join(names)} /tmp/envparity-locks/",
            'RUN if [ "$(uname -m)" = aarch64 ]; then '
            f"mv /tmp/envparity-locks/{aarch64} {LOCK_IN_IMAGE}; "
            f"else mv /tmp/envparity-locks/{other} {LOCK_IN_IMAGE}; fi \\",
            "    && rm -r /tmp/envparity-locks",
        ]
    apt = [
        "ca-certificates",
        *sorted({spec.system.apt.get(p) or APT_NAMES.get(p, p) for p in spec.system.packages}),
    ]
    env = spec.determinism.launch_env()
    sync = [
        "uv",
        "pip",
        "sync",
        "--python",
        f"{VENV}/bin/python",
        "--require-hashes",
        *lock.install_args(spec, flavor),
        LOCK_IN_IMAGE,
    ]
    lines = [
        f"FROM {t.image}",
        "",
        "ARG DEBIAN_FRONTEND=noninteractive",
        "# Package versions come from the base image, which the spec pins (by digest when given).",
        "# hadolint ignore=DL3008",
        "RUN apt-get update \\",
        f"    && apt-get install -y --no-install-recommends {shell_line(apt)} \\",
        "    && rm -rf /var/lib/apt/lists/*",
        "",
        f"COPY --from={UV_IMAGE} /uv /uvx /usr/local/bin/",
        f"RUN useradd --create-home --shell /bin/bash {t.user}",
        "",
        "# Python packages from the lock, before any code: rebuilt only when the lock changes.",
        f"ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_INSTALL_DIR=/opt/python VIRTUAL_ENV={VENV}",
        *copy_lock,
        f"RUN uv venv --python {spec.environment.python} {VENV} \\",
        f"    && {shell_line(sync)} \\",
        f"    && rm {LOCK_IN_IMAGE} \\",
        f"    && chown -R {t.user}:{t.user} {VENV}",
        f'ENV PATH="{VENV}/bin:$PATH"',
        "",
        "# The launch environment: read when Python (or CUDA) starts.",
        "ENV " + " \\\n    ".join(f"{k}={dockerfile_string(v)}" for k, v in env.items()),
        "",
        "LABEL "
        + " \\\n      ".join(
            f"{k}={dockerfile_string(v)}"
            for k, v in (
                ("org.opencontainers.image.title", spec.environment.name),
                ("dev.envparity.spec", spec.path.name),
                ("dev.envparity.inputs", f"sha256:{inputs}"),
                ("dev.envparity.flavor", flavor),
            )
        ),
        f"USER {t.user}",
    ]
    return "\n".join(lines) + "\n"
