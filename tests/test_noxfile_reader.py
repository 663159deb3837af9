"""``orchestrator.noxfile_reader``: what a noxfile registers, read without running it.

The reading may miss what nox would list (check then asks nox), never claim a session nox
would not list: each case below that it cannot vouch for gives an empty reading (or None).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import noxfile_reader
from orchestrator.noxfile_reader import Reading

REPO = Path(__file__).resolve().parents[1]
IMPORT = "from orchestrator.nox_sessions import register\n"


def read(tmp_path: Path, text: str) -> Reading | None:
    (tmp_path / "noxfile.py").write_text(text)
    return noxfile_reader.read(tmp_path / "noxfile.py", "environment.toml")


def specs(tmp_path: Path, *names: str) -> Reading:
    return Reading(tuple((tmp_path / n).resolve() for n in names))


def test_this_repositorys_noxfile_registers_its_own_spec() -> None:
    """``register(ROOT / "environment.toml", setup=..., verify_targets=...)`` with
    ``ROOT = Path(__file__).parent``; its own sessions take ``python=PYTHON``: not vouched for."""
    reading = noxfile_reader.read(REPO / "noxfile.py", "environment.toml")
    assert reading == Reading((REPO / "environment.toml",))


@pytest.mark.parametrize(
    "text",
    [
        IMPORT + "register('environment.toml')\n",
        IMPORT + "register()\n",  # register's default spec_file (SPEC_FILE)
        IMPORT + "register(spec_file='environment.toml', verify_targets=('host',))\n",
        IMPORT + "names = register('./environment.toml')\n",
        "import orchestrator.nox_sessions\norchestrator.nox_sessions.register('environment.toml')\n",
        "import orchestrator.nox_sessions as ns\nns.register('environment.toml')\n",
        "from orchestrator.nox_sessions import register as reg\nreg('environment.toml')\n",
        "import os\n"
        + IMPORT
        + "register(os.path.join(os.path.dirname(__file__), 'environment.toml'))\n",
        "import pathlib\n"
        + IMPORT
        + "HERE = pathlib.Path(__file__).resolve().parent\nregister(str(HERE / 'environment.toml'))\n",
        "from pathlib import Path\n"
        + IMPORT
        + "register(Path(__file__).parent.joinpath('environment.toml'))\n",
    ],
)
def test_register_calls_with_a_spec_path_made_of_literals(tmp_path: Path, text: str) -> None:
    assert read(tmp_path, text) == specs(tmp_path, "environment.toml")


def test_a_spec_in_another_folder_is_resolved_from_the_noxfiles(tmp_path: Path) -> None:
    assert read(tmp_path, IMPORT + "register('ci/other.toml')\n") == specs(
        tmp_path, "ci/other.toml"
    )


@pytest.mark.parametrize(
    "text",
    [
        # not at the top level: may not run
        IMPORT + "if False:\n    register('environment.toml')\n",
        IMPORT + "def later():\n    register('environment.toml')\n",
        # the name means something else by the time it is called, or may
        IMPORT + "register = print\nregister('environment.toml')\n",
        IMPORT + "if (register := print):\n    pass\nregister('environment.toml')\n",
        IMPORT
        + "def f():\n    global register\n    register = print\nregister('environment.toml')\n",
        "register = print\n" + IMPORT + "register('environment.toml')\n",
        "from orchestrator.nox_sessions import *\nregister('environment.toml')\n",
        "register('environment.toml')\n" + IMPORT,  # called before the import
        "from mylib import register\nregister('environment.toml')\n",
        # a spec path computed at run time
        IMPORT + "import os\nregister(os.environ['SPEC'])\n",
        IMPORT + "SPEC = 'a.toml'\nSPEC = 'environment.toml'\nregister(SPEC)\n",
        IMPORT + "register(*['environment.toml'])\n",
        IMPORT + "register(**{'spec_file': 'environment.toml'})\n",
    ],
)
def test_what_it_cannot_vouch_for_is_left_to_nox(tmp_path: Path, text: str) -> None:
    (tmp_path / "mylib.py").write_text("def register(*a):\n    pass\n")
    assert read(tmp_path, text) == Reading()


@pytest.mark.parametrize(
    ("decorators", "names"),
    [
        ("@nox.session\n", {"compare"}),
        ("@nox.session()\n", {"compare"}),
        ("@nox.session(name='probe(venv)', python='3.11', venv_backend='none')\n", {"probe(venv)"}),
        ("@nox.session(python=None, reuse_venv=True)\n", {"compare"}),
        # names nox gives otherwise (compare-3.10, compare(x=1)), or cannot be read
        ("@nox.session(python=['3.10', '3.11'])\n", set()),
        ("@nox.session(python=PYTHON)\n", set()),
        ("@nox.session(name=NAME)\n", set()),
        ("@nox.session\n@nox.parametrize('x', [1])\n", set()),
        ("@other.session\n", set()),
    ],
)
def test_nox_session_functions(tmp_path: Path, decorators: str, names: set[str]) -> None:
    text = (
        "import nox\nimport os as other\nPYTHON = '3.11'\nNAME = 'x'\n\n"
        f"{decorators}def compare(session):\n    pass\n"
    )
    assert read(tmp_path, text) == Reading(sessions=frozenset(names))


def test_from_nox_import_session(tmp_path: Path) -> None:
    text = "from nox import session\n\n@session(name='verify')\ndef v(s):\n    pass\n"
    assert read(tmp_path, text) == Reading(sessions=frozenset({"verify"}))


@pytest.mark.parametrize(
    "text",
    [
        "def broken(:\n",  # nox reports the syntax error
        "import nonexistent_module\n" + IMPORT + "register('environment.toml')\n",
        IMPORT + "from nonexistent_module.sub import x\nregister('environment.toml')\n",
    ],
)
def test_a_noxfile_nox_could_not_load_is_not_read(tmp_path: Path, text: str) -> None:
    assert read(tmp_path, text) is None


def test_local_modules_beside_the_noxfile_resolve(tmp_path: Path) -> None:
    """nox runs in the noxfile's folder, so ``import helpers`` finds helpers.py there."""
    (tmp_path / "helpers.py").write_text("")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    text = "import helpers\nimport pkg.sub\n" + IMPORT + "register('environment.toml')\n"
    assert read(tmp_path, text) == specs(tmp_path, "environment.toml")
