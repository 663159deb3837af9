"""Benchmark ``envparity bisect``: probe runs and seconds for 1, 3 and 11 differences.

Run from the repository root: ``python bench/bench_bisect.py [--steps N]`` (default 30, the
probe's default; about 4 minutes on 2 quiet cores). A is the built-in probe with two threads
(``OMP_NUM_THREADS=MKL_NUM_THREADS=2``); each B is A's launch environment with:

* 1: ``MKL_CBWR=COMPATIBLE``;
* 3: ``PYTHONHASHSEED=1``, ``MKL_CBWR=COMPATIBLE``, ``MKL_NUM_THREADS=1``: each changes the
  results alone, independently (``MKL_NUM_THREADS`` leaves no mark of its own: no kernel
  output, initial parameter or batch changes, so its necessity costs one run);
* 11: the issue's eleven launch variables (three change the numbers, one of them masks a
  fourth, seven change nothing).

The goal (issue 19) is n + 2 probe runs at most for n independent differences.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers import eleven_variables  # noqa: E402

BASE_ENV = {"PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}


CASES = {
    1: {"MKL_CBWR": "COMPATIBLE"},
    3: {"PYTHONHASHSEED": "1", "MKL_CBWR": "COMPATIBLE", "MKL_NUM_THREADS": "1"},
    11: eleven_variables(),  # the pair tests/test_bisect.py bisects
}


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(REPO), **env}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        env=full,
        cwd=REPO,
        check=False,
        capture_output=True,
        text=True,
    )


def probe(out: Path, steps: int, env: dict[str, str]) -> None:
    done = run(["probe", "--out", str(out), "--steps", str(steps)], {**BASE_ENV, **env})
    if done.returncode:
        raise SystemExit(done.stderr)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    steps = parser.parse_args().steps
    with tempfile.TemporaryDirectory() as tmp:
        a = Path(tmp) / "a.json"
        probe(a, steps, {})
        print(f"\nenvparity bisect, built-in probe, {steps} steps, {os.cpu_count()} cores")
        print(
            f"{'differences':>11} {'runs':>5} {'goal n+2':>9} {'seconds':>8} "
            f"{'s/run':>6}  status, proven (masked)"
        )
        for n, variables in CASES.items():
            b = Path(tmp) / f"b{n}.json"
            probe(b, steps, variables)
            start = time.perf_counter()
            done = run(["bisect", str(a), str(b), "--json"], {})
            seconds = time.perf_counter() - start
            report = json.loads(done.stdout)
            said = {d["key"]: d["verdict"] for d in report["differences"]}
            proven = [k.removeprefix("launch.") for k, v in said.items() if v == "proven"]
            masked = [k.removeprefix("launch.") for k, v in said.items() if v == "masked"]
            runs = report["runs"]
            print(
                f"{n:>11} {runs:>5} {n + 2:>9} {seconds:>8.1f} {seconds / runs:>6.1f}  "
                f"{report['status']}, {', '.join(proven)}"
                + (f" ({', '.join(masked)})" if masked else "")
            )


if __name__ == "__main__":
    main()
