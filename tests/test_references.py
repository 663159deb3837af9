"""Reference fingerprints (``verify --record``, ``fingerprints/``, ``check``), and CUDA-flavor
targets verified on the CPU of a machine without a GPU.

The project has a CUDA toolkit (cu130 is its default flavor, from the PyTorch cu130 index); on
this machine both PyTorch indexes are mirrored by the local wheel folder, which holds only the
CPU wheel: its cu130 lock pins that wheel (checked before anything is installed), so the
CUDA-flavor logic runs for real without downloading CUDA torch.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from orchestrator import gpus, process, references, verify
from orchestrator.probe import fingerprint as fp_module
from orchestrator.probe.fingerprint import Fingerprint
from orchestrator.spec import loads
from tests import helpers
from tests.helpers import CPU_INDEX, CU130_INDEX, REPO, make_project, mirror, torch_spec

SPEC = torch_spec("refs-demo", cuda=True)


def envparity(project: Path, *args: str) -> process.Completed:
    """``tests.helpers.envparity`` with the cu130 index mirrored by the same folder."""
    return helpers.envparity(project, *args, mirrors=mirror(CPU_INDEX, CU130_INDEX))


STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def fake_fingerprint(**environment: Any) -> Fingerprint:
    gpus = tuple(
        fp_module.Gpu(name=g["name"], capability=g["capability"], sm_count=1, memory=1)
        for g in environment.get("gpus", [])
    )
    env = fp_module.Environment(
        python=fp_module.PythonInfo("3.11.7", "CPython", "python", "fixed:0"),
        platform=environment.get("platform", {}),
        launch={},
        numpy={},
        torch=environment.get("torch", {}),
        flags={},
        gpus=gpus,
        collect_env=environment.get("collect_env", {}),
        packages={},
    )
    stages = fp_module.Stages("sha256:0", {}, (), (), "sha256:0", {}, {})
    return Fingerprint(
        source="fp.json",
        probe="p",
        seed=0,
        steps=1,
        device="cuda" if gpus else "cpu",
        environment=env,
        stages=stages,
        audit=(),
    )


class TestHardwareClass:
    @pytest.mark.parametrize(
        ("environment", "expected"),
        [
            (
                {
                    "platform": {"cpu_model": "Intel(R) Xeon(R) Platinum 8488C"},
                    "torch": {"cpu_capability": "AVX512"},
                },
                "cpu-intel-xeon-platinum-8488c-avx512",
            ),
            (
                {
                    "platform": {"cpu_model": "AMD Ryzen 9 7950X 16-Core Processor"},
                    "torch": {"cpu_capability": "AVX2"},
                },
                "cpu-amd-ryzen-9-7950x-avx2",
            ),
            ({"platform": {}, "torch": {}}, "cpu-unknown-unknown"),
            (
                {
                    "gpus": [{"name": "NVIDIA H200", "capability": "9.0"}],
                    "collect_env": {"nvidia_driver_version": "570.133.20"},
                },
                "gpu-nvidia-h200-sm90-driver570",
            ),
        ],
    )
    def test_key(self, environment: dict[str, Any], expected: str) -> None:
        assert references.hardware_class(fake_fingerprint(**environment)) == expected


class TestProbeDevice:
    @pytest.mark.parametrize(
        ("flavor", "gpu", "device", "note"),
        [
            ("cpu", False, "cpu", ""),
            ("cpu", True, "cpu", ""),
            ("cu130", True, "cuda", ""),
            (
                "cu130",
                False,
                "cpu",
                "GPU part not verified here: no NVIDIA GPU visible, the cu130 build ran on the CPU",
            ),
        ],
    )
    def test_flavor_and_gpu_decide(
        self, monkeypatch: pytest.MonkeyPatch, flavor: str, gpu: bool, device: str, note: str
    ) -> None:
        monkeypatch.setattr(gpus, "visible", lambda: gpu)
        venv = f'[targets.venv]\nflavor = "{flavor}"'
        spec = loads(SPEC.replace("[targets.venv]", venv))
        assert verify.probe_device(spec, "venv") == (device, note)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Locked, rendered, verified once with --record (host and venv, both cu130 on the CPU)."""
    if gpus.visible():
        pytest.fail("these tests assert the GPU-less path; run them on a machine without a GPU")
    folder = make_project(
        tmp_path_factory.mktemp("refs") / "project", SPEC, mirrors=mirror(CPU_INDEX, CU130_INDEX)
    )
    for flavor in ("cpu", "cu130"):  # never let verify install a CUDA torch here
        assert "torch==2.13.0+cpu " in (folder / f"locks/{flavor}.txt").read_text()
    first = envparity(folder, "verify", "--record")
    assert first.returncode == 0, first.stdout + first.stderr
    (folder / "record.txt").write_text(first.stdout)
    return folder


def the_class(project: Path) -> str:
    (found,) = [p.name for p in (project / "fingerprints").iterdir()]
    return found


@contextmanager
def edited(path: Path, edit: Any) -> Iterator[None]:
    before = path.read_text()
    try:
        path.write_text(edit(before))
        yield
    finally:
        path.write_text(before)


def shift_loss(text: str, factor: float, step: int = 2) -> str:
    data = json.loads(text)
    losses = data["stages"]["losses"]
    losses[step] = float.hex(float.fromhex(losses[step]) * factor)
    return json.dumps(data)


class TestRecord:
    def test_record_writes_a_folder_per_hardware_class(self, project: Path) -> None:
        out = (project / "record.txt").read_text()
        hw = the_class(project)
        assert re.fullmatch(r"cpu-[a-z0-9-]+-(avx512|avx2|default|[a-z0-9]+)", hw)
        for name in ("host.json", "venv.json", "reference.json"):
            assert f"recorded fingerprints/{hw}/{name}" in out
        meta = json.loads((project / "fingerprints" / hw / "reference.json").read_text())
        assert meta["format"] == "envparity-reference" and sorted(meta["targets"]) == [
            "host",
            "venv",
        ]
        entry = meta["targets"]["venv"]
        assert entry["lock_file"] == "locks/cu130.txt" and STAMP.fullmatch(entry["recorded_at"])

    def test_cuda_flavor_targets_run_on_the_cpu_and_say_so(self, project: Path) -> None:
        out = (project / "record.txt").read_text()
        for target in ("host", "venv"):
            assert (
                f"{target}: note: GPU part not verified here: no NVIDIA GPU visible, the cu130 build "
                "ran on the CPU" in out
            )
        assert "host vs venv: bitwise identical" in out
        assert "skipped" not in out and "torch sees no CUDA device" not in out
        html = (project / ".envparity" / "report.html").read_text()
        assert "venv: GPU part not verified here" in html
        assert "venv vs reference cpu-" in html


class TestCompareWithReferences:
    def test_a_later_verify_names_the_reference_it_used(self, project: Path) -> None:
        done = envparity(project, "verify")
        assert done.returncode == 0, done.stdout + done.stderr
        hw = the_class(project)
        line = next(x for x in done.stdout.splitlines() if x.startswith("reference: venv vs"))
        assert re.fullmatch(
            rf"reference: venv vs reference {hw}/venv \(recorded {STAMP.pattern} on .+, "
            r"locks/cu130.txt sha256:[0-9a-f]{8}\): bitwise identical \(same hardware class\)",
            line,
        ), line

    def test_a_divergence_from_the_reference_fails_naming_it(self, project: Path) -> None:
        hw = the_class(project)
        with edited(project / "fingerprints" / hw / "host.json", lambda t: shift_loss(t, 1.5)):
            done = envparity(project, "verify", "--targets", "host")
        assert done.returncode == 1, done.stdout + done.stderr
        assert re.search(
            rf"FAIL host: DIVERGED at losses step 2 from reference {hw}/host \(recorded "
            rf"{STAMP.pattern} on ",
            done.stdout,
        ), done.stdout
        assert f"host vs reference {hw}/host" in done.stdout and "DIVERGED at losses step 2" in (
            done.stdout
        )
        # Values in the order of the names: this run's loss, then the reference's (x1.5).
        (line,) = [ln for ln in done.stdout.splitlines() if ln.startswith("reference: host vs")]
        ours, theirs = (float(x) for x in re.findall(r"(\d+\.\d+) vs (\d+\.\d+)", line)[0])
        assert theirs == pytest.approx(ours * 1.5, rel=1e-6), line

    @pytest.mark.parametrize(
        ("factor", "code", "verdict"), [(1 + 1e-7, 0, "within tolerance"), (1.01, 1, "DIVERGED")]
    )
    def test_another_class_is_compared_with_the_cross_device_tolerance(
        self, project: Path, factor: float, code: int, verdict: str
    ) -> None:
        hw = the_class(project)
        other = project / "fingerprints" / "cpu-other-model-avx2"
        shutil.copytree(project / "fingerprints" / hw, other)
        try:
            (other / "host.json").write_text(shift_loss((other / "host.json").read_text(), factor))
            done = envparity(project, "verify", "--targets", "host")
        finally:
            shutil.rmtree(other)
        assert done.returncode == code, done.stdout + done.stderr
        line = next(
            x for x in done.stdout.splitlines() if "vs reference cpu-other-model-avx2/host" in x
        )
        assert verdict in line and "(other hardware class, cross_device_rtol=0.0001)" in line
        assert f"vs reference {hw}/host" in done.stdout  # its own class, still bitwise

    def test_a_machine_without_a_reference_is_told_how_to_record_one(self, project: Path) -> None:
        hw = the_class(project)
        moved = project / "elsewhere"
        shutil.move(project / "fingerprints" / hw, moved)
        try:
            done = envparity(project, "verify", "--targets", "host")
        finally:
            shutil.move(moved, project / "fingerprints" / hw)
        assert done.returncode == 0, done.stdout + done.stderr
        assert (
            f"reference: no reference for hardware class {hw} in fingerprints/ yet (run "
            "'envparity verify --record' on this machine and commit it)" in done.stdout
        )


class TestCompareCommand:
    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--references", "missing"], "compare --references missing: no such folder"),
            (
                ["--references", "fingerprints", "--json"],
                "compare: --json and --references cannot be combined",
            ),
        ],
    )
    def test_bad_usage_is_one_clear_error(
        self, project: Path, args: list[str], message: str
    ) -> None:
        run = str(project / "fingerprints" / the_class(project) / "host.json")
        done = envparity(project, "compare", *args, run)
        assert (done.returncode, done.stderr) == (2, f"envparity: {message}\n")


class TestStale:
    def test_check_reports_a_reference_from_other_spec_inputs(self, project: Path) -> None:
        hw = the_class(project)
        spec = project / "environment.toml"
        with edited(spec, lambda t: t.replace("steps = 4", "steps = 5")):
            done = envparity(project, "check")
        assert done.returncode == 1, done.stdout + done.stderr
        for target in ("host", "venv"):
            assert (
                f"fingerprints/{hw}/{target}: stale reference: recorded from other "
                "environment.toml inputs (seed, determinism, steps or probe) or another version "
                "of the probe's code; run 'envparity verify --record' to record it again"
                in done.stdout
            )
        assert done.stdout.rstrip().endswith("2 stale reference(s); run: envparity verify --record")

    def test_a_reference_from_another_lock_is_noted_not_compared(self, project: Path) -> None:
        hw = the_class(project)
        meta, venv = (project / "fingerprints" / hw / n for n in ("reference.json", "venv.json"))

        def other_lock(text: str) -> str:
            data = json.loads(text)
            data["targets"]["venv"]["lock"] = "0" * 64
            return json.dumps(data)

        def older_numpy(text: str) -> str:
            data = json.loads(text)
            data["environment"]["packages"]["numpy"] = "2.4.5"
            return json.dumps(data)

        with edited(meta, other_lock):
            # a lock that changed without changing what the recorded run had: still current
            assert envparity(project, "check").returncode == 0
            with edited(venv, older_numpy):
                check = envparity(project, "check")
                done = envparity(project, "verify", "--targets", "venv")
        assert check.returncode == 1
        assert (
            f"fingerprints/{hw}/venv: stale reference: recorded from another lock: "
            "locks/cu130.txt now pins numpy 2.4.6 (the reference ran with 2.4.5)" in check.stdout
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"reference {hw}/venv (recorded" in done.stdout and (
            "is stale, not compared: recorded from another lock" in done.stdout
        )
        assert f"venv vs reference {hw}/host" in done.stdout  # the class's current one

    def test_check_passes_when_references_match(self, project: Path) -> None:
        done = envparity(project, "check")
        assert done.returncode == 0, done.stdout + done.stderr

    def test_a_malformed_reference_is_one_clear_error(self, project: Path) -> None:
        meta = project / "fingerprints" / the_class(project) / "reference.json"
        with edited(
            meta, lambda t: '{"format": "envparity-reference", "version": 1, "targets": []}'
        ):
            done = envparity(project, "check")
        assert done.returncode == 2
        assert (
            done.stderr
            == f"envparity: {meta}: targets: expected a table of tables, got an array []\n"
        )


def test_the_repository_references_are_current() -> None:
    from orchestrator.spec import load

    refs = references.load_all(REPO / "fingerprints")
    assert {r.target for r in refs} >= {"host", "venv"}
    assert references.stale(load(REPO / "environment.toml")) == []
