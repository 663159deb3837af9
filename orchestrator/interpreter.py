"""The interpreter the user's code runs in, and what is installed in it.

``user_interpreter()`` finds it (the activated virtual environment, the ``python3`` on
``PATH`` when envparity runs from an isolated tool environment, else the interpreter running
envparity) and asks it for its Python release and installed distributions. The ``host``
verify target runs the probe in it; ``freshness.conformance`` and ``doctor`` judge it against
the spec.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from orchestrator import process
from orchestrator.errors import ToolError


@dataclass(frozen=True)
class Interpreter:
    """A Python interpreter and what is installed in it."""

    executable: str
    version: str  # platform.python_version(), e.g. "3.11.7"
    packages: Mapping[str, str] = field(default_factory=dict)  # canonical name -> version

    def has(self, name: str) -> bool:
        return name in self.packages


_QUERY = """\
import importlib.metadata as m, json, platform, sys
print(json.dumps({"executable": sys.executable, "version": platform.python_version(),
    "packages": [[d.metadata["Name"], d.version] for d in m.distributions() if d.metadata["Name"]]}))
"""  # run by another interpreter: stdlib only; names are canonicalised here


def _canonical_packages(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """{canonical name: version}; the first of two distributions with one name wins, as
    Python's import system would find it first on ``sys.path``."""
    from orchestrator.names import canonical_name

    out: dict[str, str] = {}
    for name, version in pairs:
        out.setdefault(canonical_name(name), version)
    return out


def _installed() -> dict[str, str]:
    import importlib.metadata

    return _canonical_packages(
        [
            (d.metadata["Name"], d.version)
            for d in importlib.metadata.distributions()
            if d.metadata["Name"]
        ]
    )


def in_tool_environment() -> bool:
    """True when envparity runs from an isolated tool environment (``uv tool install``, which
    leaves ``uv-receipt.toml`` in it, or ``pipx``, which leaves ``pipx_metadata.json``)."""
    prefix = Path(sys.prefix)
    return (prefix / "uv-receipt.toml").is_file() or (prefix / "pipx_metadata.json").is_file()


@cache
def user_interpreter() -> Interpreter:
    """The interpreter the user's code runs in, which the ``host`` target and ``doctor`` judge:

    1. the activated virtual environment's (``$VIRTUAL_ENV/bin/python``) when one is active
       and envparity runs from another environment;
    2. else, when envparity runs from an isolated tool environment (``in_tool_environment``),
       the ``python3`` on ``PATH``;
    3. else the interpreter running envparity.

    Another interpreter is asked in a subprocess (about 0.1 s). Raises ``ToolError`` when it
    cannot be found or run."""
    active = os.environ.get("VIRTUAL_ENV")
    found: str | None = None
    if active and Path(active).resolve() != Path(sys.prefix).resolve():
        found = str(Path(active) / "bin" / "python")
        if not Path(found).is_file():
            raise ToolError(
                f"VIRTUAL_ENV={active} has no bin/python: activate a working environment"
            )
    elif in_tool_environment():
        found = shutil.which("python3") or shutil.which("python")
        if found is None:
            raise ToolError(
                "envparity runs from a tool environment and no python3 is on PATH: "
                "activate the environment your code runs in"
            )
    if found is None:
        return Interpreter(sys.executable, platform.python_version(), _installed())
    data = json.loads(process.run([found, "-c", _QUERY]).stdout)
    packages = _canonical_packages([(n, v) for n, v in data["packages"]])
    return Interpreter(data["executable"], data["version"], packages)
