"""compare, diff and fingerprint loading on hand-made fingerprints (no torch needed)."""

from __future__ import annotations

import copy
import dataclasses
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
from orchestrator.probe.fingerprint import (
    Environment,
    Fingerprint,
    FingerprintError,
    capture_from_dict,
)
from orchestrator.tolerances import Tolerances
from orchestrator.verdict.compare import compare, likely_causes

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
    """A capture's data (the fingerprint's ``environment``), with ``section__key`` changes."""
    base: dict[str, Any] = {
        "python": {
            "version": "3.11.7",
            "implementation": "CPython",
            "executable": "/usr/bin/python3",
            "hash_seed": "fixed:0",
        },
        "platform": {"system": "Linux", "cpu_count": 2},
        "launch": {"PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "2"},
        "torch": {"version": "2.13.0+cpu", "num_threads": 2, "cpu_capability": "AVX512"},
        "numpy": {"version": "2.4.6"},
        "flags": {"deterministic_algorithms": True},
        "gpus": [],
        "collect_env": {"os": "Debian GNU/Linux 12 (bookworm) (x86_64)"},
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
    code: dict[str, str] | None = None,
    data_files: dict[str, str] | None = None,
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
    return Fingerprint.from_dict(
        {
            "format": "envparity-fingerprint",
            "version": 2,
            "probe": {
                "name": "orchestrator.probe.workload:train",
                "seed": seed,
                "steps": len(losses),
                "device": device,
                "determinism": DEFAULT_DETERMINISM if determinism is None else determinism,
            },
            "environment": environment or env(),
            "stages": data,
            "audit": [],
            "inputs": {
                "code": {
                    name: {"path": name.replace(".", "/") + ".py", "sha256": digest}
                    for name, digest in (code or {"mymodel": digest(40)}).items()
                },
                "data": data_files or {},
            },
        },
        source,
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
    verdict = compare([fp("a"), near], Tolerances(rtol=1e-5))
    assert verdict.kind == "tolerance"
    assert verdict.worst.reason == "same device model; tolerance rtol=1e-05, atol=0 from the caller"


def test_cpu_against_a_hand_made_cuda_fingerprint_uses_the_cross_device_tolerance() -> None:
    """A hand-made CUDA fingerprint: the verdict logic only. Real CPU-vs-CUDA runs are
    bench/gpu_checks.py's to compare, on a GPU machine."""
    gpu_env = env()
    gpu_env["gpus"] = [
        {"name": "NVIDIA H100 80GB HBM3", "capability": "9.0", "sm_count": 132, "memory": 85 << 30}
    ]
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
    assert compare([fp("a"), cuda], Tolerances(cross_device_rtol=1e-6)).kind == "diverged"


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


def environment(**changes: Any) -> Environment:
    return capture_from_dict({"format": "envparity-capture", "version": 1, **env(**changes)}, "c")


def test_diff_lists_leaf_differences_by_key() -> None:
    a, b = environment(), environment(packages__numpy="1.26.4", launch__OMP_NUM_THREADS=None)
    assert diff(a, b) == [
        Difference("launch.OMP_NUM_THREADS", "2", None),
        Difference("packages.numpy", "2.4.6", "1.26.4"),
    ]
    assert str(diff(a, b)[0]) == "launch.OMP_NUM_THREADS: 2 vs (absent)"


# --------------------------------------------------------------------------- files and the CLI


def write_fp(path: Path, fingerprint_: Fingerprint) -> Path:
    fingerprint.write(path, fingerprint_.to_dict())
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
        ("[]", "{p}: not an envparity fingerprint (expected a table, got an array [])"),
        (
            '{"format": "x"}',
            "{p}: not an envparity fingerprint (format is 'x', expected 'envparity-fingerprint')",
        ),
        (
            '{"format": "envparity-fingerprint", "version": 9}',
            "{p}: fingerprint version 9 is not supported (this envparity reads versions 1, 2)",
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
    # Names and values in the same order: a's first on every "X vs Y" line.
    assert out == [
        "DIVERGED (2 fingerprints)",
        f"{a} vs {b}: DIVERGED at losses step 2",
        "  first difference: loss at step 2 differs: 1.0 vs 1.0000001 (relative difference 1e-07)",
        f"    {a}: 1.0",
        f"    {b}: 1.0000001",
        "  likely causes, most likely first:",
        "    1. threads: torch.num_threads: 2 vs 1",
    ]


@pytest.mark.parametrize("seeds", [(0, 1), (0, 0)], ids=["seed-differs", "same-seed"])
def test_an_unseeded_rng_is_a_cause_only_when_the_seeds_agree(
    seeds: tuple[int, int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = {"python": digest(2), "numpy": digest(33), "torch": digest(44)}
    a = write_fp(tmp_path / "a.json", fp(seed=seeds[0]))
    b = write_fp(tmp_path / "b.json", fp(seed=seeds[1], initial_params=digest(9), rng_initial=rng))
    assert main(["compare", str(a), str(b)]) == 1
    out = capsys.readouterr().out.splitlines()
    causes = out[out.index("  likely causes, most likely first:") + 1 :]
    unseeded = (
        "    1. unseeded_rng: the numpy/torch RNG state already differed right after "
        "initialisation: it was not seeded (or was seeded from something that varies); "
        "without generator=, a DataLoader shuffles and seeds its workers from torch's global RNG"
    )
    if seeds[0] != seeds[1]:
        assert causes == ["    1. seed: probe.seed: 0 vs 1"]
    else:
        assert causes[0] == unseeded


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
    assert fingerprint.load(p).stages.data_order == ()
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
        "import sys, orchestrator.probe.fingerprint, orchestrator.verdict.compare, orchestrator.verdict.wording\n"
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


# --------------------------------------------------------------------------- untrusted files


def _set(path: str, value: Any) -> Any:
    """A mutation of fingerprint data: set the dotted ``path`` (``[i]`` for list items)."""

    def mutate(data: dict[str, Any]) -> None:
        keys = path.replace("[", ".[").split(".")  # "a.b[1]" -> ["a", "b", "[1]"]
        node: Any = data
        for key in keys[:-1]:
            node = node[int(key[1:-1])] if key.startswith("[") else node[key]
        last = keys[-1]
        if value is _DELETE:
            del node[last]
        elif last.startswith("["):
            node[int(last[1:-1])] = value
        else:
            node[last] = value

    return mutate


_DELETE = object()
GPU = {"name": "NVIDIA H100 80GB HBM3", "capability": "9.0", "sm_count": 132, "memory": 1}


class TestMalformedFingerprints:
    """Hand-made or corrupt fingerprints: ``compare`` exits 2 with one line naming the file
    and the field; never a traceback, never a raw control character."""

    @pytest.mark.parametrize(
        ("mutate", "message"),
        [
            pytest.param(
                _set("stages.losses[1]", "1.25"),
                "stages.losses[1]: '1.25' is not a float.hex() string",
                id="loss-not-hex",
            ),
            pytest.param(
                _set("stages.losses[0]", "0x1.8p+\u0661"),
                "stages.losses[0]: '0x1.8p+\u0661' is not a float.hex() string",
                id="loss-unicode-digit",
            ),
            pytest.param(
                _set("stages.losses[0]", "0x1p+99999"),
                "stages.losses[0]: '0x1p+99999' is not a float.hex() string",
                id="loss-exponent-overflow",
            ),
            pytest.param(
                _set("stages.metrics.accuracy", 0.75),
                "stages.metrics.accuracy: expected a string, got a number 0.75",
                id="metric-a-number",
            ),
            pytest.param(
                _set("stages.metrics", [1, 2]),
                "stages.metrics: expected a table of strings, got an array [1, 2]",
                id="metrics-a-list",
            ),
            pytest.param(
                _set("environment.gpus", "H100"),
                "environment.gpus: expected an array of tables, got a string 'H100'",
                id="gpus-a-string",
            ),
            pytest.param(
                _set("environment.gpus", [{**GPU, "sm_count": "132"}]),
                "environment.gpus[0].sm_count: expected an integer, got a string '132'",
                id="gpu-field-type",
            ),
            pytest.param(
                _set("environment", ["linux"]),
                "environment: expected a table, got an array ['linux']",
                id="environment-a-list",
            ),
            pytest.param(
                _set("environment.packages", _DELETE),
                "environment.packages: missing (expected a table of strings)",
                id="environment-section-missing",
            ),
            pytest.param(
                _set("environment.packages.numpy", 2),
                "environment.packages.numpy: expected a string, got an integer 2",
                id="package-version-a-number",
            ),
            pytest.param(
                _set("environment.python.hash_seed", "fixed:\u0661"),
                "environment.python.hash_seed: 'fixed:\u0661' is not 'fixed:N' or 'random'",
                id="hash-seed-unicode-digit",
            ),
            pytest.param(
                _set("probe.seed", "0"),
                "probe.seed: expected an integer, got a string '0'",
                id="seed-a-string",
            ),
            pytest.param(
                _set("probe.seed", True),
                "probe.seed: expected an integer, got a boolean True",
                id="seed-a-boolean",
            ),
            pytest.param(
                _set("probe.steps", 0),
                "probe.steps: 0 is less than 1",
                id="steps-zero",
            ),
            pytest.param(
                _set("probe.name", _DELETE),
                "probe.name: missing (expected a string)",
                id="name-missing",
            ),
            pytest.param(
                _set("probe.name", "\x1b[2Jevil:train"),
                "probe.name: '\\x1b[2Jevil:train' is not a probe reference 'package.module:function'",
                id="name-escape-sequence",
            ),
            pytest.param(
                _set("probe.device", "tpu"),
                "probe.device: 'tpu' is not 'cpu', 'cuda' or 'mps'",
                id="device-unknown",
            ),
            pytest.param(
                _set("stages.initial_params", "sha256:ABC"),
                "stages.initial_params: 'sha256:ABC' is not a sha256 digest "
                "('sha256:' and 64 hex digits)",
                id="digest-malformed",
            ),
            pytest.param(
                _set("stages.data_order[0]", 7),
                "stages.data_order[0]: expected a string, got an integer 7",
                id="batch-digest-a-number",
            ),
            pytest.param(
                _set("stages.rng_final", {"a b": D}),
                "stages.rng_final.\"a b\": 'a b' is not an identifier",
                id="rng-key",
            ),
            pytest.param(
                _set("audit", [1]), "audit[0]: expected a string, got an integer 1", id="audit"
            ),
            pytest.param(
                _set("inputs", _DELETE), "inputs: missing (expected a table)", id="inputs-missing"
            ),
            pytest.param(
                _set("inputs.code.mymodel", "sha"),
                "inputs.code.mymodel: expected a table, got a string 'sha'",
                id="code-entry",
            ),
            pytest.param(
                _set("environment.collect_env.x", [[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]),
                "environment.collect_env.x" + "[0]" * 17 + ": nested deeper than 16 levels",
                id="collect-env-too-deep",
            ),
            pytest.param(
                _set("seconds", "1.5"),
                "seconds: expected a number, got a string '1.5'",
                id="seconds-a-string",
            ),
        ],
    )
    def test_compare_names_the_file_and_field(
        self,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        mutate: Any,
        message: str,
    ) -> None:
        good = write_fp(tmp_path / "a.json", fp())
        data = fp("b").to_dict()
        data["environment"]["gpus"] = [GPU]
        mutate(data)
        bad = tmp_path / "b.json"
        bad.write_text(json.dumps(data), encoding="utf-8")
        assert main(["compare", str(good), str(bad)]) == 2
        captured = capsys.readouterr()
        assert captured.err == f"envparity: {bad}: {message}\n"
        assert "\x1b" not in captured.err and captured.out == ""

    @pytest.mark.parametrize(
        ("content", "message"),
        [
            pytest.param(b"\xff\xfe{}", "not UTF-8 text (invalid start byte)", id="not-utf8"),
            pytest.param(b"[" * 100_000, "not JSON: nested too deeply", id="nested-json"),
            pytest.param(
                b'{"probe": {"seed": ' + b"9" * 5000 + b"}}",
                "not JSON: Exceeds the limit (4300 digits) for integer string conversion: "
                "value has 5000 digits; use sys.set_int_max_str_digits() to increase the limit",
                id="5000-digit-integer",
            ),
            pytest.param(None, "larger than 64 MiB: not a fingerprint", id="huge-file"),
        ],
    )
    def test_unreadable_files_are_refused_by_compare_and_diff(
        self,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        content: bytes | None,
        message: str,
    ) -> None:
        good = write_fp(tmp_path / "a.json", fp())
        bad = tmp_path / "b.json"
        if content is None:
            with open(bad, "wb") as handle:  # sparse: 64 MiB and one byte of zeros
                handle.truncate(fingerprint.MAX_BYTES + 1)
        else:
            bad.write_bytes(content)
        for verb in ("compare", "diff"):
            assert main([verb, str(good), str(bad)]) == 2
            assert capsys.readouterr().err == f"envparity: {bad}: {message}\n"

    @pytest.mark.parametrize(
        ("mutate", "message"),
        [
            pytest.param(
                _set("gpus", {"name": "x"}),
                "capture.gpus: expected an array of tables, got a table {'name': 'x'}",
                id="gpus",
            ),
            pytest.param(
                _set("launch.OMP_NUM_THREADS", 2),
                "capture.launch.OMP_NUM_THREADS: expected a string or null, got an integer 2",
                id="launch-value",
            ),
            pytest.param(
                _set("python", _DELETE), "capture.python: missing (expected a table)", id="python"
            ),
            pytest.param(
                _set("version", 2),
                "not an envparity capture (format 'envparity-capture' version 2; expected "
                "'envparity-capture' version 1)",
                id="version",
            ),
        ],
    )
    def test_diff_names_the_capture_and_field(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], mutate: Any, message: str
    ) -> None:
        data = {"format": "envparity-capture", "version": 1, **env()}
        good = tmp_path / "a.json"
        fingerprint.write(good, data)
        mutate(data)
        bad = tmp_path / "b.json"
        bad.write_text(json.dumps(data))
        assert main(["diff", str(good), str(bad)]) == 2
        assert capsys.readouterr().err == f"envparity: {bad}: {message}\n"


def test_control_characters_and_markup_from_files_are_shown_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hostile = "1.0\x1b]0;pwned\x07\x1b[2J[bold red]x[/]\u202e"
    a = write_fp(tmp_path / "a.json", fp())
    b = write_fp(tmp_path / "b.json", fp(environment=env(packages__numpy=hostile)))
    for verb in ("compare", "diff"):
        main([verb, str(a), str(b)])
        out = capsys.readouterr().out
        assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
        assert "packages.numpy: 2.4.6 vs 1.0\\x1b]0;pwned\\x07\\x1b[2J[bold red]x[/]\\u202e" in out


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        (
            "os:system",
            "--probe os:system: os.system is not a probe: a probe is a Python function "
            "train(rec) (this is a builtin_function_or_method)",
        ),
        (
            "shutil:copy",
            "--probe shutil:copy: shutil.copy(src, dst, *, follow_symlinks=True) is not a "
            "probe: a probe takes one argument, the Recorder",
        ),
        ("os:nothing", "--probe os:nothing: os has no function nothing"),
        ("x\n:y", "--probe 'x\\n:y': expected 'package.module:function'"),
    ],
)
def test_a_callable_that_is_not_a_probe_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], reference: str, message: str
) -> None:
    out = tmp_path / "f.json"
    assert main(["probe", "--out", str(out), "--steps", "1", "--probe", reference]) == 2
    assert capsys.readouterr().err == f"envparity: {message}\n"
    assert not out.exists()


# --------------------------------------------------------------------------- causes


def test_a_code_change_is_the_first_cause_whatever_else_differs() -> None:
    other = fp(
        "b",
        losses=(1.5, 1.25, 1.0000001),
        code={"mymodel": digest(41)},
        environment=env(torch__num_threads=1),
    )
    causes = likely_causes(fp("a"), other, "losses")
    assert causes[:2] == [
        "code: code.mymodel: sha256:000000000000 vs sha256:000000000000",
        "threads: torch.num_threads: 2 vs 1",
    ]


def test_a_changed_data_file_is_named_first() -> None:
    other = fp("b", initial_params=digest(98), data_files={"data/vocab.txt": digest(9)})
    ref = fp("a", data_files={"data/vocab.txt": digest(8)})
    verdict = compare([ref, other])
    assert verdict.worst.causes[0] == (
        "data: data.data/vocab.txt: sha256:000000000000 vs sha256:000000000000"
    )


def test_cpu_dispatch_variables_rank_before_what_they_change() -> None:
    other_env = env(launch__DNNL_MAX_CPU_ISA="AVX2", torch__cpu_capability="AVX2")
    causes = likely_causes(fp("a"), fp("b", environment=other_env), "losses")
    assert causes == [
        "cpu_kernels: launch.DNNL_MAX_CPU_ISA: (absent) vs AVX2",
        "cpu_kernels: torch.cpu_capability: AVX512 vs AVX2",
    ]


def test_cuda_flags_rank_last_when_both_runs_are_on_the_cpu() -> None:
    changed = {
        "flags": {"cuda.matmul.fp32_precision": "tf32", "mkldnn.matmul.fp32_precision": "bf16"}
    }
    base = env()
    base["flags"] = {"cuda.matmul.fp32_precision": "none", "mkldnn.matmul.fp32_precision": "none"}
    other = copy.deepcopy(base)
    other.update(changed)
    causes = likely_causes(fp("a", environment=base), fp("b", environment=other), "losses")
    assert causes == [
        "flags: flags.mkldnn.matmul.fp32_precision: none vs bf16",
        "flags: flags.cuda.matmul.fp32_precision: none vs tf32 (a CUDA setting: no effect on a "
        "CPU run)",
    ]


def test_an_rng_that_nothing_drew_from_is_a_warning_beside_an_equivalent_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = fp("b", rng_initial={"python": digest(2), "numpy": digest(33), "torch": digest(4)})
    verdict = compare([fp("a"), other])
    assert (verdict.kind, verdict.equivalent) == ("bitwise", True)
    assert verdict.to_dict()["warnings"] == [
        "rng_initial: the numpy RNG state after initialisation differs although every result "
        "is identical: it was not seeded (or was seeded from something that varies) and "
        "nothing drew from it; code that draws from it would diverge"
    ]
    a, b = write_fp(tmp_path / "a.json", fp()), write_fp(tmp_path / "b.json", other)
    assert main(["compare", str(a), str(b)]) == 0
    assert "  warning: rng_initial: the numpy RNG state" in capsys.readouterr().out


def test_installed_packages_are_read_from_site_packages_not_the_import_path() -> None:
    """setuptools puts its _vendor folder on sys.path when imported; its bundled .dist-info
    folders (jaraco.text, more-itertools...) are not installed packages."""
    code = (
        "import importlib.metadata, setuptools, sys\n"
        "from orchestrator.probe.capture import _packages\n"
        "vendored = [p for p in sys.path if p.endswith('_vendor')]\n"
        "found = _packages()\n"
        "phantom = {d.metadata['Name'] for d in importlib.metadata.distributions(path=vendored)}\n"
        "print(bool(vendored), sorted(n for n in found if n in {'jaraco-text', 'more-itertools'}),"
        " 'setuptools' in found, 'envparity' in found, len(phantom) > 3)"
    )
    done = process.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1])
    assert done.stdout == "True [] True True True\n"


def test_inputs_are_the_files_read_under_the_project_and_the_data_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib
    import os

    from orchestrator.probe import inputs

    def sha(text: str) -> str:
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    project, shared = tmp_path / "project", tmp_path / "shared"
    (project / "data").mkdir(parents=True)
    shared.mkdir()
    (project / "data" / "train.csv").write_text("1,2\n")
    (project / "helper.py").write_text("X = 1\n")
    (shared / "vocab.txt").write_text("a b")
    (tmp_path / "elsewhere.txt").write_text("not data")
    monkeypatch.chdir(project)
    monkeypatch.setenv("ENVPARITY_DATA_PATHS", str(shared))
    with inputs.recording() as opened:
        Path("data/train.csv").read_text()  # relative to the project folder
        os.close(os.open(project / "data" / "train.csv", os.O_RDONLY))
        (project / "out.txt").write_text("written, not read")
        (project / "helper.py").read_text()  # a Python source: code, not data
        (tmp_path / "elsewhere.txt").read_text()  # outside the project and the data paths
        (shared / "vocab.txt").read_bytes()
    (project / "data" / "later.txt").write_text("read after the run")
    (project / "data" / "later.txt").read_text()
    found = inputs.collect(project, opened.paths, "")
    assert dict(found.data) == {
        "data/train.csv": sha("1,2\n"),
        str(shared.resolve() / "vocab.txt"): sha("a b"),
    }
    assert inputs.stale(found, project) == []
    (project / "data" / "train.csv").write_text("1,3\n")
    (shared / "vocab.txt").unlink()
    assert inputs.stale(found, project) == ["data/train.csv"]  # vocab: gone, so not checked


def test_a_fingerprint_round_trips_through_its_file(tmp_path: Path) -> None:
    original = fp("x.json", code={"mymodel": digest(3)}, data_files={"data/a.csv": digest(4)})
    loaded = fingerprint.load(write_fp(tmp_path / "x.json", original))
    assert loaded == dataclasses.replace(original, source=str(tmp_path / "x.json"))
    assert loaded.to_dict() == original.to_dict()
    assert loaded.to_dict()["version"] == 2


def test_a_version_1_fingerprint_still_loads_and_its_missing_inputs_are_no_difference(
    tmp_path: Path,
) -> None:
    data = fp("old.json").to_dict()
    data["version"] = 1
    del data["inputs"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data))
    loaded = fingerprint.load(old)
    assert loaded.inputs == fingerprint.Inputs()
    verdict = compare([loaded, fp("new.json")])
    assert (verdict.kind, verdict.worst.differences) == ("bitwise", ())
