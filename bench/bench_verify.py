"""Cold and warm ``envparity verify`` per target on a torch+numpy CPU project.

Cold: ``--fresh`` (environment rebuilt from the warm uv cache, both probe runs executed).
Warm: nothing changed since the last run (environments and fingerprints reused).
The devcontainer target is included when the machine can run it (podman and the images).
"""

from __future__ import annotations

import shutil
import sys
import time

from project import ROOT, environment, make_project

sys.path.insert(0, str(ROOT))


def timed(project, *args: str) -> float:  # type: ignore[no-untyped-def]
    import subprocess

    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "orchestrator", "verify", *args],
        cwd=project,
        env=environment(),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def main() -> None:
    project = make_project()
    print("\nenvparity verify, 2 probe runs of 30 steps per target (seconds)")
    print(f"{'target':<14} {'cold (--fresh)':>15} {'warm':>8}")
    for target in ("host", "venv"):
        cold = timed(project, "--targets", target, "--fresh")
        warm = min(timed(project, "--targets", target) for _ in range(3))
        print(f"{target:<14} {cold:>15.1f} {warm:>8.2f}")
    shutil.rmtree(project, ignore_errors=True)


if __name__ == "__main__":
    main()
