"""Rendering is pure: ``render_all(spec) -> [Generated]``; ``orchestrator.files`` writes them.

Each file's recorded inputs hash covers the spec parts it is made from and the content of the
lock it installs, so editing an unrelated part of the spec leaves it untouched. Freshness
(check, doctor, verify) asks for ``reuse=True``: a CI file whose header records the current
inputs and that nobody edited is read back instead of rendered (``render.ci.ci_file``), which
keeps PyYAML out of ``check``.
"""

from __future__ import annotations

from orchestrator import files, lock
from orchestrator.render.ci import WORKFLOW, render_workflow
from orchestrator.render.devcontainer import (
    ARM64_DIR,
    render_devcontainer_json,
    render_dockerfile,
)
from orchestrator.render.dotenv import render_dotenv
from orchestrator.render.flake import render_flake
from orchestrator.render.gitlab import GITLAB_CI, render_gitlab_ci
from orchestrator.render.noxfile import NOXFILE, generated_noxfile, render_noxfile
from orchestrator.spec import Spec

RENDER_FORMAT = 1
# Every file render can write; one the spec no longer produces is removed by render.
GENERATED = (
    "flake.nix",
    ".devcontainer/devcontainer.json",
    ".devcontainer/Dockerfile",
    ".devcontainer/arm64/devcontainer.json",
    ".devcontainer/arm64/Dockerfile",
    ".env.example",
    WORKFLOW,
    GITLAB_CI,
    NOXFILE,
)
# [ci] providers: the file each writes (``envparity ci <provider>``) and its renderer
CI_FILES = {"github": WORKFLOW, "gitlab": GITLAB_CI}
_CI_RENDERERS = {"github": render_workflow, "gitlab": render_gitlab_ci}


# The spec parts each file is made from (besides its target's table and its lock): a change
# elsewhere in the spec (say [verify] steps) leaves the file, and its recorded hash, as it is.
_FLAKE_PARTS = ("environment", "cuda", "indexes", "system", "determinism")
_DEVCONTAINER_PARTS = ("environment", "cuda", "indexes", "system", "determinism")
_DOTENV_PARTS = ("variables",)


def render_all(spec: Spec, *, reuse: bool = False) -> list[files.Generated]:
    """Every generated file of the spec (locks excluded: ``envparity lock`` writes those);
    ``reuse``: CI files made from the current inputs are read from disk (see above)."""
    name = spec.path.name
    out: list[files.Generated] = []
    data = spec.to_dict()

    def inputs(parts: tuple[str, ...], target: str | None = None) -> str:
        flavors = [spec.flavor_of(target)] if target else []
        return files.inputs_hash(
            {
                "format": RENDER_FORMAT,
                "spec": {k: data[k] for k in parts},
                "target": data["targets"].get(target) if target else None,
                "locks": {f: lock.lock_digest(spec, f) for f in flavors},
            }
        )

    if "nix" in spec.targets:
        # the flake reads every lock of every flavor and system (its shells and checks)
        flake_inputs = files.inputs_hash(
            {"flake": inputs(_FLAKE_PARTS, "nix"), "locks": lock.recorded_contents(spec)}
        )
        out.append(files.Generated("flake.nix", render_flake(spec), flake_inputs, spec_name=name))
    if "devcontainer" in spec.targets:
        dc_inputs = inputs(_DEVCONTAINER_PARTS, "devcontainer")
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
        if "aarch64-linux" in spec.environment.systems:  # Apple Silicon: linux/arm64, cpu
            arm_inputs = files.inputs_hash(
                {"arm64": dc_inputs, "lock": lock.content_digest(spec, "locks/cpu-aarch64.txt")}
            )
            out.append(
                files.Generated(
                    f"{ARM64_DIR}/devcontainer.json",
                    render_devcontainer_json(spec, arm64=True),
                    arm_inputs,
                    comment="//",
                    spec_name=name,
                )
            )
            out.append(
                files.Generated(
                    f"{ARM64_DIR}/Dockerfile",
                    render_dockerfile(spec, arm_inputs, arm64=True),
                    arm_inputs,
                    spec_name=name,
                )
            )
    if spec.variables:
        out.append(
            files.Generated(
                ".env.example", render_dotenv(spec), inputs(_DOTENV_PARTS), spec_name=name
            )
        )
    out += render_ci(spec, reuse=reuse)
    if generated_noxfile(spec):  # the sessions the CI jobs call, unless the project has its own
        out.append(render_noxfile(spec))
    return out


def render_ci(
    spec: Spec, providers: tuple[str, ...] | None = None, *, reuse: bool = False
) -> list[files.Generated]:
    """The CI files of ``providers`` (default: ``[ci] providers``; none without ``[ci]``)."""
    if spec.ci is None:
        return []
    return [_CI_RENDERERS[p](spec, reuse=reuse) for p in (providers or spec.ci.providers)]


def orphans(spec: Spec, rendered: list[files.Generated]) -> list[str]:
    """Generated files of an earlier spec (a target or [variables] since removed)."""
    return files.orphans(spec.root, GENERATED, [f.path for f in rendered])
