"""Local packages (``[dependencies] name = { path = "...", editable = true }``) in the targets
that run the project's code: the venv target builds its environment from the lock and then
installs them without dependencies (real uv, PyPI); the host target reports one that is
missing and the command that installs it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from orchestrator import freshness, lock, spec
from orchestrator.interpreter import Interpreter
from orchestrator.targets.base import Context
from orchestrator.targets.venv import VenvTarget

SPEC = """\
[environment]
name = "local"
python = "3.11"

[dependencies]
iniconfig = "==2.0.0"
library = { path = "sd-scripts", editable = true }
"""


def _project(root: Path) -> spec.Spec:
    package = root / "sd-scripts"
    (package / "library").mkdir(parents=True)
    (package / "library" / "__init__.py").write_text("ANSWER = 42\n")
    (package / "pyproject.toml").write_text(
        '[project]\nname = "library"\nversion = "0.1"\ndependencies = ["iniconfig"]\n'
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
    )
    (root / "environment.toml").write_text(SPEC)
    return spec.load(root / "environment.toml")


def test_the_venv_target_installs_a_local_package_editable_after_the_lock(tmp_path: Path) -> None:
    s = _project(tmp_path)
    lock.lock(s)
    progress: list[str] = []
    target = VenvTarget(
        Context(spec=s, cache=tmp_path / ".envparity", runtime=tmp_path, progress=progress.append)
    )
    target.provision()
    assert "venv: installing ./sd-scripts (no dependencies: locked)" in progress
    (tmp_path / "sd-scripts" / "library" / "__init__.py").write_text("ANSWER = 43\n")
    done = subprocess.run(
        [str(target.python), "-c", "import library, iniconfig; print(library.ANSWER)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout == "43\n"  # editable: the folder's code, as it is now


def test_the_host_names_a_missing_local_package_and_the_command_that_installs_it(
    tmp_path: Path,
) -> None:
    s = _project(tmp_path)
    lock.lock(s)
    host = Interpreter("/usr/bin/python3", "3.11.7", {"iniconfig": "2.0.0"})
    found = freshness.conformance(s, host)
    assert found.packages == (
        "1 package(s) differ from locks/cpu.txt: library is not installed (local: ./sd-scripts)"
    )
    assert freshness.install_command(s, host).endswith(
        "-r locks/cpu.txt && uv pip install --python /usr/bin/python3 --no-deps --editable "
        "./sd-scripts"
    )
    assert (
        freshness.conformance(
            s,
            Interpreter("/usr/bin/python3", "3.11.7", {"iniconfig": "2.0.0", "library": "0.1"}),
        ).packages
        == ""
    )
