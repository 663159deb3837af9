"""A flavor's lock as a PEP 751 file, ``locks/pylock.<flavor>.toml``: one file for every system
the flavor is locked for, with URLs, sizes and hashes of the files, a marker per package and
the environments it was made for.

Made from uv's own PEP 751 output (``uv pip compile --format pylock.toml``), one document per
system, each resolved for that system's platform from the ``.txt`` lock's pins (``--no-deps``,
so both files hold exactly the same packages). They are merged here: a package every system
shares appears once (its wheels joined, no marker); one that only some systems have gets a
marker naming them (``sys_platform == 'darwin' and platform_machine == 'arm64'``). Each package
also records, under ``[packages.tool.envparity]``, the wheel each system installs (chosen by
``packaging.pylock.Pylock.select`` with that system's marker environment and wheel tags), so a
Nix flake can fetch exactly one file per package and system without evaluating markers.

The URLs are where uv found each file when it locked: the index's own, or, through a mirror
(``ENVPARITY_MIRRORS``), the mirror's, with ``index`` naming the spec's index it stands in for.
A file that came through a mirror of a PyTorch index gets that index's own URL back
(``https://download.pytorch.org/whl/cpu/<file name, percent-encoded>``, the layout of the
index's pages), so the committed pylock is the same on a machine with the mirror as without
it; for any other mirrored index the mirror's URL stays (its layout is not known).
The ``.txt`` locks carry no URLs at all (sources are passed at install time).

Spec: https://packaging.python.org/en/latest/specifications/pylock-toml/ (PEP 751); the
validator and selector: packaging >= 26.1 ``packaging.pylock``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote, urlparse

from orchestrator.compat import PYTORCH_INDEX
from orchestrator.errors import ToolError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

# The marker that holds on each system, and what a marker environment says there.
_SYSTEM_FACTS = {
    "x86_64-linux": ("linux", "x86_64", "Linux"),
    "aarch64-linux": ("linux", "aarch64", "Linux"),
    "aarch64-darwin": ("darwin", "arm64", "Darwin"),
    "x86_64-darwin": ("darwin", "x86_64", "Darwin"),
}


def marker(system: str) -> str:
    """The PEP 508 marker true on ``system`` and no other (``sys_platform``, ``platform_machine``)."""
    platform, machine, _ = _SYSTEM_FACTS[system]
    return f"sys_platform == '{platform}' and platform_machine == '{machine}'"


def environment(system: str, python: str) -> dict[str, str]:
    """A PEP 508 marker environment for CPython ``python`` ("3.11" or "3.11.9") on ``system``."""
    platform, machine, name = _SYSTEM_FACTS[system]
    full = python if python.count(".") == 2 else f"{python}.0"
    return {
        "implementation_name": "cpython",
        "implementation_version": full,
        "os_name": "posix",
        "platform_machine": machine,
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": name,
        "platform_version": "",
        "python_full_version": full,
        "python_version": ".".join(python.split(".")[:2]),
        "sys_platform": platform,
    }


def wheel_tags(system: str, python: str, *, macos: str) -> list[Any]:
    """The wheel tags ``system`` accepts, best first, as uv's ``--python-platform`` targets them:
    manylinux_2_28 (and older manylinux, then plain linux) on Linux; macOS ``macos`` and older
    on darwin."""
    from packaging import tags

    version = tuple(int(p) for p in python.split(".")[:2])
    _, machine, _ = _SYSTEM_FACTS[system]
    if system.endswith("-linux"):
        oldest = 5 if machine == "x86_64" else 17
        legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
        platforms: list[str] = []
        for minor in range(28, oldest - 1, -1):
            platforms.append(f"manylinux_2_{minor}_{machine}")
            if minor in legacy:
                platforms.append(f"{legacy[minor]}_{machine}")
        platforms.append(f"linux_{machine}")
    else:
        major, minor = (int(p) for p in macos.split("."))
        platforms = list(tags.mac_platforms((major, minor), machine))
    return [
        *tags.cpython_tags(version, platforms=platforms),
        *tags.compatible_tags(version, f"cp{version[0]}{version[1]}", platforms),
    ]


def _without_times(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A file entry without ``upload-time``: optional in PEP 751, and a TOML datetime, which
    Nix's ``builtins.fromTOML`` refuses ("Dates and times are not supported")."""
    return {k: v for k, v in entry.items() if k != "upload-time"}


def _file_name(entry: Mapping[str, Any]) -> str:
    where = entry.get("url") or entry.get("path") or ""
    return unquote(urlparse(where).path.rsplit("/", 1)[-1]) if where else ""


def merge(
    documents: Mapping[str, Mapping[str, Any]],
    *,
    python: str,
    macos: str,
    mirrored: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One PEP 751 document from uv's per-system ones (``{system: parsed pylock.toml}``).

    ``mirrored`` maps a URL prefix of a mirror to the spec's index it stands in for; packages
    whose files come from there get that ``index``. Raises ``ToolError`` when the result does
    not validate, or a system cannot select a file for a package (``packaging.pylock``)."""
    from packaging.pylock import Pylock, PylockSelectError, PylockValidationError

    systems = list(documents)
    entries: dict[tuple[str, str], dict[str, Any]] = {}
    seen: dict[tuple[str, str], list[str]] = {}
    for system, document in documents.items():
        for package in document.get("packages", []):
            key = (package["name"], package["version"])
            entry = entries.setdefault(
                key, {k: v for k, v in package.items() if k not in ("marker", "wheels")}
            )
            if "sdist" in entry:
                entry["sdist"] = _without_times(entry["sdist"])
            wheels = {_file_name(w): w for w in entry.get("wheels", [])}
            for wheel in package.get("wheels", []):
                wheels.setdefault(_file_name(wheel), _without_times(wheel))
            if wheels:
                entry["wheels"] = [
                    {"name": n, **{k: v for k, v in w.items() if k != "name"}}
                    for n, w in sorted(wheels.items())
                ]
            seen.setdefault(key, []).append(system)
    packages = []
    for key in sorted(entries):
        entry = entries[key]
        if seen[key] != systems:
            entry["marker"] = " or ".join(f"({marker(s)})" for s in seen[key])
        for prefix, index in (mirrored or {}).items():
            urls = [w.get("url", "") for w in entry.get("wheels", [])]
            urls.append(entry.get("sdist", {}).get("url", ""))
            if any(u.startswith(prefix) for u in urls if u):
                entry["index"] = index
                if index.startswith(PYTORCH_INDEX):
                    entry["wheels"] = [
                        _unmirrored(w, prefix, index) for w in entry.get("wheels", [])
                    ]
        packages.append(_ordered(entry))
    data: dict[str, Any] = {
        "lock-version": "1.0",
        "environments": [marker(s) for s in systems],
        "requires-python": f"=={python}" if python.count(".") == 2 else f"=={python}.*",
        "created-by": "envparity",
        "packages": packages,
    }
    try:
        lock = Pylock.from_dict(data)
        choices: dict[int, dict[str, Any]] = {}
        for system in systems:
            tags = wheel_tags(system, python, macos=macos)
            chosen = lock.select(environment=environment(system, python), tags=tags)  # type: ignore[arg-type]
            for package, dist in chosen:
                i = lock.packages.index(package)
                tool = choices.setdefault(i, {})
                if getattr(dist, "filename", "").endswith(".whl"):
                    tool.setdefault("wheels", {})[system] = dist.filename  # type: ignore[union-attr]
                else:  # an sdist: the uv shell builds it, the pure Nix environment cannot
                    tool.setdefault("sdist", []).append(system)
    except (PylockValidationError, PylockSelectError) as exc:
        raise ToolError(f"pylock: uv's output does not make a valid PEP 751 lock: {exc}") from None
    for i, tool in choices.items():
        packages[i]["tool"] = {"envparity": tool}
    Pylock.from_dict(data)  # still valid with the tool tables
    return data


def _unmirrored(wheel: Mapping[str, Any], prefix: str, index: str) -> dict[str, Any]:
    """``wheel`` with a mirror's URL replaced by the PyTorch index's own URL of the file."""
    url = wheel.get("url", "")
    if not url.startswith(prefix):
        return dict(wheel)
    return {**wheel, "url": f"{index.rstrip('/')}/{quote(_file_name(wheel))}"}


_ORDER = ("name", "version", "marker", "requires-python", "index", "sdist", "wheels", "tool")


def _ordered(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {k: entry[k] for k in sorted(entry, key=lambda k: (*_ORDER, k).index(k))}


def dumps(data: Mapping[str, Any]) -> str:
    """TOML text of a pylock document, laid out like uv's: one ``[[packages]]`` table per
    package, each file an inline table on a line of its own."""
    import tomlkit

    doc = tomlkit.document()
    for key, value in data.items():
        if key != "packages":
            doc[key] = value
    tables = tomlkit.aot()
    for package in data["packages"]:
        table = tomlkit.table()
        for key, value in package.items():
            if key == "wheels":
                array = tomlkit.array()
                array.multiline(True)
                for wheel in value:
                    array.append(_inline(wheel))
                table[key] = array
            elif key == "sdist":
                table[key] = _inline(value)
            elif key == "tool":
                tool = tomlkit.table(is_super_table=True)
                envparity = tomlkit.table()
                for k, v in value["envparity"].items():
                    envparity[k] = _inline(v) if isinstance(v, Mapping) else v
                tool["envparity"] = envparity
                table["tool"] = tool
            else:
                table[key] = value
        tables.append(table)
    doc["packages"] = tables
    return tomlkit.dumps(doc)


def _inline(value: Mapping[str, Any]) -> Any:
    import tomlkit

    table = tomlkit.inline_table()
    for k, v in value.items():
        table[k] = _inline(v) if isinstance(v, Mapping) else v
    return table


def loads(text: str) -> dict[str, Any]:
    """A pylock document from its text (header comments and all)."""
    return tomllib.loads(text)
