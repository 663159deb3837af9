"""A small generated ``noxfile.py``: the sessions of ``orchestrator.nox_sessions`` for a project
that has no noxfile of its own, so that every session the CI jobs call exists. A project with
one adds the two lines of its body to it instead (docs/cli.md: "nox sessions").

``[ci] noxfile``: true, render writes it (and refuses to replace a noxfile envparity did not
write); false, never (the project's own registers the sessions; ``check`` loads it to see);
unset, render writes it unless the project has a noxfile of its own.
"""

from __future__ import annotations

from orchestrator import files
from orchestrator.spec import Spec

NOXFILE = "noxfile.py"


def generated_noxfile(spec: Spec) -> bool:
    """Whether render writes ``noxfile.py`` for ``spec`` (see the module docstring)."""
    if spec.ci is None or spec.ci.noxfile is False:
        return False
    if spec.ci.noxfile:
        return True
    text = files.read(spec.root / NOXFILE, NOXFILE)
    return text is None or files.read_header(text) is not None


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
