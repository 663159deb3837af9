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
    "/usr/lib/wsl/lib",  # WSL2: the Windows driver's libcuda.so and libdxcore.so
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
  # The host's loader cache first (ldconfig -p, as flox finds the driver; WSL2 lists
  # /usr/lib/wsl/lib there), then the usual folders (as nix-gl-host does).
  envparity_found=""
  if [ -z "${ENVPARITY_HOST_LIBS:-}" ]; then
    for envparity_ldconfig in ${ENVPARITY_LDCONFIG:-/sbin/ldconfig /usr/sbin/ldconfig}; do
      if [ -x "$envparity_ldconfig" ]; then
        envparity_found=$("$envparity_ldconfig" -p 2>/dev/null | sed -n "s/^.* => //p")
        break
      fi
    done
  fi
  for envparity_dir in ${ENVPARITY_HOST_LIBS:-@HOST_DIRS@}; do
    envparity_found="$envparity_found $(ls -d "$envparity_dir"/lib*.so* 2>/dev/null)"
  done
  for envparity_so in $envparity_found; do
    case "${envparity_so##*/}" in
      libcuda.so*|libnvidia-*.so*|libdxcore.so*) ;;
      *) continue ;;
    esac
    if [ -e "$envparity_so" ] && [ ! -e "$envparity_driver/${envparity_so##*/}" ]; then
      ln -s "$envparity_so" "$envparity_driver/"
    fi
  done
  if [ ! -e "$envparity_driver/libcuda.so.1" ]; then
    echo "envparity: no NVIDIA driver (libcuda.so.1) found on this machine;" \\
      "CUDA will not be usable in this shell" >&2
  fi
fi
export LD_LIBRARY_PATH="$envparity_driver${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
"""


def driver_hook() -> str:
    """Shell code that sets ``envparity_driver`` to a folder holding the GPU driver's libraries
    and puts that folder, alone, on ``LD_LIBRARY_PATH``: NixOS's ``/run/opengl-driver/lib``
    when it exists, else ``.envparity/nix-driver`` (re)made with links to the host driver's
    ``libcuda.so*``, ``libnvidia-*.so*`` and (WSL2) ``libdxcore.so*`` only. They are found in
    the host's loader cache (``ldconfig -p``: flox's activation does the same, and WSL2's
    ``/etc/ld.so.conf.d/ld.wsl.conf`` lists ``/usr/lib/wsl/lib``), then in
    ``HOST_LIBRARY_DIRS`` (nix-gl-host's known folders, WSL2's first); the first copy of a name
    wins. ``ENVPARITY_HOST_LIBS`` (space-separated folders) replaces the search,
    ``ENVPARITY_LDCONFIG`` the host's ldconfig, ``ENVPARITY_NIXOS_DRIVER`` the NixOS folder."""
    return (
        _DRIVER_HOOK.replace("@NIXOS@", NIXOS_DRIVER_DIR)
        .replace("@DRIVER_DIR@", DRIVER_DIR)
        .replace("@HOST_DIRS@", " ".join(HOST_LIBRARY_DIRS))
    )


def venv_hook(spec: Spec, flavor: str | None = None, system: str | None = None) -> str:
    """The uv shell's hook for ``flavor`` on ``system`` (default: the nix flavor on its first
    system): (re)build .venv from that lock when the lock's hash changes, then enter it. On
    Linux the venv's interpreter is the flake's ``pythonWithLibs`` (``ENVPARITY_PYTHON_WRAPPER``):
    the wheels' libraries are on its ``LD_LIBRARY_PATH``, not the shell's."""
    flavor = flavor or nix_flavor(spec)
    system = system or spec.systems_of(flavor)[0]
    minor = spec.environment.python_minor
    lines = [
        f"envparity_lock={shell_word(lock.LockTarget(flavor, system).path)}",
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
                *lock.install_args(spec, flavor, system),
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
        'if [ -n "${ENVPARITY_PYTHON_WRAPPER:-}" ] && [ -f .venv/.envparity ]; then',
        f"  for envparity_name in python python3 python{minor}; do",
        '    ln -sf "$ENVPARITY_PYTHON_WRAPPER" ".venv/bin/$envparity_name"',
        "  done",
        "fi",
        "if [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi",
    ]
    return "\n".join(lines) + "\n"


def nix_flavor(spec: Spec) -> str:
    """The flavor of the flake's ``default`` devShell and of the ``nix`` target
    (``spec.flavor_of("nix")``: ``[targets.nix] flavor``, else ``cpu``)."""
    return spec.flavor_of("nix")


def _indent(text: str, width: int) -> str:
    # Indent every line but the first, which follows code already on its line.
    pad = " " * width
    lines = text.split("\n")
    return "\n".join([lines[0]] + [pad + line if line else line for line in lines[1:]])


_DRIVER_NOTE = """\
  # The GPU driver is not part of this flake: it belongs to the machine, and must be at least
  # the CUDA toolkit's minimum (see docs/compatibility.md).
  #  - NixOS: enable hardware.nvidia (and hardware.graphics); the driver's libraries appear in
  #    /run/opengl-driver/lib, which the CUDA shells put on LD_LIBRARY_PATH.
  #  - Other Linux, WSL2 included: the CUDA shells link the host driver's libcuda.so*,
  #    libnvidia-*.so* and libdxcore.so* (found with ldconfig -p and in the usual folders,
  #    /usr/lib/wsl/lib first, or in those named by ENVPARITY_HOST_LIBS) into
  #    .envparity/nix-driver and put only that folder on LD_LIBRARY_PATH, so the rest of the
  #    host's libraries (an older glibc's, say) never shadow the shell's.
  # Binary caches: Nix uses nixConfig's caches only with --accept-flake-config, or when they
  # are in nix.conf's trusted-substituters (multi-user installs)."""

# The functions every system's outputs share (Nix; @MINOR@ is the Python minor, "3.11").
_NIX_FUNCTIONS = """\
      # A Python for manylinux wheels, which load libstdc++, zlib and the system packages'
      # libraries by soname: they are put on LD_LIBRARY_PATH for this interpreter (and what
      # it starts) alone, never for the whole shell. Linux only: macOS wheels need nothing.
      pythonWithLibs = pkgs: python: libs: pkgs.writeScript "envparity-python@MINOR@" (
        "#!" + pkgs.runtimeShell + "\\n"
        + "export LD_LIBRARY_PATH=\\"" + lib.makeLibraryPath libs + "\\${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}\\"\\n"
        + "exec -a \\"$0\\" " + python + "/bin/python@MINOR@ \\"$@\\"\\n");
      # The pure environment: the wheels locks/pylock.<flavor>.toml names for this system, each
      # a fixed-output fetch checked against the lock's sha256, installed offline by uv into a
      # venv in the store. `nix develop .#<flavor>-pure` needs no network; `nix flake check`
      # builds it.
      pythonEnv = { pkgs, system, flavor, python, wrapper ? null }:
        let
          pylock = builtins.fromTOML (builtins.readFile (./locks + "/pylock.${flavor}.toml"));
          wanted = p: builtins.hasAttr system (p.tool.envparity.wheels or { })
            || builtins.elem system (p.tool.envparity.sdist or [ ]);
          fetch = p:
            let
              file = p.tool.envparity.wheels.${system} or (throw ("envparity: ${p.name} ${p.version} has no wheel for ${system} in locks/pylock.${flavor}.toml;"
                + " the pure environment installs wheels only (the uv shell, nix develop .#${flavor}, builds it)"));
              wheel = builtins.head (builtins.filter (w: w.name == file) p.wheels);
            in
            { name = file; path = pkgs.fetchurl { url = wheel.url or ("file://" + wheel.path); sha256 = wheel.hashes.sha256; name = file; }; };
          wheels = map fetch (builtins.filter wanted pylock.packages);
        in
        pkgs.runCommand "${envName}-${flavor}-python" { nativeBuildInputs = [ pkgs.uv ]; } (''
          export HOME="$TMPDIR" UV_CACHE_DIR="$TMPDIR/uv" UV_NO_CONFIG=1 UV_PYTHON_DOWNLOADS=never
          mkdir "$TMPDIR/wheels"
        '' + builtins.concatStringsSep "" (map (w: "ln -s ${w.path} \\"$TMPDIR/wheels/${w.name}\\"\\n") wheels) + ''
          uv venv --quiet --python ${python}/bin/python@MINOR@ "$out"
          uv pip install --quiet --offline --no-index --no-deps --link-mode=copy \\
            --python "$out/bin/python" "$TMPDIR"/wheels/*.whl
        '' + (if wrapper == null then "" else ''
          for name in python python3 python@MINOR@; do ln -sf ${wrapper} "$out/bin/$name"; done
        ''));
      # checks.<system>.locks: every lock this system's shells read is as envparity wrote it
      # (its recorded content hash matches its text: no hand edit) and is the one this flake
      # was rendered from. Whether the locks are current with environment.toml is for
      # `envparity check`, which Nix cannot run (envparity is no Nix package).
      lockProblems = contents: builtins.filter (p: p != null) (map (path:
        let
          text = if builtins.pathExists (./. + "/${path}") then builtins.readFile (./. + "/${path}") else "\\n";
          lines = builtins.filter builtins.isString (builtins.split "\\n" text);
          body = builtins.concatStringsSep "\\n" (builtins.tail (builtins.tail lines));
          recorded = builtins.match ".* content=sha256:([0-9a-f]+)" (builtins.elemAt lines 1);
        in
        if !(builtins.pathExists (./. + "/${path}")) then "${path}: missing; run: envparity lock"
        else if recorded == null then "${path}: has no envparity header; run: envparity lock --force"
        else if builtins.hashString "sha256" "${builtins.head lines}\\n${body}" != builtins.head recorded
        then "${path}: edited by hand since envparity wrote it; run: envparity lock --force"
        else if builtins.head recorded != contents.${path}
        then "${path}: not the lock flake.nix was rendered from; run: envparity render"
        else null) (builtins.attrNames contents));
      # `nix fmt`: nixfmt on the project's Nix files; flake.nix is envparity's (envparity
      # render writes it) and is left as it is, so that check finds no hand edit.
      formatterFor = pkgs: pkgs.writeShellScriptBin "nixfmt-except-flake" ''
        if [ "$#" -eq 0 ] || [ "$*" = . ]; then
          set -- $(find . -name '*.nix' -not -path ./flake.nix -not -path './.*' -not -path './result*')
        fi
        if [ "$#" -gt 0 ]; then exec ${pkgs.nixfmt}/bin/nixfmt "$@"; fi
      '';"""


def _checks(spec: Spec, flavor: str, locks: list[str]) -> list[str]:
    """Nix lines for one system's ``checks``: ``locks`` (``lockProblems``), the pure
    environment of ``flavor`` (``python-<flavor>``), and ``probe``, the built-in probe run in
    that environment where it can run: torch in the lock, and envparity's own source in the
    flake (its repository, or a project that vendors ``orchestrator/``)."""
    # the launch environment as the derivation's attributes (its builder's environment)
    launch = " ".join(f"{k} = {nix_string(v)};" for k, v in spec.determinism.launch_env().items())
    steps = min(spec.verify.steps, 5)
    name = spec.environment.name
    pylock = lock.pylock_path(flavor)
    contents = " ".join(f"{nix_string(p)} = lockContents.{nix_string(p)};" for p in locks)
    return [
        "checks =",
        "  let",
        f"    problems = lockProblems {{ {contents} }};",
        f"    env = envs.{nix_string(flavor)};",
        f"    probeRuns = envs ? {nix_string(flavor)} && builtins.pathExists ./orchestrator/probe/run.py",
        '      && builtins.any (p: p.name == "torch")',
        f"        (builtins.fromTOML (builtins.readFile ./{pylock})).packages;",
        "  in",
        "  {",
        f'    locks = pkgs.runCommand {nix_string(name + "-locks")} {{ }} (if problems == [ ] then "touch $out"',
        '      else "echo " + lib.escapeShellArg (builtins.concatStringsSep "\\n" problems) + " >&2; exit 1");',
        "  }",
        f'  // lib.optionalAttrs (envs ? {nix_string(flavor)}) {{ "python-{flavor}" = env; }}',
        "  // lib.optionalAttrs probeRuns {",
        f"    probe = pkgs.runCommand {nix_string(name + '-probe')} {{ {launch} }} " + "''",
        '      mkdir -p "$out" && export HOME="$TMPDIR"',
        "      PYTHONPATH=${self} ${env}/bin/python -m orchestrator probe \\",
        f'        --device cpu --steps {steps} --out "$out/fingerprint.json"',
        "    '';",
        "  }",
    ]


def _shell(
    spec: Spec, flavor: str, system: str, *, linux: bool, pure: bool, packages: list[str]
) -> list[str]:
    """One devShell (uv at entry, or ``pure``) of ``flavor`` on ``system``, as Nix lines."""
    cuda = spec.cuda is not None and flavor == spec.cuda.flavor
    env = spec.determinism.launch_env()
    minor = spec.environment.python_minor
    hook = (driver_hook() if cuda and linux else "") + (
        "" if pure else venv_hook(spec, flavor, system)
    )
    name = (
        spec.environment.name
        + ("" if flavor == "cpu" else f"-{flavor}")
        + ("-pure" if pure else "")
    )
    shell_packages = (["env"] if pure else ["python", "pkgs.uv"]) + packages
    if cuda and linux:
        shell_packages += [f"cuda.{p}" for p in CUDA_PACKAGES]
    out = [
        "pkgs.mkShell {",
        f"  name = {nix_string(name)};",
        "  packages = [",
        *[f"    {p}" for p in shell_packages],
        "  ];",
        "  # The launch environment: read when Python (or CUDA) starts, so set here.",
        *[f"  {k} = {nix_string(v)};" for k, v in env.items()],
    ]
    if cuda and linux and spec.cuda is not None and spec.cuda.compute_capabilities:
        archs = ";".join(spec.cuda.compute_capabilities)
        out.append(f"  TORCH_CUDA_ARCH_LIST = {nix_string(archs)};  # for extensions built here")
    if not pure:
        out.append(f'  ENVPARITY_PYTHON = "${{python}}/bin/python{minor}";')
        if linux:
            out.append("  ENVPARITY_PYTHON_WRAPPER = wrapper;")
    if hook:
        out.append(f"  shellHook = {_indent(nix_indented_string(hook), 2)};")
    out.append("}")
    return out


def render_flake(spec: Spec) -> str:
    target = spec.targets.get("nix")
    nixpkgs = getattr(target, "nixpkgs", "github:NixOS/nixpkgs/nixos-unstable")
    python_attr = "python" + spec.environment.python_minor.replace(".", "")
    system_packages = nix_packages(spec)
    packages = [f"pkgs.{nix_attr(a)}" for a in system_packages.attrs]
    libs = ["pkgs.stdenv.cc.cc.lib", "pkgs.zlib"]
    libs += [f"pkgs.{nix_attr(a)}" for a in system_packages.libraries if a != "zlib"]
    cuda = spec.cuda
    default = nix_flavor(spec)
    systems = list(spec.environment.systems)
    contents = lock.recorded_contents(spec)

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
        "      lib = nixpkgs.lib;",
        f"      systems = {nix_list(systems)};",
        "      # The content hash envparity recorded in each lock this flake was rendered from.",
        "      lockContents = {",
        *[f"        {nix_string(p)} = {nix_string(c)};" for p, c in contents.items()],
        "      };",
        f"      envName = {nix_string(spec.environment.name)};",
        _NIX_FUNCTIONS.replace("@MINOR@", spec.environment.python_minor),
        "      perSystem = {",
    ]
    for system in systems:
        linux = system.endswith("-linux")
        flavors = [f for f in spec.flavors if system in spec.systems_of(f)]
        locks = [lock.LockTarget(f, system).path for f in flavors]
        locks += [lock.pylock_path(f) for f in flavors]
        out += [f"        {nix_string(system)} ="]
        out += ["          let"]
        if cuda is not None and linux:
            out += [
                "            # Unfree is allowed for NVIDIA's CUDA licences only, by nixpkgs' own predicate.",
                "            pkgs = import nixpkgs {",
                f"              system = {nix_string(system)};",
                "              config = { pkgs, ... }: {",
                "                allowUnfreePredicate = pkgs._cuda.lib.allowUnfreeCudaPredicate;",
            ]
            if cuda.compute_capabilities:
                out.append(
                    f"                cudaCapabilities = {nix_list(list(cuda.compute_capabilities))};"
                )
            out += [
                "              };",
                "            };",
                "            # The split CUDA packages: nvcc and what extensions build against. The",
                "            # torch wheels bring their own CUDA libraries; these stay off LD_LIBRARY_PATH.",
                f"            cuda = pkgs.{cuda.nix_attr};",
            ]
        else:
            out.append(f"            pkgs = import nixpkgs {{ system = {nix_string(system)}; }};")
        out.append(f"            python = pkgs.{python_attr};")
        if linux:
            out.append(f"            wrapper = pythonWithLibs pkgs python [ {' '.join(libs)} ];")
        wrap = " wrapper = wrapper;" if linux else ""
        out += [
            "            # The pure environments of the flavors locked so far (envparity lock).",
            '            envs = lib.filterAttrs (flavor: env: builtins.pathExists (./locks + "/pylock.${flavor}.toml")) {',
        ]
        for flavor in flavors:
            out.append(
                f"              {nix_string(flavor)} = pythonEnv {{ inherit pkgs python; "
                f"system = {nix_string(system)}; flavor = {nix_string(flavor)};{wrap} }};"
            )
        out += ["            };"]
        for pure in (False, True):  # the uv shells, then each locked flavor's pure shell
            for flavor in flavors:
                body = _shell(spec, flavor, system, linux=linux, pure=pure, packages=packages)
                key = nix_string(flavor + ("-pure" if pure else ""))
                if not pure:
                    opening = "            shells = {" if flavor == flavors[0] else None
                    first = f"              {key} = {body[0]}"
                else:
                    opening = f"            // lib.optionalAttrs (envs ? {nix_string(flavor)}) {{"
                    first = (
                        f"              {key} = let env = envs.{nix_string(flavor)}; in {body[0]}"
                    )
                if opening:
                    out.append(opening)
                out.append(first)
                out += [
                    f"              {line}" if line else line
                    for line in "\n".join(body[1:-1]).split("\n")
                ]
                out.append("              };")
                if pure or flavor == flavors[-1]:
                    out.append("            }")
        out[-1] += ";"
        here = default if default in flavors else "cpu"  # macOS has no CUDA flavor
        out += [
            "          in",
            "          {",
            f"            devShells = shells // {{ default = shells.{nix_string(here)}; }};",
            "            packages = builtins.listToAttrs (map (flavor:",
            '              { name = "${flavor}-python"; value = envs.${flavor}; }) (builtins.attrNames envs));',
            "            formatter = formatterFor pkgs;",
        ]
        out += [f"            {line}" for line in _checks(spec, here, locks)]
        out[-1] += ";"
        out.append("          };")
    out += [
        "      };",
        "    in",
        "    {",
        "      devShells = lib.mapAttrs (system: s: s.devShells) perSystem;",
        "      packages = lib.mapAttrs (system: s: s.packages) perSystem;",
        "      checks = lib.mapAttrs (system: s: s.checks) perSystem;",
        "      formatter = lib.mapAttrs (system: s: s.formatter) perSystem;",
        "    };",
        *(["", _DRIVER_NOTE] if cuda is not None else []),
        "}",
    ]
    return "\n".join(out) + "\n"
