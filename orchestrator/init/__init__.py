"""``envparity init``: write a starter ``environment.toml``, or convert one from an existing file.

``convert`` builds the text: from scratch (CPU-only, this interpreter's Python, torch and
numpy) or converted from a file the project has, one module per format:

- ``requirements``: pip requirements files (``*.txt``, ``*.in``);
- ``conda``: a conda ``environment.yml``, and conda's spec lists (``conda list --export``,
  ``@EXPLICIT``; ``*.txt`` files told apart from pip's by their content);
- ``pyproject``: PEP 621 ``[project]`` with uv's indexes and sources, and Poetry.

Each fills a ``draft.Draft``; ``writer.render`` turns it into TOML (tomlkit). Whatever has no
place in the spec is kept as a ``# not converted: ...`` comment; requirements that cannot be
locked with hashes (git, URL, path, editable) are too, and are returned so the CLI names them
on stderr; the conversion is refused only when nothing could be converted. Malformed input
raises one ``SpecError`` listing every problem with its file and line or key. The text always
passes ``orchestrator.spec.loads`` before it is returned. ``write_spec`` writes it through
``orchestrator.files.atomic_write`` and never replaces an existing spec unless asked to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path

from packaging.version import InvalidVersion, Version

from orchestrator import spec as specs
from orchestrator.compat import PYTORCH_INDEX
from orchestrator.errors import Problem, SpecError, UsageError
from orchestrator.init import python
from orchestrator.init.draft import TORCH_FAMILY, Draft, IndexDraft, Where, canonical
from orchestrator.init.pyproject import poetry_constraint
from orchestrator.init.writer import comment_text, render, toml_string
from orchestrator.messages import quote
from orchestrator.spec import Dependency

__all__ = [
    "Converted",
    "comment_text",
    "convert",
    "poetry_constraint",
    "spec_text",
    "toml_string",
    "write_spec",
]


@dataclass(frozen=True)
class Converted:
    """The text of a new spec, and the requirements left out because they cannot be locked
    (each ``FILE KEY: 'what' why``), for the CLI to name on stderr."""

    text: str
    unlockable: tuple[str, ...] = ()


def spec_text(source: Path | None, *, name: str | None) -> str:
    """The text of a new ``environment.toml``: a starter spec, or ``source`` converted."""
    return convert(source, name=name).text


def convert(source: Path | None, *, name: str | None, spec_dir: Path | None = None) -> Converted:
    """A new spec: a starter, or ``source`` converted. Local packages' paths are written
    relative to ``spec_dir``, the folder the spec goes to (default: the current one).

    Raises ``UsageError`` for an unusable argument and ``SpecError`` for malformed input, or
    for a source where nothing could be converted.
    """
    draft = _starter() if source is None else _convert(source, spec_dir or Path.cwd())
    draft.name = _choose_name(name, draft)
    python.choose(draft)
    if draft.cuda is None:  # CUDA-only packages (nvidia-*-cuXY) with no CUDA flavor to hold them
        for key, dep in list(draft.deps.items()):
            if dep.flavors == ("cpu",):
                draft.deps[key] = replace(dep, flavors=())  # the only flavor there is
            elif dep.flavors == ("cuda",):
                del draft.deps[key]
                draft.skip(
                    draft_where(draft),
                    dep.requirement(),
                    "a CUDA-only package, and nothing says which CUDA toolkit; add [cuda] "
                    'and this package with flavors = ["cuda"]',
                )
    if note := draft.cuda_only_note():
        draft.notes.append(note)
    _scope_to_dependencies(draft)
    _add_pytorch_indexes(draft)
    text = render(draft)
    specs.loads(text)  # every text we hand out must load; a failure here is a bug in this package
    return Converted(text=text, unlockable=tuple(str(p) for p in draft.unlockables))


def write_spec(path: Path, text: str, *, force: bool) -> None:
    """Write ``text`` to ``path`` with the one atomic writer; never replace an existing file
    unless ``force``. Raises ``UsageError`` when it exists, its folder does not, or the write
    fails (the old file is then left as it was)."""
    from orchestrator import files

    if path.exists() and not force:
        raise UsageError(f"{path} already exists; use --force to overwrite it")
    if not path.parent.is_dir():
        raise UsageError(f"{path}: folder {path.parent} does not exist")
    try:
        files.atomic_write(path, text)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror or exc}") from None


def draft_where(draft: Draft) -> Where:
    return Where(draft.origin, "")


def _choose_name(explicit: str | None, draft: Draft) -> str:
    if explicit is not None:
        if not specs._NAME_RE.match(explicit):
            raise UsageError(
                f"--name: {quote(explicit)} is not a name (letters, digits, '.', '_', "
                "'-'; starting with a letter or digit; at most 64)"
            )
        return explicit
    if draft.name is not None:
        if specs._NAME_RE.match(draft.name):
            return draft.name
        fixed = _sanitized_name(draft.name)
        draft.notes.append(
            f"name: {quote(draft.name)} from {draft.origin} is not a valid name; using {fixed!r}"
        )
        return fixed
    return _sanitized_name(Path.cwd().name)


def _sanitized_name(raw: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", raw).lstrip("._-")[:64].rstrip("-")
    return name or "project"


def _starter() -> Draft:
    draft = Draft(origin="")
    for name, fallback in (("torch", ">=2.0"), ("numpy", ">=1.24")):
        try:
            installed = Version(metadata.version(name)).public
        except (metadata.PackageNotFoundError, InvalidVersion):
            draft.deps[name] = Dependency(name=name, specifier=fallback)
        else:
            draft.deps[name] = Dependency(name=name, specifier=f"=={installed}")
    return draft


def _convert(source: Path, spec_dir: Path) -> Draft:
    from orchestrator.init import conda, pixi, pyproject, requirements, uv_lock

    if not source.exists():
        raise UsageError(f"--from {source}: no such file")
    if not source.is_file():
        raise UsageError(f"--from {source}: not a file")
    lower = source.name.lower()
    draft = Draft(origin=str(source), spec_dir=spec_dir)
    if lower == specs.SPEC_FILE:
        raise UsageError(f"--from {source}: this is already an envparity spec")
    if lower.endswith((".yml", ".yaml")):
        conda.from_environment_yml(draft, source)
    elif lower == "pixi.toml":
        pixi.from_pixi_toml(draft, source)
    elif lower == "uv.lock":
        uv_lock.from_uv_lock(draft, source)
    elif lower.endswith(".toml"):
        pyproject.from_pyproject(draft, source)
    elif lower.endswith((".txt", ".in")):
        if conda.is_spec_list(requirements.read_text(source, str(source))):
            conda.from_spec_list(draft, source)
        else:
            requirements.from_requirements(draft, source)
    else:
        raise UsageError(
            f"--from {source}: cannot tell the format from the name; expected a "
            "requirements file or a conda spec list (*.txt, *.in), a conda environment "
            "(*.yml, *.yaml), a pyproject.toml, a pixi.toml or a uv.lock"
        )
    if draft.problems or not (draft.deps or draft.local):
        problems = (
            draft.problems if draft.deps or draft.local else [*draft.unlockables, *draft.problems]
        )
        if not problems:
            problems = [Problem(str(source), "", "no packages to convert")]
        raise SpecError(problems)
    return draft


def _scope_to_dependencies(draft: Draft) -> None:
    """An index kept to some packages serves those the spec names (a source's list may name
    packages the project does not depend on directly: uv would not route them either)."""
    named = set(draft.deps) | set(draft.local)
    for index in list(draft.indexes):
        if not index.packages:
            continue
        kept = tuple(p for p in index.packages if canonical(p) in named)
        if not kept:
            draft.indexes.remove(index)
            draft.skip(
                draft_where(draft),
                f"the index {index.url} ({index.origin})",
                f"it serves only {', '.join(index.packages)}, which the project does not "
                "depend on directly",
            )
        index.packages = kept


def _add_pytorch_indexes(draft: Draft) -> None:
    """Give each flavor its torch build. PyPI's Linux torch is a CUDA build, so the cpu flavor
    needs the PyTorch CPU index ('envparity lock' refuses a cpu lock holding CUDA packages),
    and a CUDA flavor the index of its toolkit."""
    if not draft.has_torch():
        return
    wanted = [("cpu", f"{PYTORCH_INDEX}cpu")]
    if draft.cuda is not None:
        wanted.insert(0, ("cuda", f"{PYTORCH_INDEX}cu{draft.cuda.replace('.', '')}"))
    # Where the source keeps its PyTorch index to some packages (uv explicit, Poetry explicit,
    # PDM include_packages), the index added is kept to the torch packages, all of them: the
    # builds of torchvision and torchaudio must match torch's ('envparity lock' checks).
    scoped: tuple[str, ...] = ()
    if any(i.packages and i.flavors for i in draft.indexes):
        scoped = tuple(d.name for key, d in draft.deps.items() if key in TORCH_FAMILY)
    for flavor, url in wanted:
        if not any(flavor in i.flavors and i.kind == "index" for i in draft.indexes):
            origin = f"the torch build for the {flavor} flavor (added by envparity init)"
            draft.indexes.append(
                IndexDraft(url=url, kind="index", flavors=(flavor,), origin=origin, packages=scoped)
            )
