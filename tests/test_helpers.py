"""The shared test helpers (tests/helpers.py) keep their contract: the wheel folder is the one
pip is told about, and test modules import helpers, never each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests import helpers
from tests.helpers import TORCH_WHEEL, wheel_folder

TESTS = Path(__file__).resolve().parent


def test_no_test_module_imports_another_or_the_conftest() -> None:
    """What two test modules share belongs in helpers.py (or a fixture in conftest.py)."""
    found = []
    for path in sorted(TESTS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                last = name.split(".")[-1]
                if last.startswith("test_") or last == "conftest":
                    found.append(f"{path.relative_to(TESTS)}:{node.lineno}: {name}")
    assert found == []


def test_the_wheel_folder_is_the_first_pip_find_links_entry_holding_torch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = wheel_folder() / TORCH_WHEEL
    empty, full = tmp_path / "empty", tmp_path / "full"
    empty.mkdir()
    full.mkdir()
    (full / TORCH_WHEEL).symlink_to(real)
    monkeypatch.setenv("PIP_FIND_LINKS", f"https://example.invalid/wheels {empty} {full}")
    assert wheel_folder() == full
    monkeypatch.setenv("PIP_FIND_LINKS", f"{empty} {full.as_uri()}")
    assert wheel_folder() == full
    assert helpers.mirror() == f"https://download.pytorch.org/whl/cpu={full}"


def test_no_wheel_folder_fails_the_test_saying_what_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(pytest.fail.Exception) as failed:
        wheel_folder()
    assert str(failed.value) == (
        f"no {TORCH_WHEEL} in {tmp_path}: set PIP_FIND_LINKS to a folder holding {TORCH_WHEEL} "
        "(pip download torch==2.13.0 --no-deps --index-url https://download.pytorch.org/whl/cpu "
        "--dest DIR)"
    )
