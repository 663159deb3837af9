"""Hostile values in every spec string that can reach a generated file.

Each value, put into each field, must be either refused when the spec is loaded (exit 2, a
message naming the key, nothing written) or rendered as inert data, which is proven by
reading it back with the real tools: Nix evaluates the flake and gives back exactly the
value; bash runs the flake's shell hook and the Dockerfile's RUN lines (their commands
replaced by recorders) and passes exactly the value as one argument; bash sources
.env.example and gets exactly the value; Docker's parser reads the Dockerfile. Values
that would run something (``$(touch PWNED)``, backticks, ``${builtins.abort ...}``) leave a
trace if they ever do.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import real_tools

from orchestrator import cli

HOSTILE = {
    "single quote": "it's",
    "double quote": 'say "hi"',
    "nix interpolation": '${builtins.abort "PWNED"}',
    "nix indented-string quotes": "'' ''${x} ''' ''\\n",
    "command substitution": "$(touch PWNED)",
    "backticks": "`touch PWNED`",
    "shell operators": "x;touch PWNED&&y|z",
    "variables": "$HOME${HOME}$1",
    "backslashes": "a\\b\\\\c\\",
    "newline": "line1\ntouch PWNED",
    "carriage return": "a\rb",
    "tab": "a\tb",
    "non-ASCII": "naïve 日本語 ✓",
    "unicode line breaks": "a\u2028b\x85c",
    "comment markers": "*/ // # <!--",
    # no spaces, quotes or dollars: these pass the URL and flake-reference shape checks
    "url-safe shell metacharacters": "a;touch+PWNED&b(c)*d!e#f",
    "nix doubled quotes": "x''y'''z",
}

NIXPKGS = "github:NixOS/nixpkgs/03652d51808a3ea042cf9e6f0c658b8ca7c044ea"
BASE: dict[str, Any] = {
    "environment": {"name": "hostile", "python": "3.11"},
    "dependencies": {"numpy": ">=2", "pillow": {"version": ">=11"}},
    "index": [{"url": "https://download.pytorch.org/whl/cpu"}],
    "system": {"packages": ["git", "curl"], "nix": {"curl": "curl"}, "apt": {"curl": "curl"}},
    "variables": {
        "HOSTILE": {"default": "x", "description": "y"},
        "PLAIN": {"default": "plain value", "description": "an ordinary variable"},
    },
    "targets": {
        "nix": {"nixpkgs": NIXPKGS},
        "devcontainer": {
            "image": "python:3.11-slim",
            "extensions": ["ms-python.python"],
            "user": "dev",
        },
    },
}


# --------------------------------------------------------------------------- TOML writing


def toml_string(value: str) -> str:
    """A TOML basic string holding exactly ``value`` (JSON's escapes are TOML's, but DEL)."""
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_value(value: Any) -> str:
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{ " + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
        )
    raise TypeError(type(value).__name__)


def toml_text(data: dict[str, Any]) -> str:
    out = []
    for name, table in data.items():
        if name == "index":
            out += [
                "[[index]]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in t.items())
                for t in table
            ]
        elif name == "targets":
            out += [
                f"[targets.{t}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in tt.items())
                for t, tt in table.items()
            ]
        else:
            out.append(
                f"[{name}]\n"
                + "".join(f"{toml_string(k)} = {toml_value(v)}\n" for k, v in table.items())
            )
    return "\n".join(out)


# --------------------------------------------------------------------------- reading back


def nix(folder: Path, expr: str) -> Any:
    """Evaluate ``expr`` with ``flake`` (the generated flake.nix) and ``shell`` (its x86_64
    devShell, built on the stand-in extended with extra-packages.json) in scope."""
    package_set = folder / "nixpkgs"
    package_set.mkdir(exist_ok=True)
    (package_set / "default.nix").write_text(
        f"args: let pkgs = import {json.dumps(str(real_tools.STANDIN))} args;\n"
        "  extra = builtins.fromJSON (builtins.readFile ../extra-packages.json);\n"
        "  mk = path: v: if v == true\n"
        '    then pkgs.git // { name = builtins.concatStringsSep "." path; }\n'
        "    else builtins.mapAttrs (n: mk (path ++ [ n ])) v;\n"
        "in pkgs // builtins.mapAttrs (n: mk [ n ]) extra\n"
    )
    extra = folder / "extra-packages.json"
    if not extra.exists():
        extra.write_text("{}")
    return real_tools.nix_eval_json(
        "let flake = import ./flake.nix; "
        "shell = (flake.outputs { self = { }; nixpkgs = nixpkgs // { outPath = ./nixpkgs; }; })"
        f".devShells.x86_64-linux.default; in {expr}",
        cwd=folder,
    )


def add_nix_packages(folder: Path, *attrs: str) -> None:
    """Let the stand-in hold packages at these attribute paths (names a test made up)."""
    tree: dict[str, Any] = {}
    for attr in attrs:
        *parents, leaf = attr.split(".")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = True
    (folder / "extra-packages.json").write_text(json.dumps(tree))


def flake_hook_calls(folder: Path) -> list[list[str]]:
    """What the flake's shell hook runs, by real bash, with ``uv`` replaced by a recorder."""
    hook = nix(folder, "shell.shellHook")
    work = folder / "hook"
    (work / "locks").mkdir(parents=True)
    (work / "locks" / "cpu.txt").write_text("numpy==2.3.0\n")
    (work / ".venv").mkdir()  # as the recorded `uv venv` makes none: one the hook made before
    (work / ".venv" / ".envparity").touch()
    return real_tools.bash_calls(
        f"ENVPARITY_PYTHON=/usr/bin/python3\n{hook}", cwd=work, commands=["uv"]
    )


def dockerfile_run_calls(folder: Path, containing: str, commands: list[str]) -> list[list[str]]:
    """What the Dockerfile's RUN line containing ``containing`` runs, by real bash."""
    runs = [
        c.value[0]
        for c in real_tools.dockerfile_instructions(folder / ".devcontainer/Dockerfile")
        if c.cmd.upper() == "RUN" and containing in c.value[0]
    ]
    assert len(runs) == 1, runs
    work = folder / "run"
    work.mkdir(exist_ok=True)
    return real_tools.bash_calls(runs[0], cwd=work, commands=commands)


def dockerfile(folder: Path, instruction: str) -> list[tuple[str, ...]]:
    path = folder / ".devcontainer/Dockerfile"
    return [
        c.value for c in real_tools.dockerfile_instructions(path) if c.cmd.upper() == instruction
    ]


def devcontainer(folder: Path) -> Any:
    return real_tools.validate_devcontainer(folder / ".devcontainer/devcontainer.json")


def check_name(folder: Path, value: str) -> None:
    assert nix(folder, "[ flake.description shell.name ]") == [
        f"envparity environment {value}",
        value,
    ]
    assert devcontainer(folder)["name"] == value
    labels = real_tools.dockerfile_pairs(
        folder / ".devcontainer/Dockerfile", "LABEL", ["org.opencontainers.image.title"]
    )
    assert labels == {"org.opencontainers.image.title": value}


def check_index_url(folder: Path, value: str) -> None:
    assert flake_hook_calls(folder)[-1] == [
        "uv",
        "pip",
        "sync",
        "--quiet",
        "--python",
        ".venv/bin/python",
        "--require-hashes",
        "--extra-index-url",
        value,
        "locks/cpu.txt",
    ]
    assert dockerfile_run_calls(folder, "uv venv", ["uv", "rm", "chown"])[1] == [
        "uv",
        "pip",
        "sync",
        "--python",
        "/opt/venv/bin/python",
        "--require-hashes",
        "--extra-index-url",
        value,
        "/tmp/envparity-lock.txt",
    ]


def check_system_package(folder: Path, value: str) -> None:
    add_nix_packages(folder, value)
    assert nix(folder, "map (p: p.name) shell.nativeBuildInputs") == [
        "python311",
        "uv",
        "git",
        value,
        "curl",
    ]
    assert dockerfile_run_calls(folder, "apt-get", ["apt-get", "rm"])[1] == [
        "apt-get",
        "install",
        "-y",
        "--no-install-recommends",
        *sorted(["ca-certificates", "git", "curl", value]),
    ]


def check_nix_mapping(folder: Path, value: str) -> None:
    add_nix_packages(folder, value)
    assert nix(folder, "map (p: p.name) shell.nativeBuildInputs") == [
        "python311",
        "uv",
        "git",
        value,
    ]


def check_apt_mapping(folder: Path, value: str) -> None:
    assert dockerfile_run_calls(folder, "apt-get", ["apt-get", "rm"])[1] == [
        "apt-get",
        "install",
        "-y",
        "--no-install-recommends",
        *sorted(["ca-certificates", "git", value]),
    ]


def check_default(folder: Path, value: str) -> None:
    assert real_tools.dotenv_value(folder, "HOSTILE") == value


def check_description(folder: Path, value: str) -> None:
    assert f"# HOSTILE: {value}" in (folder / ".env.example").read_text(encoding="utf-8").split(
        "\n"
    )


def check_image(folder: Path, value: str) -> None:
    assert dockerfile(folder, "FROM") == [("${UV_IMAGE}", "AS", "uv"), (value,)]


def check_extension(folder: Path, value: str) -> None:
    assert devcontainer(folder)["customizations"]["vscode"]["extensions"] == [value]


def check_user(folder: Path, value: str) -> None:
    assert devcontainer(folder)["remoteUser"] == value
    assert dockerfile(folder, "USER") == [(value,)]
    # userdel is recorded too (never run): this machine may have a uid-1000 user of its own.
    calls = dockerfile_run_calls(folder, "useradd", ["useradd", "userdel"])
    assert [c for c in calls if c[0] == "useradd"] == [
        ["useradd", "--create-home", "--shell", "/bin/bash", "--uid", "1000", value]
    ]


def check_nixpkgs(folder: Path, value: str) -> None:
    assert nix(folder, "flake.inputs.nixpkgs.url") == value


def check_spec_name(folder: Path, value: str) -> None:
    for path in ("flake.nix", ".env.example", ".devcontainer/Dockerfile"):
        first = (folder / path).read_text(encoding="utf-8").split("\n")[0]
        assert (
            first
            == f"# Generated by envparity from {value}; do not edit. Regenerate: envparity render"
        )
    labels = real_tools.dockerfile_pairs(
        folder / ".devcontainer/Dockerfile", "LABEL", ["dev.envparity.spec"]
    )
    assert labels == {"dev.envparity.spec": value}


def reaches_no_file(folder: Path, value: str) -> None:
    """Dependency specifiers, markers and names reach generated files only through the inputs
    hash; what is left to prove is that every file still reads back (checked for all cases)."""


@dataclass(frozen=True)
class Field:
    key: str  # the key path the loader names when it refuses the value
    put: Callable[[dict[str, Any], str], str]  # put the value into the spec; return it as rendered
    check: Callable[[Path, str], None]
    file_name: bool = False  # the value is the spec's file name, not a key


def _set(*path: str | int, wrap: str = "{}") -> Callable[[dict[str, Any], str], str]:
    def put(data: dict[str, Any], value: str) -> str:
        node: Any = data
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = wrap.format(value)
        return wrap.format(value)

    return put


def _put_key(table: str, default: Any) -> Callable[[dict[str, Any], str], str]:
    def put(data: dict[str, Any], value: str) -> str:
        data[table][value] = default
        return value

    return put


def _put_package(data: dict[str, Any], value: str) -> str:
    data["system"]["packages"] = ["git", value, "curl"]
    return value


def _put_extras(data: dict[str, Any], value: str) -> str:
    data["dependencies"]["pillow"]["extras"] = [value]
    return value


def _put_extension(data: dict[str, Any], value: str) -> str:
    data["targets"]["devcontainer"]["extensions"] = [f"ms-python.{value}"]
    return f"ms-python.{value}"


def _put_cuda(key: str) -> Callable[[dict[str, Any], str], str]:
    def put(data: dict[str, Any], value: str) -> str:
        data["cuda"] = {"version": "12.8", "cudnn": "9"} | {key: f"{data_cuda_prefix[key]}{value}"}
        return value

    return put


data_cuda_prefix = {"version": "12.8", "cudnn": "9"}


def _without_curl(
    put: Callable[[dict[str, Any], str], str],
) -> Callable[[dict[str, Any], str], str]:
    def wrapped(data: dict[str, Any], value: str) -> str:
        data["system"] = {"packages": ["git", "curl"], "nix": {}, "apt": {}}
        return put(data, value)

    return wrapped


FIELDS = {
    "environment.name": Field("environment.name", _set("environment", "name"), check_name),
    "environment.python": Field(
        "environment.python", _set("environment", "python", wrap="3.11{}"), reaches_no_file
    ),
    "cuda.version": Field("cuda.version", _put_cuda("version"), reaches_no_file),
    "cuda.cudnn": Field("cuda.cudnn", _put_cuda("cudnn"), reaches_no_file),
    "dependency name": Field("dependencies.", _put_key("dependencies", ">=1"), reaches_no_file),
    "dependency specifier": Field(
        "dependencies.numpy", _set("dependencies", "numpy", wrap="==={}"), reaches_no_file
    ),
    "dependency markers": Field(
        "dependencies.pillow.markers",
        _set("dependencies", "pillow", "markers", wrap="platform_release == '{}'"),
        reaches_no_file,
    ),
    "dependency extras": Field("dependencies.pillow.extras[0]", _put_extras, reaches_no_file),
    "index url": Field(
        "index[0].url",
        _set("index", 0, "url", wrap="https://example.org/simple/{}"),
        check_index_url,
    ),
    "system package": Field(
        "system.packages[1]", _without_curl(_put_package), check_system_package
    ),
    "system.nix": Field("system.nix.curl", _set("system", "nix", "curl"), check_nix_mapping),
    "system.apt": Field("system.apt.curl", _set("system", "apt", "curl"), check_apt_mapping),
    "variable name": Field("variables.", _put_key("variables", "x"), reaches_no_file),
    "variable default": Field(
        "variables.HOSTILE.default", _set("variables", "HOSTILE", "default"), check_default
    ),
    "variable description": Field(
        "variables.HOSTILE.description",
        _set("variables", "HOSTILE", "description"),
        check_description,
    ),
    "devcontainer image": Field(
        "targets.devcontainer.image",
        _set("targets", "devcontainer", "image", wrap="python:3.11-{}"),
        check_image,
    ),
    "devcontainer extension": Field(
        "targets.devcontainer.extensions[0]", _put_extension, check_extension
    ),
    "devcontainer user": Field(
        "targets.devcontainer.user", _set("targets", "devcontainer", "user"), check_user
    ),
    "nixpkgs reference": Field(
        "targets.nix.nixpkgs",
        _set("targets", "nix", "nixpkgs", wrap="github:NixOS/nixpkgs/{}"),
        check_nixpkgs,
    ),
    "spec file name": Field(
        "",
        lambda data, value: f"env{value.replace('/', '_')}.toml",
        check_spec_name,
        file_name=True,
    ),
}


def canaries(root: Path) -> list[Path]:
    """Traces of a hostile value that ran: everything runs in ``root`` but this process."""
    return [*root.rglob("PWNED"), *Path.cwd().glob("PWNED")]


def prove_readable(folder: Path) -> None:
    """Every generated file still reads back whole with the real tools."""
    real_tools.nix_parse(folder / "flake.nix")
    assert nix(folder, "shell.PYTHONHASHSEED") == "0"
    devcontainer(folder)
    real_tools.hadolint(folder / ".devcontainer/Dockerfile")
    assert real_tools.dotenv_value(folder, "PLAIN") == "plain value"


CASES = [
    pytest.param(
        field,
        value,
        id=f"{field}-{value}",
    )
    for field in FIELDS
    for value in HOSTILE
]


@pytest.mark.slow
@pytest.mark.parametrize(("field", "value"), CASES)
def test_hostile_value_is_refused_or_inert(
    field: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = FIELDS[field]
    hostile = HOSTILE[value]
    data = copy.deepcopy(BASE)
    rendered_value = f.put(data, hostile)
    folder = tmp_path / "project"
    folder.mkdir()
    spec = folder / (rendered_value if f.file_name else "environment.toml")
    spec.write_text(toml_text(data), encoding="utf-8")

    code = cli.main(["--spec", str(spec), "render"])
    out, err = capsys.readouterr()
    if code == 2:
        assert [p.name for p in folder.iterdir()] == [spec.name], "a refused spec wrote files"
        # a refused file name is shown escaped, so the message itself stays one line
        shown = str(spec).encode("unicode_escape").decode() if f.file_name else str(spec)
        assert err.startswith("envparity: ") and f"{shown}: {f.key}" in err, err
        assert "Traceback" not in err
    else:
        assert code == 0, (out, err)
        prove_readable(folder)
        f.check(folder, rendered_value)
    assert canaries(tmp_path) == [], "a hostile value ran"


def test_the_corpus_reaches_the_escapers() -> None:
    """The escapers are exercised, not only the loader: these values pass the loader's shape
    checks and render, so the inertness proofs above run for them."""
    from orchestrator import spec

    printable = set(HOSTILE) - {"newline", "carriage return", "tab"}
    renders = {
        "variable default": printable,
        "variable description": printable,
        "index url": {"url-safe shell metacharacters"},
        "nixpkgs reference": {
            "single quote",
            "url-safe shell metacharacters",
            "nix doubled quotes",
        },
        "dependency markers": {"nix interpolation", "command substitution", "backticks"},
        "spec file name": printable - {"unicode line breaks"},  # refused at load
    }
    for field, values in renders.items():
        for value in values:
            data = copy.deepcopy(BASE)
            rendered_value = FIELDS[field].put(data, HOSTILE[value])
            loaded = spec.loads(
                toml_text(data),
                path=rendered_value if FIELDS[field].file_name else "environment.toml",
            )
            assert loaded is not None, (field, value)
