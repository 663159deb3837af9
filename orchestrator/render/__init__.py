"""Rendering is pure: ``render_all(spec) -> [Generated]``; ``orchestrator.files`` writes them.

Each file's recorded inputs hash covers the whole spec and the content of the locks it
installs, so a file is stale when either changed (``check`` compares whole texts anyway).
"""

from __future__ import annotations

from orchestrator import files, lock
from orchestrator.render.devcontainer import render_devcontainer_json, render_dockerfile
from orchestrator.render.dotenv import render_dotenv
from orchestrator.render.flake import render_flake
from orchestrator.spec import Spec

RENDER_FORMAT = 1


def render_all(spec: Spec) -> list[files.Generated]:
    """Every generated file of the spec (locks excluded: ``envparity lock`` writes those)."""
    name = spec.path.name
    out: list[files.Generated] = []
    spec_hash = spec.digest()

    def inputs(*flavors: str) -> str:
        return files.inputs_hash(
            {
                "format": RENDER_FORMAT,
                "spec": spec_hash,
                "locks": {f: lock.lock_digest(spec, f) for f in flavors},
            }
        )

    if "nix" in spec.targets:
        flake_inputs = inputs(spec.flavor_of("nix"))
        out.append(files.Generated("flake.nix", render_flake(spec), flake_inputs, spec_name=name))
    if "devcontainer" in spec.targets:
        dc_inputs = inputs(spec.flavor_of("devcontainer"))
        out.append(
            files.Generated(
                ".devcontainer/devcontainer.json",
                render_devcontainer_json(spec),
                dc_inputs,
                comment="//",
                spec_name=name,
            )
        )
        out.append(
            files.Generated(
                ".devcontainer/Dockerfile",
                render_dockerfile(spec, dc_inputs),
                dc_inputs,
                spec_name=name,
            )
        )
    if spec.variables:
        out.append(files.Generated(".env.example", render_dotenv(spec), inputs(), spec_name=name))
    return out
