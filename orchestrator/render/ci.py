"""The GitHub Actions workflow (``envparity ci github``): ``.github/workflows/envparity.yml``.

One matrix job per target the spec has (``venv``, ``devcontainer``, ``nix``; ``host`` is the
runner's own interpreter and is left to laptops) on ``ubuntu-latest``, plus one per CUDA-flavor
target on the self-hosted runners named by ``[ci] gpu_runner_labels``. Each job runs the same
nox session a laptop runs (``orchestrator.nox_sessions``: ``nox -s "probe(venv)"``) and uploads
its fingerprints as the artifact ``fingerprints-<job>``; the ``compare`` job downloads them all,
runs ``nox -s compare`` (``envparity compare --references fingerprints``) and writes the verdict
table to ``$GITHUB_STEP_SUMMARY``; a divergence fails it.

Actions are pinned by major tag (their maintainers move the tag for fixes); the devcontainers
CLI by exact version. The YAML is written by PyYAML (``safe_dump``), so values are escaped; the
one value from the spec that reaches a shell line, ``[ci] envparity``, is quoted with
``shlex.quote``.
"""

from __future__ import annotations

import shlex
from typing import Any

from orchestrator import files
from orchestrator.errors import UsageError
from orchestrator.spec import CiSettings, Spec

WORKFLOW = ".github/workflows/envparity.yml"
CI_FORMAT = 1

# Pinned by tag; see the module docstring. Majors chosen so that actionlint reports no
# deprecated runtime (node20 actions are deprecated from September 2026).
CHECKOUT = "actions/checkout@v5"
SETUP_UV = "astral-sh/setup-uv@v7"
INSTALL_NIX = "cachix/install-nix-action@v31"
UPLOAD = "actions/upload-artifact@v6"
DOWNLOAD = "actions/download-artifact@v7"
DEVCONTAINER_CLI = "@devcontainers/cli@0.89.0"  # the version the noxfile installs

RUNS_DIR = ".envparity/ci"  # where each job writes its fingerprints, and compare reads them
CI_TARGETS = ("venv", "devcontainer", "nix")  # host: the runner's interpreter, no torch


def matrix(spec: Spec) -> list[dict[str, Any]]:
    """The probe jobs: ``{"name", "target", "runs-on"}``, hosted first, then GPU runners."""
    settings = spec.ci or CiSettings()
    chosen = [t for t in CI_TARGETS if t in spec.targets]
    out: list[dict[str, Any]] = [
        {"name": t, "target": t, "runs-on": "ubuntu-latest"} for t in chosen
    ]
    if settings.gpu_runner_labels:
        out += [
            {"name": f"{t}-gpu", "target": t, "runs-on": list(settings.gpu_runner_labels)}
            for t in chosen
            if spec.flavor_of(t).startswith("cu")
        ]
    return out


def nox_command(spec: Spec, session: str, *args: str) -> str:
    """The shell line a job runs: nox from PyPI with envparity beside it (``[ci] envparity``,
    shell-quoted). ``session`` and ``args`` are this module's own constants, written as the
    shell should see them (``"probe(${{ matrix.target }})"``: GitHub substitutes first)."""
    settings = spec.ci or CiSettings()
    line = f"uvx --with {shlex.quote(settings.envparity)} nox -s {session}"
    return line + (" -- " + " ".join(args) if args else "")


def workflow(spec: Spec) -> dict[str, Any]:
    """The workflow as data (what ``render_workflow`` dumps as YAML)."""
    jobs = matrix(spec)
    if not jobs:
        raise UsageError(
            f"{spec.path.name}: ci: no target a CI runner can provision; add [targets.venv], "
            "[targets.devcontainer] or [targets.nix]"
        )
    out_dir = f"{RUNS_DIR}/${{{{ matrix.name }}}}"
    probe_steps: list[dict[str, Any]] = [
        {"uses": CHECKOUT},
        {"uses": SETUP_UV},
    ]
    if any(j["target"] == "nix" for j in jobs):
        probe_steps.append(
            {
                "name": "Install Nix (accepting the flake's caches)",
                "if": "matrix.target == 'nix'",
                "uses": INSTALL_NIX,
                "with": {
                    "extra_nix_config": "experimental-features = nix-command flakes\n"
                    "accept-flake-config = true\n"
                },
            }
        )
    if any(j["target"] == "devcontainer" for j in jobs):
        probe_steps.append(
            {
                "name": "Install the devcontainers CLI",
                "if": "matrix.target == 'devcontainer'",
                "run": shlex.join(["npm", "install", "--global", DEVCONTAINER_CLI]),
            }
        )
    probe_steps += [
        {
            "name": "Provision and probe",
            "run": nox_command(spec, '"probe(${{ matrix.target }})"', "--out", f'"{out_dir}"'),
        },
        {
            "name": "Upload the fingerprints",
            "if": "${{ !cancelled() }}",  # a divergence from a reference still shows in compare
            "uses": UPLOAD,
            "with": {
                "name": "fingerprints-${{ matrix.name }}",
                "path": out_dir,
                "if-no-files-found": "error",
            },
        },
    ]
    return {
        "name": "envparity",
        "on": {"push": None, "pull_request": None, "workflow_dispatch": None},
        "permissions": {"contents": "read"},
        "jobs": {
            "probe": {
                "name": "${{ matrix.name }}",
                "runs-on": "${{ matrix.runs-on }}",
                "strategy": {"fail-fast": False, "matrix": {"include": jobs}},
                "steps": probe_steps,
            },
            "compare": {
                "needs": "probe",
                "if": "${{ !cancelled() }}",
                "runs-on": "ubuntu-latest",
                "steps": [
                    {"uses": CHECKOUT},
                    {"uses": SETUP_UV},
                    {
                        "name": "Download every job's fingerprints",
                        "uses": DOWNLOAD,
                        "with": {"pattern": "fingerprints-*", "path": RUNS_DIR},
                    },
                    {
                        "name": "Compare with each other and with fingerprints/",
                        "run": nox_command(
                            spec, "compare", RUNS_DIR, "--summary", '"$GITHUB_STEP_SUMMARY"'
                        ),
                    },
                ],
            },
        },
    }


def _dump(data: dict[str, Any]) -> str:
    """``data`` as YAML: PyYAML's SafeDumper, multi-line strings as literal blocks (``|``), as
    people write them. PyYAML is imported here, when a workflow is rendered: ``envparity
    check`` of a spec without ``[ci]`` never imports it."""
    import yaml

    class Dumper(yaml.SafeDumper):  # type: ignore[misc]
        pass

    def literal(dumper: Any, value: str) -> Any:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, literal)
    text: str = yaml.dump(data, Dumper=Dumper, sort_keys=False, width=100, default_flow_style=False)
    return text


def render_workflow(spec: Spec) -> files.Generated:
    """``.github/workflows/envparity.yml`` with envparity's header (inputs: [ci] and each
    target's flavor, all the workflow is made from; not the locks, read when the jobs run)."""
    data = spec.to_dict()
    body = _dump(workflow(spec))
    inputs = files.inputs_hash(
        {
            "format": CI_FORMAT,
            "ci": data.get("ci"),
            "flavors": {t: spec.flavor_of(t) for t in sorted(spec.targets)},
        }
    )
    return files.Generated(
        WORKFLOW,
        body,
        inputs,
        regenerate="envparity ci github",
        spec_name=spec.path.name,
    )
