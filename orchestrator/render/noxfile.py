"""A small generated ``noxfile.py`` (``[ci] noxfile = true``): the sessions of
``orchestrator.nox_sessions`` for a project that has no noxfile of its own. A project with one
adds the two lines of its body to it instead (README: "nox sessions")."""

from __future__ import annotations

from orchestrator import files
from orchestrator.spec import Spec

NOXFILE = "noxfile.py"


def render_noxfile(spec: Spec) -> files.Generated:
    name = spec.path.name
    body = (
        f'"""nox sessions over {name}: probe(<target>) per target, verify, compare."""\n'
        "\n"
        "from orchestrator.nox_sessions import register\n"
        "\n"
        f"register({name!r})\n"
    )
    return files.Generated(
        NOXFILE, body, files.inputs_hash({"format": 1, "spec": name}), spec_name=name
    )
