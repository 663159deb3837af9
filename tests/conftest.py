"""The fixtures the test modules share; the plain constants and functions are in helpers.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import MINIMAL


@pytest.fixture
def write_spec(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Write a spec into tmp_path and return its path."""

    def write(text: str = MINIMAL, name: str = "environment.toml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test in its own folder, so that messages name files as a user typed them."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


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
