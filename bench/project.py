"""A small CPU project (torch + numpy from the PyTorch CPU index) for the benchmarks, locked
and rendered by envparity in a temporary folder. The CPU index is read through a mirror:
ENVPARITY_MIRRORS if set, else the wheel folder named by PIP_FIND_LINKS."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.compat import PYTORCH_INDEX  # noqa: E402

CPU_INDEX = f"{PYTORCH_INDEX}cpu"

SPEC = f"""\
[environment]
name = "bench"
python = "3.11"

[dependencies]
torch = "==2.13.0"
numpy = "==2.4.6"

[[index]]
url = "{CPU_INDEX}"
flavors = ["cpu"]

[targets.host]
[targets.venv]

[verify]
steps = 30
"""


def environment() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if "ENVPARITY_MIRRORS" not in env:
        env["ENVPARITY_MIRRORS"] = f"{CPU_INDEX}={env.get('PIP_FIND_LINKS', '/opt/wheels')}"
    return env


def envparity(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=project,
        env=environment(),
        capture_output=True,
        text=True,
        check=True,
    )


def make_project(extra: str = "") -> Path:
    folder = Path(tempfile.mkdtemp(prefix="envparity-bench-"))
    (folder / "environment.toml").write_text(SPEC + extra)
    envparity(folder, "lock")
    envparity(folder, "render")
    return folder
