"""``envparity bisect``: the plan on its own (ddmin, what can be applied), then real probe runs.

The real runs are the perturbations the issue names: one launch variable (proven in two runs),
eleven of them (three proven, one masked), packages through hybrid venvs (a NumPy minor that
changes nothing beside a variable that does; a NumPy swap that changes a kernel), state set by
the probe's code (not applicable, named from the capture), a fingerprint standing for another
machine (the hardware, by elimination), a flaky probe (refused) and a spent budget. Each probe
runs 2 steps: every perturbation here shows by step 1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from orchestrator import process
from orchestrator.bisect import (
    CONSEQUENCE,
    NOT_APPLICABLE,
    Setup,
    classify,
    ddmin,
)
from orchestrator.determinism_settings import DeterminismSettings
from orchestrator.probe import fingerprint
from orchestrator.probe.capture import Difference
from orchestrator.probe.fingerprint import Fingerprint
from tests.helpers import (
    CLI,
    REPO,
    cli_env,
    eleven_variables,
    envparity,
    make_project,
    torch_spec,
    torch_venv,
)

STEPS = 2
# Two threads, so that a thread-count variable has something to change.
BASE_ENV = {"PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}


# --------------------------------------------------------------------------- the plan alone


def test_ddmin_finds_a_one_minimal_set_and_tries_subsets_before_complements() -> None:
    tried: list[frozenset[str]] = []

    def gives_b(subsets: list[frozenset[str]]) -> list[bool]:
        tried.extend(subsets)
        return [{"c3", "c7"} <= s for s in subsets]

    changes = [f"c{i}" for i in range(11)]
    assert ddmin(changes, gives_b) == ("c3", "c7")
    assert tried[:2] == [frozenset(changes[:6]), frozenset(changes[6:])]  # halves first
    assert not gives_b([frozenset({"c3"})])[0] and not gives_b([frozenset({"c7"})])[0]


def test_ddmin_asks_as_many_at_once_as_it_may_run() -> None:
    batches: list[int] = []

    def gives_b(subsets: list[frozenset[str]]) -> list[bool]:
        batches.append(len(subsets))
        return ["c9" in s for s in subsets]

    assert ddmin([f"c{i}" for i in range(11)], gives_b, parallel=4) == ("c9",)
    assert max(batches) <= 4 and batches[0] == 2


def d(key: str, a: object, b: object) -> Difference:
    return Difference(key, a, b)  # type: ignore[arg-type]


def test_what_bisect_applies_and_what_it_never_toggles() -> None:
    differences = [
        d("launch.MKL_CBWR", None, "COMPATIBLE"),
        d("launch.OMP_NUM_THREADS", "2", "1"),
        d("probe.determinism.threads", None, 1),
        d("probe.device", "cpu", "cuda"),
        d("packages.numpy", "2.4.6", "1.26.4"),
        d("packages.envparity", "0.1.0", None),
        d("torch.num_threads", 2, 1),
        d("torch.cpu_capability", "AVX2", "AVX512"),
        d("numpy.version", "2.4.6", "1.26.4"),
        d("flags.default_dtype", "float32", "float64"),
        d("code.mymodel", "sha256:" + "a" * 64, "sha256:" + "b" * 64),
        d("platform.cpu_model", "AMD EPYC", "Intel Xeon"),
    ]
    changes, judged = classify(differences, gpu_here=False, packages=True)
    assert [(c.key, c.kind) for c in changes] == [
        ("launch.MKL_CBWR", "launch"),
        ("launch.OMP_NUM_THREADS", "launch"),
        ("probe.determinism.threads", "option"),
        ("packages.numpy", "package"),
    ]
    said = {j.difference.key: (j.verdict, j.note) for j in judged}
    assert said["torch.num_threads"] == (
        CONSEQUENCE,
        "follows from launch.OMP_NUM_THREADS, probe.determinism.threads",
    )
    assert said["torch.cpu_capability"] == (CONSEQUENCE, "follows from platform.cpu_model")
    assert said["numpy.version"] == (CONSEQUENCE, "follows from packages.numpy")
    assert said["probe.device"] == (NOT_APPLICABLE, "a CUDA run, and no GPU is visible here")
    assert said["flags.default_dtype"] == (NOT_APPLICABLE, "set by the probe's code while it ran")
    assert said["code.mymodel"][0] == NOT_APPLICABLE
    assert said["platform.cpu_model"] == (NOT_APPLICABLE, "the hardware or platform")
    assert said["packages.envparity"][0] == NOT_APPLICABLE
    without_hybrids, _ = classify(differences, gpu_here=False, packages=False)
    assert "packages.numpy" not in [c.key for c in without_hybrids]
    # A package neither run imported (inputs.imported) is not tried: it changed no number.
    changes, judged = classify(differences, gpu_here=False, packages=True, imported=frozenset())
    assert "packages.numpy" not in [c.key for c in changes]
    numpy = next(j for j in judged if j.difference.key == "packages.numpy")
    assert (numpy.verdict, numpy.note) == ("no effect", "neither run imported it: not tried")


def test_a_configuration_sets_exactly_its_captured_variables() -> None:
    setup = Setup(
        probe="orchestrator.probe.workload:train",
        steps=2,
        device="cpu",
        world_size=None,
        settings=DeterminismSettings(),
        launch={"MKL_CBWR": None, "OMP_NUM_THREADS": "2", "PYTHONHASHSEED": "0"},
        packages={},
    )
    base = {"PATH": "/bin", "MKL_CBWR": "AVX", "KMP_AFFINITY": "x", "PYTHONPATH": "/x"}
    assert setup.environment(base) == {
        "PATH": "/bin",
        "OMP_NUM_THREADS": "2",
        "PYTHONHASHSEED": "0",
    }
    from orchestrator.bisect import Change

    changed = setup.apply([Change("launch.MKL_CBWR", "launch", None, "COMPATIBLE")])
    assert changed.environment(base)["MKL_CBWR"] == "COMPATIBLE"
    threads = setup.apply([Change("probe.determinism.threads", "option", None, 1)])
    assert threads.argv("x.json")[-2:] == ["--threads", "1"]


def test_arguments_that_are_neither_fingerprints_nor_targets_are_refused(tmp_path: Path) -> None:
    done = envparity(tmp_path, "bisect", "nosuch.json", "venv")
    assert done.returncode == 2
    assert done.stderr == (
        "envparity: bisect: nosuch.json is neither a fingerprint file nor a target "
        "(host, venv, devcontainer, nix); give two fingerprints or two targets\n"
    )
    assert not (tmp_path / ".envparity").exists()


def test_a_budget_must_be_a_positive_number_of_seconds(tmp_path: Path) -> None:
    done = envparity(tmp_path, "bisect", "a.json", "b.json", "--budget", "0")
    assert (done.returncode, done.stderr) == (
        2,
        "envparity: bisect --budget 0.0: not a number of seconds above 0\n",
    )


# --------------------------------------------------------------------------- real runs


def probe(
    out: Path,
    *,
    env: dict[str, str] | None = None,
    python: str = sys.executable,
    cwd: Path = REPO,
    name: str | None = None,
) -> Fingerprint:
    args = [python, "-m", "orchestrator", "probe", "--out", str(out), "--steps", str(STEPS)]
    args += ["--probe", name] if name else []
    extra = {**BASE_ENV, "PYTHONPATH": str(REPO), **(env or {})}
    process.run(args, extra_env=extra, cwd=cwd, timeout=300)
    return fingerprint.load(out)


def bisect(
    a: Path, b: Path, *args: str, cwd: Path = REPO, env: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    """``envparity bisect A B --json`` as a user runs it (``env``: variables the probe reads,
    which a capture does not record), the exit code and the report."""
    done = process.run(
        [*CLI, "bisect", str(a), str(b), "--json", *args],
        env={**cli_env(), **(env or {})},
        cwd=cwd,
        check=False,
        timeout=900,
    )
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def verdicts(report: dict[str, Any]) -> dict[str, str]:
    return {d["key"]: d["verdict"] for d in report["differences"]}


def labels(report: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["label"].split(" /")[0], e["outcome"]) for e in report["experiments"]]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in probe in the base launch environment: A of most pairs below."""
    out = tmp_path_factory.mktemp("bisect") / "a.json"
    probe(out)
    return out


@pytest.fixture(scope="module")
def cbwr(base: Path) -> Path:
    """A's launch environment with MKL_CBWR=COMPATIBLE."""
    out = base.with_name("cbwr.json")
    probe(out, env={"MKL_CBWR": "COMPATIBLE"})
    return out


@pytest.mark.slow
def test_one_variable_is_proven_in_two_runs(base: Path, cbwr: Path) -> None:
    code, report = bisect(base, cbwr)
    assert (code, report["status"], report["runs"]) == (0, "explained", 2)
    assert report["minimal"] == ["launch.MKL_CBWR"]
    assert verdicts(report) == {"launch.MKL_CBWR": "proven"}
    assert [e["outcome"] for e in report["experiments"]] == ["A", "B"]


@pytest.mark.slow
def test_a_package_version_that_cannot_be_resolved_is_unresolved_not_a_failure(
    base: Path, cbwr: Path
) -> None:
    """B's capture edited to name a NumPy that does not exist: its hybrid cannot be built;
    the rest is still bisected."""
    data = json.loads(cbwr.read_text())
    data["environment"]["packages"]["numpy"] = "0.0.1"
    other = base.with_name("no-such-numpy.json")
    other.write_text(json.dumps(data))
    code, report = bisect(base, other)
    assert (code, report["status"], report["minimal"]) == (0, "explained", ["launch.MKL_CBWR"])
    numpy = next(d for d in report["differences"] if d["key"] == "packages.numpy")
    assert numpy["verdict"] == "unresolved"
    assert "numpy==0.0.1" in numpy["note"]
    hybrid = next(e for e in report["experiments"] if e["applied"] == ["packages.numpy"])
    assert hybrid["outcome"] == "failed"


@pytest.mark.slow
def test_a_spent_budget_ends_the_bisection_unresolved(base: Path) -> None:
    other = base.with_name("budget.json")
    probe(other, env={"MKL_CBWR": "COMPATIBLE", "OPENBLAS_CORETYPE": "Haswell"})
    code, report = bisect(base, other, "--budget", "0.5")
    assert (code, report["status"], report["runs"]) == (1, "unresolved", 1)
    assert report["summary"] == "the budget of 0.5 s was spent after 1 probe run(s)"
    assert set(verdicts(report).values()) == {"unresolved"}


@pytest.mark.slow
def test_the_eleven_variable_pair_proves_three_and_finds_the_masked_one(base: Path) -> None:
    other = base.with_name("eleven.json")
    eleven = eleven_variables()
    probe(other, env=eleven)
    code, report = bisect(base, other)
    assert (code, report["status"]) == (0, "explained")
    proven = ["launch.ATEN_CPU_CAPABILITY", "launch.MKL_CBWR", "launch.MKL_NUM_THREADS"]
    assert report["minimal"] == proven
    said = verdicts(report)
    assert [k for k, v in said.items() if v == "proven"] == proven
    assert [k for k, v in said.items() if v == "masked"] == ["launch.DNNL_MAX_CPU_ISA"]
    assert sorted(k for k, v in said.items() if v == "no effect") == sorted(
        f"launch.{name}"
        for name in eleven
        if f"launch.{name}" not in [*proven, "launch.DNNL_MAX_CPU_ISA"]
    )
    assert said["torch.cpu_capability"] == "consequence"  # derived: never toggled
    # repeat, 11 singles, the union of the 4 that mattered (not B: DNNL's effect is undone in
    # B), all 11 (B), each of the 4 taken out of all, and the 3 left
    assert report["runs"] == 1 + 11 + 1 + 1 + 4 + 1
    assert labels(report)[-1] == ("the 3 that mattered, without the masked", "B")


# A small user probe; each variable adds one behaviour the tests below need.
TINY_PROBE = """\
import os

import numpy as np
import torch

from orchestrator.determinism import seed_everything


def train(rec):
    seed_everything(rec.determinism)
    if os.environ.get("PROBE_STATE"):  # state set by code: no launch variable bisect can apply
        torch.set_default_dtype(torch.float64)
        torch.set_flush_denormal(True)
    if os.environ.get("PROBE_FLAKY"):  # a new seed every run
        torch.manual_seed(int.from_bytes(os.urandom(4), "little"))
    model = torch.nn.Linear(129, 257)
    if os.environ.get("PROBE_NUMPY_MIX"):
        # Initial weights mixed by a NumPy float32 matmul: OpenBLAS's sgemm, bundled with
        # NumPy (on two threads 1.26.4 and 2.4.6 give other bytes; on one thread the same).
        rng = np.random.RandomState(rec.seed)
        mix = rng.randn(257, 300).astype(np.float32) @ rng.randn(300, 129).astype(np.float32)
        with torch.no_grad():
            model.weight.copy_(torch.from_numpy(mix / 300))
    rec.initial(model)
    x = torch.ones(5, 129)
    for _ in range(rec.steps):
        loss = model(x).pow(2).mean()
        loss.backward()
        rec.loss(loss)
    rec.final(model)
"""


@pytest.mark.slow
def test_a_package_swap_that_changes_a_kernel_is_proven_through_a_hybrid_venv(
    tmp_path: Path,
) -> None:
    (tmp_path / "tiny.py").write_text(TINY_PROBE)
    env = {"PROBE_NUMPY_MIX": "1", "OPENBLAS_NUM_THREADS": "2"}
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for out, version in ((a, "2.4.6"), (b, "1.26.4")):
        probe(out, env=env, python=str(torch_venv(version)), cwd=tmp_path, name="tiny:train")
    code, report = bisect(a, b, cwd=tmp_path, env={"PROBE_NUMPY_MIX": "1"})
    assert (code, report["status"], report["runs"]) == (0, "explained", 2)
    assert verdicts(report) == {"packages.numpy": "proven", "numpy.version": "consequence"}
    assert report["minimal"] == ["packages.numpy"]


@pytest.mark.slow
def test_a_numpy_minor_changes_nothing_beside_a_variable_that_does(base: Path) -> None:
    a, b = base.with_name("np246.json"), base.with_name("np235.json")
    probe(a, python=str(torch_venv("2.4.6")))
    probe(b, python=str(torch_venv("2.3.5")), env={"MKL_CBWR": "COMPATIBLE"})
    code, report = bisect(a, b)
    assert (code, report["status"]) == (0, "explained")
    said = verdicts(report)
    assert (said["packages.numpy"], said["launch.MKL_CBWR"]) == ("no effect", "proven")
    assert report["runs"] == 3  # the repeat, the hybrid, MKL_CBWR alone (it gives B)
    hybrid = next(e for e in report["experiments"] if e["applied"] == ["packages.numpy"])
    assert (hybrid["outcome"], hybrid["note"]) == ("A", "")  # the hybrid had 2.3.5, nothing else


@pytest.mark.slow
def test_state_set_by_the_probes_code_is_not_applicable_and_named(tmp_path: Path) -> None:
    (tmp_path / "tiny.py").write_text(TINY_PROBE)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    probe(a, cwd=tmp_path, name="tiny:train")
    probe(b, cwd=tmp_path, name="tiny:train", env={"PROBE_STATE": "1"})
    code, report = bisect(a, b, cwd=tmp_path)
    assert (code, report["status"], report["runs"]) == (0, "eliminated", 1)
    said = {d["key"]: (d["verdict"], d["note"]) for d in report["differences"]}
    for key in ("flags.default_dtype", "flags.flush_denormal"):
        assert said[key] == ("not applicable here", "set by the probe's code while it ran")
    assert report["remaining"] == [
        "flags.default_dtype: float32 vs float64",
        "flags.flush_denormal: False vs True",
    ]
    assert report["summary"] == (
        f"no applicable difference changes {a}'s results: the remaining cause is state the "
        "probe's code set, by elimination"
    )


@pytest.mark.slow
def test_across_machines_the_hardware_remains_by_elimination(base: Path) -> None:
    """B stands for a machine whose CPU has no AVX2: a run of this one with the lowest
    capability, its capture made to say so (there is one machine here: the edit is the
    other machine)."""
    low = base.with_name("low.json")
    probe(low, env={"ATEN_CPU_CAPABILITY": "default"})
    data = json.loads(low.read_text())
    data["environment"]["launch"]["ATEN_CPU_CAPABILITY"] = None
    data["environment"]["platform"]["cpu_model"] = "a CPU without AVX2"
    other = base.with_name("other-machine.json")
    other.write_text(json.dumps(data))
    code, report = bisect(base, other)
    assert (code, report["status"], report["runs"]) == (0, "eliminated", 1)
    assert report["summary"] == (
        f"no applicable difference changes {base}'s results: the remaining cause is the "
        "hardware or platform, by elimination"
    )
    cpu = fingerprint.load(base).environment.platform["cpu_model"]
    assert f"platform.cpu_model: {cpu} vs a CPU without AVX2" in report["remaining"]
    assert verdicts(report)["torch.cpu_capability"] == "consequence"


@pytest.mark.slow
def test_a_flaky_probe_is_refused_after_one_repeat(tmp_path: Path) -> None:
    (tmp_path / "tiny.py").write_text(TINY_PROBE)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    flaky = {"PROBE_FLAKY": "1"}
    probe(a, cwd=tmp_path, name="tiny:train", env=flaky)
    probe(b, cwd=tmp_path, name="tiny:train", env={**flaky, "MKL_CBWR": "COMPATIBLE"})
    code, report = bisect(a, b, cwd=tmp_path, env=flaky)
    assert (code, report["status"], report["runs"]) == (1, "not repeatable", 1)
    assert report["summary"] == (
        f"a repeat of {a} here, in the environment its capture records, DIVERGED at "
        "initial_params from it: the probe is not repeatable (an unseeded RNG, a DataLoader "
        "without a seeded generator, a nondeterministic kernel), or it depends on something "
        "the capture does not record (a variable it reads, a file outside the project); no "
        "experiment can prove a cause until a repeat gives its results"
    )
    assert verdicts(report)["launch.MKL_CBWR"] == "unresolved"


@pytest.mark.slow
def test_two_targets_are_provisioned_probed_and_bisected(tmp_path: Path) -> None:
    """``envparity bisect host venv``: the interpreter running the tests against a uv venv of
    the lock; their packages differ (pytest, ruff, ... on the host), their results do not."""
    project = make_project(tmp_path / "project", torch_spec("bisect-targets", steps=STEPS))
    done = envparity(project, "bisect", "host", "venv", "--json", timeout=900)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["a"], report["b"], report["status"], report["runs"]) == (
        "host",
        "venv",
        "identical",
        0,
    )
    assert verdicts(report)["packages.pytest"] == "no effect"
    assert "venv: probe run" in done.stderr


@pytest.mark.slow
def test_verify_bisect_marks_the_cause_it_proved(tmp_path: Path) -> None:
    """verify --bisect on a project whose venv locks NumPy 1.26.4 and whose host (the
    interpreter running the tests) has 2.4.6, with a probe that mixes its weights by a NumPy
    matmul on two OpenBLAS threads: the two diverge, bisect proves the NumPy through a hybrid
    of the host, and the table and the HTML report say "proven cause"."""
    spec = torch_spec("verify-bisect", steps=STEPS).replace(
        'numpy = "==2.4.6"', 'numpy = "==1.26.4"'
    )
    project = make_project(tmp_path / "project", spec + 'probe = "tiny:train"\n')
    (project / "tiny.py").write_text(TINY_PROBE)
    env = {**cli_env(), "PROBE_NUMPY_MIX": "1", "OPENBLAS_NUM_THREADS": "2"}
    args = ["verify", "--targets", "host", "venv", "--accept-host-drift", "--bisect"]
    done = process.run([*CLI, *args], env=env, cwd=project, check=False, timeout=900)
    assert done.returncode == 1, done.stderr  # the targets still differ: bisect explains why
    out = done.stdout
    assert "host vs venv: DIVERGED at initial_params" in out
    assert "  bisect: explained in 2 probe run(s): 1 of 1 applicable difference(s) proven" in out
    assert "  proven cause: numpy: packages.numpy: 2.4.6 vs 1.26.4" in out
    assert "likely cause: numpy: packages.numpy" not in out  # tested: not merely likely
    html = (project / ".envparity" / "report.html").read_text()
    assert "host vs venv: proven cause: numpy: packages.numpy: 2.4.6 vs 1.26.4" in html
