"""``flake.nix``: a devShell per system with the spec's Python, CUDA toolchain, system packages
and launch environment; its shell hook builds ``.venv`` from the lock, hash-checked, with uv.

What the flake takes from nixpkgs follows the pinned nixpkgs' layout (see docs/targets.md for
the pin and the nixpkgs files it was read from):

- CUDA: the split redistributable packages of ``cudaPackages_X_Y`` (``CUDA_PACKAGES``), not
  the deprecated ``cudatoolkit`` wrapper. The torch wheels in the lock bring their own CUDA
  libraries (the ``nvidia-*`` wheels), so the shell's toolkit is there to build extensions:
  ``nvcc`` and the headers and libraries extensions compile and link against. It is not put on
  ``LD_LIBRARY_PATH``, where it would shadow the wheels' own copies.
- Unfree: allowed by nixpkgs' own ``_cuda.lib.allowUnfreeCudaPredicate`` (free licences or
  NVIDIA's, compound licences included), passed the way nixpkgs' CUDA docs do since
  NixOS/nixpkgs#437723, as a ``config`` function of ``{ pkgs }``.
- System packages: apt names mapped to nixpkgs attributes by ``orchestrator/data/
  system_packages.toml`` (``nix_packages``); library packages' ``lib/`` folders go on the
  shell's ``LD_LIBRARY_PATH``. Unmapped names are passed through and reported
  (``flake_warnings``).
- The GPU driver (``driver_hook``): on NixOS ``/run/opengl-driver/lib``; elsewhere only the
  host driver's own libraries (``libcuda.so*``, ``libnvidia-*.so*``) are linked into
  ``.envparity/nix-driver``, which the shell adds, never the host's whole library folder.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from orchestrator import lock
from orchestrator.render.escape import (
    nix_attr,
    nix_indented_string,
    nix_list,
    nix_string,
    shell_line,
    shell_word,
)
from orchestrator.spec import NixTarget, Spec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

# Binary caches for the CUDA packages (cache.nixos.org does not carry unfree software). Nix uses
# them only with `--accept-flake-config` (the nix target passes it) or when they are trusted in
# nix.conf. Sources, read 2026-11-30:
#  - cache.nixos-cuda.org: the Nixpkgs CUDA team's Hydra (nixos-cuda/infra README.md; the key
#    from nixos-cuda/infra hosts/ada/cache.nix), building nixos-unstable-small and the current
#    release (nixos-cuda/hydra-jobsets README.md, which calls it a cache for development). It
#    replaced nix-community.cachix.org, which stopped building CUDA in November 2025
#    (nix-community/infra#2038), and cuda-maintainers.cachix.org before it.
#  - cache.flox.dev: Flox's cache, which redistributes CUDA builds of nixpkgs under an agreement
#    with NVIDIA (discourse.nixos.org/t/69189, "Nix, Flox, Nvidia Opening Up CUDA Redistribution").
CUDA_CACHES = (
    (
        "https://cache.nixos-cuda.org",
        "cache.nixos-cuda.org:74DUi4Ye579gUqzH4ziL9IyiJBlDpMRn9MBN8oNan9M=",
    ),
    ("https://cache.flox.dev", "flox-cache-public-1:7F4OyH7ZCnFhcze3fJdfyXYLQw/aV7GEed86nQ7IsOs="),
)
# The split CUDA packages the shell gets: the compiler, the runtime and its headers, CCCL
# (Thrust/CUB, which most extensions include), cuBLAS and cuDNN.
CUDA_PACKAGES = ("cuda_nvcc", "cuda_cudart", "cuda_cccl", "libcublas", "cudnn")
SYSTEM_PACKAGES_FILE = Path(__file__).resolve().parent.parent / "data" / "system_packages.toml"
# Where the shell links the host driver's libraries on non-NixOS machines (git-ignored).
DRIVER_DIR = ".envparity/nix-driver"
NIXOS_DRIVER_DIR = "/run/opengl-driver/lib"
# The host library folders searched for the driver, in order (the first copy of a name wins).
HOST_LIBRARY_DIRS = (
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/lib64",
)
_REV_RE = re.compile(r"^github:NixOS/nixpkgs/([0-9a-f]{40})$")


@dataclass(frozen=True)
class SystemPackage:
    """One apt package name as the flake provides it."""

    nix: tuple[str, ...]  # nixpkgs attributes
    library: bool  # its lib/ folders go on LD_LIBRARY_PATH


@cache
def system_package_map() -> dict[str, SystemPackage]:
    """apt name -> ``SystemPackage``, from ``orchestrator/data/system_packages.toml``."""
    data = tomllib.loads(SYSTEM_PACKAGES_FILE.read_text(encoding="utf-8"))
    return {
        name: SystemPackage(tuple(entry["nix"]), bool(entry.get("library", False)))
        for name, entry in data["packages"].items()
    }


@dataclass(frozen=True)
class NixPackages:
    """The spec's ``[system] packages`` as nixpkgs attributes (sorted, unique)."""

    attrs: tuple[str, ...]  # every attribute, for the shell's packages
    libraries: tuple[str, ...]  # those whose lib/ goes on LD_LIBRARY_PATH
    unmapped: tuple[str, ...]  # apt names neither in the map nor overridden: passed through


def nix_packages(spec: Spec) -> NixPackages:
    """Map ``spec.system.packages`` with the spec's ``[system] nix`` overrides first, then
    ``system_package_map()``; an unknown name is used as the attribute itself (and listed in
    ``unmapped``). A package is a library when the map says so, or, for overridden and unmapped
    names, when its apt name starts with ``lib`` (Debian's naming of library packages)."""
    known = system_package_map()
    attrs: set[str] = set()
    libraries: set[str] = set()
    unmapped: list[str] = []
    for name in spec.system.packages:
        entry = known.get(name)
        found: tuple[str, ...]
        if name in spec.system.nix:
            found = (spec.system.nix[name],)
            library = entry.library if entry else name.startswith("lib")
        elif entry is not None:
            found, library = entry.nix, entry.library
        else:
            found, library = (name,), name.startswith("lib")
            unmapped.append(name)
        attrs.update(found)
        if library:
            libraries.update(found)
    return NixPackages(tuple(sorted(attrs)), tuple(sorted(libraries)), tuple(unmapped))


def flake_warnings(spec: Spec) -> list[str]:
    """What ``render`` and ``check`` warn about the flake: system packages with no known nixpkgs
    attribute, each with the override that fixes it."""
    if "nix" not in spec.targets:
        return []
    return [
        f"{spec.path.name}: system.packages: {name!r} has no known nixpkgs attribute; flake.nix "
        f"uses pkgs.{name}, which may not exist: add [system] nix = {{ {json.dumps(name)} = "
        '"<nixpkgs attribute>" }'
        for name in nix_packages(spec).unmapped
    ]


def flake_lock_drift(spec: Spec) -> str | None:
    """``None`` when ``flake.lock`` is absent or locks nixpkgs at the spec's pinned commit;
    otherwise what is wrong, with the command that fixes it. ``flake.lock`` is written by the
    first ``nix develop`` and committed; a stale one would give every user another nixpkgs than
    the spec names."""
    target = spec.targets.get("nix")
    path = spec.root / "flake.lock"
    if not isinstance(target, NixTarget) or not path.is_file():
        return None
    pinned = _REV_RE.match(target.nixpkgs)
    fix = "run: nix flake update nixpkgs (or delete flake.lock; the next nix develop writes it)"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        root = data["nodes"][data["root"]]
        locked = data["nodes"][root["inputs"]["nixpkgs"]]["locked"]
        rev = locked.get("rev")
        where = rev or f"{locked.get('type')}:{locked.get('path') or locked.get('url')}"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"flake.lock: cannot read the nixpkgs input's locked revision ({e!r}); {fix}"
    if pinned is None:  # a branch or another flake: nothing exact to compare with
        return None
    if rev != pinned.group(1):
        return (
            f"flake.lock: nixpkgs is locked at {where} but {spec.path.name} pins "
            f"targets.nix.nixpkgs = {target.nixpkgs!r}; {fix}"
        )
    return None


_DRIVER_HOOK = """\
# The GPU driver's libraries and nothing else from the host (see the note at the end).
envparity_driver="${ENVPARITY_NIXOS_DRIVER:-@NIXOS@}"
if [ ! -d "$envparity_driver" ]; then
  envparity_driver="$PWD/@DRIVER_DIR@"
  rm -rf "$envparity_driver" && mkdir -p "$envparity_driver"
  for envparity_dir in ${ENVPARITY_HOST_LIBS:-@HOST_DIRS@}; do
    for envparity_so in "$envparity_dir"/libcuda.so* "$envparity_dir"/libnvidia-*.so*; do
      if [ -e "$envparity_so" ] && [ ! -e "$envparity_driver/${envparity_so##*/}" ]; then
        ln -s "$envparity_so" "$envparity_driver/"
      fi
    done
  done
  if [ ! -e "$envparity_driver/libcuda.so.1" ]; then
    echo "envparity: no NVIDIA driver (libcuda.so.1) found on this machine;" \\
      "CUDA will not be usable in this shell" >&2
  fi
fi
"""


def driver_hook() -> str:
    """Shell code that sets ``envparity_driver`` to a folder holding the GPU driver's libraries:
    NixOS's ``/run/opengl-driver/lib`` when it exists, else ``.envparity/nix-driver`` (re)made
    with links to the host driver's ``libcuda.so*`` and ``libnvidia-*.so*`` only (the first
    folder of ``HOST_LIBRARY_DIRS`` holding a name wins). The search can be changed with
    ``ENVPARITY_NIXOS_DRIVER`` and ``ENVPARITY_HOST_LIBS`` (space-separated folders)."""
    return (
        _DRIVER_HOOK.replace("@NIXOS@", NIXOS_DRIVER_DIR)
        .replace("@DRIVER_DIR@", DRIVER_DIR)
        .replace("@HOST_DIRS@", " ".join(HOST_LIBRARY_DIRS))
    )


def venv_hook(spec: Spec) -> str:
    """The shell hook: (re)build .venv from the lock when the lock's hash changes, then enter it."""
    flavor = spec.flavor_of("nix")
    lines = [
        f"envparity_lock={shell_word(lock.LockTarget(flavor, spec.environment.systems[0]).path)}",
        'if [ "$(uname -m)" = aarch64 ] && [ -f "${envparity_lock%.txt}-aarch64.txt" ]; then '
        'envparity_lock="${envparity_lock%.txt}-aarch64.txt"; fi',
        'envparity_want=$(sha256sum "$envparity_lock" | cut -d" " -f1)',
        "# .venv/.envparity marks a venv this hook made; any other .venv is the user's: kept.",
        "if [ -d .venv ] && [ ! -f .venv/.envparity ]; then",
        '  echo "envparity: .venv was not made by envparity; leaving it as it is" \\',
        '    "(move it away to get one built from $envparity_lock)" >&2',
        'elif [ "$(cat .venv/.envparity-lock 2>/dev/null)" != "$envparity_want" ]; then',
        '  echo "envparity: building .venv from $envparity_lock" >&2',
        "  rm -f .venv/.envparity-lock  # a failed build must not pass for the old lock's venv",
        '  if uv venv --quiet --allow-existing --python "$ENVPARITY_PYTHON" .venv \\',
        "    && touch .venv/.envparity \\",
        "    && "
        + shell_line(
            [
                "uv",
                "pip",
                "sync",
                "--quiet",
                "--python",
                ".venv/bin/python",
                "--require-hashes",
                *lock.install_args(spec, flavor),
            ]
        )
        + ' "$envparity_lock"'
        + "".join(
            " \\\n    && " + shell_line(c)
            for c in lock.local_install_commands(spec, flavor, ".venv/bin/python")
        )
        + "; then",
        '    echo "$envparity_want" > .venv/.envparity-lock',
        "  else",
        '    echo "envparity: could not build .venv from $envparity_lock" >&2',
        "  fi",
        "fi",
        "if [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi",
    ]
    return "\n".join(lines) + "\n"


def _indent(text: str, width: int) -> str:
    # Indent every line but the first, which follows code already on its line.
    pad = " " * width
    lines = text.split("\n")
    return "\n".join([lines[0]] + [pad + line if line else line for line in lines[1:]])


_DRIVER_NOTE = """\
  # The GPU driver is not part of this flake: it belongs to the machine, and must be at least
  # the CUDA toolkit's minimum (see docs/compatibility.md).
  #  - NixOS: enable hardware.nvidia (and hardware.graphics); the driver's libraries appear in
  #    /run/opengl-driver/lib, which the shell puts on LD_LIBRARY_PATH.
  #  - Other Linux: the shell links the host driver's libcuda.so* and libnvidia-*.so* (found in
  #    the usual library folders, or those named by ENVPARITY_HOST_LIBS) into
  #    .envparity/nix-driver and puts only that folder on LD_LIBRARY_PATH, so the rest of the
  #    host's libraries (an older glibc's, say) never shadow the shell's.
  # Binary caches: Nix uses nixConfig's caches only with --accept-flake-config, or when they
  # are in nix.conf's trusted-substituters (multi-user installs)."""


def render_flake(spec: Spec) -> str:
    target = spec.targets.get("nix")
    nixpkgs = getattr(target, "nixpkgs", "github:NixOS/nixpkgs/nixos-unstable")
    env = spec.determinism.launch_env()
    python_attr = "python" + spec.environment.python_minor.replace(".", "")
    system = nix_packages(spec)
    packages = [f"pkgs.{python_attr}", "pkgs.uv"]
    packages += [f"pkgs.{nix_attr(a)}" for a in system.attrs]
    cuda = spec.cuda
    if cuda is not None:
        packages += [f"cuda.{p}" for p in CUDA_PACKAGES]
    libs = ["pkgs.stdenv.cc.cc.lib", "pkgs.zlib"]
    libs += [f"pkgs.{nix_attr(a)}" for a in system.libraries if a != "zlib"]

    out = [
        "{",
        f"  description = {nix_string('envparity environment ' + spec.environment.name)};",
        "",
        f"  inputs.nixpkgs.url = {nix_string(nixpkgs)};",
        "",
    ]
    if cuda is not None:
        out += [
            "  # Prebuilt CUDA packages (cache.nixos.org has no unfree software); used with",
            "  # --accept-flake-config or when trusted in nix.conf. Sources: orchestrator/render/flake.py.",
            "  nixConfig = {",
            f"    extra-substituters = {nix_list([url for url, _ in CUDA_CACHES])};",
            f"    extra-trusted-public-keys = {nix_list([key for _, key in CUDA_CACHES])};",
            "  };",
            "",
        ]
    out += [
        "  outputs = { self, nixpkgs }:",
        "    let",
        f"      systems = {nix_list(list(spec.environment.systems))};",
        "      forAllSystems = nixpkgs.lib.genAttrs systems;",
        "    in",
        "    {",
        "      devShells = forAllSystems (system:",
        "        let",
    ]
    if cuda is None:
        out.append("          pkgs = import nixpkgs { inherit system; };")
    else:
        out += [
            "          # Unfree is allowed for NVIDIA's CUDA licences only, by nixpkgs' own predicate.",
            "          pkgs = import nixpkgs {",
            "            inherit system;",
            "            config = { pkgs, ... }: {",
            "              allowUnfreePredicate = pkgs._cuda.lib.allowUnfreeCudaPredicate;",
            "            };",
            "          };",
            "          # The split CUDA packages: nvcc and what extensions build against. The",
            "          # torch wheels bring their own CUDA libraries; these stay off LD_LIBRARY_PATH.",
            f"          cuda = pkgs.{cuda.nix_attr};",
        ]
    ld_path = "$envparity_libs" + (":$envparity_driver" if cuda is not None else "")
    hook_text = (driver_hook() if cuda is not None else "") + (
        f'export LD_LIBRARY_PATH="{ld_path}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}"\n'
    )
    out += [
        "        in",
        "        {",
        "          default = pkgs.mkShell {",
        f"            name = {nix_string(spec.environment.name)};",
        "            packages = [",
        *[f"              {p}" for p in packages],
        "            ];",
        "            # The launch environment: read when Python (or CUDA) starts, so set here.",
        *[f"            {name} = {nix_string(value)};" for name, value in env.items()],
        f'            ENVPARITY_PYTHON = "${{pkgs.{python_attr}}}/bin/python{spec.environment.python_minor}";',
        "            # Wheels from the lock find libstdc++, zlib and the system packages' libraries",
        "            # here" + (", and the GPU driver." if cuda is not None else "."),
        '            shellHook = "envparity_libs=" + pkgs.lib.makeLibraryPath [ '
        + " ".join(libs)
        + ' ] + "\\n"',
        "              + " + _indent(nix_indented_string(hook_text + venv_hook(spec)), 14) + ";",
        "          };",
        "        });",
        "    };",
        *(["", _DRIVER_NOTE] if cuda is not None else []),
        "}",
    ]
    return "\n".join(out) + "\n"
