from __future__ import annotations

import os
import sys
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


def torch_venv(numpy: str) -> Path:
    """The interpreter of a uv venv holding the local torch wheel, torch's requirements at the
    versions installed here (``freeze``) and NumPy ``numpy``: two of them differ in NumPy
    alone. Cached between test runs under ``ENVPARITY_TEST_CACHE`` (default
    ``/tmp/envparity-test-cache``)."""
    from orchestrator import process

    root = Path(os.environ.get("ENVPARITY_TEST_CACHE", "/tmp/envparity-test-cache"))
    venv = root / f"torch2.13.0-numpy{numpy}-pinned"
    python = venv / "bin" / "python"
    if not (venv / ".complete").exists():
        wheels = os.environ.get("PIP_FIND_LINKS") or "/opt/wheels"
        pins = ["torch==2.13.0", f"numpy=={numpy}"]
        pins += [p for p in freeze("torch") if not p.startswith("torch==")]
        process.run(["uv", "venv", "-q", "--python", sys.executable, str(venv)])
        install = ["uv", "pip", "install", "-q", "--python", str(python), "--find-links", wheels]
        process.run([*install, *pins], timeout=600)
        (venv / ".complete").write_text("")
    return python
