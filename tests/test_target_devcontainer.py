"""The ``devcontainer`` target, for real: podman, the devcontainers CLI, and the generated
``.devcontainer/`` built from a lock, offline (the base and uv images are stand-ins built here,
see tests/containers/images.py), then the seeded probe run twice inside the container.

podman is reached through a recorder (``podman`` in a folder of its own, which logs its
arguments and runs the real podman), so the tests see the exact commands the CLI runs:
``podman run`` with the GPU and shared-memory flags, and no GPU detection through
``podman info``.

Without podman, the CLI or the stand-in images these tests FAIL, saying what is missing; a
developer without them may set ENVPARITY_SKIP_CONTAINERS=1 to skip them, loudly.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from orchestrator import cli, files, gpus, lock, process, render
from orchestrator.errors import ToolError
from orchestrator.spec import load
from orchestrator.targets.base import Context
from orchestrator.targets.devcontainer import (
    CDI_HINT,
    CLI_ENV,
    ENGINE_ENV,
    UV_IMAGE_ENV,
    DevcontainerTarget,
    find_engine,
)
from tests import real_tools
from tests.containers import images
from tests.helpers import REPO, pin_torch_closure, wheel_folder, wheel_spec

SKIP_VAR = "ENVPARITY_SKIP_CONTAINERS"
STEPS = 5


@cache
def dc_spec(torch: bool = True) -> str:
    """``wheel_spec`` in the stand-in base image, what torch requires pinned to the host's
    versions (the host target locks what this host has); with ``torch=False``, NumPy alone (no
    torch, so no host pins)."""
    text = (
        wheel_spec("dc-probe", seed=11)
        + f'\n[targets.devcontainer]\nimage = "{images.BASE_IMAGE}"\n'
    )
    return pin_torch_closure(text) if torch else text.replace('torch = "==2.13.0"\n', "")


def _cli() -> str | None:
    for candidate in (
        os.environ.get(CLI_ENV),
        "devcontainer",
        str(REPO / ".ci" / "node" / "node_modules" / ".bin" / "devcontainer"),
    ):
        found = shutil.which(candidate) if candidate else None
        if found:
            return found
    return None


_RECORDER = """#!/bin/sh
printf '%s\\0' "$@" >> {log}
printf '\\n' >> {log}
exec {podman} "$@"
"""


def podman_calls(engine: str) -> list[list[str]]:
    """The argument lists the podman recorder ``engine`` has run since the last call."""
    log = Path(engine).parent / "calls"
    records = log.read_text(encoding="utf-8").split("\0\n")
    log.write_text("", encoding="utf-8")
    return [r.split("\0") for r in records if r]


def podman_run(engine: str) -> list[str]:
    """The one ``podman run`` among the recorded calls."""
    runs = [c for c in podman_calls(engine) if c[0] == "run"]
    assert len(runs) == 1, runs
    return runs[0]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A recorder around podman with this machine's settings, the CLI, and both stand-in images
    (uv's named by ENVPARITY_UV_IMAGE); else fail."""
    if os.environ.get(SKIP_VAR) == "1":
        pytest.skip(
            f"{SKIP_VAR}=1: the devcontainer target was NOT run (no container built, "
            "no probe run in one)"
        )
    podman = shutil.which("podman")
    cli = _cli()
    if podman is None or cli is None:
        missing = (
            "podman (apt-get install podman runc)"
            if podman is None
            else f"the devcontainers CLI (npm install @devcontainers/cli; or set {CLI_ENV})"
        )
        pytest.fail(
            f"{missing} is not installed, so the devcontainer target cannot be tested; "
            f"set {SKIP_VAR}=1 to skip these tests on purpose",
            pytrace=False,
        )
    folder = tmp_path_factory.mktemp("podman-recorder")
    recorder = folder / "podman"
    recorder.write_text(_RECORDER.format(log=folder / "calls", podman=podman), encoding="utf-8")
    recorder.chmod(0o755)
    (folder / "calls").touch()
    saved = {k: os.environ.get(k) for k in ("CONTAINERS_CONF", CLI_ENV, ENGINE_ENV, UV_IMAGE_ENV)}
    os.environ.update(
        {
            "CONTAINERS_CONF": str(images.CONTAINERS_CONF),
            CLI_ENV: cli,
            ENGINE_ENV: str(recorder),
            UV_IMAGE_ENV: images.UV_IMAGE,
        }
    )
    try:
        seconds = images.ensure_base_image(podman)
        images.ensure_uv_image(podman)
    except (images.Unavailable, process.CommandFailed) as exc:
        pytest.fail(f"the stand-in images cannot be built here: {exc}", pytrace=False)
    if seconds is not None:
        print(f"\nbuilt {images.BASE_IMAGE} in {seconds:.1f}s")
    yield str(recorder)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


# A project of the user's own, for install_project: a package built by hatchling (which, unlike
# setuptools, writes nothing into the source folder, owned by root here).
PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "dcproj"
version = "0.1"
"""


def _project(root: Path, spec: str | None = None) -> Context:
    """A spec, its lock and rendered files in ``root``, and a verify context over them."""
    (root / "environment.toml").write_text(spec or dc_spec(), encoding="utf-8")
    spec = load(root / "environment.toml")
    lock.lock(spec)
    files.write_all(root, render.render_all(spec))
    runtime = root / ".envparity" / "runtime"
    shutil.copytree(
        REPO / "orchestrator",
        runtime / "orchestrator",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return Context(spec=spec, cache=root / ".envparity", runtime=runtime)


@pytest.mark.slow
def test_probe_runs_twice_in_the_container_with_identical_fingerprints(
    engine: str, tmp_path: Path
) -> None:
    root = tmp_path / "project"
    (root / "dcproj").mkdir(parents=True)
    (root / "pyproject.toml").write_text(PYPROJECT, encoding="utf-8")
    (root / "dcproj" / "__init__.py").write_text("", encoding="utf-8")
    messages: list[str] = []
    podman_calls(engine)
    ctx = _project(root, dc_spec() + "install_project = true\n")
    ctx = Context(spec=ctx.spec, cache=ctx.cache, runtime=ctx.runtime, progress=messages.append)
    target = DevcontainerTarget(ctx)
    assert target.unavailable() is None
    try:
        start = time.perf_counter()
        target.provision()
        cold = time.perf_counter() - start
        first = target.container()
        assert messages[0].startswith("devcontainer: building the image and starting a container")
        assert first.workspace == f"/workspaces/{root.name}"
        # dev has uid 1000 although the base image had a uid-1000 user ('ubuntu') of its own.
        assert (first.user, first.uid) == ("dev", 1000)

        # The container podman ran: /dev/shm of the spec's size (8g by default), no --gpus
        # (a CPU flavor), and the CLI never asked podman for Docker's nvidia runtime.
        calls = podman_calls(engine)
        run = next(c for c in calls if c[0] == "run")
        assert "--shm-size=8g" in run and "--userns=" in run
        assert not any(a.startswith("--gpus") or "nvidia.com/gpu" in a for a in run)
        assert not any("Runtimes" in a for c in calls for a in c)
        shm = process.run(
            [engine, "exec", first.id, "df", "--block-size=1M", "--output=size", "/dev/shm"]
        )
        assert shm.stdout.split() == ["1M-blocks", "8192"]
        users = process.run(
            [engine, "exec", first.id, "getent", "passwd", "1000", "ubuntu"], check=False
        )
        assert users.stdout.split(":")[:3] == ["dev", "x", "1000"]
        assert "ubuntu" not in users.stdout

        # The command, exactly: the workspace, the engine, rootful podman's override, then the
        # launch environment and PYTHONPATH inside, and the image's interpreter.
        cli = os.environ[CLI_ENV]
        override = str(ctx.cache / "devcontainer" / "devcontainer.json")
        argv, host_env = target.command(["python", "-c", "pass"], env={"A": "1=2"})
        assert argv == [
            cli,
            "exec",
            "--workspace-folder",
            str(root),
            "--docker-path",
            engine,
            "--override-config",
            override,
            "--remote-env=A=1=2",
            f"--remote-env=PYTHONPATH={first.workspace}/.envparity/runtime",
            "/opt/venv/bin/python",
            "-c",
            "pass",
        ]
        assert host_env == {}

        # What runs inside: the lock's torch and numpy, the launch environment, envparity's
        # runtime copy, the container's user, in the workspace; the user's project, installed
        # editable by postCreateCommand.
        show = (
            "import json, os, sys, torch, numpy, orchestrator, dcproj\n"
            "print(json.dumps([sys.executable, torch.__version__, numpy.__version__,"
            " os.environ['PYTHONHASHSEED'], os.environ['EXTRA'], orchestrator.__file__,"
            " os.getcwd(), os.getuid() != 0, dcproj.__file__]))"
        )
        argv, host_env = target.command(
            ["python", "-c", show], env={**ctx.launch_env, "EXTRA": "a b'c"}
        )
        start = time.perf_counter()
        seen = json.loads(process.run(argv, extra_env=host_env).stdout.strip().splitlines()[-1])
        exec_seconds = time.perf_counter() - start
        assert seen == [
            "/opt/venv/bin/python",
            "2.13.0+cpu",
            "2.4.6",
            "11",
            "a b'c",
            f"{first.workspace}/.envparity/runtime/orchestrator/__init__.py",
            first.workspace,
            True,
            f"{first.workspace}/dcproj/__init__.py",
        ]

        # The seeded probe, twice, each in a fresh process: identical fingerprints.
        runs = ctx.cache / "runs" / "devcontainer"
        target.make_writable(runs)
        prints = []
        probe_seconds = []
        for n in (1, 2):
            out = runs / f"{n}.json"
            argv, host_env = target.command(
                [
                    "python",
                    "-m",
                    "orchestrator",
                    "probe",
                    "--steps",
                    str(STEPS),
                    "--device",
                    "cpu",
                    "--out",
                    target.inside(out),
                ],
                env=ctx.launch_env,
            )
            start = time.perf_counter()
            process.run(argv, extra_env=host_env)
            probe_seconds.append(time.perf_counter() - start)
            prints.append(json.loads(out.read_text(encoding="utf-8")))
        assert prints[0]["probe"]["steps"] == STEPS
        assert prints[0]["stages"] == prints[1]["stages"]
        assert prints[0]["environment"]["torch"]["version"] == "2.13.0+cpu"

        # A second provision reuses the running container; --fresh replaces it.
        messages.clear()
        start = time.perf_counter()
        target.provision()
        warm = time.perf_counter() - start
        assert messages[0] == "devcontainer: starting the existing container (devcontainer up)"
        assert target.container().id == first.id
        fresh = DevcontainerTarget(
            Context(spec=ctx.spec, cache=ctx.cache, runtime=ctx.runtime, fresh=True)
        )
        fresh.provision()
        assert fresh.container().id != first.id
        print(
            f"\ndevcontainer up: cold {cold:.1f}s, warm {warm:.1f}s; exec of python "
            f"importing torch {exec_seconds:.1f}s; probe ({STEPS} steps) "
            + ", ".join(f"{s:.1f}s" for s in probe_seconds)
        )
    finally:
        target.remove()
    left = process.run(
        [engine, "ps", "--all", "--quiet", "--filter", f"label=devcontainer.local_folder={root}"]
    ).stdout.split()
    assert left == []


def _up_fails(target: DevcontainerTarget) -> str:
    """The error of ``target.provision()``, which must be the CLI's ``up`` failing."""
    with pytest.raises(ToolError, match=r"^devcontainer: 'devcontainer up' failed: ") as e:
        target.provision()
    return str(e.value)


@pytest.mark.slow
def test_a_failed_build_is_reported_and_never_reused(engine: str, tmp_path: Path) -> None:
    ctx = _project(tmp_path)
    lock_file = tmp_path / "locks" / "cpu.txt"
    text = lock_file.read_text(encoding="utf-8")
    # torch's one hash (it comes from the local wheel) replaced by one that no file has.
    torch = text.index("torch==2.13.0+cpu")
    start = text.index("--hash=sha256:", torch) + len("--hash=sha256:")
    lock_file.write_text(text[:start] + "0" * 64 + text[start + 64 :], encoding="utf-8")
    target = DevcontainerTarget(ctx)
    try:
        error = _up_fails(target)
        assert "Hash mismatch for `torch==2.13.0+cpu`" in error
        assert not (ctx.cache / "devcontainer" / "state.json").exists()
    finally:
        target.remove()


CUDA_SPEC = f"""\
[environment]
name = "dc-gpu"
python = "3.11"

[cuda]
version = "13.0"

[dependencies]
numpy = "==2.4.6"

[targets.devcontainer]
image = "{images.BASE_IMAGE}"
"""


def _gpu_target(engine: str, root: Path, availability: str) -> DevcontainerTarget:
    """The target of ``CUDA_SPEC`` in ``root``, which must ask the CLI for ``availability``
    (``--gpu-availability``); the recorder's log emptied."""
    target = DevcontainerTarget(_project(root, CUDA_SPEC))
    assert target.gpu_availability() == availability
    podman_calls(engine)
    return target


@pytest.mark.slow
def test_a_cuda_flavor_on_podman_asks_for_the_gpus_through_cdi(
    engine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As if an NVIDIA GPU answered (gpus.visible patched: there is none here): the CLI gets
    --gpu-availability none, so it neither runs its own detection (`podman info` with Docker's
    runtimes, which fails on podman) nor adds --gpus; podman gets the CDI device. With no CDI
    spec on this machine, podman refuses it, and the failure says how to make one."""
    monkeypatch.setattr(gpus, "visible", lambda: True)
    target = _gpu_target(engine, tmp_path, "none")
    assert target.ctx.spec.flavor_of("devcontainer") == "cu130"
    try:
        error = _up_fails(target)
        assert "unresolvable CDI devices nvidia.com/gpu=all" in error
        assert error.endswith("\n" + CDI_HINT)
        calls = podman_calls(engine)
        run = next(c for c in calls if c[0] == "run")
        assert "--device=nvidia.com/gpu=all" in run and "--shm-size=8g" in run
        assert not any(a.startswith("--gpus") for a in run)
        assert not any("Runtimes" in a for c in calls for a in c)
    finally:
        target.remove()


@pytest.mark.slow
def test_a_cuda_flavor_on_docker_asks_the_cli_for_all_gpus(
    engine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Docker path, as far as it goes without a Docker daemon: a recorder named ``docker``
    that runs podman (which speaks Docker's CLI). With a GPU reported, the target passes
    --gpu-availability all (no override: no CDI device, no --userns=) and the CLI adds
    --gpus all to its `run`. The CLI still recognises podman behind the name and adds
    --userns=keep-id, which rootful podman refuses: the run fails there, after the flags."""
    monkeypatch.setattr(gpus, "visible", lambda: True)
    docker = Path(engine).parent / "docker"
    docker.write_text(Path(engine).read_text(encoding="utf-8"), encoding="utf-8")
    docker.chmod(0o755)
    monkeypatch.setenv(ENGINE_ENV, str(docker))
    target = _gpu_target(engine, tmp_path, "all")
    try:
        error = _up_fails(target)
        assert "keep-id is only supported in rootless mode" in error
        assert CDI_HINT not in error
        run = podman_run(engine)
        assert run[run.index("--gpus") + 1] == "all"
        assert "--shm-size=8g" in run
        assert not any("nvidia.com/gpu" in a or a == "--userns=" for a in run)
    finally:
        target.remove()


@pytest.mark.slow
def test_a_lock_change_downloads_only_what_changed(engine: str, tmp_path: Path) -> None:
    """uv's cache is a build cache mount: built again after a lock change (a new package),
    uv prepares that package alone; the rest comes from the cache of the first build. buildah
    keeps cache mounts under $TMPDIR/buildah-cache: a fresh TMPDIR makes the first build's
    cache empty, whatever ran on this machine before."""
    spec = dc_spec(torch=False)
    _project(tmp_path, spec)
    podman = shutil.which("podman")
    assert podman is not None
    tag = f"localhost/envparity-test-cache:{tmp_path.name.lower()}"
    build = [
        podman,
        "build",
        "--file",
        str(tmp_path / ".devcontainer" / "Dockerfile"),
        "--build-arg",
        f"UV_IMAGE={images.UV_IMAGE}",
        "--tag",
        tag,
        str(tmp_path / "locks"),
    ]
    try:
        tmpdir = tmp_path / "tmp"
        tmpdir.mkdir()
        env = {"TMPDIR": str(tmpdir)}
        first = process.run([*build, "--no-cache"], timeout=900, extra_env=env)
        out = first.stdout + first.stderr
        assert "Prepared 1 package" in out and "+ numpy==2.4.6" in out, out
        (tmp_path / "environment.toml").write_text(
            spec.replace('numpy = "==2.4.6"', 'numpy = "==2.4.6"\nsix = "==1.17.0"'),
            encoding="utf-8",
        )
        spec2 = load(tmp_path / "environment.toml")
        lock.lock(spec2)
        files.write_all(tmp_path, render.render_all(spec2))
        second = process.run(build, timeout=900, extra_env=env)
        out = second.stdout + second.stderr
        assert "Prepared 1 package" in out, out  # six; numpy was in the cache
        assert "+ six==1.17.0" in out and "+ numpy==2.4.6" in out
    finally:
        process.run([podman, "rmi", "--force", tag], check=False)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("before", "passwd"),
    [
        # Ubuntu 24.04's case (the stand-in base has 'ubuntu' with uid 1000): dev takes 1000.
        ("true", "dev:x:1000:1000::/home/dev:/bin/bash"),
        # no uid-1000 user at all
        ("userdel --remove ubuntu", "dev:x:1000:1000::/home/dev:/bin/bash"),
        # the image has the spec's user already: left as it is
        (
            "userdel --remove ubuntu && useradd --uid 1000 --shell /bin/sh dev",
            "dev:x:1000:1000::/home/dev:/bin/sh",
        ),
    ],
)
def test_the_user_gets_uid_1000_whatever_the_image_has(
    engine: str, tmp_path: Path, before: str, passwd: str
) -> None:
    """The Dockerfile's user step, run by the base image's own shell after ``before``."""
    (tmp_path / "environment.toml").write_text(dc_spec(), encoding="utf-8")
    files.write_all(tmp_path, render.render_all(load(tmp_path / "environment.toml")))
    steps = real_tools.dockerfile_instructions(tmp_path / ".devcontainer" / "Dockerfile")
    (step,) = [c.value[0] for c in steps if c.cmd.upper() == "RUN" and "useradd" in c.value[0]]
    shown = process.run(
        [
            engine,
            "run",
            "--rm",
            images.BASE_IMAGE,
            "sh",
            "-c",
            f"{before} && {step} && getent passwd 1000 && ! getent passwd ubuntu",
        ]
    )
    assert shown.stdout.splitlines() == [passwd]


# --------------------------------------------------------------------------- no engine needed


@pytest.mark.parametrize(
    ("engine_name", "rootless", "flavor", "gpu", "availability", "run_args"),
    [
        ("docker", None, "cu130", True, "all", None),
        ("docker", None, "cu130", False, "none", None),
        ("docker", None, "cpu", True, "all", None),
        ("podman", "true", "cu130", True, "none", ["--shm-size=8g", "--device=nvidia.com/gpu=all"]),
        ("podman", "true", "cu130", False, "none", None),
        ("podman", "true", "cpu", True, "none", None),
        (
            "podman",
            "false",
            "cu130",
            True,
            "none",
            ["--shm-size=8g", "--userns=", "--device=nvidia.com/gpu=all"],
        ),
        ("podman", "false", "cpu", False, "none", ["--shm-size=8g", "--userns="]),
    ],
)
def test_gpu_availability_and_the_override_follow_the_engine_and_the_gpu(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    engine_name: str,
    rootless: str | None,
    flavor: str,
    gpu: bool,
    availability: str,
    run_args: list[str] | None,
) -> None:
    """``--gpu-availability`` for ``up``, and the runArgs of the override (None: no override)."""
    tools = tmp_path / "bin"
    tools.mkdir()
    fake = tools / engine_name  # answers `info --format {{.Host.Security.Rootless}}` only
    fake.write_text(f"#!/bin/sh\necho {rootless}\n", encoding="utf-8")
    fake.chmod(0o755)
    monkeypatch.setenv(ENGINE_ENV, str(fake))
    monkeypatch.delenv(UV_IMAGE_ENV, raising=False)
    monkeypatch.setattr(gpus, "visible", lambda: gpu)
    spec = CUDA_SPEC + f'flavor = "{flavor}"\n'
    (tmp_path / "environment.toml").write_text(spec, encoding="utf-8")
    ctx = Context(
        spec=load(tmp_path / "environment.toml"),
        cache=tmp_path / ".envparity",
        runtime=tmp_path / "rt",
    )
    files.write_all(tmp_path, render.render_all(ctx.spec))
    target = DevcontainerTarget(ctx)
    assert target.gpu_availability() == availability
    selection = target.selection()
    if run_args is None:
        assert "--override-config" not in selection
    else:
        override = Path(selection[selection.index("--override-config") + 1])
        assert json.loads(override.read_text(encoding="utf-8"))["runArgs"] == run_args


def test_a_uv_mirror_is_passed_as_the_uv_image_build_argument(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "docker"
    fake.write_text("#!/bin/sh\n", encoding="utf-8")
    fake.chmod(0o755)
    monkeypatch.setenv(ENGINE_ENV, str(fake))
    monkeypatch.setenv(UV_IMAGE_ENV, "mirror.example/astral-sh/uv:0.13.0")
    (tmp_path / "environment.toml").write_text(dc_spec(), encoding="utf-8")
    ctx = Context(
        spec=load(tmp_path / "environment.toml"),
        cache=tmp_path / ".envparity",
        runtime=tmp_path / "rt",
    )
    files.write_all(tmp_path, render.render_all(ctx.spec))
    selection = DevcontainerTarget(ctx).selection()
    override = json.loads(
        Path(selection[selection.index("--override-config") + 1]).read_text(encoding="utf-8")
    )
    assert override["build"] == {
        "args": {"UV_IMAGE": "mirror.example/astral-sh/uv:0.13.0"},
        "context": "../locks",
        "dockerfile": "Dockerfile",
    }
    assert override["runArgs"] == ["--shm-size=8g"]


class TestCudaSourcesRefused:
    """The image's CUDA and the PyTorch indexes against [cuda], refused before anything is
    built (exit 2, nothing written), each with the fix."""

    BASE = """\
[environment]
name = "x"
python = "3.12"

[cuda]
version = "12.8"

[dependencies]
torch = "==2.10.0"
"""

    @pytest.mark.parametrize(
        ("extra", "message"),
        [
            (
                '[targets.devcontainer]\nimage = "nvidia/cuda:12.6.3-cudnn-devel-ubuntu24.04"\n',
                "environment.toml: targets.devcontainer.image: the image's tag "
                "'12.6.3-cudnn-devel-ubuntu24.04' is CUDA 12.6 but cuda.version is '12.8': use "
                'a 12.8.x tag of nvidia/cuda, or set cuda.version = "12.6"',
            ),
            (
                '[targets.devcontainer]\nimage = "nvcr.io/nvidia/cuda:13.0.1-runtime-ubuntu24.04'
                "@sha256:" + "0" * 64 + '"\n',
                "environment.toml: targets.devcontainer.image: the image's tag "
                "'13.0.1-runtime-ubuntu24.04' is CUDA 13.0 but cuda.version is '12.8': use a "
                '12.8.x tag of nvcr.io/nvidia/cuda, or set cuda.version = "13.0"',
            ),
            (
                '[[index]]\nurl = "https://download.pytorch.org/whl/cu117"\nflavors = ["cuda"]\n',
                "environment.toml: index[0].url: 'https://download.pytorch.org/whl/cu117' serves "
                "the CUDA 11.7 builds of torch but applies to the cu128 flavor (cuda.version "
                "'12.8'); use https://download.pytorch.org/whl/cu128",
            ),
            (
                '[[index]]\nurl = "https://download.pytorch.org/whl/cu128"\n',
                "environment.toml: index[0].url: 'https://download.pytorch.org/whl/cu128' serves "
                "the CUDA 12.8 builds of torch but applies to the cpu flavor; limit it with "
                'flavors = ["cu128"]',
            ),
            (
                '[[index]]\nurl = "https://download.pytorch.org/whl/nightly/cpu"\n',
                "environment.toml: index[0].url: 'https://download.pytorch.org/whl/nightly/cpu' "
                "serves the CPU builds of torch but applies to the cu128 flavor (cuda.version "
                "'12.8'); limit it with flavors = [\"cpu\"]",
            ),
        ],
    )
    def test_render_and_check_refuse(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
        extra: str,
        message: str,
    ) -> None:
        monkeypatch.chdir(tmp_path)
        (tmp_path / "environment.toml").write_text(self.BASE + extra, encoding="utf-8")
        for verb in ("render", "check"):
            assert cli.main([verb]) == 2
            err = capsys.readouterr().err
            assert err == f"envparity: {message}\n"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["environment.toml"]

    @pytest.mark.parametrize(
        "extra",
        [
            '[targets.devcontainer]\nimage = "nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04"\n',
            # a CPU devcontainer may use any base image
            '[targets.devcontainer]\nimage = "nvidia/cuda:12.6.3-base-ubuntu24.04"\n'
            'flavor = "cpu"\n',
            # not a CUDA image, and not a PyTorch index
            '[targets.devcontainer]\nimage = "python:3.12-slim"\n'
            '[[index]]\nurl = "https://example.org/simple"\n',
            '[[index]]\nurl = "https://download.pytorch.org/whl/cu128"\nflavors = ["cu128"]\n'
            '[[index]]\nurl = "https://download.pytorch.org/whl/cpu"\nflavors = ["cpu"]\n',
        ],
    )
    def test_consistent_sources_pass(self, tmp_path: Path, extra: str) -> None:
        from orchestrator import compat

        (tmp_path / "environment.toml").write_text(self.BASE + extra, encoding="utf-8")
        assert compat.check(load(tmp_path / "environment.toml")) == []


class TestDevcontainerSettings:
    def test_shm_size_and_install_project_reach_devcontainer_json(self, tmp_path: Path) -> None:
        (tmp_path / "environment.toml").write_text(
            dc_spec() + 'shm_size = "16g"\ninstall_project = true\n', encoding="utf-8"
        )
        assert cli.main(["--spec", str(tmp_path / "environment.toml"), "render"]) == 0
        data = real_tools.validate_devcontainer(tmp_path / ".devcontainer" / "devcontainer.json")
        assert data["runArgs"] == ["--shm-size=16g"]
        assert data["postCreateCommand"] == [
            "uv",
            "pip",
            "install",
            "--python",
            "/opt/venv/bin/python",
            "--find-links",
            str(wheel_folder()),
            "--no-deps",
            "--editable",
            ".",
        ]

    def test_local_packages_are_installed_after_the_lock_by_post_create_command(
        self, tmp_path: Path
    ) -> None:
        text = dc_spec().replace(
            "[[index]]", 'library = { path = "sd-scripts", editable = true }\n\n[[index]]', 1
        )
        (tmp_path / "environment.toml").write_text(text + "install_project = true\n")
        assert cli.main(["--spec", str(tmp_path / "environment.toml"), "render"]) == 0
        data = real_tools.validate_devcontainer(tmp_path / ".devcontainer" / "devcontainer.json")
        assert data["postCreateCommand"] == (
            "uv pip install --python /opt/venv/bin/python --find-links "
            f"{wheel_folder()} --no-deps --editable . && uv pip install --python "
            "/opt/venv/bin/python --no-deps --editable ./sd-scripts"
        )

    def test_without_install_project_there_is_no_post_create_command(self, tmp_path: Path) -> None:
        (tmp_path / "environment.toml").write_text(dc_spec(), encoding="utf-8")
        assert cli.main(["--spec", str(tmp_path / "environment.toml"), "render"]) == 0
        data = real_tools.validate_devcontainer(tmp_path / ".devcontainer" / "devcontainer.json")
        assert "postCreateCommand" not in data
        assert data["runArgs"] == ["--shm-size=8g"]

    @pytest.mark.parametrize(
        ("line", "message"),
        [
            (
                'shm_size = "8 GB"',
                "targets.devcontainer.shm_size: '8 GB' is not a size such as \"8g\" or "
                '"512m" (a number, then k, m or g)',
            ),
            (
                'shm_size = "0g"',
                "targets.devcontainer.shm_size: '0g' is not a size such as \"8g\" or "
                '"512m" (a number, then k, m or g)',
            ),
            (
                'install_project = "yes"',
                "targets.devcontainer.install_project: expected a boolean, got a string 'yes'",
            ),
        ],
    )
    def test_bad_values_are_refused(
        self,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        line: str,
        message: str,
    ) -> None:
        spec = tmp_path / "environment.toml"
        spec.write_text(dc_spec() + line + "\n", encoding="utf-8")
        assert cli.main(["--spec", str(spec), "render"]) == 2
        assert capsys.readouterr().err == f"envparity: {spec}: {message}\n"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["environment.toml"]


def test_unavailable_says_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec_path = tmp_path / "environment.toml"
    spec_path.write_text(dc_spec(), encoding="utf-8")
    ctx = Context(spec=load(spec_path), cache=tmp_path / ".envparity", runtime=tmp_path / "rt")
    target = DevcontainerTarget(ctx)
    assert target.unavailable() == (
        "devcontainer: .devcontainer/devcontainer.json is missing (run 'envparity render')"
    )
    files.write_all(tmp_path, render.render_all(ctx.spec))
    assert target.unavailable() == "devcontainer: locks/cpu.txt is missing (run 'envparity lock')"
    (tmp_path / "locks").mkdir()
    (tmp_path / "locks" / "cpu.txt").write_text("numpy==2.4.6\n", encoding="utf-8")

    monkeypatch.setenv(CLI_ENV, str(tmp_path / "no-such-cli"))
    assert target.unavailable() == (
        "devcontainer: the devcontainers CLI is not installed (npm install @devcontainers/cli, "
        "then put it on PATH or set ENVPARITY_DEVCONTAINER_CLI)"
    )
    monkeypatch.setenv(CLI_ENV, "/bin/true")
    monkeypatch.setenv(ENGINE_ENV, str(tmp_path / "no-such-engine"))
    assert target.unavailable() == (
        "devcontainer: no container engine (docker with a running daemon, or podman; "
        "or set ENVPARITY_DOCKER_PATH)"
    )

    no_target = dc_spec().split("[targets.devcontainer]")[0]
    spec_path.write_text(no_target, encoding="utf-8")
    bare = DevcontainerTarget(Context(spec=load(spec_path), cache=tmp_path, runtime=tmp_path))
    assert bare.unavailable() == "devcontainer: the spec has no [targets.devcontainer]"


def _tool(folder: Path, name: str, exit_code: int) -> Path:
    path = folder / name
    path.write_text(f"#!/bin/sh\nexit {exit_code}\n", encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_engine_is_docker_only_when_its_daemon_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENGINE_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    podman = _tool(tmp_path, "podman", 0)
    docker = _tool(tmp_path, "docker", 1)  # `docker info` fails: no daemon
    assert find_engine() == str(podman)
    _tool(tmp_path, "docker", 0)
    assert find_engine() == str(docker)
    monkeypatch.setenv(ENGINE_ENV, "podman")
    assert find_engine() == str(podman)


@pytest.mark.slow
def test_verify_end_to_end_over_host_venv_and_devcontainer(engine: str, tmp_path: Path) -> None:
    """The main job, for real: every target provisioned, probed twice, compared."""
    from orchestrator import verify

    root = tmp_path / "e2e"
    root.mkdir()
    (root / "environment.toml").write_text(
        dc_spec() + f"\n[targets.host]\n[targets.venv]\n\n[verify]\nsteps = {STEPS}\n",
        encoding="utf-8",
    )
    spec = load(root / "environment.toml")
    lock.lock(spec)
    files.write_all(root, render.render_all(spec))
    messages: list[str] = []
    try:
        result = verify.verify(spec, strict=True, progress=messages.append)
        assert [(t.name, t.status, t.reason) for t in result.targets] == [
            ("host", "ok", ""),
            ("venv", "ok", ""),
            ("devcontainer", "ok", ""),
        ]
        assert result.problems == []
        for t in result.targets:
            assert t.verdict is not None and t.verdict.kind == "bitwise", t.name
            assert len(t.runs) == 2
        assert result.across is not None and result.across.kind == "bitwise"
        assert "devcontainer: probe run 2 of 2" in messages
        # A second verify reuses the container, the venv and every fingerprint.
        messages.clear()
        again = verify.verify(spec, strict=True, progress=messages.append)
        assert again.problems == [] and all(r.cached for t in again.targets for r in t.runs)
        assert not any("probe run" in m for m in messages)
    finally:
        DevcontainerTarget(
            Context(spec=spec, cache=root / ".envparity", runtime=root / ".envparity")
        ).remove()
