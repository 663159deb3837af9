"""The GitLab CI file (``envparity ci gitlab``, ``[ci] providers = ["gitlab"]``): ``.gitlab-ci.yml``.

The same jobs as the GitHub workflow (``render.ci``): in stage ``probe``, the ``venv`` target in
a ``parallel: matrix`` job on the uv image, ``probe-nix`` on the Nix image (the flake's caches
accepted), ``probe-devcontainer`` with Docker-in-Docker and the devcontainers CLI, and
``probe-gpu``, a ``parallel: matrix`` over the CUDA-flavor targets on the runners tagged with
``[ci] gpu_runner_labels``; each runs ``nox -s "probe($TARGET)"`` and keeps
``.envparity/ci/fingerprints-<job>/`` as its artifact (also when it fails). In stage
``compare`` (``when: always``) the ``compare`` job gets every earlier job's artifacts, runs
``nox -s compare``, and keeps ``.envparity/compare/`` (the Markdown summary and the HTML report)
and ``fingerprints/`` (the committed references with these runs recorded beside them, when they
agree) as one archive, exposed in merge requests as "envparity report".

Images are pinned by tag: uv's image at the minor release the devcontainer's Dockerfile uses,
with the spec's Python. Values reach shell lines only through ``render.ci``'s commands (the
install source shell-quoted); the YAML is written by PyYAML.
"""

from __future__ import annotations

import copy
from typing import Any

from orchestrator import files
from orchestrator.references import FOLDER
from orchestrator.render.ci import (
    ARTIFACT_PREFIX,
    DEVCONTAINER_CLI,
    OUT_DIR,
    RUNS_DIR,
    SUMMARY,
    ci_file,
    compare_command,
    install_source,
    matrix,
    nox_command,
)
from orchestrator.spec import Spec

GITLAB_CI = ".gitlab-ci.yml"
UV_IMAGE = "ghcr.io/astral-sh/uv:0.13-python{python}-bookworm-slim"
NIX_IMAGE = "nixos/nix:2.26.3"
DOCKER_IMAGE = "docker:27"
DOCKER_SERVICE = "docker:27-dind"

_PROBE_ARTIFACTS = {"when": "always", "paths": [f"{RUNS_DIR}/"], "expire_in": "30 days"}


def _probe_script(source: str, suffix: str = "") -> list[str]:
    out = f'"{RUNS_DIR}/{ARTIFACT_PREFIX}$TARGET{suffix}"'
    return [nox_command(source, '"probe($TARGET)"', "--out", out)]


def _job(**keys: Any) -> dict[str, Any]:
    return {"stage": "probe", **keys, "artifacts": copy.deepcopy(_PROBE_ARTIFACTS)}


def gitlab_ci(spec: Spec, source: str | None = None) -> dict[str, Any]:
    """The pipeline as data (what ``render_gitlab_ci`` dumps as YAML)."""
    jobs = matrix(spec)
    source = source or install_source(spec)
    hosted = [j["target"] for j in jobs if j["runs-on"] == "ubuntu-latest"]
    gpu = [j["target"] for j in jobs if j["runs-on"] != "ubuntu-latest"]
    out: dict[str, Any] = {
        "stages": ["probe", "compare"],
        "default": {"image": UV_IMAGE.format(python=spec.environment.python_minor)},
    }
    if "venv" in hosted:
        out["probe"] = _job(
            parallel={"matrix": [{"TARGET": ["venv"]}]}, script=_probe_script(source)
        )
    if "nix" in hosted:
        out["probe-nix"] = _job(
            image=NIX_IMAGE,
            variables={"TARGET": "nix"},
            before_script=[
                "printf 'experimental-features = nix-command flakes\\naccept-flake-config = true\\n'"
                " >> /etc/nix/nix.conf",
                "nix profile install nixpkgs#uv",
            ],
            script=_probe_script(source),
        )
    if "devcontainer" in hosted:
        out["probe-devcontainer"] = _job(
            image=DOCKER_IMAGE,
            services=[DOCKER_SERVICE],
            variables={
                "TARGET": "devcontainer",
                "DOCKER_HOST": "tcp://docker:2375",
                "DOCKER_TLS_CERTDIR": "",
            },
            before_script=[
                "apk add --no-cache nodejs npm uv",
                f"npm install --global {DEVCONTAINER_CLI}",
            ],
            script=_probe_script(source),
        )
    if gpu:
        labels = list((spec.ci.gpu_runner_labels if spec.ci else ()) or ())
        out["probe-gpu"] = _job(
            tags=labels,
            parallel={"matrix": [{"TARGET": gpu}]},
            script=_probe_script(source, "-gpu"),
        )
    out["compare"] = {
        "stage": "compare",
        "when": "always",  # also after a failed probe job: its fingerprints show why
        # the references into the checkout's own fingerprints/: one archive, and
        # `unzip artifacts.zip 'fingerprints/*'` at the repository root takes them
        "script": [compare_command(source, SUMMARY, ".")],
        "artifacts": {
            "when": "always",
            "expose_as": "envparity report",
            "paths": [f"{OUT_DIR}/", f"{FOLDER}/"],
            "expire_in": "30 days",
        },
    }
    return out


def render_gitlab_ci(spec: Spec, *, reuse: bool = False) -> files.Generated:
    """``.gitlab-ci.yml`` with envparity's header (``reuse``: ``render.ci.ci_file``)."""
    return ci_file(spec, GITLAB_CI, gitlab_ci, "gitlab", reuse=reuse)
