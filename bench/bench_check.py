"""``envparity check`` as a whole process, beside a bare ``python -c pass``.

Target (issue 2): at most 4x the bare interpreter. check must import neither torch nor numpy;
this also asserts that. Bytecode is allowed to be cached (as on a user's machine).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from timing import interleaved, report, run_time

ROOT = Path(__file__).resolve().parent.parent
ENV = {"PYTHONDONTWRITEBYTECODE": "", "PYTHONPATH": str(ROOT)}


def main() -> None:
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys;"
            "from orchestrator import cli; cli.main(['check']);"
            "print('torch' in sys.modules, 'numpy' in sys.modules, 'rich' in sys.modules)",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**__import__("os").environ, **ENV},
    )
    assert probe.stdout.strip().endswith("False False False"), probe.stdout + probe.stderr
    run_time([sys.executable, "-m", "orchestrator", "check"], env=ENV, cwd=str(ROOT))  # warm caches
    timings = interleaved(
        {
            "python -c pass": lambda: run_time([sys.executable, "-c", "pass"], env=ENV),
            "python -m orchestrator check (this repo)": lambda: run_time(
                [sys.executable, "-m", "orchestrator", "check"], env=ENV, cwd=str(ROOT)
            ),
        },
        rounds=25,
    )
    report("envparity check vs a bare interpreter (target: <= 4x)", timings, "python -c pass")


if __name__ == "__main__":
    main()
