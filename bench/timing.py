"""Side-by-side timing for the benchmarks: alternate the commands so that noise from other
work on this shared machine hits each of them alike, and report medians and ratios."""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

T = TypeVar("T")


def run_time(
    argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | None = None
) -> float:
    """The wall seconds of one run of ``argv`` (``run_wall_cpu``)."""
    return run_wall_cpu(argv, env=env, cwd=cwd)[0]


def interleaved(cases: Mapping[str, Callable[[], T]], rounds: int) -> dict[str, list[T]]:
    """Run every case once per round, in turn; return each case's timings."""
    out: dict[str, list[T]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, case in cases.items():
            out[name].append(case())
    return out


def report(title: str, timings: Mapping[str, list[float]], baseline: str) -> None:
    base = statistics.median(timings[baseline])
    print(f"\n{title}")
    print(f"{'case':<44} {'median s':>9} {'min s':>8} {'x ' + baseline:>14}")
    for name, values in timings.items():
        med = statistics.median(values)
        print(f"{name:<44} {med:>9.3f} {min(values):>8.3f} {med / base:>14.2f}")


def run_wall_cpu(
    argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | None = None
) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run of ``argv``: the CPU time (user + system of it and
    the processes it waited for) is steadier than wall time on a machine other jobs load,
    since waiting for a busy core does not count."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        list(argv),
        env=None if env is None else {**os.environ, **env},
        cwd=cwd,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
