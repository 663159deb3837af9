"""compare, diff and fingerprint loading on hand-made fingerprints (no torch needed)."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from orchestrator import process
from orchestrator.cli import main
from orchestrator.errors import UsageError
from orchestrator.probe import fingerprint
from orchestrator.probe.capture import Difference, diff
from orchestrator.probe.compare import compare, likely_causes
from orchestrator.probe.fingerprint import Fingerprint, FingerprintError

D = "sha256:" + "0" * 64
DEFAULT_DETERMINISM = {
    "deterministic_algorithms": True,
    "tf32": False,
    "cudnn_benchmark": False,
    "threads": None,
}


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


def env(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "python": {"version": "3.11.7", "hash_seed": "fixed:0"},
        "launch": {"PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "2"},
        "torch": {"version": "2.13.0+cpu", "num_threads": 2, "cpu_capability": "AVX512"},
        "numpy": {"version": "2.4.6"},
        "flags": {"deterministic_algorithms": True},
        "gpus": [],
        "packages": {"numpy": "2.4.6", "torch": "2.13.0+cpu", "rich": "15.0.0"},
    }
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        base[section][key] = value
    return base


def fp(
    source: str = "a.json",
    *,
    losses: tuple[float, ...] = (1.5, 1.25, 1.0),
    device: str = "cpu",
    seed: int = 0,
    environment: dict[str, Any] | None = None,
    determinism: dict[str, Any] | None = None,
    **stages: Any,
) -> Fingerprint:
    data: dict[str, Any] = {
        "initial_params": digest(1),
        "rng_initial": {"python": digest(2), "numpy": digest(3), "torch": digest(4)},
        "data_order": [digest(10 + i) for i in range(len(losses))],
        "losses": [x.hex() for x in losses],
        "final_params": digest(5),
        "metrics": {"accuracy": (0.75).hex()},
        "rng_final": {"python": digest(6), "torch": digest(7)},
    }
    data.update(stages)
    return Fingerprint(
        source=source,
        probe="orchestrator.probe.workload:train",
        seed=seed,
        steps=len(losses),
        device=device,
        environment=environment or env(),
        stages=data,
        audit=[],
        determinism=DEFAULT_DETERMINISM if determinism is None else determinism,
    )


def test_identical_runs_are_bitwise() -> None:
    verdict = compare([fp("a"), fp("b"), fp("c")])
    assert verdict.kind == "bitwise" and verdict.equivalent
    assert verdict.to_dict()["pairs"][1]["other"] == "c"


def test_a_loss_difference_names_the_step_and_values() -> None:
    verdict = compare([fp("a"), fp("b", losses=(1.5, 1.2500001, 1.0))])
    w = verdict.worst
    assert (verdict.kind, w.stage, w.step) == ("diverged", "losses", 1)
    assert w.values == ("1.25", "1.2500001")
    assert w.reason == "loss at step 1 differs: 1.25 vs 1.2500001 (relative difference 8e-08)"


def test_the_first_differing_stage_wins() -> None:
    other = fp("b", initial_params=digest(99), losses=(9.0, 9.0, 9.0))
    assert compare([fp("a"), other]).worst.stage == "initial_params"


def test_same_device_tolerance_is_used_only_when_given() -> None:
    near = fp("b", losses=(1.5, 1.25 * (1 + 1e-6), 1.0), final_params=digest(55))
    assert compare([fp("a"), near]).kind == "diverged"
    verdict = compare([fp("a"), near], rtol=1e-5)
    assert verdict.kind == "tolerance"
    assert verdict.worst.reason == "same device model; tolerance rtol=1e-05, atol=0 from the caller"


def test_cpu_against_a_hand_made_cuda_fingerprint_uses_the_cross_device_tolerance() -> None:
    """A hand-made CUDA fingerprint: the verdict logic only. Real CPU-vs-CUDA runs are
    bench/gpu_checks.py's to compare, on a GPU machine."""
    gpu_env = env()
    gpu_env["gpus"] = [{"name": "NVIDIA H100 80GB HBM3", "sm_count": 132}]
    cuda = fp(
        "b",
        device="cuda",
        environment=gpu_env,
        losses=(1.5, 1.25 * (1 + 3e-5), 1.0),
        final_params=digest(77),
    )
    verdict = compare([fp("a"), cuda])
    assert verdict.kind == "tolerance"
    assert verdict.worst.reason == (
        "different devices (cpu vs cuda NVIDIA H100 80GB HBM3): kernels differ, so bitwise "
        "equality is not expected; losses compared with rtol=0.0001"
    )
    assert compare([fp("a"), cuda], cross_device_rtol=1e-6).kind == "diverged"


def test_causes_are_ranked_by_stage() -> None:
    other_env = env(packages__numpy="1.26.4", torch__num_threads=1)
    ref, other = fp("a"), fp("b", environment=other_env)
    assert likely_causes(ref, other, "losses")[:2] == [
        "threads: torch.num_threads: 2 vs 1",
        "numpy: packages.numpy: 2.4.6 vs 1.26.4",
    ]
    data_first = likely_causes(ref, other, "data_order")
    assert data_first[0] == "numpy: packages.numpy: 2.4.6 vs 1.26.4"


def test_random_hash_seed_in_both_runs_is_a_cause_even_without_a_difference() -> None:
    random_env = env(python__hash_seed="random")
    ref, other = fp("a", environment=random_env), fp("b", environment=copy.deepcopy(random_env))
    assert likely_causes(ref, other, "data_order")[0].startswith(
        "hash_seed: PYTHONHASHSEED unset at start-up in both runs"
    )


def test_probes_that_ran_different_things_are_not_comparable() -> None:
    with pytest.raises(UsageError, match=r"a and b are not comparable: different steps \(3 vs 2\)"):
        compare([fp("a"), fp("b", losses=(1.0, 2.0))])
    with pytest.raises(UsageError, match="at least two"):
        compare([fp("a")])


def test_diff_lists_leaf_differences_by_key() -> None:
    a, b = env(), env(packages__numpy="1.26.4", launch__OMP_NUM_THREADS=None)
    assert diff(a, b) == [
        Difference("launch.OMP_NUM_THREADS", "2", None),
        Difference("packages.numpy", "2.4.6", "1.26.4"),
    ]
    assert str(diff(a, b)[0]) == "launch.OMP_NUM_THREADS: 2 vs (absent)"


# --------------------------------------------------------------------------- files and the CLI


def write_fp(path: Path, fingerprint_: Fingerprint) -> Path:
    data = {
        "format": "envparity-fingerprint",
        "version": 1,
        "probe": {
            "name": fingerprint_.probe,
            "seed": fingerprint_.seed,
            "steps": fingerprint_.steps,
            "device": fingerprint_.device,
            "determinism": fingerprint_.determinism,
        },
        "environment": fingerprint_.environment,
        "stages": fingerprint_.stages,
        "audit": [],
    }
    fingerprint.write(path, data)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "{p}: no such file"),
        (
            "{",
            "{p}: not JSON: Expecting property name enclosed in double quotes: "
            "line 1 column 2 (char 1)",
        ),
        ("[]", "{p}: not an envparity fingerprint (top level is not an object)"),
        (
            '{"format": "x"}',
            "{p}: not an envparity fingerprint (format is 'x', expected 'envparity-fingerprint')",
        ),
        (
            '{"format": "envparity-fingerprint", "version": 9}',
            "{p}: fingerprint version 9 is not supported (this envparity reads version 1)",
        ),
    ],
)
def test_bad_files_are_one_clear_message(tmp_path: Path, text: str | None, message: str) -> None:
    p = tmp_path / "f.json"
    if text is not None:
        p.write_text(text)
    with pytest.raises(FingerprintError) as exc:
        fingerprint.load(p)
    assert str(exc.value) == message.format(p=p)


def test_a_malformed_stage_is_named(tmp_path: Path) -> None:
    p = write_fp(tmp_path / "f.json", fp())
    data = json.loads(p.read_text())
    data["stages"]["losses"] = ["1.5"]
    p.write_text(json.dumps(data))
    with pytest.raises(
        FingerprintError, match=r"stages.losses: expected a list of float.hex\(\) strings"
    ):
        fingerprint.load(p)


def test_cli_compare_exits_2_on_a_bad_file_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write_fp(tmp_path / "a.json", fp())
    assert main(["compare", str(good), str(tmp_path / "x.json")]) == 2
    assert capsys.readouterr().err == f"envparity: {tmp_path / 'x.json'}: no such file\n"


def test_cli_compare_prints_the_stage_and_causes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write_fp(tmp_path / "a.json", fp())
    b = write_fp(
        tmp_path / "b.json",
        fp(environment=env(torch__num_threads=1), losses=(1.5, 1.25, 1.0000001)),
    )
    assert main(["compare", str(a), str(b)]) == 1  # no --spec: tolerances are not read
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "DIVERGED (2 fingerprints)"
    assert out[2] == (
        "  first difference: losses (step 2): loss at step 2 differs: 1.0 vs 1.0000001 "
        "(relative difference 1e-07)"
    )
    assert out[-1] == "    1. threads: torch.num_threads: 2 vs 1"


def test_cli_diff_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_fp(tmp_path / "a.json", fp())
    b = write_fp(tmp_path / "b.json", fp(environment=env(packages__numpy="1.26.4")))
    spec = ["--spec", str(tmp_path / "none.toml")]
    assert main([*spec, "diff", str(a), str(a)]) == 0
    assert main([*spec, "diff", str(a), str(b)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "  numpy        packages.numpy: 2.4.6 vs 1.26.4"


def test_cli_compare_reads_tolerances_only_from_a_named_spec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write_fp(tmp_path / "a.json", fp())
    b = write_fp(tmp_path / "b.json", fp(losses=(1.5, 1.25, 1.0000001)))
    # A spec in the current folder, broken or loose, is not read unless named.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "environment.toml").write_text("not toml [")
    assert main(["compare", str(a), str(b)]) == 1
    loose = tmp_path / "loose.toml"
    loose.write_text('[environment]\nname = "x"\npython = "3.11"\n[verify]\nrtol = 1e-6\n')
    capsys.readouterr()
    assert main(["--spec", str(loose), "compare", str(a), str(b)]) == 0
    assert f"tolerances from {loose} [verify] where not given" in capsys.readouterr().err


def test_different_determinism_flags_are_named_as_causes() -> None:
    other = fp(
        "b",
        losses=(1.5, 1.25, 1.0000001),
        determinism={**DEFAULT_DETERMINISM, "tf32": True, "threads": 1},
    )
    causes = likely_causes(fp("a"), other, "losses")
    assert causes == [
        "threads: probe.determinism.threads: (absent) vs 1",
        "flags: probe.determinism.tf32: False vs True",
    ]


def test_a_fingerprint_without_determinism_flags_still_loads(tmp_path: Path) -> None:
    p = write_fp(tmp_path / "f.json", fp())
    data = json.loads(p.read_text())
    del data["probe"]["determinism"]  # written before the flags were recorded
    p.write_text(json.dumps(data))
    assert fingerprint.load(p).determinism == {}
    assert fingerprint.load(write_fp(tmp_path / "g.json", fp())).determinism == DEFAULT_DETERMINISM


@pytest.mark.parametrize(
    ("stage", "entries", "problem"),
    [
        ("losses", ["0x1.8p+0", "0x1.4p+0"], "stages.losses: 2 entries but probe.steps is 3"),
        ("losses", [], "stages.losses: 0 entries but probe.steps is 3"),
        ("data_order", [digest(1)] * 4, "stages.data_order: 4 entries but probe.steps is 3"),
    ],
)
def test_a_stage_with_another_length_than_steps_is_refused_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], stage: str, entries: list[str], problem: str
) -> None:
    good = write_fp(tmp_path / "a.json", fp())
    bad = write_fp(tmp_path / "b.json", fp())
    data = json.loads(bad.read_text())
    data["stages"][stage] = entries
    bad.write_text(json.dumps(data))
    assert main(["compare", str(good), str(bad)]) == 2
    assert capsys.readouterr().err == f"envparity: {bad}: {problem}\n"


def test_a_probe_that_records_no_batches_loads_and_compares(tmp_path: Path) -> None:
    p = write_fp(tmp_path / "f.json", fp(data_order=[]))
    assert fingerprint.load(p).stages["data_order"] == []
    verdict = compare([fp("a"), fp("b", data_order=[])])
    w = verdict.worst
    assert (verdict.kind, w.stage, w.step, w.values) == (
        "diverged",
        "data_order",
        None,
        ("3 batches", "0 batches"),
    )
    assert w.reason == "one run recorded its batches (rec.batch) and the other did not"


def test_loading_and_writing_fingerprints_imports_only_the_stdlib() -> None:
    """fingerprint (and files.atomic_write, which writes them) run in bare target environments.

    ``-S``: no site-packages, so nothing a .pth file starts (setuptools, certifi) is counted.
    """
    code = (
        "import sys, orchestrator.probe.fingerprint, orchestrator.probe.compare\n"
        "names = {m.split('.')[0] for m in sys.modules} - {'__main__'}\n"
        "print(sorted(names - set(sys.stdlib_module_names)))"
    )
    done = process.run([sys.executable, "-S", "-c", code], cwd=Path(__file__).resolve().parents[1])
    assert done.stdout == "['orchestrator']\n"


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "1"])
def test_cli_compare_refuses_a_tolerance_that_is_none(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write_fp(tmp_path / "a.json", fp())
    assert main(["compare", str(a), str(a), "--rtol", value]) == 2
    assert "not a tolerance in [0, 1)" in capsys.readouterr().err
