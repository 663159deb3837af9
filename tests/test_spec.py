from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator import cli, spec
from orchestrator.errors import SpecError
from tests.helpers import MINIMAL, REPO


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        spec.loads(text, path="environment.toml")
    return [str(p) for p in info.value.problems]


def test_minimal_spec_gets_documented_defaults() -> None:
    s = spec.loads(MINIMAL)
    assert s.environment.name == "demo"
    assert s.environment.systems == ("x86_64-linux",)
    assert s.flavors == ("cpu",)
    assert s.determinism == spec.Determinism(seed=0, deterministic_algorithms=True, tf32=False)
    assert s.verify.steps == 30 and s.verify.runs == 2 and s.verify.rtol == 0.0
    assert [d.requirement() for d in s.dependencies] == ["numpy>=2"]


def test_the_repository_spec_loads() -> None:
    s = spec.load(REPO / "environment.toml")
    assert s.flavors == ("cu130", "cpu")
    assert s.flavor_of("venv") == "cpu" and s.flavor_of("devcontainer") == "cu130"
    torch = s.dependency("torch")
    assert torch is not None and torch.specifier == "==2.13.0"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            MINIMAL.replace('numpy = ">=2"', 'torch = "==2.1.0."'),
            "environment.toml: dependencies.torch: invalid specifier '==2.1.0.': Invalid specifier: '==2.1.0.'",
        ),
        (
            MINIMAL.replace("python", "pyton"),
            "environment.toml: environment.pyton: unknown key; did you mean 'python'?",
        ),
        (
            MINIMAL + "\n[determinsm]\nseed = 1\n",
            "environment.toml: determinsm: unknown key; did you mean 'determinism'?",
        ),
        (
            MINIMAL + "\n[determinism]\nseed = 'a'\n",
            "environment.toml: determinism.seed: expected an integer, got a string 'a'",
        ),
        (
            MINIMAL + "\n[determinism]\nseed = true\n",
            "environment.toml: determinism.seed: expected an integer, got a boolean True",
        ),
        (
            MINIMAL + "\n[determinism]\nseed = -1\n",
            "environment.toml: determinism.seed: -1 is not between 0 and 4294967295",
        ),
        (
            MINIMAL.replace('"3.11"', '"3"'),
            'environment.toml: environment.python: \'3\' is not a Python version such as "3.11" or "3.11.9"',
        ),
        (
            MINIMAL + "\n[cuda]\nversion = 12.8\n",
            "environment.toml: cuda.version: expected a string, got a number 12.8",
        ),
        (
            MINIMAL + "\n[variables]\nPYTHONHASHSEED = '1'\n",
            "environment.toml: variables.PYTHONHASHSEED: 'PYTHONHASHSEED' is set by envparity or the "
            "system, not here ([determinism] sets the launch environment)",
        ),
        (
            MINIMAL + "\n[variables]\nTOKEN = { secret = true, default = 'x' }\n",
            "environment.toml: variables.TOKEN.default: a secret has no default: secret values are never written",
        ),
        (
            MINIMAL + '\n[variables]\nTOKEN = { default = "a\\nb" }\n',
            "environment.toml: variables.TOKEN.default: a default must be one line of printable text (found '\\n')",
        ),
        (
            MINIMAL + "\n[targets.devcontainer]\nimage = 'Ubuntu:latest'\n",
            "environment.toml: targets.devcontainer.image: 'Ubuntu:latest' is not an image reference "
            "(registry/name:tag, optionally @sha256:<64 hex digits>)",
        ),
        (
            MINIMAL + "\n[targets.venv]\nflavor = 'cu121'\n",
            "environment.toml: targets.venv.flavor: 'cu121' is not a flavor of this spec (cpu)",
        ),
        (
            MINIMAL + "\n[targets.conda]\n",
            "environment.toml: targets.conda: unknown key (known keys: host, venv, devcontainer, nix)",
        ),
        (
            MINIMAL + "\n[[index]]\nurl = 'https://x.org/$(id)'\n",
            "environment.toml: index[0].url: 'https://x.org/$(id)' is not an http(s):// or file:// URL "
            "or an absolute path (no spaces, quotes, '$' or backticks)",
        ),
        (
            "[environment]\nname = 'x'\npython = '3.11'\nsystems = ['arm64-darwin']\n",
            "environment.toml: environment.systems[0]: 'arm64-darwin' is not a supported system "
            "(supported: x86_64-linux, aarch64-linux, aarch64-darwin, x86_64-darwin)",
        ),
        (
            "[environment]\nname = 'x'\npython = '3.11'\nsystems = ['aarch64-darwin']\nmacos = '14'\n",
            "environment.toml: environment.macos: '14' is not a macOS version such as \"14.0\"",
        ),
        (
            "[environment]\nname = 'x'\npython = '3.11'\nsystems = ['aarch64-darwin']\n"
            "[cuda]\nversion = '12.8'\n",
            "environment.toml: environment.systems: [cuda] needs a Linux system (x86_64-linux or "
            "aarch64-linux): CUDA flavors are locked for Linux only, macOS has no CUDA",
        ),
        (
            "[environment]\nname = 'x'\npython = '3.11'\nsystems = ['aarch64-darwin']\n"
            "[targets.devcontainer]\nimage = 'python:3.11'\n",
            "environment.toml: targets.devcontainer: needs a Linux system in environment.systems: "
            "a container runs Linux (on Apple Silicon add aarch64-linux, for linux/arm64 images)",
        ),
        (
            MINIMAL + "\n[[index]]\nurl = 'https://x.org/simple'\nsystems = ['aarch64-darwin']\n",
            "environment.toml: index[0].systems[0]: 'aarch64-darwin' is not in environment.systems "
            "(x86_64-linux)",
        ),
        (
            "[dependencies]\nnumpy = '>=2'\n",
            "environment.toml: environment: missing (expected a table)",
        ),
    ],
)
def test_bad_values_are_named_by_key_path(text: str, expected: str) -> None:
    assert expected in problems(text)


@pytest.mark.parametrize("user", ["root", "toor"])
def test_a_root_devcontainer_user_is_refused_with_exit_2(
    user: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    text = MINIMAL + f"\n[targets.devcontainer]\nimage = 'debian:bookworm-slim'\nuser = '{user}'\n"
    (tmp_path / "environment.toml").write_text(text)
    assert cli.main(["render"]) == 2
    assert capsys.readouterr().err == (
        f"envparity: environment.toml: targets.devcontainer.user: '{user}' is root (uid 0): the "
        "container runs as a non-root user with uid 1000 that updateRemoteUserUID maps to yours; "
        "name one, e.g. 'dev' (the default)\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["environment.toml"]


def test_every_problem_is_reported_at_once() -> None:
    found = problems(
        "[environment]\nname = 'a b'\npython = '2.7'\n[dependencies]\ntorch = '=>2'\n"
        "[determinism]\nthreads = 0\n"
    )
    assert [p.split(": ")[1] for p in found] == [
        "environment.name",
        "environment.python",
        "dependencies.torch",
        "determinism.threads",
    ]


def test_toml_syntax_error_names_line_and_column() -> None:
    assert problems("[environment]\nname = 'x'\npython = \n") == [
        "environment.toml: TOML syntax error: Invalid value (at line 3, column 10)"
    ]


def test_duplicate_package_spellings_are_one_package() -> None:
    assert "environment.toml: dependencies.Torch: the same package as 'torch'" in problems(
        MINIMAL + 'torch = ">=2"\nTorch = ">=2"\n'
    )


def test_cuda_spec_has_a_cuda_flavor_first() -> None:
    s = spec.loads(MINIMAL + '\n[cuda]\nversion = "12.8"\ncudnn = "9"\n')
    assert s.flavors == ("cu128", "cpu")
    assert s.cuda is not None and s.cuda.nix_attr == "cudaPackages_12_8"


def test_digest_changes_with_what_matters_only() -> None:
    a = spec.loads(MINIMAL)
    b = spec.loads("# a comment\n" + MINIMAL.replace('">=2"', '">= 2"'))
    c = spec.loads(MINIMAL.replace('">=2"', '">=2.1"'))
    assert a.digest() == b.digest() != c.digest()


def test_cli_reports_bad_spec_with_exit_2_and_no_traceback(
    write_spec: Callable[[str], Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    write_spec(MINIMAL.replace("python", "pyton"))
    monkeypatch.chdir(tmp_path)
    before = sorted(os.listdir(tmp_path))
    assert cli.main(["render"]) == 2
    err = capsys.readouterr().err
    assert "environment.toml: environment.pyton: unknown key; did you mean 'python'?" in err
    assert "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == before


def test_missing_spec_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["check"]) == 2
    assert capsys.readouterr().err == (
        "envparity: environment.toml: no such file (create one with 'envparity init')\n"
    )


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_loader_never_crashes_on_arbitrary_text(text: str) -> None:
    try:
        spec.loads(text)
    except SpecError as exc:
        assert exc.problems


def test_every_shape_pattern_matches_whole_values_in_ascii() -> None:
    """A pattern added later gets the same treatment: ASCII classes and an end anchor that no
    trailing newline passes, for .match and .fullmatch callers alike."""
    import re

    patterns = {k: v for k, v in vars(spec).items() if k.endswith("_RE")}
    assert len(patterns) >= 15
    for name, pattern in patterns.items():
        assert pattern.flags & re.ASCII, name
        assert pattern.pattern.endswith(r"\Z"), name
    assert spec._PYTHON_RE.match("3.11\n") is None
    assert spec._PYTHON_RE.match("3.\u0661\u0661") is None
    assert spec._PYTHON_RE.match("3.11") is not None


FLEET = """\
[environment]
name = "fleet"
python = "3.11"
systems = ["x86_64-linux", "aarch64-linux", "aarch64-darwin"]

[cuda]
version = "13.0"

[dependencies]
torch = "==2.13.0"

[[index]]
url = "https://download.pytorch.org/whl/cpu"
flavors = ["cpu"]
systems = ["x86_64-linux", "aarch64-linux"]
"""


def test_a_fleet_spec_locks_cuda_for_linux_only_and_macos_takes_pypi_torch() -> None:
    s = spec.loads(FLEET)
    assert s.systems_of("cpu") == ("x86_64-linux", "aarch64-linux", "aarch64-darwin")
    assert s.systems_of("cu130") == ("x86_64-linux", "aarch64-linux")
    assert s.environment.macos_target == "14.0"
    index = s.indexes[0]
    assert index.applies_to("cpu", "x86_64-linux") and not index.applies_to("cpu", "aarch64-darwin")
    assert not index.applies_to("cu130", "x86_64-linux")


def test_new_keys_left_unset_keep_every_inputs_hash() -> None:
    # environment.macos and index.systems came later: unset, they are not in to_dict(), so
    # the inputs hash of every existing lock and generated file stays what it was.
    data = spec.load(REPO / "environment.toml").to_dict()
    assert "macos" not in data["environment"]
    assert all("systems" not in index for index in data["indexes"])
    assert (
        spec.loads(
            FLEET.replace('"aarch64-darwin"]', '"aarch64-darwin"]\nmacos = "15.0"')
        ).to_dict()["environment"]["macos"]
        == "15.0"
    )


def test_the_documented_fleet_example_loads_and_locks_what_the_docs_say() -> None:
    from orchestrator import lock

    text = (REPO / "docs" / "spec.md").read_text(encoding="utf-8")
    example = text.split("## Systems: Linux and macOS in one spec")[1].split("```toml\n")[1]
    s = spec.loads(example.split("```")[0])
    assert [t.path for t in lock.lock_targets(s)] + [lock.pylock_path(f) for f in s.flavors] == [
        "locks/cu130.txt",
        "locks/cpu.txt",
        "locks/cpu-aarch64-darwin.txt",
        "locks/pylock.cu130.toml",
        "locks/pylock.cpu.toml",
    ]
    assert [i.url for i in lock.sources(s, "cpu", "aarch64-darwin")] == []  # PyPI's torch


def test_a_dependency_with_a_path_is_a_local_package() -> None:
    s = spec.loads(
        MINIMAL
        + 'library = { path = "./sd-scripts/", editable = true, extras = ["train"] }\n'
        + 'me = { path = "." }\n'
    )
    assert [d.name for d in s.dependencies] == ["numpy"]
    assert s.local_packages == (
        spec.LocalPackage(name="library", path="sd-scripts", editable=True, extras=("train",)),
        spec.LocalPackage(name="me", path="."),
    )
    assert [p.target for p in s.local_packages] == ["./sd-scripts[train]", "."]


@pytest.mark.parametrize("path", ["../other", "/opt/src", "a/../../b", ".hidden", "x y"])
def test_a_local_package_outside_the_spec_folder_is_refused(path: str) -> None:
    assert problems(MINIMAL + f'mine = {{ path = "{path}" }}\n') == [
        f"environment.toml: dependencies.mine.path: '{path}' is not a folder inside the spec's "
        'folder (a relative path such as "sd-scripts" or "."; no "..", no absolute path: the '
        "devcontainer and CI see only the repository)"
    ]


def test_an_index_kept_to_some_packages_names_dependencies_of_the_spec() -> None:
    index = '\n[[index]]\nurl = "https://download.pytorch.org/whl/cpu"\npackages = {}\n'
    s = spec.loads(MINIMAL + index.format('["numpy"]'))
    assert s.indexes[0].packages == ("numpy",)
    assert problems(MINIMAL + index.format('["torch"]')) == [
        "environment.toml: index[0].packages[0]: 'torch' is not in [dependencies]: an index kept "
        "to some packages serves only packages the spec names (uv sends only direct dependencies "
        "to such an index)"
    ]
    assert problems(MINIMAL + index.format('["numpy"]\nkind = "find-links"')) == [
        "environment.toml: index[0].packages: an index for some packages only must be kind = "
        '"index" (uv keeps packages to an index, not to find-links)'
    ]


def test_new_keys_leave_the_digest_of_specs_without_them_alone() -> None:
    """Local packages and index.packages are absent from to_dict when unused, so every file
    generated from a spec without them keeps its inputs hash."""
    s = spec.loads(MINIMAL + '\n[[index]]\nurl = "https://download.pytorch.org/whl/cpu"\n')
    data = s.to_dict()
    assert "local_packages" not in data and data["indexes"] == [
        {"flavors": [], "kind": "index", "url": "https://download.pytorch.org/whl/cpu"}
    ]
