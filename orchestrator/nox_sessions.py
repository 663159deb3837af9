"""nox sessions for a user's project, one per target, without copying code into it.

A project's ``noxfile.py`` (or the one ``envparity render`` writes when ``[ci] noxfile = true``)
calls::

    from orchestrator.nox_sessions import register
    register("environment.toml")

which registers, from the spec's targets:

- ``probe(<target>)`` for each target: provision it, probe it twice, compare the runs with each
  other and with the references (``envparity verify --targets <target>``); ``-- --out DIR``
  copies the fingerprints to DIR (what each CI job uploads);
- ``verify``: every target (or ``verify_targets``), compared with each other and the
  references (``envparity verify``; arguments after ``--`` are passed on: ``--record``);
- ``compare``: fingerprints from folders (the CI artifacts) with each other and with
  ``fingerprints/`` (``envparity compare --references``); ``-- DIR... [--summary FILE]
  [--report FILE] [--record-to DIR]``.

The sessions run envparity in nox's own interpreter (``venv_backend="none"``: envparity is
installed beside nox, ``uvx --with 'envparity==0.1.0' nox``) unless ``setup`` is given, which
then prepares a session virtualenv (this repository installs its lock there).

``registered`` says which of them a noxfile registers (``check`` uses it): read with ``ast``
(``noxfile_reader``) when that shows them all, else as ``nox -l --json`` lists them. nox itself
is imported by ``register`` only, so that naming and listing sessions stays light.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from orchestrator import references
from orchestrator.errors import ToolError
from orchestrator.spec import SPEC_FILE, TARGET_NAMES, Spec, load

PROBE = "probe"
VERIFY = "verify"
COMPARE = "compare"
COMPARE_USAGE = "usage: nox -s compare -- DIR... [--summary FILE] [--report FILE] [--record-to DIR]"


def probe_session(target: str) -> str:
    """The name nox gives the probe session of ``target``: ``probe(venv)``."""
    return f"{PROBE}({target})"


def probe_targets(spec: Spec) -> list[str]:
    """The targets ``register`` makes a ``probe(<target>)`` session for, in ``TARGET_NAMES``
    order."""
    return [t for t in TARGET_NAMES if t in spec.targets]


def session_names(spec: Spec) -> list[str]:
    """Every session ``register`` registers for ``spec``: ``probe(<target>)``..., ``verify``,
    ``compare``."""
    return [*(probe_session(t) for t in probe_targets(spec)), VERIFY, COMPARE]


def registered(noxfile: Path, wanted: Iterable[str], spec: Spec | None = None) -> set[str]:
    """Which of the session names ``wanted`` the noxfile registers.

    Read without running it (``noxfile_reader.read``: ``register(...)`` calls, whose sessions
    come from the spec they name, reusing ``spec`` when it is that file, and ``@nox.session``
    functions) when the reading shows every one of ``wanted``; else as nox itself lists them
    (``nox --noxfile NOXFILE -l --json -k ...``, in this interpreter, in the noxfile's folder),
    which is the answer whenever one seems missing.

    Raises ``ToolError`` (with nox's last line) when nox cannot load the noxfile.
    """
    wanted = set(wanted)
    if wanted <= _read_statically(noxfile, spec):
        return wanted
    from orchestrator import process

    words = sorted({name.split("(")[0] for name in wanted})
    done = process.run(
        [
            sys.executable,
            "-m",
            "nox",
            "--noxfile",
            noxfile,
            "-l",
            "--json",
            "-k",
            " or ".join(words),
        ],
        cwd=noxfile.parent,
        check=False,
        timeout=120,
    )
    try:
        listed = json.loads(done.stdout) if done.returncode == 0 else None
    except ValueError:
        listed = None
    if not isinstance(listed, list):
        last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        raise ToolError(f"nox could not load it ({last})")
    return {str(entry.get("session")) for entry in listed if isinstance(entry, dict)} & wanted


def _read_statically(noxfile: Path, spec: Spec | None) -> set[str]:
    """The sessions ``noxfile_reader`` vouches for (empty when it cannot read the file)."""
    from orchestrator import noxfile_reader
    from orchestrator.errors import EnvparityError

    reading = noxfile_reader.read(noxfile, SPEC_FILE)
    if reading is None:
        return set()
    found = set(reading.sessions)
    for path in reading.specs:
        if spec is not None and path == spec.path.resolve():
            found.update(session_names(spec))
            continue
        try:
            found.update(session_names(load(path)))
        except EnvparityError:  # nox's load would fail as well: nox says how
            continue
    return found


def register(
    spec_file: str | Path = SPEC_FILE,
    *,
    setup: Callable[[Any], None] | None = None,
    python: str | None = None,
    verify_targets: Sequence[str] | None = None,
) -> list[str]:
    """Register the sessions above with nox; returns their names.

    ``spec_file`` is read now (a bad spec raises ``SpecError`` naming the file and key);
    ``setup(session)`` installs envparity into a session virtualenv of ``python`` (default:
    the spec's Python), else the sessions run in nox's interpreter.
    """
    import nox

    spec = load(spec_file)
    spec_arg = str(spec_file)
    targets = probe_targets(spec)
    backend = None if setup else "none"
    py = (python or spec.environment.python_minor) if setup else None

    def envparity(session: Any, *args: str) -> None:
        if setup is not None:
            setup(session)
            session.run("envparity", "--spec", spec_arg, *args)
        else:
            session.run(
                sys.executable, "-m", "orchestrator", "--spec", spec_arg, *args, external=True
            )

    @nox.session(name=PROBE, python=py, venv_backend=backend)
    @nox.parametrize("target", targets, ids=targets)
    def probe(session: Any, target: str) -> None:
        """Provision one target, probe it twice, compare with the references."""
        envparity(session, "verify", "--targets", target, *session.posargs)

    @nox.session(name=VERIFY, python=py, venv_backend=backend)
    def verify(session: Any) -> None:
        """Every target, compared with each other and with fingerprints/."""
        asked = "--targets" in session.posargs
        chosen = ["--targets", *verify_targets] if verify_targets and not asked else []
        envparity(session, "verify", *chosen, *session.posargs)

    @nox.session(name=COMPARE, python=py, venv_backend=backend)
    def compare(session: Any) -> None:
        """Fingerprints from folders (CI artifacts) with each other and with fingerprints/."""
        args = list(session.posargs)
        first_option = next((i for i, a in enumerate(args) if a.startswith("-")), len(args))
        folders, options = args[:first_option], args[first_option:]
        if not folders:
            session.error(COMPARE_USAGE)
        found = sorted(str(p) for d in folders for p in Path(d).rglob("*.json"))
        if not found:
            session.error(f"no fingerprints (*.json) under {', '.join(folders)}")
        root = str(spec.root / references.FOLDER)
        envparity(session, "compare", "--references", root, *found, *options)

    return [PROBE, VERIFY, COMPARE]
