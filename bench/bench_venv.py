"""venv provisioning from a warm uv cache: envparity's venv target against a raw
``uv venv`` + ``uv pip sync`` of the same lock (target: at most 1.2x) and against
``python -m venv`` + ``pip install --require-hashes`` (expected to be far slower)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from project import ROOT, environment, make_project
from timing import interleaved, report, run_time

sys.path.insert(0, str(ROOT))

from orchestrator import lock, spec
from orchestrator.targets.base import Context
from orchestrator.targets.venv import VenvTarget


def main() -> None:
    project = make_project()
    env = environment()
    os.environ["ENVPARITY_MIRRORS"] = env["ENVPARITY_MIRRORS"]
    s = spec.load(project / "environment.toml")
    lock_file = str(project / "locks" / "cpu.txt")
    sources = lock.source_args(s, "cpu")
    scratch = Path(tempfile.mkdtemp(prefix="envparity-bench-venv-"))

    def envparity_venv() -> float:
        # A new environment (nothing to reuse), as raw_uv makes one: removal is not timed.
        shutil.rmtree(scratch / "cache", ignore_errors=True)
        ctx = Context(spec=s, cache=scratch / "cache", runtime=scratch / "runtime")
        target = VenvTarget(ctx)
        start = time.perf_counter()
        target.provision()
        return time.perf_counter() - start

    def raw_uv() -> float:
        where = scratch / "raw"
        shutil.rmtree(where, ignore_errors=True)
        return run_time(["uv", "venv", "--quiet", "--python", "3.11", str(where)]) + run_time(
            [
                "uv",
                "pip",
                "sync",
                "--quiet",
                "--python",
                str(where / "bin" / "python"),
                "--require-hashes",
                *sources,
                lock_file,
            ]
        )

    def pip() -> float:
        where = scratch / "pip"
        shutil.rmtree(where, ignore_errors=True)
        find_links = [a for a in sources if a != "--find-links"]
        return run_time([sys.executable, "-m", "venv", str(where)]) + run_time(
            [
                str(where / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--require-hashes",
                *[f"--find-links={f}" for f in find_links],
                "-r",
                lock_file,
            ]
        )

    raw_uv()  # warm uv's cache with this lock's wheels
    timings = interleaved(
        {
            "raw uv venv + uv pip sync": raw_uv,
            "envparity venv target (new environment)": envparity_venv,
        },
        rounds=5,
    )
    timings["python -m venv + pip install --require-hashes"] = [pip(), pip()]
    report(
        "venv provisioning of a torch+numpy CPU lock, warm uv cache (target: <= 1.2x raw uv)",
        timings,
        "raw uv venv + uv pip sync",
    )
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.rmtree(project, ignore_errors=True)


if __name__ == "__main__":
    main()
