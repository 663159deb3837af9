"""One constant for each fact several modules share: each is written in one module of
``orchestrator`` and imported everywhere else (strings and numbers in code; docstrings and
comments may mention them)."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "orchestrator"


def constants(path: Path) -> list[tuple[int, object]]:
    """(line, value) of every string and number in ``path``'s code, docstrings left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and id(node) not in docstrings
    ]


@pytest.mark.parametrize(
    ("fact", "found", "owner"),
    [
        (
            "the PyTorch wheel index URL",
            lambda v: isinstance(v, str) and "download.pytorch.org/whl" in v,
            "compat.py",
        ),
        (
            "the cross-device tolerance default",
            lambda v: isinstance(v, float) and v == 1e-4,
            "tolerances.py",
        ),
        (
            # every user-facing verdict is worded by verdict/wording.py (tests/test_verdict.py)
            "the words of a verdict",
            lambda v: (
                isinstance(v, str)
                and any(w in v for w in ("bitwise identical", "within tolerance", "DIVERGED"))
            ),
            "verdict/wording.py",
        ),
    ],
)
def test_each_shared_fact_is_written_once(
    fact: str, found: Callable[[object], bool], owner: str
) -> None:
    places = [
        f"{path.relative_to(PACKAGE)}:{line}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line, value in constants(path)
        if found(value)
    ]
    assert {p.split(":")[0] for p in places} == {owner}, f"{fact}: {places}"
