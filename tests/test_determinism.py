"""seed_everything, DataLoader seeding, the launch environment, audit(), and `envparity run`."""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import pytest

from orchestrator import process
from orchestrator.determinism import dataloader_kwargs, flag_findings, seed_everything, torch_flags
from orchestrator.determinism_settings import DeterminismSettings, add_arguments, launch_environment
from tests.helpers import REPO

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")


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
    """What a probe does with ``rec.determinism``; keywords override the value."""
    settings = DeterminismSettings(seed=3, deterministic_algorithms=False)
    try:
        report = seed_everything(settings)
        assert report.seed == 3
        assert report.settings["torch.use_deterministic_algorithms"] is False
        assert not torch.are_deterministic_algorithms_enabled()
        report = seed_everything(settings, deterministic_algorithms=True)
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        seed_everything(0)


def test_warn_mode_runs_an_op_without_a_deterministic_kernel_and_warns() -> None:
    """``deterministic_algorithms = "warn"``: torch's warn_only, a warning instead of an error."""

    def put() -> None:  # Tensor.put_(accumulate=False) has no deterministic kernel anywhere
        torch.zeros(4).put_(torch.tensor([0, 1]), torch.tensor([1.0, 2.0]))

    try:
        report = seed_everything(0, deterministic_algorithms="warn")
        assert report.settings["torch.use_deterministic_algorithms"] == "warn"
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch_flags()["deterministic_algorithms"] == "warn"
        with pytest.warns(UserWarning, match="put_ does not have a deterministic implementation"):
            put()
        seed_everything(0)
        with pytest.raises(RuntimeError, match="put_ does not have a deterministic implementation"):
            put()
    finally:
        seed_everything(0)


INDUCTOR = """
import sys
import torch
from orchestrator.determinism import seed_everything
seed_everything(0, deterministic_algorithms=sys.argv[1] == "true")
imported = "torch._inductor" in sys.modules
import torch._inductor.config as config
print(imported, torch.are_deterministic_algorithms_enabled(), config.deterministic)
"""


@pytest.mark.parametrize("mode", ["true", "false"])
def test_seed_everything_skips_inductors_import_and_hands_it_the_mode(mode: str) -> None:
    """torch.use_deterministic_algorithms imports torch._inductor (1.3-2.4 s) to set its
    deterministic mode; seed_everything sets the flag alone and gives Inductor the same value
    when it is imported later, as torch's function would have."""
    result = process.run(
        [sys.executable, "-c", INDUCTOR, mode], extra_env={"PYTHONPATH": str(REPO)}, cwd=REPO
    )
    on = str(mode == "true")
    assert result.stdout.split() == ["False", on, on]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"seed": -1}, "seed: -1 is not between 0 and 4294967295"),
        ({"seed": 2**32}, "seed: 4294967296 is not between 0 and 4294967295"),
        ({"threads": 0}, "threads: 0 is not between 1 and 1024"),
        (
            {"deterministic_algorithms": "yes"},
            "deterministic_algorithms: expected a boolean or \"warn\", got a string 'yes'",
        ),
        ({"tf32": 1}, "tf32: expected a boolean, got an integer 1"),
    ],
)
def test_settings_refuse_values_outside_the_specs_ranges(
    values: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError) as info:
        DeterminismSettings(**values)  # type: ignore[arg-type]
    assert str(info.value) == message


@pytest.mark.parametrize(
    "settings",
    [
        DeterminismSettings(),
        DeterminismSettings(seed=5, deterministic_algorithms="warn", threads=1),
        DeterminismSettings(
            seed=9, deterministic_algorithms=False, tf32=True, cudnn_benchmark=True
        ),
    ],
)
def test_probe_arguments_read_back_to_the_same_settings(settings: DeterminismSettings) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(settings.probe_arguments())
    assert DeterminismSettings.from_arguments(args) == settings
    assert DeterminismSettings.from_dict(settings.to_dict()) == settings


def test_probe_arguments_name_the_bad_option() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises(ValueError, match=r"^--threads 0: not between 1 and 1024$"):
        DeterminismSettings.from_arguments(parser.parse_args(["--threads", "0"]))


def test_flag_findings_name_a_flag_switched_on_and_off_during_training() -> None:
    good: dict[str, object] = {
        "deterministic_algorithms": True,
        "cudnn_benchmark": False,
        "cudnn_deterministic": True,
        "tf32": False,
    }
    history = [
        ("initial", good),
        ("step 3", {**good, "cudnn_benchmark": True}),
        ("step 5", good),
    ]
    [finding] = flag_findings(history)
    assert finding.code == "cudnn-benchmark-during-training"
    assert finding.message == (
        "torch.backends.cudnn.benchmark was on during training (from step 3; 1 change(s) to "
        "it), though not at the end"
    )
    assert flag_findings([("initial", good), ("final", good)]) == []
    # still on at the end: audit() reports that, not this
    assert flag_findings([("initial", good), ("step 1", {**good, "tf32": True})]) == []


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
    assert launch_environment(DeterminismSettings(seed=42)) == {
        "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "NVIDIA_TF32_OVERRIDE": "0",
        "PYTHONHASHSEED": "42",
    }
    warn = DeterminismSettings(seed=42, deterministic_algorithms="warn")
    assert warn.launch_env()["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"  # warn still asks cuBLAS
    env = DeterminismSettings(
        seed=1, deterministic_algorithms=False, tf32=True, threads=2
    ).launch_env()
    assert env == {
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
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
    from orchestrator.determinism_settings import SET_AT_LAUNCH, launch_environment

    every = launch_environment(DeterminismSettings(seed=1, threads=2))
    assert set(every) == set(SET_AT_LAUNCH)


# ------------------------------------------------------------------ the spec's [determinism]


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ('deterministic_algorithms = "warn"', DeterminismSettings(deterministic_algorithms="warn")),
        ("deterministic_algorithms = false", DeterminismSettings(deterministic_algorithms=False)),
        ("seed = 7\nthreads = 2", DeterminismSettings(seed=7, threads=2)),
    ],
)
def test_the_spec_builds_the_one_settings_value(table: str, expected: DeterminismSettings) -> None:
    from orchestrator import spec
    from tests.helpers import MINIMAL

    loaded = spec.loads(MINIMAL + f"\n[determinism]\n{table}\n").determinism
    assert loaded == expected
    assert type(loaded) is DeterminismSettings


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            'deterministic_algorithms = "maybe"',
            "environment.toml: determinism.deterministic_algorithms: expected a boolean or "
            "\"warn\", got a string 'maybe'",
        ),
        (
            "deterministic_algorithms = 1",
            'environment.toml: determinism.deterministic_algorithms: expected a boolean or "warn", '
            "got an integer 1",
        ),
        (
            "seed = 4294967296",
            "environment.toml: determinism.seed: 4294967296 is not between 0 and 4294967295",
        ),
    ],
)
def test_the_spec_refuses_a_bad_determinism_value_with_its_key(table: str, message: str) -> None:
    from orchestrator import spec
    from orchestrator.errors import SpecError
    from tests.helpers import MINIMAL

    with pytest.raises(SpecError) as info:
        spec.loads(MINIMAL + f"\n[determinism]\n{table}\n", path="environment.toml")
    assert [str(p) for p in info.value.problems] == [message]


def test_settings_warn_about_what_lets_results_differ() -> None:
    assert DeterminismSettings(threads=1).warnings() == []
    assert DeterminismSettings(
        cudnn_benchmark=True, deterministic_algorithms="warn"
    ).warnings() == [
        "determinism.cudnn_benchmark is true: cuDNN times candidate convolution algorithms in "
        "every process and may pick a different one each run; set it to false for repeatable "
        "results",
        "determinism.threads is not set: torch then uses one thread per core, and the thread "
        "count changes CPU results (1 vs 2 threads diverge at step 2 of the built-in probe on 2 "
        "cores); set it, e.g. threads = 1, for the same numbers on every machine",
        'determinism.deterministic_algorithms is "warn": an op without a deterministic kernel '
        "runs anyway, with a warning; its results may differ between runs",
    ]


def test_check_prints_the_determinism_warnings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from orchestrator import cli

    (tmp_path / "environment.toml").write_text(
        '[environment]\nname = "w"\npython = "3.11"\n[determinism]\ncudnn_benchmark = true\n'
    )
    monkeypatch.chdir(tmp_path)
    cli.main(["check"])  # no locks yet: exit 1, but the warnings come first
    out = capsys.readouterr().out.splitlines()
    assert [line for line in out if line.startswith("warning: determinism.")] == [
        "warning: " + w for w in DeterminismSettings(cudnn_benchmark=True).warnings()
    ]
    assert len(DeterminismSettings(cudnn_benchmark=True).warnings()) == 2
