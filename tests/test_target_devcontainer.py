"""The ``devcontainer`` target, for real: podman, the devcontainers CLI, and the generated
``.devcontainer/`` built from a lock, offline (the base and uv images are stand-ins built here,
see tests/containers/images.py), then the seeded probe run twice inside the container.

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
from pathlib import Path

import pytest

from orchestrator import files, lock, process, render
from orchestrator.errors import ToolError
from orchestrator.spec import load
from orchestrator.targets.base import Context
from orchestrator.targets.devcontainer import CLI_ENV, ENGINE_ENV, DevcontainerTarget, find_engine
from tests.conftest import REPO
from tests.containers import images

SKIP_VAR = "ENVPARITY_SKIP_CONTAINERS"
STEPS = 5

SPEC = f"""\
[environment]
name = "dc-probe"
python = "3.11"

[dependencies]
torch = "==2.13.0"
numpy = "==2.4.6"

# The torch CPU wheel: on this machine, and in the stand-in base image at the same path.
[[index]]
url = "{images.WHEELS}"
kind = "find-links"

[determinism]
seed = 11

[targets.devcontainer]
image = "{images.BASE_IMAGE}"
"""


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


@pytest.fixture(scope="module")
def engine() -> Iterator[str]:
    """podman with this machine's settings, the CLI, and both stand-in images; else fail."""
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
    saved = {k: os.environ.get(k) for k in ("CONTAINERS_CONF", CLI_ENV, ENGINE_ENV)}
    os.environ.update(
        {"CONTAINERS_CONF": str(images.CONTAINERS_CONF), CLI_ENV: cli, ENGINE_ENV: podman}
    )
    try:
        seconds = images.ensure_base_image(podman)
        images.ensure_uv_image(podman)
    except (images.Unavailable, process.CommandFailed) as exc:
        pytest.fail(f"the stand-in images cannot be built here: {exc}", pytrace=False)
    if seconds is not None:
        print(f"\nbuilt {images.BASE_IMAGE} in {seconds:.1f}s")
    yield podman
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _project(root: Path) -> Context:
    """A spec, its lock and rendered files in ``root``, and a verify context over them."""
    (root / "environment.toml").write_text(SPEC, encoding="utf-8")
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
    root.mkdir()
    messages: list[str] = []
    ctx = _project(root)
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
        assert first.user == "dev"

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
        # runtime copy, the container's user, in the workspace.
        show = (
            "import json, os, sys, torch, numpy, orchestrator\n"
            "print(json.dumps([sys.executable, torch.__version__, numpy.__version__,"
            " os.environ['PYTHONHASHSEED'], os.environ['EXTRA'], orchestrator.__file__,"
            " os.getcwd(), os.getuid() != 0]))"
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
        with pytest.raises(ToolError, match=r"^devcontainer: 'devcontainer up' failed: ") as e:
            target.provision()
        assert "Hash mismatch for `torch==2.13.0+cpu`" in str(e.value)
        assert not (ctx.cache / "devcontainer" / "state.json").exists()
    finally:
        target.remove()


# --------------------------------------------------------------------------- no engine needed


def test_unavailable_says_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec_path = tmp_path / "environment.toml"
    spec_path.write_text(SPEC, encoding="utf-8")
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

    no_target = SPEC[: SPEC.index("[targets.devcontainer]")]
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
        SPEC + f"\n[targets.host]\n[targets.venv]\n\n[verify]\nsteps = {STEPS}\n", encoding="utf-8"
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
