"""The fixtures the test modules share; the plain constants and functions are in helpers.py."""

from __future__ import annotations

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
