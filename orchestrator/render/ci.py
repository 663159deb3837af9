"""The CI files: what their jobs run (shared by both providers), and the GitHub Actions workflow
``.github/workflows/envparity.yml`` (``envparity ci github``; GitLab's file: ``render.gitlab``).

One probe job per target the spec has (``venv``, ``devcontainer``, ``nix``; ``host`` is the
runner's own interpreter and is left to laptops) on hosted runners, plus one per CUDA-flavor
target on the self-hosted runners named by ``[ci] gpu_runner_labels``. Each job runs the same
nox session a laptop runs (``orchestrator.nox_sessions``: ``nox -s "probe(venv)"``) and uploads
its fingerprints as the artifact ``fingerprints-<job>``; the ``compare`` job downloads them all
and runs ``nox -s compare``: the runs with each other and with ``fingerprints/``, the verdict
table in ``$GITHUB_STEP_SUMMARY``, the HTML report and the runs laid out as references
(``fingerprints/<class>/``, ready to commit) uploaded; a divergence fails it.

What the jobs install to get envparity (``install_source``) is pinned like pre-commit's
``rev``: ``[ci] envparity`` when the spec sets it (``spec.py`` refuses an unpinned one), else
the envparity that renders: its released version, or the VCS URL and commit that its
``direct_url.json`` records (PEP 610). A bare name is never written: envparity is not on PyPI,
and whoever registers the name there would run code in every job.

Actions are pinned by major tag (their maintainers move the tag for fixes); the devcontainers
CLI by exact version. The YAML is written by PyYAML (``safe_dump``), so values are escaped; the
one value from the spec that reaches a shell line, the install source, is quoted with
``shlex.quote``.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from typing import Any

from orchestrator import files
from orchestrator.errors import ToolError, UsageError
from orchestrator.spec import CiSettings, Spec

WORKFLOW = ".github/workflows/envparity.yml"
# Part of every CI file's inputs hash. Bump it whenever what the renderers write changes:
# check (freshness) takes a CI file whose header records the same inputs as current without
# rendering it (``files.kept``: no PyYAML import), and tests/test_ci.py pins the files of
# fixed specs to this number, so that a change which does not bump it fails there.
CI_FORMAT = 2

# Pinned by tag; see the module docstring. Majors chosen so that actionlint reports no
# deprecated runtime (node20 actions are deprecated from September 2026).
CHECKOUT = "actions/checkout@v5"
SETUP_UV = "astral-sh/setup-uv@v7"
INSTALL_NIX = "cachix/install-nix-action@v31"
UPLOAD = "actions/upload-artifact@v6"
DOWNLOAD = "actions/download-artifact@v7"
DEVCONTAINER_CLI = "@devcontainers/cli@0.89.0"  # the version the noxfile installs

RUNS_DIR = ".envparity/ci"  # each probe job writes RUNS_DIR/fingerprints-<job>; compare reads it
ARTIFACT_PREFIX = "fingerprints-"
OUT_DIR = ".envparity/compare"  # what the compare job writes (outside RUNS_DIR, which it reads)
REPORT = f"{OUT_DIR}/report.html"
SUMMARY = f"{OUT_DIR}/summary.md"
REFERENCES = f"{OUT_DIR}/references"  # holds fingerprints/<class>/: unzipped at the root
REFERENCES_ARTIFACT = "envparity-references"
REPORT_ARTIFACT = "envparity-report"
CI_TARGETS = ("venv", "devcontainer", "nix")  # host: the runner's interpreter, no torch


# --------------------------------------------------------------------------- what jobs install


def install_source(spec: Spec) -> str:
    """What the jobs install to get envparity: ``[ci] envparity``, else ``running_source``."""
    settings = spec.ci or CiSettings()
    return settings.envparity or running_source(spec.path.name)


def running_source(spec_name: str = "environment.toml") -> str:
    """The envparity running now, as a pinned requirement (``pinned_source`` of its installed
    distribution's metadata, read with ``importlib.metadata``).

    Raises ``UsageError`` (exit 2) when it cannot be pinned (a local path, or no metadata).
    """
    import importlib.metadata

    try:
        dist = importlib.metadata.distribution("envparity")
    except importlib.metadata.PackageNotFoundError:
        raise UsageError(
            f"{spec_name}: ci.envparity: not set, and this envparity has no installed "
            f"metadata to pin it by (run from a source folder?); {_SET_IT}"
        ) from None
    return pinned_source(dist.version, dist.read_text("direct_url.json"), spec_name)


_SET_IT = (
    "set [ci] envparity = \"<requirement or URL>\" ('envparity==0.1.0', "
    "'envparity @ git+https://host/envparity@<commit>'; '.' in envparity's own repository)"
)


def pinned_source(version: str, direct_url: str | None, spec_name: str = "environment.toml") -> str:
    """A requirement that installs exactly this envparity elsewhere.

    ``direct_url`` is the text of the distribution's ``direct_url.json`` (PEP 610,
    https://packaging.python.org/en/latest/specifications/direct-url-data-structure/), None
    when it has none: then it came from an index, and ``envparity==<version>`` names it. A VCS
    install gives ``envparity @ <vcs>+<url>@<commit_id>``, an archive from a URL ``envparity @
    <url>``. A local folder, file or ``file:`` repository cannot be installed by a CI runner:
    ``UsageError`` (exit 2) asks for ``[ci] envparity``.
    """
    from orchestrator.messages import redact

    if direct_url is None:
        return f"envparity=={version}"
    try:
        data = json.loads(direct_url)
        url = str(data["url"])
    except (ValueError, KeyError, TypeError):
        raise UsageError(
            f"{spec_name}: ci.envparity: not set, and this envparity's direct_url.json is "
            f"unreadable; {_SET_IT}"
        ) from None
    if redact(url) != url:
        raise UsageError(
            f"{spec_name}: ci.envparity: not set, and this envparity was installed from a URL "
            f"with credentials ({redact(url)}), which a committed workflow must not hold; {_SET_IT}"
        )
    vcs = data.get("vcs_info")
    if not url.startswith("file:") and isinstance(vcs, dict) and vcs.get("commit_id"):
        sub = data.get("subdirectory")
        tail = f"#subdirectory={sub}" if sub else ""
        return f"envparity @ {vcs.get('vcs', 'git')}+{url}@{vcs['commit_id']}{tail}"
    if not url.startswith("file:") and "archive_info" in data:
        return f"envparity @ {url}"
    raise UsageError(
        f"{spec_name}: ci.envparity: not set, and this envparity was installed from "
        f"{url.removeprefix('file://')}, a path a CI runner does not have; {_SET_IT}"
    )


# --------------------------------------------------------------------------- jobs and sessions


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
    if not out:
        raise UsageError(
            f"{spec.path.name}: ci: no target a CI runner can provision; add [targets.venv], "
            "[targets.devcontainer] or [targets.nix]"
        )
    return out


def sessions_called(spec: Spec) -> list[str]:
    """The nox sessions the jobs call, in job order: ``probe(<target>)`` ..., ``compare``."""
    from orchestrator import nox_sessions

    probes = [nox_sessions.probe_session(j["target"]) for j in matrix(spec)]
    return [*dict.fromkeys(probes), nox_sessions.COMPARE]


def nox_command(source: str, session: str, *args: str) -> str:
    """The shell line a job runs: nox from PyPI with envparity beside it (``source``,
    shell-quoted). ``session`` and ``args`` are this package's own constants, written as the
    shell should see them (``"probe(${{ matrix.target }})"``: GitHub substitutes first)."""
    line = f"uvx --with {shlex.quote(source)} nox -s {session}"
    return line + (" -- " + " ".join(args) if args else "")


def compare_command(source: str, summary: str, references: str = REFERENCES) -> str:
    """The compare job's line: every job's runs, the summary to ``summary``, the HTML report,
    and the runs as references under ``references`` (``references/fingerprints/<class>/``)."""
    return nox_command(
        source,
        "compare",
        RUNS_DIR,
        "--summary",
        summary,
        "--report",
        REPORT,
        "--record-to",
        references,
    )


def session_problems(spec: Spec, written: list[str]) -> list[str]:
    """``check``'s view: a nox session a CI file on disk (``written``, paths under the spec's
    folder) calls but the project's noxfile does not register. [] without such a file, or when
    render writes the noxfile (it registers them all). The project's own noxfile is read with
    ``ast`` (``nox_sessions.registered``), and loaded with ``nox -l --json`` only when that
    reading does not show every session."""
    from orchestrator import nox_sessions
    from orchestrator.render.noxfile import NOXFILE, generated_noxfile

    on_disk = [p for p in written if (spec.root / p).is_file()]
    if spec.ci is None or not on_disk or generated_noxfile(spec):
        return []
    called = sessions_called(spec)
    shown = " and ".join(on_disk)
    path = spec.root / NOXFILE
    if not path.is_file():
        return [
            f"{NOXFILE}: missing, but {shown} calls the nox sessions {', '.join(called)}; add "
            f"one that calls register({spec.path.name!r}) (docs/cli.md#nox-sessions), or "
            "set [ci] noxfile = true"
        ]
    try:
        found = nox_sessions.registered(path, called, spec)
    except ToolError as exc:
        return [f"{NOXFILE}: {exc}"]
    missing = [s for s in called if s not in found]
    if not missing:
        return []
    return [
        f"{NOXFILE}: does not register the nox session(s) {', '.join(missing)} that {shown} "
        f"calls; add: from orchestrator.nox_sessions import register; "
        f"register({spec.path.name!r}) (docs/cli.md#nox-sessions)"
    ]


# --------------------------------------------------------------------------- GitHub Actions


def workflow(spec: Spec, source: str | None = None) -> dict[str, Any]:
    """The workflow as data (what ``render_workflow`` dumps as YAML); ``source``: what the
    jobs install (default ``install_source(spec)``)."""
    jobs = matrix(spec)
    source = source or install_source(spec)
    out_dir = f"{RUNS_DIR}/{ARTIFACT_PREFIX}${{{{ matrix.name }}}}"
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
            "run": nox_command(source, '"probe(${{ matrix.target }})"', "--out", f'"{out_dir}"'),
        },
        {
            "name": "Upload the fingerprints",
            "if": "${{ !cancelled() }}",  # a divergence from a reference still shows in compare
            "uses": UPLOAD,
            "with": {
                "name": f"{ARTIFACT_PREFIX}${{{{ matrix.name }}}}",
                "path": out_dir,
                "if-no-files-found": "error",
            },
        },
    ]
    compare_steps: list[dict[str, Any]] = [
        {"uses": CHECKOUT},
        {"uses": SETUP_UV},
        {
            "name": "Download every job's fingerprints",
            "uses": DOWNLOAD,
            "with": {"pattern": f"{ARTIFACT_PREFIX}*", "path": RUNS_DIR},
        },
        {
            "name": "Compare with each other and with fingerprints/",
            "run": compare_command(source, '"$GITHUB_STEP_SUMMARY"'),
        },
        {
            "name": "Upload the HTML report",
            "if": "${{ !cancelled() }}",
            "uses": UPLOAD,
            "with": {"name": REPORT_ARTIFACT, "path": REPORT, "if-no-files-found": "warn"},
        },
        {
            "name": "Upload the runs as references (fingerprints/<class>/)",
            "id": "references",
            "if": "${{ !cancelled() }}",  # written only when the runs agree
            "uses": UPLOAD,
            "with": {
                "name": REFERENCES_ARTIFACT,
                "path": REFERENCES,
                "if-no-files-found": "ignore",
            },
        },
        {
            "name": "Say how to commit them",
            "if": "${{ !cancelled() && steps.references.outputs.artifact-url != '' }}",
            "env": {"ARTIFACT_URL": "${{ steps.references.outputs.artifact-url }}"},
            "run": (
                "{\n"
                "  echo\n"
                f'  echo "To make these runs the references: download {REFERENCES_ARTIFACT} '
                "($ARTIFACT_URL), unzip it at the repository root (it holds "
                'fingerprints/<class>/) and commit fingerprints/."\n'
                '} >> "$GITHUB_STEP_SUMMARY"\n'
            ),
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
                "steps": compare_steps,
            },
        },
    }


def dump(data: dict[str, Any]) -> str:
    """``data`` as YAML: PyYAML's SafeDumper in the data's own key order, multi-line strings as
    literal blocks (``|``), as people write them, no line folded. PyYAML is imported here,
    when a CI file is rendered: ``envparity check`` of a spec without ``[ci]`` never imports it."""
    import yaml

    class Dumper(yaml.SafeDumper):  # type: ignore[misc]
        pass

    def literal(dumper: Any, value: str) -> Any:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, literal)
    text: str = yaml.dump(
        data, Dumper=Dumper, sort_keys=False, width=2**16, default_flow_style=False
    )
    return text


def ci_inputs(spec: Spec, source: str) -> str:
    """The inputs hash of a CI file: [ci], each target's flavor and the install source (a
    newer envparity makes the file stale); not the locks, read when the jobs run."""
    return files.inputs_hash(
        {
            "format": CI_FORMAT,
            "ci": spec.to_dict().get("ci"),
            "flavors": {t: spec.flavor_of(t) for t in sorted(spec.targets)},
            "source": source,
        }
    )


def ci_file(
    spec: Spec,
    path: str,
    build: Callable[[Spec, str], dict[str, Any]],
    provider: str,
    *,
    reuse: bool = False,
) -> files.Generated:
    """The CI file ``path`` that ``build(spec, install source)`` describes, with envparity's
    header (regenerated by ``envparity ci <provider>``). ``reuse``: the file on disk when its
    header shows it made from these inputs, unedited (``files.kept``), else rendered."""
    source = install_source(spec)
    inputs = ci_inputs(spec, source)
    header = {"regenerate": f"envparity ci {provider}", "spec_name": spec.path.name}
    on_disk = files.kept(spec.root, path, inputs, **header) if reuse else None
    return on_disk or files.Generated(path, dump(build(spec, source)), inputs, **header)


def render_workflow(spec: Spec, *, reuse: bool = False) -> files.Generated:
    """``.github/workflows/envparity.yml`` with envparity's header (``reuse``: ``ci_file``)."""
    return ci_file(spec, WORKFLOW, workflow, "github", reuse=reuse)
