"""``devcontainer``: the generated ``.devcontainer/`` brought up with the devcontainers CLI.

``provision()`` runs ``devcontainer up`` on Docker or podman (``--docker-path``); the probe then
runs through ``devcontainer exec``, as the container's user, with the launch environment passed
as ``--remote-env`` and the image's ``/opt/venv`` interpreter. The spec's folder is the
workspace: the container sees it at the ``remoteWorkspaceFolder`` that ``up`` reports.

A running container is reused while the key (the rendered ``.devcontainer/`` files and the
lock) is the one it was started for; otherwise, or with ``--fresh``, it is replaced. The key
is recorded only after ``up`` succeeded, so an interrupted ``up`` is never reused.

Engines: ``ENVPARITY_DOCKER_PATH`` when set; else ``docker`` when its daemon answers; else
``podman``. Where the engine or this machine needs settings the generated file cannot carry for
everyone, ``up`` and ``exec`` read an override of ``devcontainer.json`` written under
``.envparity/devcontainer/`` (the generated file is left as it is):

- rootful podman refuses the ``--userns=keep-id`` that the devcontainers CLI adds for a
  non-root container user (devcontainers/cli#1004): ``"--userns="`` is appended to ``runArgs``;
- a GPU on podman: the CLI's own GPU detection asks ``podman info`` for Docker's nvidia runtime
  (which podman never reports; the template fails and so does ``up``), and the ``--gpus all``
  it adds for ``--gpu-availability all`` is no flag of podman 4.3 (not in its ``run --help``).
  So ``up`` always gets ``--gpu-availability`` from what ``orchestrator.gpus`` knows (``all``
  on Docker when an NVIDIA GPU answers, else ``none``), and on podman a CUDA flavor with a GPU
  gets the GPUs through CDI instead: ``--device=nvidia.com/gpu=all`` appended to ``runArgs``
  (the host needs a CDI spec: ``nvidia-ctk cdi generate``);
- ``ENVPARITY_UV_IMAGE`` names a mirror of the uv image: passed as the Dockerfile's
  ``UV_IMAGE`` build argument.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from orchestrator import files, gpus, process
from orchestrator.errors import ToolError
from orchestrator.render.devcontainer import UV_IMAGE_ARG, VENV
from orchestrator.targets.base import Context, Target

CLI_ENV = "ENVPARITY_DEVCONTAINER_CLI"
ENGINE_ENV = "ENVPARITY_DOCKER_PATH"
UV_IMAGE_ENV = "ENVPARITY_UV_IMAGE"
CDI_GPUS = "--device=nvidia.com/gpu=all"
CDI_HINT = (
    "podman has no CDI spec for the NVIDIA GPUs: generate one with "
    "'sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml' (NVIDIA Container Toolkit)"
)
CONFIG = ".devcontainer/devcontainer.json"
DOCKERFILE = ".devcontainer/Dockerfile"
PYTHON = f"{VENV}/bin/python"  # the interpreter the generated Dockerfile installs the lock into
_ID_RE = re.compile(r"uid=(\d+)\S* gid=(\d+)")
_STAMP_RE = re.compile(r"^\[\d{4}-\d\d-\d\dT[\d:.]+Z\] ?")  # the CLI's log line prefix


def find_cli() -> str | None:
    """The devcontainers CLI: ``ENVPARITY_DEVCONTAINER_CLI`` if set, else ``devcontainer``."""
    return shutil.which(os.environ.get(CLI_ENV) or "devcontainer")


def find_engine() -> str | None:
    """``ENVPARITY_DOCKER_PATH`` if set; else docker when its daemon answers; else podman."""
    override = os.environ.get(ENGINE_ENV)
    if override:
        return shutil.which(override)
    docker = shutil.which("docker")
    if docker and process.run([docker, "info"], check=False, timeout=30).returncode == 0:
        return docker
    return shutil.which("podman")


@dataclass(frozen=True)
class Container:
    """What ``devcontainer up`` reported, and who runs commands in it."""

    id: str
    workspace: str  # remoteWorkspaceFolder: the spec's folder as the container sees it
    user: str
    uid: int
    gid: int


class DevcontainerTarget(Target):
    name = "devcontainer"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self._engine: str | None = None
        self._selection: list[str] | None = None
        self._container: Container | None = None
        self._override_settings: tuple[list[str], dict[str, str]] | None = None

    @property
    def root(self) -> Path:
        return self.ctx.spec.root

    @property
    def state_dir(self) -> Path:
        return self.ctx.cache / "devcontainer"

    @property
    def engine(self) -> str:
        if self._engine is None:
            self._engine = find_engine()
            if self._engine is None:
                raise ToolError(self._no_engine())
        return self._engine

    @property
    def cli(self) -> str:
        cli = find_cli()
        if cli is None:
            raise ToolError(self._no_cli())
        return cli

    def _no_cli(self) -> str:
        return (
            "devcontainer: the devcontainers CLI is not installed "
            f"(npm install @devcontainers/cli, then put it on PATH or set {CLI_ENV})"
        )

    def _no_engine(self) -> str:
        return (
            "devcontainer: no container engine (docker with a running daemon, or podman; "
            f"or set {ENGINE_ENV})"
        )

    def unavailable(self) -> str | None:
        missing = self.missing_inputs(CONFIG, DOCKERFILE)
        if missing:
            return missing
        if find_cli() is None:
            return self._no_cli()
        if self._engine is None:
            self._engine = find_engine()
        if self._engine is None:
            return self._no_engine()
        return None

    def key(self) -> str:
        inputs: dict[str, object] = {
            path: files.sha256((self.root / path).read_text(encoding="utf-8"))
            for path in (CONFIG, DOCKERFILE, str(self.lock_file.relative_to(self.root)))
        }
        extra_args, build_args = self._overrides()
        if extra_args or build_args:  # the key of a plain configuration is as it always was
            inputs["override"] = {"runArgs": extra_args, "build.args": build_args}
        return files.inputs_hash(inputs)[:16]

    # ------------------------------------------------------------------ provisioning

    def selection(self) -> list[str]:
        """The CLI arguments that pick this workspace's container, engine and configuration."""
        if self._selection is None:
            args = ["--workspace-folder", str(self.root), "--docker-path", self.engine]
            override = self._override_config()
            if override is not None:
                args += ["--override-config", str(override)]
            self._selection = args
        return self._selection

    def gpu_availability(self) -> str:
        """``up``'s ``--gpu-availability``: ``all`` on Docker when an NVIDIA GPU answers here,
        else ``none`` (never ``detect``: on podman the CLI's detection fails; see above)."""
        return "all" if not self._podman() and gpus.visible() else "none"

    def _podman(self) -> bool:
        return Path(self.engine).name == "podman"

    def _rootful_podman(self) -> bool:
        if not self._podman():
            return False
        info = process.run([self.engine, "info", "--format", "{{.Host.Security.Rootless}}"])
        return info.stdout.strip() == "false"

    def _overrides(self) -> tuple[list[str], dict[str, str]]:
        """What the override adds: runArgs appended, and build args (empty: no override)."""
        if self._override_settings is None:
            extra: list[str] = []
            if self._rootful_podman():
                extra.append("--userns=")
            flavor = self.spec.flavor_of(self.name)
            if self._podman() and flavor.startswith("cu") and gpus.visible():
                extra.append(CDI_GPUS)
            uv_image = os.environ.get(UV_IMAGE_ENV)
            self._override_settings = (extra, {UV_IMAGE_ARG: uv_image} if uv_image else {})
        return self._override_settings

    def _override_config(self) -> Path | None:
        """devcontainer.json with the override's runArgs and build args; None if none."""
        extra, build_args = self._overrides()
        if not extra and not build_args:
            return None
        text = (self.root / CONFIG).read_text(encoding="utf-8")
        header = files.read_header(text)
        try:
            config = json.loads(header.body if header else text)
        except json.JSONDecodeError as exc:
            raise ToolError(
                f"devcontainer: {CONFIG} is not plain JSON ({exc}); this engine needs an "
                "override written from it (run 'envparity render' to regenerate it)"
            ) from None
        # The CLI reads relative paths in an override against the workspace's devcontainer.json.
        config["runArgs"] = [*config.get("runArgs", []), *extra]
        if build_args:
            config["build"] = {
                **config.get("build", {}),
                "args": {**config.get("build", {}).get("args", {}), **build_args},
            }
        path = self.state_dir / "devcontainer.json"
        files.atomic_write(path, json.dumps(config, indent=2, sort_keys=True) + "\n")
        return path

    def provision(self) -> None:
        key = self.key()
        state = self.state_dir / "state.json"
        try:
            recorded = json.loads(state.read_text(encoding="utf-8"))["key"]
        except (OSError, ValueError, KeyError, TypeError):
            recorded = None
        reuse = not self.ctx.fresh and recorded == key
        state.unlink(missing_ok=True)  # recorded again only once `up` has succeeded
        args = [self.cli, "up", *self.selection(), "--gpu-availability", self.gpu_availability()]
        if reuse:
            self.ctx.progress("devcontainer: starting the existing container (devcontainer up)")
        else:
            args.append("--remove-existing-container")
            self.ctx.progress(
                f"devcontainer: building the image and starting a container with "
                f"{Path(self.engine).name} (devcontainer up)"
            )
        result = process.run(args, check=False)
        outcome = _last_json(result.stdout)
        if result.returncode != 0 or outcome.get("outcome") != "success":
            log = "\n".join("  " + line for line in _log_tail(result.stderr))
            message = outcome.get("message") or f"exit code {result.returncode}"
            hint = f"\n{CDI_HINT}" if "unresolvable CDI devices" in result.stderr else ""
            raise ToolError(
                f"devcontainer: 'devcontainer up' failed: {message}\n{log}".rstrip() + hint
            )
        cid, workspace, user = (
            str(outcome.get(k, "")) for k in ("containerId", "remoteWorkspaceFolder", "remoteUser")
        )
        if not (cid and workspace and user):
            raise ToolError(f"devcontainer: 'devcontainer up' reported no container: {outcome}")
        who = process.run([self.engine, "exec", "--user", user, cid, "id"]).stdout
        ids = _ID_RE.search(who)
        if ids is None:
            raise ToolError(
                f"devcontainer: cannot tell the ids of {user} in the container: {who!r}"
            )
        self._container = Container(cid, workspace, user, int(ids[1]), int(ids[2]))
        self.ctx.progress(f"devcontainer: container {cid[:12]} up in {result.seconds:.1f}s")
        files.atomic_write(state, json.dumps({"container": cid, "key": key}, sort_keys=True) + "\n")

    def container(self) -> Container:
        if self._container is None:
            raise ToolError("devcontainer: the container is not up (provision() first)")
        return self._container

    def make_writable(self, host_dir: Path) -> None:
        """Create ``host_dir`` (under the spec's folder) so the container's user can write in it.

        Where the engine runs containers as the host's root and the container's user is not
        root (rootful podman or Docker, run by root), that user's ids own nothing on the host:
        the folder is handed to them. Elsewhere the CLI maps the user to the host's already.
        """
        host_dir.mkdir(parents=True, exist_ok=True)
        c = self.container()
        if os.geteuid() == 0 and c.uid != 0:
            os.chown(host_dir, c.uid, c.gid)

    def remove(self) -> None:
        """Stop and remove this workspace's containers (the image and its layers stay cached)."""
        found = process.run(
            [
                self.engine,
                "ps",
                "--all",
                "--quiet",
                "--filter",
                f"label=devcontainer.local_folder={self.root}",
            ]
        )
        ids = found.stdout.split()
        if ids:
            process.run([self.engine, "rm", "--force", *ids])
        (self.state_dir / "state.json").unlink(missing_ok=True)
        self._container = None

    # ------------------------------------------------------------------ running

    def inside(self, host_path: Path) -> str:
        relative = Path(host_path).resolve().relative_to(self.root.resolve())
        workspace = self.container().workspace
        return workspace if relative == Path(".") else f"{workspace}/{relative.as_posix()}"

    def command(self, argv: list[str], *, env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        """``devcontainer exec`` of ``argv``; ``env`` and PYTHONPATH (the runtime copy of envparity,
        as the container sees it) are set inside with ``--remote-env``."""
        inner = {**env, "PYTHONPATH": self.inside(self.ctx.runtime)}
        remote = [f"--remote-env={name}={value}" for name, value in sorted(inner.items())]
        exe = PYTHON if argv[0] == "python" else argv[0]
        return [self.cli, "exec", *self.selection(), *remote, exe, *argv[1:]], {}


def _last_json(stdout: str) -> dict[str, object]:
    """The JSON object the CLI prints last on stdout ({} if there is none)."""
    for line in reversed(stdout.strip().splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict):
            return data
    return {}


def _log_tail(stderr: str, lines: int = 25) -> list[str]:
    """The CLI's log without timestamps, blank lines and JavaScript stack frames, last ``lines``."""
    text = (_STAMP_RE.sub("", line).rstrip() for line in stderr.splitlines())
    return [line for line in text if line.strip() and not line.lstrip().startswith("at ")][-lines:]
