"""``envparity verify`` end to end over the host and venv targets, with the real uv and torch."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator import cli, process, verify
from orchestrator.errors import UsageError
from orchestrator.spec import load
from tests.helpers import (
    CLI,
    cli_env,
    envparity,
    make_project,
    mirror,
    torch_spec,
    user_project,
)

SPEC = torch_spec("verify-demo")

FLAKY = """\
import os

import torch
from torch import nn

from orchestrator.determinism import seed_everything


def train(rec):
    # Seeded, except for one draw from the OS: every process trains differently from step 0.
    seed_everything(rec.seed)
    model = nn.Linear(4, 1)
    rec.initial(model)
    noise = int.from_bytes(os.urandom(2), "little") / 65536
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(rec.steps):
        x = torch.ones(8, 4) * (step + 1)
        loss = ((model(x) - noise) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        rec.loss(loss)
    rec.final(model)
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A locked CPU project verified once over host and venv (the cold run)."""
    folder = make_project(tmp_path_factory.mktemp("verify") / "project", SPEC)
    first = envparity(folder, "verify")
    assert first.returncode == 0, first.stdout + first.stderr
    (folder / "first-run.txt").write_text(first.stdout + first.stderr)
    shutil.copy(folder / ".envparity/report.html", folder / "first-report.html")
    return folder


def fingerprints(project: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime for p in (project / ".envparity/fingerprints").glob("*.json")}


def test_cold_verify_provisions_probes_twice_each_and_reports(project: Path) -> None:
    out = (project / "first-run.txt").read_text()
    assert "venv: installing cpu.txt (hash-checked)" in out
    for target in ("host", "venv"):
        assert f"{target}: probe run 1 of 2" in out and f"{target}: probe run 2 of 2" in out
        row = next(line for line in out.splitlines() if line.split()[:1] == [target])
        assert "2.13.0+cpu" in row and "bitwise" in row
    assert "host vs venv: bitwise identical" in out
    assert len(fingerprints(project)) == 4
    html = (project / "first-report.html").read_text()
    assert html.count('class="run"') == 4 and "first divergence" not in html


def test_second_verify_reuses_everything(project: Path) -> None:
    before = fingerprints(project)
    again = envparity(project, "verify")
    assert again.returncode == 0, again.stderr
    assert "probe run" not in again.stderr and "installing" not in again.stderr
    assert "venv: reusing cpu-" in again.stderr
    assert "2 cached" in again.stdout
    assert fingerprints(project) == before


def test_fresh_probes_again(project: Path) -> None:
    before = fingerprints(project)
    again = envparity(project, "verify", "--targets", "host", "--fresh")
    assert again.returncode == 0, again.stderr
    after = fingerprints(project)
    changed = [name for name in before if after[name] != before[name]]
    assert sorted(changed) == sorted(n for n in before if n.startswith("host-"))


def test_a_nondeterministic_probe_is_caught_within_a_target(tmp_path: Path) -> None:
    project = make_project(tmp_path / "flaky", SPEC + 'probe = "flaky:train"\n')
    (project / "flaky.py").write_text(FLAKY)
    done = envparity(project, "verify", "--targets", "host")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL host: runs in the same environment DIVERGED at losses step 0" in done.stdout
    html = (project / ".envparity/report.html").read_text()
    assert "first divergence: step 0" in html and "First divergent step: <b>0</b>" in html


def test_html_report_renders_in_headless_chromium(project: Path, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed (apt-get install chromium); .ci/run installs it")
    shot = tmp_path / "report.png"
    args = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    page = (project / "first-report.html").as_uri()
    dom = subprocess.run([*args, "--dump-dom", page], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr
    assert dom.stdout.count("<polyline") == 4 and 'id="targets"' in dom.stdout
    assert "every target that ran computes the same thing" in dom.stdout
    subprocess.run(
        [*args, f"--screenshot={shot}", "--window-size=900,900", page],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.stat().st_size > 10_000  # a real picture, not a blank page


def test_skipped_targets_are_reported_and_fail_only_when_strict_or_required(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator.targets import TARGETS
    from orchestrator.targets.venv import VenvTarget

    class Missing(VenvTarget):
        def unavailable(self) -> str | None:
            return "venv: uv is not installed"

    monkeypatch.setitem(TARGETS, "venv", Missing)
    monkeypatch.setenv("ENVPARITY_MIRRORS", mirror())
    spec = load(project / "environment.toml")
    result = verify.verify(spec)
    assert [(t.name, t.status, t.reason) for t in result.targets] == [
        ("host", "ok", ""),
        ("venv", "skipped", "venv: uv is not installed"),
    ]
    assert result.exit_code == 0
    strict = verify.verify(spec, strict=True)
    assert strict.problems == ["venv: skipped (venv: uv is not installed), but --strict"]
    required = (
        (project / "environment.toml")
        .read_text()
        .replace("[targets.venv]", "[targets.venv]\nrequired = true")
    )
    other = project.parent / "required"
    other.mkdir(exist_ok=True)
    (other / "environment.toml").write_text(required)
    shutil.copytree(project / "locks", other / "locks", dirs_exist_ok=True)
    assert cli.main(["--spec", str(other / "environment.toml"), "render"]) == 0
    assert verify.verify(load(other / "environment.toml")).problems == [
        "venv: skipped (venv: uv is not installed), but required by the spec"
    ]


def test_unknown_and_absent_targets_are_usage_errors(project: Path) -> None:
    spec = load(project / "environment.toml")
    with pytest.raises(
        UsageError, match="unknown target 'docker'; targets are host, venv, devcontainer, nix"
    ):
        verify.choose_targets(spec, ["docker"])
    with pytest.raises(
        UsageError, match=r"target 'nix' needs settings environment.toml does not have; add:\n"
    ):
        verify.choose_targets(spec, ["nix"])


def test_stale_lock_fails_before_anything_runs(project: Path, tmp_path: Path) -> None:
    copy = tmp_path / "stale"
    shutil.copytree(project, copy, ignore=shutil.ignore_patterns(".envparity"))
    spec_file = copy / "environment.toml"
    spec_file.write_text(spec_file.read_text().replace('numpy = "==2.4.6"', 'numpy = "==2.4.5"'))
    done = envparity(copy, "verify")
    assert done.returncode == 1
    assert "locks/cpu.txt: stale (environment.toml changed since it was locked)" in done.stderr
    assert not (copy / ".envparity").exists()


def test_killed_provisioning_leaves_nothing_that_looks_finished(
    project: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "killed"
    shutil.copytree(project, copy, ignore=shutil.ignore_patterns(".envparity"))
    proc = subprocess.Popen(
        [*CLI, "verify", "--targets", "venv"],
        cwd=copy,
        env=cli_env(columns=None),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    venvs = copy / ".envparity/venvs"
    deadline = time.monotonic() + 120
    while not list(venvs.glob(".building-*/bin/python")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(venvs.glob(".building-*")), "the build was not caught in progress"
    assert [p for p in venvs.iterdir() if not p.name.startswith(".")] == []
    done = envparity(copy, "verify", "--targets", "venv")
    assert done.returncode == 0, done.stderr
    assert [p.name for p in venvs.iterdir() if p.name.startswith(".")] == []
    finished = [p for p in venvs.iterdir() if (p / ".envparity-complete").is_file()]
    assert len(finished) == 1


def test_two_verifies_at_once_share_the_cache_safely(project: Path, tmp_path: Path) -> None:
    copy = tmp_path / "concurrent"
    shutil.copytree(project, copy, ignore=shutil.ignore_patterns(".envparity"))
    procs = [
        subprocess.Popen(
            [*CLI, "verify", "--targets", "venv"],
            cwd=copy,
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert any("waiting for another envparity verify" in err for _, err in outs)
    # One built the environment and probed; the other waited, then reused both.
    assert sorted("installing cpu.txt" in err for _, err in outs) == [False, True]
    assert sorted("venv: reusing" in err for _, err in outs) == [False, True]
    venvs = [p for p in (copy / ".envparity/venvs").iterdir() if not p.name.startswith(".")]
    assert len(venvs) == 1 and (venvs[0] / ".envparity-complete").is_file()
    prints = sorted((copy / ".envparity/fingerprints").glob("*.json"))
    assert len(prints) == 2
    for p in prints:
        assert json.loads(p.read_text())["format"] == "envparity-fingerprint"


def test_the_spec_determinism_reaches_the_probe(project: Path, tmp_path: Path) -> None:
    recorded = json.loads(
        next((project / ".envparity/fingerprints").glob("host-*-1.json")).read_text()
    )
    assert recorded["probe"]["determinism"] == {
        "deterministic_algorithms": True,
        "tf32": False,
        "cudnn_benchmark": False,
        "threads": None,
    }
    custom = tmp_path / "environment.toml"
    custom.write_text(
        SPEC + "\n[determinism]\nseed = 5\ndeterministic_algorithms = false\n"
        "tf32 = true\ncudnn_benchmark = true\nthreads = 1\n"
    )
    assert verify.determinism_flags(load(custom)) == [
        "--seed",
        "5",
        "--deterministic-algorithms",
        "false",
        "--tf32",
        "--cudnn-benchmark",
        "--threads",
        "1",
    ]


# --------------------------------------------------------------------------- user probes, caches


@pytest.fixture(scope="module")
def user(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project whose probe (given with --probe) imports a module and reads a data file."""
    return user_project(make_project(tmp_path_factory.mktemp("verify") / "user", SPEC))


def verify_host(project: Path) -> process.Completed:
    done = envparity(project, "verify", "--targets", "host", "--probe", "myprobe:train")
    assert done.returncode == 0, done.stdout + done.stderr
    return done


class TestCachedFingerprints:
    """A cached fingerprint stands for a new run only while every project file its probe read
    (code it imported, data it opened) is unchanged, and only when it loads."""

    def test_verify_takes_a_probe_and_names_it(self, user: Path) -> None:
        done = verify_host(user)
        assert "host: probe run 1 of 2" in done.stderr
        assert "probe myprobe:train, 4 steps, seed 0" in done.stdout
        html = (user / ".envparity/report.html").read_text()
        assert '<p id="probe">probe myprobe:train, 4 steps, seed 0</p>' in html
        again = verify_host(user)
        assert "probe run" not in again.stderr and "2 cached" in again.stdout

    @pytest.mark.parametrize(
        ("path", "edit"),
        [
            ("mymodel.py", lambda text: text.replace("nn.Tanh()", "nn.ReLU()")),
            ("data/vocab.txt", lambda text: text.replace("was", "were")),
        ],
        ids=["imported-module", "data-file"],
    )
    def test_editing_a_file_the_probe_read_runs_it_again(
        self, user: Path, path: str, edit: Any
    ) -> None:
        verify_host(user)  # cached or not, current
        file = user / path
        file.write_text(edit(file.read_text()))
        done = verify_host(user)
        assert f"host: {path} changed since the cached run" in done.stderr
        assert "host: probe run 1 of 2" in done.stderr and "2 cached" not in done.stdout
        assert "2 cached" in verify_host(user).stdout

    @pytest.mark.parametrize(
        ("content", "problem"),
        [
            ("{", "not JSON: Expecting property name enclosed in double quotes"),
            ("", "not JSON: Expecting value"),
            (
                '{"format": "envparity-fingerprint", "version": 2, "probe": []}',
                "probe: expected a table, got an array []; and 4 more",
            ),
        ],
        ids=["truncated", "empty", "wrong-type"],
    )
    def test_a_corrupt_cached_fingerprint_is_discarded_and_probed_again(
        self, user: Path, content: str, problem: str
    ) -> None:
        verify_host(user)
        (cached,) = (user / ".envparity/fingerprints").glob("host-*-1.json")
        cached.write_text(content)
        done = verify_host(user)
        assert "host: probe run 1 of 2" in done.stderr and "probe run 2 of 2" not in done.stderr
        assert (
            f"host: note: cached fingerprint {cached.name} is unreadable ({problem}" in done.stdout
        )
        assert json.loads(cached.read_text())["format"] == "envparity-fingerprint"
        html = (user / ".envparity/report.html").read_text()
        assert f"<ul id='notes'><li>host: cached fingerprint {cached.name} is unreadable" in html


def test_a_venv_marked_complete_without_its_interpreter_is_rebuilt(project: Path) -> None:
    """What a kill -9 during --fresh's delete of the old environment left before it was
    moved aside first: the marker, and no interpreter."""
    (venv,) = [p for p in (project / ".envparity/venvs").iterdir() if not p.name.startswith(".")]
    shutil.rmtree(venv / "bin")
    assert (venv / ".envparity-complete").is_file()
    done = envparity(project, "verify", "--targets", "venv")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (
        f"venv: {venv.name} is incomplete (marker or interpreter missing): rebuilding it"
        in done.stderr
    )
    assert "venv: installing cpu.txt (hash-checked)" in done.stderr
    assert "venv: probe run 1 of 2" in done.stderr and "2 cached" not in done.stdout
    assert (venv / "bin" / "python").is_file()
