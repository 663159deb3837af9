from __future__ import annotations

import os
from collections.abc import Iterator
from importlib.metadata import requires, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent

MINIMAL = """\
[environment]
name = "demo"
python = "3.11"

[dependencies]
numpy = ">=2"
"""


@pytest.fixture
def write_spec(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Write a spec into tmp_path and return its path."""

    def write(text: str = MINIMAL, name: str = "environment.toml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


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


@pytest.fixture
def stand_in_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder first on ``PATH`` for the stand-in ``nvidia-smi`` and ``nvcc`` of
    ``tests/gpu_stand_ins.py`` (empty: write them with its functions). The machine's own
    NVIDIA tools never answer: ``PATH`` folders holding an ``nvcc`` or ``nvidia-smi`` are left
    out, ``CUDA_HOME``, ``CUDA_PATH`` and ``CUDA_DEVICE_ORDER`` are unset, and
    ``/usr/local/cuda`` is not looked at; ``gpus``' cached nvidia-smi answers are dropped
    before and after."""
    from orchestrator import cuda_host, gpus

    bin_dir = tmp_path / "stand-ins" / "bin"  # a bin/: torch finds CUDA_HOME as nvcc's ../
    bin_dir.mkdir(parents=True)
    kept = [
        d
        for d in os.environ.get("PATH", "").split(os.pathsep)
        if d and not any(Path(d, tool).exists() for tool in ("nvcc", "nvidia-smi"))
    ]
    monkeypatch.setenv("PATH", os.pathsep.join([str(bin_dir), *kept]))
    for name in ("CUDA_HOME", "CUDA_PATH", "CUDA_DEVICE_ORDER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(cuda_host, "DEFAULT_CUDA_HOME", tmp_path / "no-usr-local-cuda")
    gpus.nvidia_smi.cache_clear()
    yield bin_dir
    gpus.nvidia_smi.cache_clear()
