"""What the probe is (``orchestrator.probe.inputs.probe_source``): one list, read by both verify's
fingerprint cache key and each reference's inputs.

Each module the probe runs that decides its numbers is edited in a scratch copy of the
package; both the cache key and the reference staleness must notice. (Before this list had
one owner, an edit to ``orchestrator/determinism.py`` left committed references "current",
so a changed ``seed_everything`` read as "diverged from reference" instead of "stale".)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.probe import inputs

PACKAGE = Path(inputs.__file__).resolve().parents[1]

# Run in the scratch copy: for each file in argv (relative to the scratch folder), append a
# comment, then print the cache key, the reference inputs and the staleness of a reference
# recorded before the edit.
SCRIPT = """
import json, sys
from pathlib import Path
from orchestrator import references, spec as specs, verify
from orchestrator.targets.base import Context, Target

class Venv(Target):
    name = "venv"
    def unavailable(self): return None
    def provision(self): return None
    def command(self, argv, *, env): return argv, env

project = Path(sys.argv[1])
s = specs.load(project / "environment.toml")
ctx = Context(spec=s, cache=project / ".envparity", runtime=Path("runtime-copy"))

def now():
    return verify.run_key(Venv(ctx), ctx, "machine"), references.reference_inputs(s, "venv")[0]

key, recorded = now()
ref = references.Reference("cpu-x", "venv", None, "t", "m", recorded, "", "locks/cpu.txt")
out = {}
for name in sys.argv[2:]:
    path = Path(name)
    before = path.read_text()
    path.write_text(before + "# edited\\n")
    out[name] = {"key": now()[0] != key, "stale": references.stale_reason(s, ref)}
    path.write_text(before)
assert now() == (key, recorded)
print(json.dumps(out))
"""


def edits(tmp_path: Path, spec: str, files: list[str]) -> dict[str, dict[str, object]]:
    scratch = tmp_path / "scratch"
    shutil.copytree(PACKAGE, scratch / "orchestrator", ignore=shutil.ignore_patterns("__pycache__"))
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    (project / "environment.toml").write_text(spec)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(project), *files],
        cwd=scratch,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(scratch), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, dict[str, object]] = json.loads(done.stdout)
    return result


SPEC = '[environment]\nname = "p"\npython = "3.11"\n'
STALE = (
    "recorded from other environment.toml inputs (seed, determinism, steps or probe) or "
    "another version of the probe's code"
)


def test_editing_any_module_the_probe_runs_reaches_the_cache_key_and_the_references(
    tmp_path: Path,
) -> None:
    modules = sorted(inputs.NUMERIC_MODULES)
    assert "orchestrator.determinism" in modules  # the module references once missed
    files = [str(inputs.module_file(m).relative_to(PACKAGE.parent)) for m in modules]
    found = edits(tmp_path, SPEC, [*files, "orchestrator/cli.py"])
    assert {f: found[f] for f in files} == {f: {"key": True, "stale": STALE} for f in files}
    # Not part of the probe: a new command line changes no number (verify's cache still
    # re-probes, because the runtime copy of the package changes).
    assert found["orchestrator/cli.py"] == {"key": False, "stale": None}


def test_a_user_probe_is_its_package_and_the_modules_it_runs(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "mytrain").mkdir(parents=True)
    (project / "mytrain" / "__init__.py").write_text("")
    (project / "mytrain" / "probe.py").write_text("def train(rec):\n    pass\n")
    spec = SPEC + '[verify]\nprobe = "mytrain.probe:train"\n'
    found = edits(
        tmp_path,
        spec,
        [str(project / "mytrain" / "probe.py"), "orchestrator/determinism.py"],
    )
    assert list(found.values()) == [{"key": True, "stale": STALE}] * 2


def test_the_files_are_the_ones_a_fingerprint_records() -> None:
    """probe_source hashes the very files (and digests) ``inputs.collect`` records in a
    fingerprint's ``inputs.code`` for these modules."""
    import importlib

    for name in inputs.NUMERIC_MODULES:
        importlib.import_module(name)
    code = inputs.collect(PACKAGE.parent, set(), "").code
    assert {
        name: (PACKAGE.parent / code[name].path, code[name].sha256)
        for name in inputs.NUMERIC_MODULES
    } == {
        name: (inputs.module_file(name), inputs.sha256_file(inputs.module_file(name)))
        for name in inputs.NUMERIC_MODULES
    }


@pytest.mark.parametrize("probe", [None, "not_here.mod:train"])
def test_probe_source_is_stable(probe: str | None, tmp_path: Path) -> None:
    assert inputs.probe_source(probe, tmp_path) == inputs.probe_source(probe, tmp_path)
    assert inputs.probe_source(None, tmp_path) != inputs.probe_source(
        "not_here.mod:train", tmp_path
    )
