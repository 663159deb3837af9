"""``flake.nix``: a devShell per system with the spec's Python, CUDA toolkit, system packages
and launch environment; its shell hook builds ``.venv`` from the lock, hash-checked, with uv."""

from __future__ import annotations

from orchestrator import lock
from orchestrator.render.escape import (
    nix_attr,
    nix_indented_string,
    nix_list,
    nix_string,
    shell_line,
    shell_word,
)
from orchestrator.spec import Spec

# Where the Nix CUDA team's builds are cached (https://discourse.nixos.org/t/cuda-cache-for-nix-community/56038).
CUDA_SUBSTITUTER = "https://nix-community.cachix.org"
CUDA_PUBLIC_KEY = "nix-community.cachix.org-1:mB9FSh9qf2dCimDSUo8Zy7bkq5CX+/rkCWyvRCYg3Fs="
# Licences under which nixpkgs ships the CUDA toolkit and cuDNN; nothing else unfree is allowed.
CUDA_LICENSES = ("CUDA EULA", "cuDNN EULA", "cuTENSOR EULA", "NVidia OptiX EULA")
# system package name -> nixpkgs attribute, where they differ
NIX_NAMES = {
    "build-essential": "gcc",
    "libgl1": "libGL",
    "libglib2.0-0": "glib",
    "openssh-client": "openssh",
}

_DRIVER_NOTE = """\
  # The GPU driver is not part of this flake: it belongs to the machine.
  #  - NixOS: enable hardware.nvidia (hardware.graphics on 24.11+); the driver's libcuda.so
  #    appears in /run/opengl-driver/lib, which the shell adds to LD_LIBRARY_PATH.
  #  - Other Linux: the host driver's libcuda.so lives outside /nix (often
  #    /usr/lib/x86_64-linux-gnu); add that folder to LD_LIBRARY_PATH before `nix develop`
  #    (the shell keeps what is there), or run through nixGL (github:nix-community/nixGL).
  #  The driver must be at least the CUDA toolkit's minimum (see docs/compatibility.md)."""


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
        + ' "$envparity_lock"; then',
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


def render_flake(spec: Spec) -> str:
    target = spec.targets.get("nix")
    nixpkgs = getattr(target, "nixpkgs", "github:NixOS/nixpkgs/nixos-unstable")
    env = spec.determinism.launch_env()
    python_attr = "python" + spec.environment.python_minor.replace(".", "")
    packages = [f"pkgs.{python_attr}", "pkgs.uv"]
    packages += [
        f"pkgs.{nix_attr(spec.system.nix.get(p) or NIX_NAMES.get(p, p))}"
        for p in spec.system.packages
    ]
    cuda = spec.cuda
    if cuda is not None:
        packages += ["cuda.cudatoolkit", "cuda.cudnn"]
    libs = ["pkgs.stdenv.cc.cc.lib", "pkgs.zlib"]

    out = [
        "{",
        f"  description = {nix_string('envparity environment ' + spec.environment.name)};",
        "",
        f"  inputs.nixpkgs.url = {nix_string(nixpkgs)};",
        "",
    ]
    if cuda is not None:
        out += [
            "  # Prebuilt CUDA packages: nixpkgs' own cache does not build unfree software.",
            "  nixConfig = {",
            f"    extra-substituters = {nix_list([CUDA_SUBSTITUTER])};",
            f"    extra-trusted-public-keys = {nix_list([CUDA_PUBLIC_KEY])};",
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
            "          # Unfree is allowed for the CUDA toolkit's and cuDNN's licences only.",
            f"          cudaLicenses = {nix_list(list(CUDA_LICENSES))};",
            "          pkgs = import nixpkgs {",
            "            inherit system;",
            "            config.allowUnfreePredicate = pkg:",
            '              builtins.all (l: l.free or false || builtins.elem (l.shortName or "") cudaLicenses)',
            "                (nixpkgs.lib.toList (pkg.meta.license or [ ]));",
            "          };",
            f"          cuda = pkgs.{cuda.nix_attr};",
        ]
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
        "            # Wheels from the lock find libstdc++ and, on NixOS, the GPU driver here.",
        '            shellHook = "export LD_LIBRARY_PATH=" + pkgs.lib.makeLibraryPath [ '
        + " ".join(libs)
        + " ]",
        "              + "
        + nix_string(":/run/opengl-driver/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}\n"),
        "              + " + _indent(nix_indented_string(venv_hook(spec)), 14) + ";",
        "          };",
        "        });",
        "    };",
        "",
        _DRIVER_NOTE,
        "}",
    ]
    return "\n".join(out) + "\n"
