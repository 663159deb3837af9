"""Runs a generated CI file's jobs on this machine the way a runner would (test code only).

GitHub Actions (``github``): the jobs in ``needs`` order, each matrix entry of
``strategy.matrix.include`` as its own job, each in a fresh clone of the repository, its steps in
order: ``run:`` steps with ``bash -e`` (GitHub's default shell on Linux) and the variables a
runner sets (``GITHUB_WORKSPACE``, ``GITHUB_STEP_SUMMARY``, ``GITHUB_OUTPUT``, ``GITHUB_ENV``,
``RUNNER_TEMP``, ``RUNNER_OS``, ``CI``, ``GITHUB_ACTIONS``); ``if:`` and ``${{ }}`` for the few
expressions envparity writes (an unknown one fails the test). GitLab CI (``gitlab``): the stages
in order, ``parallel: matrix`` expanded, ``before_script`` and ``script`` in one ``bash -e -o
pipefail`` script with GitLab's variables (``CI``, ``GITLAB_CI``, ``CI_PROJECT_DIR``,
``CI_JOB_NAME``, ``CI_JOB_STAGE``), artifacts kept by ``when`` and handed to later stages.

Actions and images stand in only where a network service would be needed: checkout is a
``git clone`` of the repository, setup-uv the uv on ``PATH``, upload- and download-artifact
folder copies, a job's image this machine (uv on ``PATH``). What cannot run here is never
pretended: a job for a self-hosted GPU runner (GitLab: tags), the Nix job (its installer,
nixpkgs and the flake's caches come from the network), and the devcontainer job (it needs
Docker on the runner; here there is only podman, which the devcontainer target's own tests
use) are skipped, each with the step and the reason, in the transcript (``Harness.lines``,
also printed).
"""

from __future__ import annotations

import fnmatch
import itertools
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from orchestrator.render import ci, gitlab

STEP_TIMEOUT = 900  # seconds; a cold venv with torch takes about 20 s here

SKIPS = {  # why a job cannot run here, by the target it probes
    "nix": "the Nix job installs Nix from nixos.org and fetches nixpkgs and the flake's binary "
    "caches: none is reachable from this machine",
    "devcontainer": "the devcontainer job needs Docker on the runner (ubuntu-latest has it; "
    "GitLab: Docker-in-Docker); this machine has only podman, which the devcontainer target's "
    "own tests use",
}
GPU_SKIP = "needs a self-hosted GPU runner ({labels}); none serves this machine"


@dataclass
class JobResult:
    name: str
    status: str  # "success", "failure", "skipped"
    log: str = ""
    summary: str = ""  # GitHub: the job's step summaries, in order
    workspace: Path | None = None
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)  # step id -> outputs


class Harness:
    """One pipeline run over ``repo`` (a git repository; jobs clone what is committed), its
    folders under ``work``; ``env`` is the machine's environment the runner starts from;
    ``inject`` adds variables to the jobs whose name it maps (``{"venv": {"OMP_NUM_THREADS":
    "1"}}``): a changed environment in one job."""

    def __init__(
        self,
        repo: Path,
        work: Path,
        env: Mapping[str, str],
        *,
        inject: Mapping[str, Mapping[str, str]] | None = None,
        execute: bool = True,
        say: Callable[[str], None] = print,
    ) -> None:
        """``execute=False``: decide what would run and what is skipped, run nothing (each
        step that would run says "not run (plan only)")."""
        self.repo, self.work, self.env, self.execute = repo, work, dict(env), execute
        self.inject = {k: dict(v) for k, v in (inject or {}).items()}
        self.artifacts = work / "artifacts"
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self.lines: list[str] = []
        self._say = say

    def say(self, job: str, text: str) -> None:
        line = f"[{job}] {text}"
        self.lines.append(line)
        self._say(line)

    # ------------------------------------------------------------------ shared

    def _workspace(self, job: str) -> tuple[Path, Path]:
        folder = self.work / re.sub(r"[^\w.-]+", "_", job)
        shutil.rmtree(folder, ignore_errors=True)
        (folder / "tmp").mkdir(parents=True)
        workspace = folder / "repo"
        subprocess.run(
            ["git", "clone", "--quiet", str(self.repo), str(workspace)],
            check=True,
            capture_output=True,
        )
        return workspace, folder / "tmp"

    def _bash(
        self, script: str, cwd: Path, env: dict[str, str], tmp: Path, flags: list[str]
    ) -> tuple[int, str]:
        path = tmp / f"step-{len(list(tmp.iterdir()))}.sh"
        path.write_text(script)
        done = subprocess.run(
            ["bash", *flags, str(path)],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT,
        )
        path.with_suffix(".log").write_text(done.stdout + done.stderr)  # kept for reading
        return done.returncode, done.stdout + done.stderr

    # ------------------------------------------------------------------ GitHub Actions

    def github(self, workflow: Mapping[str, Any]) -> dict[str, JobResult]:
        """Run every job; results by job name (matrix jobs: their ``matrix.name``)."""
        results: dict[str, JobResult] = {}
        done_jobs: dict[str, list[JobResult]] = {}
        for job_id in _needs_order(workflow["jobs"]):
            job = workflow["jobs"][job_id]
            needed = [r for n in _as_list(job.get("needs")) for r in done_jobs[n]]
            ctx = {"needs_ok": all(r.status != "failure" for r in needed)}
            if "if" in job and not self._if(job["if"], {}, ctx, "job"):
                self.say(job_id, f"skipped: if: {job['if']} is false")
                continue
            instances = _github_matrix(job)
            done_jobs[job_id] = []
            for matrix in instances:
                name = str(matrix.get("name", job_id)) if matrix else job_id
                result = self._github_job(name, job, matrix)
                results[name] = result
                done_jobs[job_id].append(result)
        return results

    def _github_job(self, name: str, job: Mapping[str, Any], matrix: dict[str, Any]) -> JobResult:
        runs_on = job["runs-on"]
        if isinstance(runs_on, str) and (
            m := re.fullmatch(r"\$\{\{ matrix\.([\w-]+) \}\}", runs_on)
        ):
            runs_on = matrix[m[1]]
        if runs_on != "ubuntu-latest":
            reason = GPU_SKIP.format(labels=f"runs-on {runs_on}")
            self.say(name, f"skipped job: {reason}")
            return JobResult(name, "skipped", reason)
        workspace, tmp = self._workspace(name) if self.execute else (self.work, self.work)
        self.say(name, f"stood in: runner ubuntu-latest (this machine); workspace {workspace}")
        result = JobResult(name, "success" if self.execute else "planned", workspace=workspace)
        extra_env: dict[str, str] = {}
        failed = False
        for index, step in enumerate(job["steps"]):
            label = step.get("name") or step.get("uses") or step.get("run", "").splitlines()[0]
            ctx = {"failed": failed, "outputs": result.outputs}
            condition = step.get("if")
            if condition is not None and not self._if(condition, matrix, ctx, name):
                self.say(name, f'skipped step "{label}": if: {condition} is false')
                continue
            if condition is None and failed:
                self.say(name, f'skipped step "{label}": an earlier step failed')
                continue
            reason = self._cannot_run(step, matrix)
            if reason:
                self.say(name, f'skipped step "{label}" and the job\'s later steps: {reason}')
                result.status = "skipped"
                result.log += f"skipped: {reason}\n"
                return result
            if not self.execute:
                self.say(name, f'not run (plan only): "{label}"')
                continue
            outputs: dict[str, str] = {}
            code = self._github_step(
                step, matrix, ctx, workspace, tmp, extra_env, result, outputs, index
            )
            if step.get("id"):
                result.outputs[step["id"]] = outputs
            self.say(name, f'{"ran" if "run" in step else "stood in"}: "{label}": exit {code}')
            if code:
                failed = True
        if self.execute:
            result.status = "failure" if failed else "success"
        self.say(name, f"job {result.status}")
        return result

    def _cannot_run(self, step: Mapping[str, Any], matrix: Mapping[str, Any]) -> str:
        if step.get("uses") == ci.INSTALL_NIX:
            return f"{ci.INSTALL_NIX}: {SKIPS['nix']}"
        if "npm install --global" in step.get("run", ""):
            return f"it installs the devcontainers CLI globally, and {SKIPS['devcontainer']}"
        return ""

    def _github_step(
        self,
        step: Mapping[str, Any],
        matrix: dict[str, Any],
        ctx: dict[str, Any],
        workspace: Path,
        tmp: Path,
        extra_env: dict[str, str],
        result: JobResult,
        outputs: dict[str, str],
        index: int,
    ) -> int:
        given = {k: _expand(str(v), matrix, ctx) for k, v in step.get("with", {}).items()}
        uses = step.get("uses")
        if uses == ci.CHECKOUT:
            return 0  # the workspace is a fresh clone already
        if uses == ci.SETUP_UV:
            found = shutil.which("uv", path=self.env.get("PATH"))
            result.log += f"setup-uv: uv on PATH: {found}\n"
            return 0 if found else 1
        if uses == ci.UPLOAD:
            return self._upload(given, workspace, result, outputs)
        if uses == ci.DOWNLOAD:
            target = workspace / given["path"]
            for artifact in sorted(self.artifacts.iterdir()):
                if fnmatch.fnmatch(artifact.name, given["pattern"]):
                    shutil.copytree(artifact, target / artifact.name)
            return 0
        if uses:
            raise AssertionError(f"no stand-in for {uses}")
        summary, output, env_file = (tmp / f"{k}-{index}" for k in ("summary", "output", "env"))
        for f in (summary, output, env_file):
            f.touch()
        env = {
            **self.env,
            **extra_env,
            **{k: _expand(str(v), matrix, ctx) for k, v in step.get("env", {}).items()},
            **self.inject.get(result.name, {}),
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_WORKSPACE": str(workspace),
            "GITHUB_STEP_SUMMARY": str(summary),
            "GITHUB_OUTPUT": str(output),
            "GITHUB_ENV": str(env_file),
            "RUNNER_TEMP": str(tmp),
            "RUNNER_OS": "Linux",
        }
        code, log = self._bash(_expand(step["run"], matrix, ctx), workspace, env, tmp, ["-e"])
        result.log += log
        result.summary += summary.read_text()
        outputs.update(_key_values(output.read_text()))
        extra_env.update(_key_values(env_file.read_text()))
        return code

    def _upload(
        self, given: Mapping[str, str], workspace: Path, result: JobResult, outputs: dict[str, str]
    ) -> int:
        source = workspace / given["path"]
        files = [p for p in source.rglob("*") if p.is_file()] if source.is_dir() else []
        if source.is_file():
            files = [source]
        if not files:
            mode = given.get("if-no-files-found", "warn")
            result.log += f"upload-artifact {given['name']}: no files at {given['path']} ({mode})\n"
            return 1 if mode == "error" else 0
        dest = self.artifacts / given["name"]
        shutil.rmtree(dest, ignore_errors=True)
        if source.is_dir():
            shutil.copytree(source, dest)
        else:
            dest.mkdir()
            shutil.copy(source, dest / source.name)
        outputs.update({"artifact-id": given["name"], "artifact-url": dest.as_uri()})
        return 0

    def _if(
        self, condition: str, matrix: Mapping[str, Any], ctx: Mapping[str, Any], job: str
    ) -> bool:
        text = condition.strip()
        if text.startswith("${{") and text.endswith("}}"):
            text = text[3:-2].strip()
        return all(self._term(t.strip(), matrix, ctx) for t in text.split("&&"))

    @staticmethod
    def _term(term: str, matrix: Mapping[str, Any], ctx: Mapping[str, Any]) -> bool:
        if term in ("!cancelled()", "always()"):
            return True
        if term == "success()":
            return not ctx.get("failed") and ctx.get("needs_ok", True)
        if term == "failure()":
            return bool(ctx.get("failed"))
        m = re.fullmatch(r"(matrix\.[\w-]+|steps\.[\w-]+\.outputs\.[\w-]+) (==|!=) '([^']*)'", term)
        if m is None:
            raise AssertionError(f"no stand-in for the expression {term!r}")
        value = _value(m[1], matrix, ctx)
        return (value == m[3]) == (m[2] == "==")

    # ------------------------------------------------------------------ GitLab CI

    def gitlab(self, pipeline: Mapping[str, Any]) -> dict[str, JobResult]:
        """Run every job, stage by stage; results by job name (``probe: [venv]``)."""
        reserved = {
            "stages",
            "default",
            "variables",
            "workflow",
            "include",
            "image",
            "services",
            "before_script",
            "after_script",
            "cache",
        }
        jobs = {k: v for k, v in pipeline.items() if k not in reserved and not k.startswith(".")}
        default = pipeline.get("default", {})
        results: dict[str, JobResult] = {}
        kept: list[Path] = []  # artifact folders of earlier stages, in order
        for stage in pipeline.get("stages", ["test"]):
            earlier_failed = any(r.status == "failure" for r in results.values())
            stage_kept = []
            for job_name, job in jobs.items():
                if job.get("stage", "test") != stage:
                    continue
                for name, variables in _gitlab_matrix(job_name, job):
                    when = job.get("when", "on_success")
                    if when == "on_success" and earlier_failed:
                        self.say(name, "skipped job: an earlier stage failed (when: on_success)")
                        results[name] = JobResult(name, "skipped")
                        continue
                    result, artifact = self._gitlab_job(
                        name,
                        job,
                        default,
                        {**pipeline.get("variables", {}), **job.get("variables", {}), **variables},
                        kept,
                    )
                    results[name] = result
                    if artifact is not None:
                        stage_kept.append(artifact)
            kept += stage_kept
        return results

    def _gitlab_job(
        self,
        name: str,
        job: Mapping[str, Any],
        default: Mapping[str, Any],
        variables: Mapping[str, str],
        kept: list[Path],
    ) -> tuple[JobResult, Path | None]:
        image = job.get("image", default.get("image"))
        reason = ""
        if job.get("tags"):
            reason = GPU_SKIP.format(labels=f"tags {job['tags']}")
        elif variables.get("TARGET") in SKIPS:
            reason = SKIPS[str(variables["TARGET"])]
        if reason:
            self.say(name, f"skipped job (image {image}): {reason}")
            return JobResult(name, "skipped", reason), None
        if not self.execute:
            self.say(
                name, f"not run (plan only): image {image}, {len(job['script'])} script line(s)"
            )
            return JobResult(name, "planned"), None
        workspace, tmp = self._workspace(name)
        self.say(name, f"stood in: image {image} (this machine, uv on PATH); workspace {workspace}")
        for folder in kept:
            shutil.copytree(folder, workspace, dirs_exist_ok=True)
        if kept:
            self.say(name, f"stood in: artifacts of earlier stages copied in ({len(kept)})")
        lines = [*job.get("before_script", default.get("before_script", [])), *job["script"]]
        env = {
            **self.env,
            **{k: str(v) for k, v in variables.items()},
            **self.inject.get(name, {}),
            "CI": "true",
            "GITLAB_CI": "true",
            "CI_PROJECT_DIR": str(workspace),
            "CI_JOB_NAME": name,
            "CI_JOB_STAGE": job.get("stage", "test"),
        }
        code, log = self._bash(
            "\n".join(lines) + "\n", workspace, env, tmp, ["-e", "-o", "pipefail"]
        )
        result = JobResult(name, "failure" if code else "success", log, workspace=workspace)
        self.say(name, f"ran: script ({len(lines)} line(s)): exit {code}")
        artifacts = job.get("artifacts", {})
        when = artifacts.get("when", "on_success")
        artifact: Path | None = None
        if artifacts.get("paths") and (when == "always" or (when == "on_success") == (code == 0)):
            artifact = self.artifacts / re.sub(r"[^\w.-]+", "_", name)
            for rel in artifacts["paths"]:
                source = workspace / rel
                if source.is_dir():
                    shutil.copytree(source, artifact / rel, dirs_exist_ok=True)
                elif source.is_file():
                    (artifact / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(source, artifact / rel)
            self.say(name, f"stood in: artifacts {artifacts['paths']} kept (when: {when})")
        self.say(name, f"job {result.status}")
        return result, artifact


# --------------------------------------------------------------------------- linters


def tool(name: str) -> str:
    """``name`` beside this interpreter (the test lock installs it), else on ``PATH``."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: it comes with the test lock (nox -s tests)")
    return found


def lint(path: Path) -> None:
    """A generated CI file passes its linters: GitLab's CI schema (check-jsonschema's vendored
    copy) for ``.gitlab-ci.yml``; actionlint and the GitHub workflow schema for a workflow."""
    checks = (
        [[tool("check-jsonschema"), "--builtin-schema", "vendor.gitlab-ci", str(path)]]
        if path.name == gitlab.GITLAB_CI
        else [
            [tool("actionlint"), str(path)],
            [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(path)],
        ]
    )
    for argv in checks:
        done = subprocess.run(argv, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


# --------------------------------------------------------------------------- helpers


def _as_list(value: Any) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def _needs_order(jobs: Mapping[str, Any]) -> list[str]:
    order: list[str] = []
    while len(order) < len(jobs):
        ready = [
            j for j in jobs if j not in order and set(_as_list(jobs[j].get("needs"))) <= set(order)
        ]
        if not ready:
            raise AssertionError(f"a cycle in needs: {sorted(set(jobs) - set(order))}")
        order += ready
    return order


def _github_matrix(job: Mapping[str, Any]) -> list[dict[str, Any]]:
    strategy = job.get("strategy", {}).get("matrix")
    if strategy is None:
        return [{}]
    keys = [k for k in strategy if k not in ("include", "exclude")]
    if keys or "exclude" in strategy:
        raise AssertionError(f"no stand-in for matrix keys {keys} (only include)")
    return [dict(entry) for entry in strategy["include"]]


def _gitlab_matrix(name: str, job: Mapping[str, Any]) -> list[tuple[str, dict[str, str]]]:
    entries = (
        job.get("parallel", {}).get("matrix") if isinstance(job.get("parallel"), dict) else None
    )
    if not entries:
        return [(name, {})]
    out = []
    for entry in entries:
        keys = list(entry)
        values = [v if isinstance(v, list) else [v] for v in entry.values()]
        for combo in itertools.product(*values):
            out.append(
                (
                    f"{name}: [{', '.join(map(str, combo))}]",
                    dict(zip(keys, map(str, combo), strict=True)),
                )
            )
    return out


def _value(ref: str, matrix: Mapping[str, Any], ctx: Mapping[str, Any]) -> str:
    parts = ref.split(".")
    if parts[0] == "matrix":
        return str(matrix[parts[1]])
    if parts[0] == "steps" and parts[2] == "outputs":
        return str(ctx.get("outputs", {}).get(parts[1], {}).get(parts[3], ""))
    raise AssertionError(f"no stand-in for {ref}")


def _expand(text: str, matrix: Mapping[str, Any], ctx: Mapping[str, Any]) -> str:
    return re.sub(r"\$\{\{ ([\w.-]+) \}\}", lambda m: _value(m[1], matrix, ctx), text)


def _key_values(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
