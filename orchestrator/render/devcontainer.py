"""``.devcontainer/devcontainer.json`` and ``.devcontainer/Dockerfile``.

The Dockerfile installs the lock before anything else is copied (the layer is rebuilt only
when the lock changes), hash-checked by uv, into ``/opt/venv`` owned by a non-root user; uv's
cache is a BuildKit/buildah cache mount, so a changed lock downloads only what changed. The
user gets uid 1000 (an image's own uid-1000 user, such as Ubuntu 24.04's ``ubuntu``, is
removed first), the uid ``updateRemoteUserUID`` maps to the host user's. The launch
environment is baked in with ``ENV`` and repeated in ``containerEnv``.

devcontainer.json gives the container ``--shm-size`` (``[targets.devcontainer] shm_size``):
Docker's and podman's default ``/dev/shm`` of 64 MB makes DataLoader workers, which pass
batches through shared memory, die with a bus error. ``--shm-size`` rather than ``--ipc=host``:
it keeps the container's IPC namespace of its own (no shared memory or semaphores of the
host's processes visible or writable) and works the same on Docker and rootless podman; the
tmpfs takes memory only for what is written, so a generous cap costs nothing until used.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator import lock
from orchestrator.render.escape import dockerfile_string, json_text, shell_line, shell_word
from orchestrator.spec import DevcontainerTarget, Spec

# uv is copied from its official image, pinned by digest. Source of the digest: the Dockerfiles
# of nine public repositories that pin this release, several kept by Dependabot (found by
# searching public code for "ghcr.io/astral-sh/uv:0.13.0@sha256:"); all name this one. The
# registry itself was not reachable where this was written. ``UV_IMAGE`` is a build argument,
# so a mirror can be named (``ENVPARITY_UV_IMAGE`` for verify; ``--build-arg`` by hand).
UV_RELEASE = "0.13.0"
UV_DIGEST = "sha256:cdc6093146eb3ff6a40107b38f008b789e050e77ad87865e381d9917da55a168"
UV_IMAGE = f"ghcr.io/astral-sh/uv:{UV_RELEASE}@{UV_DIGEST}"
UV_IMAGE_ARG = "UV_IMAGE"
UV_CACHE = "/root/.cache/uv"  # uv's cache for root, where the lock is installed
USER_UID = 1000  # the first user's uid on most Linux hosts: what updateRemoteUserUID maps
VENV = "/opt/venv"
LOCK_IN_IMAGE = "/tmp/envparity-lock.txt"
# system package name -> Debian/Ubuntu package, where they differ
APT_NAMES = {"gcc": "build-essential"}


def _target(spec: Spec) -> DevcontainerTarget:
    t = spec.targets.get("devcontainer")
    if not isinstance(t, DevcontainerTarget):  # pragma: no cover - render_all checks first
        raise ValueError("the spec has no [targets.devcontainer]")
    return t


def build_env(spec: Spec, flavor: str | None = None) -> dict[str, str]:
    """Variables for what is compiled inside the container: ``TORCH_CUDA_ARCH_LIST`` from
    ``[cuda] compute_capabilities`` (``"8.9;12.0"``) for a CUDA flavor, so that extensions
    built there (``pip install flash-attn``, ``torch.utils.cpp_extension``) get kernels for
    exactly the spec's GPUs rather than for the GPUs visible where they are built (none, in an
    image build). Empty when the spec lists none. Source: torch/utils/cpp_extension.py
    (``_get_cuda_arch_flags`` reads TORCH_CUDA_ARCH_LIST, entries split on ``;`` or spaces)."""
    if spec.cuda is None or not (flavor or spec.flavor_of("devcontainer")).startswith("cu"):
        return {}
    if not spec.cuda.compute_capabilities:
        return {}
    return {"TORCH_CUDA_ARCH_LIST": ";".join(spec.cuda.compute_capabilities)}


def container_env(spec: Spec, flavor: str | None = None) -> dict[str, str]:
    """The launch environment and ``build_env``, sorted: the container's variables."""
    return dict(sorted({**spec.determinism.launch_env(), **build_env(spec, flavor)}.items()))


# Apple Silicon: a second configuration when the spec has aarch64-linux, for linux/arm64
# images with the cpu flavor's aarch64 lock and no GPU request (Docker Desktop on a Mac runs
# arm64 Linux without NVIDIA GPUs). VS Code offers both (.devcontainer/<name>/devcontainer.json).
ARM64_DIR = ".devcontainer/arm64"


def _variant(spec: Spec, arm64: bool) -> tuple[str, list[str]]:
    """(flavor, Linux systems) a configuration installs: the devcontainer's flavor for every
    Linux system, or for ``arm64`` the cpu flavor for aarch64-linux alone."""
    if arm64:
        return "cpu", ["aarch64-linux"]
    flavor = spec.flavor_of("devcontainer")
    return flavor, [s for s in spec.systems_of(flavor) if s.endswith("-linux")]


def render_devcontainer_json(spec: Spec, *, arm64: bool = False) -> str:
    t = _target(spec)
    flavor, _ = _variant(spec, arm64)
    build: dict[str, object] = {
        "dockerfile": "Dockerfile",
        "context": "../../locks" if arm64 else "../locks",
    }
    if arm64:
        build["options"] = ["--platform=linux/arm64"]
    data: dict[str, object] = {
        "name": spec.environment.name + (" (arm64, cpu)" if arm64 else ""),
        # The build context is the locks folder alone: nothing else (caches, data, .env) is
        # sent to the builder, and the image depends on nothing but the lock.
        "build": build,
        "containerEnv": container_env(spec, flavor),
        "customizations": {
            "vscode": {
                "extensions": list(t.extensions),
                "settings": {"python.defaultInterpreterPath": f"{VENV}/bin/python"},
            }
        },
        "remoteUser": t.user,
        # /dev/shm for DataLoader workers (64 MB by default); see the module docstring.
        "runArgs": [f"--shm-size={t.shm_size}"],
        "updateRemoteUserUID": True,
    }
    if flavor.startswith("cu"):
        # true, not "optional": without a GPU the CLI still starts the container (on CPU) but
        # says that one was required, which is what a CUDA flavor means.
        data["hostRequirements"] = {"gpu": True}
    project = [
        "uv",
        "pip",
        "install",
        "--python",
        f"{VENV}/bin/python",
        *lock.install_args(spec, flavor),
        "--no-deps",
        "--editable",
        ".",
    ]
    # The workspace is mounted at run time, so the project's own code is installed then into
    # the image's venv (install_project: the workspace, editable; the spec's local packages);
    # their dependencies come from the lock (--no-deps).
    local = lock.local_install_commands(spec, flavor, f"{VENV}/bin/python")
    if local:
        commands = ([project] if t.install_project else []) + local
        data["postCreateCommand"] = " && ".join(shell_line(c) for c in commands)
    elif t.install_project:
        data["postCreateCommand"] = project
    return json_text(data)


def render_dockerfile(spec: Spec, inputs: str, *, arm64: bool = False) -> str:
    t = _target(spec)
    flavor, systems = _variant(spec, arm64)
    names = [Path(lock.LockTarget(flavor, system).path).name for system in systems]
    if len(names) == 1:
        copy_lock = [f"COPY {names[0]} {LOCK_IN_IMAGE}"]
    else:  # one lock per system: the build picks its machine's
        aarch64 = next(n for n, s in zip(names, systems, strict=True) if s.startswith("aarch64"))
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
    env = container_env(spec, flavor)
    sync = [
        "uv",
        "pip",
        "sync",
        "--python",
        f"{VENV}/bin/python",
        "--require-hashes",
        *lock.install_args(spec, flavor, systems[0]),
        LOCK_IN_IMAGE,
    ]
    user = shell_word(t.user)
    lines = [
        "# uv's official image, pinned by digest; --build-arg UV_IMAGE=... names a mirror.",
        f"ARG {UV_IMAGE_ARG}={UV_IMAGE}",
        f"FROM ${{{UV_IMAGE_ARG}}} AS uv",
        "",
        f"FROM {t.image}",
        "",
        "ARG DEBIAN_FRONTEND=noninteractive",
        "# Package versions come from the base image, which the spec pins (by digest when given).",
        "# hadolint ignore=DL3008",
        "RUN apt-get update \\",
        f"    && apt-get install -y --no-install-recommends {shell_line(apt)} \\",
        "    && rm -rf /var/lib/apt/lists/*",
        "",
        "COPY --from=uv /uv /uvx /usr/local/bin/",
        f"# The user gets uid {USER_UID}, which updateRemoteUserUID maps to the host user's; an image's",
        f"# own uid-{USER_UID} user (Ubuntu 24.04 ships 'ubuntu') is removed first.",
        f'RUN existing="$(id -nu {USER_UID} 2>/dev/null || true)" \\',
        f'    && if [ -n "$existing" ] && [ "$existing" != {user} ]; then userdel --remove "$existing"; fi \\',
        f"    && if ! id -u {user} >/dev/null 2>&1; then \\",
        f"        useradd --create-home --shell /bin/bash --uid {USER_UID} {user}; fi",
        "",
        "# Python packages from the lock, before any code: rebuilt only when the lock changes;",
        "# uv's cache is kept between builds (a cache mount), so only changed packages download.",
        f"ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_INSTALL_DIR=/opt/python VIRTUAL_ENV={VENV}",
        *copy_lock,
        f"RUN --mount=type=cache,target={UV_CACHE} \\",
        f"    uv venv --python {spec.environment.python} {VENV} \\",
        f"    && {shell_line(sync)} \\",
        f"    && rm {LOCK_IN_IMAGE} \\",
        f"    && chown -R {t.user}:{t.user} {VENV}",
        f'ENV PATH="{VENV}/bin:$PATH"',
        "",
        "# The launch environment: read when Python (or CUDA) starts."
        if not build_env(spec, flavor)
        else "# The launch environment (read when Python or CUDA starts), and the GPUs that"
        "\n# extensions built here get kernels for (TORCH_CUDA_ARCH_LIST).",
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
