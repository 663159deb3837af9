"""A cold three-target verify, provisioning sequential vs concurrent (``verify.run_targets``).

Targets: host, venv (cpu lock) and a second venv of the cu130 flavor whose lock, through a
mirror of the cu130 index holding only the local CPU wheel, takes the same CPU torch wheel (so nothing multi-GB is downloaded; its probe runs on the CPU, as a CUDA
target does on a machine without a GPU). No devcontainer or Nix target: on these machines
podman and Nix belong to other benchmarks and would compete for the same two cores.
Cold = ``fresh``: both venvs rebuilt from the warm uv cache, every probe run executed.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import time
from pathlib import Path

from project import CPU_INDEX, PYTORCH_INDEX, ROOT, environment, envparity
from timing import interleaved, report

sys.path.insert(0, str(ROOT))

STEPS = 10
CU130_INDEX = f"{PYTORCH_INDEX}cu130"
SPEC = f"""\
[environment]
name = "bench-concurrent"
python = "3.11"

[cuda]
version = "13.0"
cudnn = "9"

[dependencies]
torch = "==2.13.0"
numpy = "==2.4.6"

[[index]]
url = "{CPU_INDEX}"
flavors = ["cpu"]

[[index]]
url = "{CU130_INDEX}"
flavors = ["cuda"]

[targets.host]
flavor = "cpu"
[targets.venv]
flavor = "cpu"

[verify]
steps = {STEPS}
"""


def main() -> None:
    import os
    import tempfile

    os.environ.update(environment())
    # the cu130 index read from the same wheel folder: its lock pins the CPU wheel (checked below)
    folder_of_wheels = os.environ["ENVPARITY_MIRRORS"].split("=", 1)[1]
    os.environ["ENVPARITY_MIRRORS"] += f" {CU130_INDEX}={folder_of_wheels}"
    from orchestrator import spec as spec_module
    from orchestrator import verify
    from orchestrator.spec import Target as TargetSettings
    from orchestrator.targets.base import RUNTIME_DIR, Context
    from orchestrator.targets.host import HostTarget
    from orchestrator.targets.venv import VenvTarget

    class SecondVenv(VenvTarget):
        """The venv target of the cu130 flavor, beside the cpu one."""

        name = "venv-cu130"

        @property
        def flavor(self) -> str:
            return self.ctx.spec.flavor_of(self.name)

    folder = Path(tempfile.mkdtemp(prefix="envparity-bench-"))
    (folder / "environment.toml").write_text(SPEC)
    envparity(folder, "lock")
    envparity(folder, "render")
    assert "torch==2.13.0+cpu " in (folder / "locks" / "cu130.txt").read_text()
    spec = spec_module.load(folder / "environment.toml")
    spec = dataclasses.replace(
        spec,
        targets={**spec.targets, "venv-cu130": TargetSettings(name="venv-cu130", flavor="cu130")},
    )
    cache = folder / RUNTIME_DIR
    ctx = Context(spec=spec, cache=cache, runtime=verify.prepare_runtime(cache), fresh=True)
    hw = verify.hardware()
    make = (HostTarget, VenvTarget, SecondVenv)

    def case(concurrent: bool) -> float:
        start = time.perf_counter()
        results = verify.run_targets([t(ctx) for t in make], ctx, hw, concurrent=concurrent)
        took = time.perf_counter() - start
        bad = [(r.name, r.status, r.reason) for r in results if r.status != "ok"]
        assert not bad, bad
        return took

    case(True)  # warm the uv cache and the page cache: both cases then start alike
    timings = interleaved({"sequential": lambda: case(False), "concurrent": lambda: case(True)}, 2)
    report(
        f"cold verify of host + venv (cpu) + venv (cu130 flavor, CPU wheel), {STEPS} steps, "
        "2 probe runs each (seconds)",
        timings,
        "sequential",
    )
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
