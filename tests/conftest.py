from __future__ import annotations

from pathlib import Path

import pytest

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
