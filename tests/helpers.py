"""What the tests share: where the repository and this machine's torch wheels are, the demo specs
and user probe, and the CLI run in a subprocess as a user runs it.

Plain constants and functions, as pip-tools keeps them in ``tests/constants.py``; the fixtures
stay in ``tests/conftest.py``. Every test module imports from here, never from another test
module.

The wheel folder: the PyTorch CPU index cannot be reached from the machines these tests run on;
a local folder of wheels holding torch 2.13.0+cpu stands in for it (``ENVPARITY_MIRRORS``, see
``orchestrator/lock.py``). The folder is the one pip is told about, read as ``.ci/run`` and
``noxfile.py`` read it: ``PIP_FIND_LINKS``, else pip's ``global.find-links`` setting.
"""

from __future__ import annotations

import os
import shutil
import sys
from functools import cache
from importlib.metadata import requires, version
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from orchestrator import process

REPO = Path(__file__).resolve().parent.parent
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
CU130_INDEX = "https://download.pytorch.org/whl/cu130"
TORCH_WHEEL = "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
CLI = (sys.executable, "-m", "orchestrator")  # envparity from this checkout (PYTHONPATH=REPO)

MINIMAL = """\
[environment]
name = "demo"
python = "3.11"

[dependencies]
numpy = ">=2"
"""

# What init says of a dependency it cannot lock with hashes (a path, a URL, a VCS checkout).
UNLOCKABLE = (
    "cannot be locked with hashes; the spec lists released packages by name and version "
    "(publish it to an index, or put its wheel in a find-links [[index]] folder and require "
    "it by name)"
)

# ------------------------------------------------------------------------------- the wheel folder


@cache
def _pip_find_links_setting() -> str:
    """``pip config get global.find-links``, run with the system's ``python3`` (a uv-made test
    venv has no pip); empty when pip has no such setting."""
    python3 = shutil.which("python3")
    if python3 is None:
        return ""
    got = process.run(
        [python3, "-m", "pip", "config", "get", "global.find-links"], check=False, timeout=60
    )
    return got.stdout if got.returncode == 0 else ""


def wheel_folder() -> Path:
    """The local folder holding ``TORCH_WHEEL``: the first entry of ``PIP_FIND_LINKS`` (else of
    pip's ``global.find-links`` setting) that is a folder, or a ``file://`` URL of one, holding
    it. Fails the calling test, saying what to set, when none does."""
    entries = (os.environ.get("PIP_FIND_LINKS", "").strip() or _pip_find_links_setting()).split()
    for entry in entries:
        folder = Path(unquote(urlparse(entry).path) if entry.startswith("file:") else entry)
        if (folder / TORCH_WHEEL).is_file():
            return folder.absolute()
    problem = (
        f"no {TORCH_WHEEL} in {' '.join(entries)}"
        if entries
        else "PIP_FIND_LINKS is unset and pip has no find-links setting"
    )
    pytest.fail(
        f"{problem}: set PIP_FIND_LINKS to a folder holding {TORCH_WHEEL} (pip download "
        f"torch==2.13.0 --no-deps --index-url {CPU_INDEX} --dest DIR)",
        pytrace=False,
    )


def torch_wheel() -> Path:
    """The torch 2.13.0+cpu wheel for Python 3.11 in ``wheel_folder()``."""
    return wheel_folder() / TORCH_WHEEL


def mirror(*indexes: str) -> str:
    """An ``ENVPARITY_MIRRORS`` value: each of ``indexes`` (default: the PyTorch CPU index) read
    from ``wheel_folder()``."""
    folder = wheel_folder()
    return " ".join(f"{index}={folder}" for index in indexes or (CPU_INDEX,))


# ------------------------------------------------------------------------------- specs and probes


def freeze(*roots: str) -> list[str]:
    """``name==version`` of ``roots`` and everything they require here, as `pip freeze` says."""
    seen: dict[str, str] = {}
    todo = list(roots)
    while todo:
        name = str(canonicalize_name(todo.pop()))
        if name in seen:
            continue
        seen[name] = version(name)
        for line in requires(name) or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return [f"{n}=={v}" for n, v in sorted(seen.items())]


def lower_isa() -> str:
    """The CPU capability one below this machine's: ``avx2`` on AVX-512, else ``default``."""
    import torch

    return "avx2" if torch.backends.cpu.get_cpu_capability() == "AVX512" else "default"


def eleven_variables() -> dict[str, str]:
    """The launch variables of issue 19's eleven-variable pair: three change the built-in
    probe's numbers (``ATEN_CPU_CAPABILITY`` one below this CPU's, ``MKL_CBWR``,
    ``MKL_NUM_THREADS`` against a run with 2), ``DNNL_MAX_CPU_ISA`` changes them alone but not
    beside ``ONEDNN_MAX_CPU_ISA=ALL`` (oneDNN reads its newer name first), seven change
    nothing (measured, tests/test_bisect.py)."""
    return {
        "ATEN_CPU_CAPABILITY": lower_isa(),
        "MKL_CBWR": "COMPATIBLE",
        "MKL_NUM_THREADS": "1",
        "DNNL_MAX_CPU_ISA": "SSE41",
        "ONEDNN_MAX_CPU_ISA": "ALL",
        "OPENBLAS_CORETYPE": "Haswell",
        "OPENBLAS_NUM_THREADS": "1",
        "KMP_AFFINITY": "disabled",
        "KMP_DETERMINISTIC_REDUCTION": "1",
        "MKL_DYNAMIC": "FALSE",
        "CUDA_LAUNCH_BLOCKING": "1",
    }


def torch_venv(numpy: str) -> Path:
    """The interpreter of a uv venv holding the local torch wheel, torch's requirements at the
    versions installed here (``freeze``) and NumPy ``numpy``: two of them differ in NumPy
    alone. Cached between test runs under ``ENVPARITY_TEST_CACHE`` (default
    ``/tmp/envparity-test-cache``)."""
    root = Path(os.environ.get("ENVPARITY_TEST_CACHE", "/tmp/envparity-test-cache"))
    venv = root / f"torch2.13.0-numpy{numpy}-pinned"
    python = venv / "bin" / "python"
    if not (venv / ".complete").exists():
        pins = ["torch==2.13.0", f"numpy=={numpy}"]
        pins += [p for p in freeze("torch") if not p.startswith("torch==")]
        process.run(["uv", "venv", "-q", "--python", sys.executable, str(venv)])
        install = ["uv", "pip", "install", "-q", "--python", str(python)]
        process.run([*install, "--find-links", str(wheel_folder()), *pins], timeout=600)
        (venv / ".complete").write_text("")
    return python


def pin_torch_closure(spec: str) -> str:
    """``spec`` with what torch requires pinned, in ``[dependencies]``, to the versions installed
    here: a test spec that verifies the ``host`` target (this interpreter) then locks exactly
    what the host has, today and after PyPI publishes a newer fsspec or sympy (host drift
    would otherwise fail the run)."""
    lines = [
        f'{p.split("==")[0]} = "=={p.split("==")[1]}"'
        for p in freeze("torch")
        if not p.startswith(("torch==", "numpy=="))
    ]
    anchor = 'torch = "==2.13.0"\n'
    assert anchor in spec, "pin_torch_closure: the spec has no torch pin to extend"
    return spec.replace(anchor, anchor + "\n".join(lines) + "\n", 1)


def torch_spec(name: str, *, steps: int = 4, cuda: bool = False) -> str:
    """The demo spec that trains: torch 2.13.0 (what torch requires pinned to this host's
    versions, ``pin_torch_closure``) and NumPy 2.4.6 from the PyTorch CPU index, the host and
    venv targets, ``steps`` probe steps; with ``cuda``, a CUDA 13.0 toolkit and the cu130 index
    for the cuda flavor too. Ends in the ``[verify]`` table, so that a test may add to it."""
    toolkit = '\n[cuda]\nversion = "13.0"\ncudnn = "9"\n' if cuda else ""
    cuda_index = f'\n[[index]]\nurl = "{CU130_INDEX}"\nflavors = ["cuda"]\n' if cuda else ""
    return pin_torch_closure(
        f'[environment]\nname = "{name}"\npython = "3.11"\n{toolkit}\n'
        '[dependencies]\ntorch = "==2.13.0"\nnumpy = "==2.4.6"\n\n'
        f'[[index]]\nurl = "{CPU_INDEX}"\nflavors = ["cpu"]\n{cuda_index}\n'
        f"[targets.host]\n[targets.venv]\n\n[verify]\nsteps = {steps}\n"
    )


def wheel_spec(name: str, *, seed: int) -> str:
    """The demo spec for a target that installs away from this interpreter (a Nix shell, a
    container): torch 2.13.0 and NumPy 2.4.6 with ``wheel_folder()`` as a find-links
    ``[[index]]`` (a path the target can read: the devcontainer tests copy the wheel to the same
    path in their base image), and ``[determinism] seed``. Ends in that table; a test adds its
    target's table after it."""
    return (
        f'[environment]\nname = "{name}"\npython = "3.11"\n\n'
        '[dependencies]\ntorch = "==2.13.0"\nnumpy = "==2.4.6"\n\n'
        f'[[index]]\nurl = "{wheel_folder()}"\nkind = "find-links"\n\n'
        f"[determinism]\nseed = {seed}\n"
    )


USER_PROBE = """\
import os

import torch

from mymodel import build
from orchestrator.determinism import seed_everything


def train(rec):
    seed_everything(rec.determinism)
    torch.set_float32_matmul_precision(os.environ.get("PROBE_PRECISION", "highest"))
    with open("data/vocab.txt", encoding="utf-8") as handle:
        words = handle.read().split()
    model = build(len(words))
    rec.initial(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(64, 96)
    for _ in range(rec.steps):
        loss = model(x).logsumexp(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        rec.loss(loss)
    rec.final(model, loss=float(loss))
"""
USER_MODEL = """\
from torch import nn


def build(vocab):
    return nn.Sequential(nn.Linear(96, 160), nn.Tanh(), nn.Linear(160, vocab))
"""
VOCAB = "the a of to in and is it was for\n"


def user_project(folder: Path, model: str = USER_MODEL, vocab: str = VOCAB) -> Path:
    """``folder`` holding a user probe (``myprobe:train``) that imports a module of its own
    (``mymodel.py``: ``model``) and reads a data file (``data/vocab.txt``: ``vocab``)."""
    (folder / "data").mkdir(parents=True, exist_ok=True)
    (folder / "myprobe.py").write_text(USER_PROBE)
    (folder / "mymodel.py").write_text(model)
    (folder / "data" / "vocab.txt").write_text(vocab)
    return folder


# ------------------------------------------------------------------------------- the CLI, for real


def cli_env(
    *, mirrors: str | None = None, columns: int | None = 200, pythonpath: bool = True
) -> dict[str, str]:
    """``os.environ`` for a command run as a user runs it: ``ENVPARITY_MIRRORS`` = ``mirrors``
    (default ``mirror()``), ``COLUMNS`` = ``columns`` (the width rich wraps at; None: as it is),
    ``PYTHONPATH`` = the repository, so that ``python -m orchestrator`` is this checkout's
    (``pythonpath=False`` removes it, for a tool that must find envparity installed)."""
    env = {**os.environ, "ENVPARITY_MIRRORS": mirror() if mirrors is None else mirrors}
    if columns is not None:
        env["COLUMNS"] = str(columns)
    if pythonpath:
        env["PYTHONPATH"] = str(REPO)
    else:
        env.pop("PYTHONPATH", None)
    return env


def envparity(
    project: Path,
    *args: str,
    mirrors: str | None = None,
    columns: int = 200,
    timeout: float = 600,
) -> process.Completed:
    """``envparity ARGS`` in ``project``, in a subprocess, with ``cli_env(mirrors, columns)``;
    never raises for an exit code (``returncode``, ``stdout`` and ``stderr`` say it)."""
    env = cli_env(mirrors=mirrors, columns=columns)
    return process.run([*CLI, *args], env=env, cwd=project, check=False, timeout=timeout)


def make_project(folder: Path, spec: str, *, mirrors: str | None = None) -> Path:
    """``folder`` with ``spec`` as its environment.toml, locked and rendered by ``envparity``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "environment.toml").write_text(spec)
    for verb in ("lock", "render"):
        done = envparity(folder, verb, mirrors=mirrors)
        assert done.returncode == 0, done.stderr
    return folder
