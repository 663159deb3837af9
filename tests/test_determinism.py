"""seed_everything, DataLoader seeding, the launch environment, audit(), and `envparity run`."""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import pytest

from orchestrator import process
from orchestrator.determinism import dataloader_kwargs, seed_everything
from orchestrator.launch import launch_environment

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")

REPO = Path(__file__).resolve().parents[1]


def draws() -> tuple[float, float, list[float]]:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_seed_everything_repeats_every_rng_and_reports_what_it_set() -> None:
    first = seed_everything(7)
    a, ga = draws(), first.numpy_generator.random()
    second = seed_everything(7)
    assert (draws(), second.numpy_generator.random()) == (a, ga)
    assert first.settings["torch.use_deterministic_algorithms"] is True
    assert first.settings["torch.backends.cudnn.benchmark"] is False
    assert first.settings["torch.backends.cuda.matmul.fp32_precision"] == "ieee"
    assert torch.backends.cudnn.conv.fp32_precision == "ieee"  # torch's default here is tf32
    assert torch.are_deterministic_algorithms_enabled()


def test_seed_everything_sets_tf32_and_threads_when_asked() -> None:
    before = torch.get_num_threads()
    try:
        report = seed_everything(1, tf32=True, deterministic_algorithms=False, threads=1)
        assert torch.get_num_threads() == 1
        assert report.settings["torch.backends.cuda.matmul.fp32_precision"] == "tf32"
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        seed_everything(0, threads=before)


def test_seed_everything_takes_a_probes_determinism_settings() -> None:
    """What a probe does with ``rec.determinism``: every key is a seed_everything option."""
    from orchestrator.probe.recorder import default_determinism

    settings = default_determinism()
    settings["deterministic_algorithms"] = False
    try:
        report = seed_everything(3, **settings)
        assert report.settings["torch.use_deterministic_algorithms"] is False
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        seed_everything(0)


class Noisy(torch.utils.data.Dataset):  # type: ignore[misc,name-defined]
    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> tuple[int, float, float]:
        return i, random.random(), float(np.random.rand())


def test_dataloader_kwargs_repeat_order_and_worker_side_draws() -> None:
    def epoch() -> list[list[float]]:
        loader = torch.utils.data.DataLoader(
            Noisy(), batch_size=2, shuffle=True, num_workers=2, **dataloader_kwargs(3)
        )
        return [torch.stack([t.double() for t in b]).flatten().tolist() for b in loader]

    assert epoch() == epoch()


def test_launch_environment_sets_what_only_works_before_start_up() -> None:
    assert launch_environment(42) == {
        "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
        "NVIDIA_TF32_OVERRIDE": "0",
        "PYTHONHASHSEED": "42",
    }
    env = launch_environment(1, deterministic_algorithms=False, tf32=True, threads=2)
    assert env == {
        "MKL_NUM_THREADS": "2",
        "OMP_NUM_THREADS": "2",
        "OPENBLAS_NUM_THREADS": "2",
        "PYTHONHASHSEED": "1",
    }


# ------------------------------------------------------------------ audit, in fresh processes

AUDIT = (
    "import json, os, sys\n"
    "if len(sys.argv) > 1: os.environ['PYTHONHASHSEED'] = sys.argv[1]\n"
    "from orchestrator.determinism import audit, hash_seed_state\n"
    "print(json.dumps([hash_seed_state(), [f.code for f in audit()]]))\n"
)


@pytest.mark.parametrize(
    ("flags", "env", "argv", "expected"),
    [
        ([], {}, [], ["random", ["hash-seed-random"]]),
        ([], {"PYTHONHASHSEED": "5"}, [], ["fixed:5", []]),
        ([], {}, ["5"], ["random", ["hash-seed-set-late"]]),
        (["-E"], {"PYTHONHASHSEED": "5"}, [], ["random", ["hash-seed-ignored"]]),
    ],
    ids=["unset", "set-at-start-up", "set-inside-the-interpreter", "ignored-by--E"],
)
def test_audit_names_the_hash_seed_state(
    flags: list[str], env: dict[str, str], argv: list[str], expected: list[object]
) -> None:
    base = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
    base |= {"PYTHONPATH": str(REPO), **env}
    if flags:  # -E ignores PYTHONPATH too: run from the repository instead
        result = process.run([sys.executable, *flags, "-c", AUDIT, *argv], env=base, cwd=REPO)
    else:
        result = process.run([sys.executable, "-c", AUDIT, *argv], env=base)
    assert json.loads(result.stdout) == expected


def test_audit_flags_deterministic_algorithms_off() -> None:
    from orchestrator.determinism import audit

    torch.use_deterministic_algorithms(False)
    try:
        assert "deterministic-algorithms-off" in [f.code for f in audit()]
    finally:
        torch.use_deterministic_algorithms(True)


# --------------------------------------------------------------------------- envparity run


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "environment.toml"
    path.write_text(
        '[environment]\nname = "demo"\npython = "3.11"\n\n[determinism]\nseed = 123\nthreads = 1\n'
    )
    return path


def test_run_starts_cmd_with_the_launch_environment(spec: Path) -> None:
    child = "import os, sys; print(hash('envparity'), os.environ['OMP_NUM_THREADS'])"
    result = process.run(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "--spec",
            str(spec),
            "run",
            "--",
            sys.executable,
            "-c",
            child,
        ],
        extra_env={"PYTHONPATH": str(REPO), "PYTHONHASHSEED": "random"},
    )
    reference = process.run(
        [sys.executable, "-c", "print(hash('envparity'))"], extra_env={"PYTHONHASHSEED": "123"}
    )
    assert result.stdout.split() == [reference.stdout.strip(), "1"]


def test_run_returns_the_commands_exit_code_and_rejects_no_command(spec: Path) -> None:
    base = [sys.executable, "-m", "orchestrator", "--spec", str(spec), "run"]
    env = {"PYTHONPATH": str(REPO)}
    code = process.run(
        [*base, "--", sys.executable, "-c", "raise SystemExit(3)"], extra_env=env, check=False
    )
    assert code.returncode == 3
    empty = process.run([*base, "--"], extra_env=env, check=False)
    assert (empty.returncode, empty.stderr) == (
        2,
        "envparity: run: no command given (usage: envparity run -- CMD [ARGS...])\n",
    )
    missing = process.run([*base, "--", "no-such-command-xyz"], extra_env=env, check=False)
    assert (missing.returncode, missing.stderr) == (
        2,
        "envparity: run: cannot run no-such-command-xyz: No such file or directory\n",
    )


def test_set_at_launch_names_every_variable_the_launcher_can_set() -> None:
    from orchestrator.launch import SET_AT_LAUNCH, launch_environment

    every = launch_environment(1, deterministic_algorithms=True, tf32=False, threads=2)
    assert set(every) == set(SET_AT_LAUNCH)
