"""Which Python a converted spec asks for, and why.

A source gives a pinned version (conda's ``python=3.10``, a ``# python: 3.10`` hint), which is
kept, or a range (``requires-python = ">=3.10"``, Poetry's ``python = "^3.10"``, conda's
``python>=3.9,<3.12``), or nothing. From a range, or from nothing, ``choose`` takes:

1. this interpreter's minor, when the range allows it and torch has wheels for it: the host
   target then runs the Python the spec names;
2. else the newest minor the range allows that torch has wheels for;
3. else (torch has none in the range) the newest minor the range allows, and ``envparity
   init`` warns with the compatibility check's fix.

"torch has wheels for" is read from the compatibility table (``orchestrator/data/compat.toml``:
the Linux x86_64 wheel tags each torch release has on PyPI, ``python``), over the releases the
spec's torch requirement admits (with the CUDA build, for a CUDA spec). A torch requirement
the table does not cover (a release older or newer than the table) does not narrow the
choice, and the reason says so. Other packages' wheels are not known here: ``envparity lock``
names a package that has none for the chosen Python.
"""

from __future__ import annotations

import sys

from packaging.specifiers import SpecifierSet

from orchestrator import spec as specs
from orchestrator.init.draft import Draft, Where, pinned_version


def _key(minor: str) -> tuple[int, ...]:
    return tuple(int(p) for p in minor.split("."))


def _span(minors: list[str]) -> str:
    return minors[0] if len(minors) == 1 else f"{minors[0]} to {minors[-1]}"


def running() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def allows(range_: str, minor: str) -> bool:
    """Whether a range (alternatives joined by ``||``) admits some release of ``minor``."""
    alternatives = [SpecifierSet(a) for a in range_.split("||")]
    return any(
        a.contains(f"{minor}.{patch}", prereleases=True)
        for a in alternatives
        for patch in range(30)
    )


def torch_pythons(draft: Draft) -> tuple[list[str], str] | None:
    """The Python minors that the torch releases the draft admits have wheels for, and those
    releases in words (``"torch ==2.7.0 (2.7.0)"``); None when there is no torch, or the
    table has none of the releases it admits."""
    from orchestrator import compat

    torch = draft.deps.get("torch")
    if torch is None:
        return None
    specifier = SpecifierSet(torch.specifier)
    table = compat.table()
    admitted = [v for v in table.versions if specifier.contains(v, prereleases=True)]
    if draft.cuda is not None:
        admitted = [v for v in admitted if table.release_of(v).has_build(draft.cuda)] or admitted  # type: ignore[union-attr]
    if not admitted:
        return None
    minors = sorted(
        {p for v in admitted for p in table.release_of(v).python},  # type: ignore[union-attr]
        key=_key,
    )
    what = f"torch {torch.specifier}" if torch.specifier else "torch"
    if len(admitted) > 1:
        what += f" ({_span(admitted)})"
    return minors, what


def known_minors() -> list[str]:
    """The Python minors with torch wheels in the table (3.8 to the newest), and this one."""
    from orchestrator import compat

    minors = {p for r in compat.table().releases for p in r.python} | {running()}
    return sorted(minors, key=_key)


def choose(draft: Draft) -> None:
    """Set ``draft.python`` (and ``python_origin``, the reason) when the source pinned none."""
    if draft.python is not None:
        return
    here = running()
    range_ = draft.python_range
    given = draft.python_range_origin if range_ else ""
    known = known_minors()
    candidates = [m for m in known if not range_ or allows(range_, m)]
    torch = torch_pythons(draft)
    fits = [m for m in candidates if torch is None or m in torch[0]]
    wheels = f"{torch[1]} has wheels for {_span(torch[0])}" if torch else ""
    if here in fits:
        chosen = here
        why = "this interpreter's, " + (
            f"which {given} allows" if range_ else f"as {draft.origin or 'the starter'} names none"
        )
    elif fits:
        chosen = fits[-1]
        why = f"the newest minor that {given or 'envparity knows'} allows"
        if torch:
            why += " and " + wheels
            wheels = ""
        why += f" (this interpreter is {here})"
    elif candidates:  # torch has no wheels in the range: the minor nearest to those it has
        assert torch is not None
        low, high = _key(torch[0][0]), _key(torch[0][-1])
        chosen = min(candidates, key=lambda m: max(_key(m)[1] - high[1], low[1] - _key(m)[1]))
        why = f"the minor nearest to torch's that {given} allows, though {wheels} only"
        wheels = ""
    else:
        chosen = here
        why = f"this interpreter's: {given} allows no Python from {known[0]} to {known[-1]}"
    if wheels:
        why += f"; {wheels}"
    if torch is None and "torch" in draft.deps:
        why += "; the compatibility table has no torch release the spec admits"
    draft.python, draft.python_origin, draft.python_chosen = chosen, why, True


def python_from(draft: Draft, specifier: str, origin: str, where: Where) -> None:
    """One pinned version is kept as given; a range is kept for ``init.python.choose``, which
    picks a minor from it (below). ``specifier`` may hold alternatives joined by ``||`` (Poetry). A
    second range narrows the first (both apply: Poetry 2's ``[project]`` and
    ``[tool.poetry.dependencies]``)."""
    pinned = pinned_version(specifier)
    if pinned is not None and specs._PYTHON_RE.match(pinned):
        draft.set_python(pinned, origin, where)
        return
    if not any(allows(specifier, f"3.{minor}") for minor in range(100)):
        draft.problem(where, f"python {specifier!r} allows no Python 3 version")
        return
    if draft.python_range:
        both = [
            f"{a},{b}".strip(",")
            for a in draft.python_range.split("||")
            for b in specifier.split("||")
        ]
        if not any(allows("||".join(both), m) for m in known_minors()):
            draft.skip(where, f"python {specifier}", f"python is already {draft.python_range}")
            return
        draft.python_range = "||".join(both)
        draft.python_range_origin += f" and {origin}"
        return
    draft.python_range, draft.python_range_origin = specifier, origin
