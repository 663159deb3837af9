"""Hostile values in every spec string that can reach a generated file.

Each value, put into each field, must be either refused when the spec is loaded (exit 2, a
message naming the key, nothing written) or rendered as inert data, which is proven by
reading it back with the real tools: Nix evaluates the flake and gives back exactly the
value; bash runs the flake's shell hook and the Dockerfile's RUN lines (their commands
replaced by recorders) and passes exactly the value as one argument; bash sources
.env.example and gets exactly the value; Docker's parser reads the Dockerfile. Values
that would run something (``$(touch PWNED)``, backticks, ``${builtins.abort ...}``) leave a
trace if they ever do.

Then one class per kind of attack (docs/hardening.md has the figures): shape checks that must
match the whole value in ASCII, bounded input, credentials (a planted token must reach no
output and no file), symbolic links and special files, and a Hypothesis property test that
draws hostile strings for every field. ``ENVPARITY_HOSTILE_STATS=FILE`` makes the corpus and
the property test append each outcome to FILE.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import real_tools
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

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
    "unicode separators": "a\u2028b\u2029c\u00a0d\u3000e",
    "unicode digits": "3.\u0661\u0661\uff11",
    "c1 control": "a\x9b31mb",
    "comment markers": "*/ // # <!--",
    # no spaces, quotes or dollars: these pass the URL and flake-reference shape checks
    "url-safe shell metacharacters": "a;touch+PWNED&b(c)*d!e#f",
    "nix doubled quotes": "x''y'''z",
}

STATS = os.environ.get("ENVPARITY_HOSTILE_STATS")  # a file to append each outcome to (docs)
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


def nix_packages(folder: Path) -> tuple[list[str], set[str]]:
    """The devShell's first packages (Python, uv), and the set of the others' names."""
    names = nix(folder, "map (p: p.name) shell.nativeBuildInputs")
    return names[:2], set(names[2:])


def apt_installs(folder: Path) -> tuple[list[str], set[str]]:
    """The apt-get install line's options, and the set of packages it installs (by bash)."""
    call = dockerfile_run_calls(folder, "apt-get", ["apt-get", "rm"])[1]
    return call[:4], set(call[4:])


APT_INSTALL = ["apt-get", "install", "-y", "--no-install-recommends"]


def check_system_package(folder: Path, value: str) -> None:
    add_nix_packages(folder, value)
    assert nix_packages(folder) == (["python311", "uv"], {"git", value, "curl"})
    assert apt_installs(folder) == (APT_INSTALL, {"ca-certificates", "git", "curl", value})


def check_nix_mapping(folder: Path, value: str) -> None:
    add_nix_packages(folder, value)
    assert nix_packages(folder) == (["python311", "uv"], {"git", value})


def check_apt_mapping(folder: Path, value: str) -> None:
    assert apt_installs(folder) == (APT_INSTALL, {"ca-certificates", "git", value})


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
        data["index"][0]["flavors"] = ["cpu"]  # the CPU index, for the cpu flavor only
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
    if STATS:
        with open(STATS, "a", encoding="utf-8") as fh:
            fh.write(json.dumps([field, "refused" if code == 2 else "inert"]) + "\n")


def test_the_corpus_reaches_the_escapers() -> None:
    """The escapers are exercised, not only the loader: these values pass the loader's shape
    checks and render, so the inertness proofs above run for them."""
    from orchestrator import spec

    printable = set(HOSTILE) - {"newline", "carriage return", "tab", "unicode line breaks"}
    renders = {
        "variable default": printable - {"c1 control"},
        "variable description": printable - {"c1 control"},
        "index url": {"url-safe shell metacharacters"},
        "nixpkgs reference": {
            "single quote",
            "url-safe shell metacharacters",
            "nix doubled quotes",
        },
        "dependency markers": {"nix interpolation", "command substitution", "backticks"},
        "spec file name": printable - {"unicode separators", "c1 control"},
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


# =========================================================================== by kind
# Each class below is one kind of attack from the hardening issue; every case is a value or a
# file layout a hostile user (or a flaky machine) could hand envparity.

SPEC_HEAD = '[environment]\nname = "hostile"\npython = "3.11"\n'


def render_in(folder: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["--spec", str(folder / "environment.toml"), *args])
    out, err = capsys.readouterr()
    return code, out, err


def tree(root: Path) -> dict[str, bytes | str]:
    """Every file and link under ``root``: contents, or ``-> target`` for a link."""
    out: dict[str, bytes | str] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = f"-> {os.readlink(p)}"
        elif p.is_file():
            out[rel] = p.read_bytes()
    return out


class TestShapeChecksMatchTheWholeValueInAscii:
    """Shape checks use a full match in ASCII: a trailing newline or a Unicode digit that a
    ``re.match`` with ``$`` and ``\\d`` let through is refused, with one message naming it."""

    CASES: ClassVar[dict[str, tuple[Any, str]]] = {
        "variable name with a newline": (
            '[variables]\n"DATA\\n" = { default = "x", description = "$(touch PWNED)" }\n',
            "variables.\"DATA\\n\": 'DATA\\n' is not an environment variable name "
            "(letters, digits, '_')",
        ),
        "Arabic-Indic digits in python": (
            "",
            "environment.python: '3.\u0661\u0661' is not a Python version such as \"3.11\" or "
            '"3.11.9"',
        ),
        "newline after the name": (
            "",
            "environment.name: 'hostile\\n' is not a name (letters, digits, '.', '_', '-'; at most 64)",
        ),
        "newline after a system package": (
            '[system]\npackages = ["git\\n"]\n',
            "system.packages[0]: 'git\\n' is not a system package name (lower-case letters, "
            "digits, '.+_-')",
        ),
        "newline after an apt name": (
            '[system]\npackages = ["git"]\napt = { git = "git\\n" }\n',
            "system.apt.git: 'git\\n' is not a Debian package name",
        ),
        "newline after a nix attribute": (
            '[system]\npackages = ["git"]\nnix = { git = "git\\n" }\n',
            "system.nix.git: 'git\\n' is not a nixpkgs attribute path",
        ),
        "newline after an index URL": (
            '[[index]]\nurl = "https://example.org/simple\\n"\n',
            "index[0].url: 'https://example.org/simple\\n' is not an http(s):// or file:// URL "
            "or an absolute path (no spaces, quotes, '$' or backticks)",
        ),
        "newline after the devcontainer user": (
            '[targets.devcontainer]\nimage = "python:3.11"\nuser = "dev\\n"\n',
            "targets.devcontainer.user: 'dev\\n' is not a Linux user name",
        ),
        "newline after the image": (
            '[targets.devcontainer]\nimage = "python:3.11\\n"\n',
            "targets.devcontainer.image: 'python:3.11\\n' is not an image reference "
            "(registry/name:tag, optionally @sha256:<64 hex digits>)",
        ),
        "newline after the nixpkgs reference": (
            f'[targets.nix]\nnixpkgs = "{NIXPKGS}\\n"\n',
            f"targets.nix.nixpkgs: '{NIXPKGS}\\n' is not a flake reference such as "
            '"github:NixOS/nixpkgs/c59305bab2065cfecc4944690d9eedbb56f3a9fa" (a commit a nixpkgs '
            "channel published: docs/targets.md)",
        ),
        "fullwidth digits in the CUDA version": (
            '[cuda]\nversion = "\uff11\uff12.8"\n',
            "cuda.version: '\uff11\uff12.8' is not a CUDA toolkit version major.minor such as "
            '"12.8"',
        ),
        "newline after a dependency name": (
            '[dependencies]\n"numpy\\n" = ">=2"\n',
            "dependencies.\"numpy\\n\": 'numpy\\n' is not a valid package name",
        ),
        "newline after an extension": (
            '[targets.devcontainer]\nimage = "python:3.11"\nextensions = ["ms-python.python\\n"]\n',
            "targets.devcontainer.extensions[0]: 'ms-python.python\\n' is not a VS Code "
            "extension id (publisher.name)",
        ),
        "newline after the probe": (
            '[verify]\nprobe = "pkg.mod:fn\\n"\n',
            "verify.probe: 'pkg.mod:fn\\n' is not a probe reference 'package.module:function'",
        ),
        "C1 control in a description": (
            '[variables]\nA = { description = "x\\u009b31m" }\n',
            "variables.A.description: a description must be one line of printable text "
            "(found '\\x9b')",
        ),
    }

    @pytest.mark.parametrize("case", CASES)
    def test_refused_with_one_message(
        self, case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        extra, message = self.CASES[case]
        head = SPEC_HEAD
        if case == "Arabic-Indic digits in python":
            head = head.replace('"3.11"', '"3.\u0661\u0661"')
        if case == "newline after the name":
            head = head.replace('"hostile"', '"hostile\\n"')
        spec = tmp_path / "environment.toml"
        spec.write_text(head + extra, encoding="utf-8")
        code, out, err = render_in(tmp_path, capsys, "render")
        assert (code, out) == (2, "")
        assert err == f"envparity: {spec}: {message}\n"
        assert [p.name for p in tmp_path.iterdir()] == ["environment.toml"]
        assert canaries(tmp_path) == []


class TestBoundedInput:
    """Huge or deeply nested input: exit 2, one short message, no traceback, nothing written."""

    CASES: ClassVar[dict[str, tuple[Any, str]]] = {
        "nested arrays": (
            lambda: SPEC_HEAD + "[verify]\nx = " + "[" * 5000 + "]" * 5000 + "\n",
            "TOML nested too deeply",
        ),
        "nested inline tables": (
            lambda: SPEC_HEAD + "[verify]\nx = " + "{a = " * 5000 + "1" + "}" * 5000 + "\n",
            "TOML nested too deeply",
        ),
        "a 5,000-digit integer": (
            lambda: SPEC_HEAD + "[determinism]\nseed = " + "9" * 5000 + "\n",
            "TOML value out of range: Exceeds the limit (4300 digits) for integer string "
            "conversion: value has 5000 digits",
        ),
        "a 4,000-digit integer": (
            lambda: SPEC_HEAD + "[determinism]\nseed = " + "9" * 4000 + "\n",
            "determinism.seed: an integer of 4000 digits is not between 0 and 4294967295",
        ),
        "a 500,000-character name": (
            lambda: SPEC_HEAD.replace('"hostile"', '"' + "a" * 500_000 + '"'),
            "environment.name: '" + "a" * 160 + "'... (500000 characters) is not a name "
            "(letters, digits, '.', '_', '-'; at most 64)",
        ),
        "a 500,000-character key": (
            lambda: SPEC_HEAD + "[variables]\n" + "A" * 500_000 + " = 'x'\n",
            'variables."' + "A" * 60 + "\"... (500000 characters): '" + "A" * 160 + "'... "
            "(500000 characters) is not an environment variable name (letters, digits, '_')",
        ),
        "a 2 MB file": (
            lambda: SPEC_HEAD + "# " + "x" * 2_000_000 + "\n",
            "larger than 1,000,000 characters: not a spec file",
        ),
        "a huge array as a string": (
            lambda: SPEC_HEAD.replace('"hostile"', "[" + "1, " * 100_000 + "1]"),
            "environment.name: expected a string, got an array [1, 1, 1, 1, ...]",
        ),
    }

    @pytest.mark.parametrize("case", CASES)
    def test_one_short_message(
        self, case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        make, message = self.CASES[case]
        spec = tmp_path / "environment.toml"
        spec.write_text(make(), encoding="utf-8")
        code, out, err = render_in(tmp_path, capsys, "render")
        assert (code, out) == (2, "")
        assert err == f"envparity: {spec}: {message}\n"
        assert len(err) < 600 and "Traceback" not in err
        assert [p.name for p in tmp_path.iterdir()] == ["environment.toml"]


TOKEN = "s3cr3t-T0KEN-planted"


class TestCredentials:
    """Credentials never come from the spec, and no message, report or file shows one."""

    @pytest.mark.parametrize(
        "url",
        [
            f"https://user:{TOKEN}@pypi.example.org/simple",
            f"https://{TOKEN}@pypi.example.org/simple",
            f"https://__token__:{TOKEN}@pypi.example.org:8443/simple/",
            f"http://user:{TOKEN}@10.0.0.1/simple",
            f"file://user:{TOKEN}@host/srv/wheels",
        ],
    )
    def test_an_index_url_with_userinfo_is_refused_with_advice(
        self, url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        from orchestrator.messages import redact
        from orchestrator.spec import CREDENTIALS_ADVICE

        spec = tmp_path / "environment.toml"
        spec.write_text(SPEC_HEAD + f'[[index]]\nurl = "{url}"\n', encoding="utf-8")
        code, out, err = render_in(tmp_path, capsys, "render")
        assert (code, out) == (2, "")
        assert err == (
            f"envparity: {spec}: index[0].url: {redact(repr(url))} holds credentials; "
            f"{CREDENTIALS_ADVICE}\n"
        )
        assert TOKEN not in err and "***@" in err
        assert "~/.netrc" in err and "UV_INDEX_<NAME>_USERNAME" in err

    def test_a_ci_requirement_with_userinfo_is_refused(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        from orchestrator.spec import CREDENTIALS_ADVICE

        spec = tmp_path / "environment.toml"
        requirement = f"envparity @ https://user:{TOKEN}@git.example.org/envparity.whl"
        spec.write_text(SPEC_HEAD + f'[ci]\nenvparity = "{requirement}"\n', encoding="utf-8")
        code, out, err = render_in(tmp_path, capsys, "render")
        assert (code, out) == (2, "")
        assert err == (
            f"envparity: {spec}: ci.envparity: 'envparity @ https://***@git.example.org/"
            f"envparity.whl' holds credentials; {CREDENTIALS_ADVICE}\n"
        )

    def test_a_planted_token_reaches_no_output_and_no_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The token lives where credentials belong (ENVPARITY_MIRRORS, pip's and uv's
        variables); lock fails against the unreachable mirror, verify's venv cannot install:
        every message, the verify table, the HTML report and every file written say ***."""
        project = tmp_path / "project"
        project.mkdir()
        (project / "environment.toml").write_text(
            SPEC_HEAD
            + '[dependencies]\nsix = "*"\n\n[[index]]\nurl = "https://mirror.example.invalid/simple"\n'
            + "\n[variables]\nTOKEN_FREE = { default = 'x' }\n\n[targets.venv]\n",
            encoding="utf-8",
        )
        monkeypatch.chdir(project)
        secret_mirror = f"https://user:{TOKEN}@127.0.0.1:9/simple"
        monkeypatch.setenv("UV_HTTP_RETRIES", "0")
        monkeypatch.setenv("PIP_INDEX_URL", secret_mirror)
        monkeypatch.setenv("UV_INDEX_URL", secret_mirror)
        said: list[str] = []

        def run(*args: str, mirror: str, code: int | None) -> None:
            monkeypatch.setenv(
                "ENVPARITY_MIRRORS", f"https://mirror.example.invalid/simple={mirror}"
            )
            got = cli.main(list(args))
            assert code is None or got == code, (args, got)
            out, err = capsys.readouterr()
            said.extend([out, err])

        run("lock", mirror=secret_mirror, code=2)
        assert "--extra-index-url https://***@127.0.0.1:9/simple" in said[-1]
        monkeypatch.delenv("PIP_INDEX_URL")
        monkeypatch.delenv("UV_INDEX_URL")
        wheels = tmp_path / "wheels"  # an empty folder of wheels: six comes from PyPI
        wheels.mkdir()
        run("lock", mirror=str(wheels), code=0)
        monkeypatch.setenv("PIP_INDEX_URL", secret_mirror)
        run("render", mirror=secret_mirror, code=0)
        run("check", mirror=secret_mirror, code=0)
        run("doctor", mirror=secret_mirror, code=None)  # its verdict depends on this machine
        run("verify", "--targets", "venv", mirror=secret_mirror, code=1)
        assert "https://***@127.0.0.1:9/simple" in "".join(said)
        report = project / ".envparity" / "report.html"
        assert "https://***@127.0.0.1:9/simple" in report.read_text(encoding="utf-8")
        for text in said:
            assert TOKEN not in text
        leaks = [
            str(p)
            for p in project.rglob("*")
            if p.is_file() and not p.is_symlink() and TOKEN.encode() in p.read_bytes()
        ]
        assert leaks == []


class TestSymlinks:
    """Nothing is written, truncated or deleted outside the repository through a symbolic
    link. One policy (orchestrator.files): such a path is refused, exit 2, naming it, and
    ``--force`` does not change that."""

    SPEC = (
        SPEC_HEAD
        + "\n[variables]\nA = { default = 'x' }\n\n[targets.devcontainer]\n"
        + 'image = "python:3.11-slim"\n\n'
        + f'[targets.nix]\nnixpkgs = "{NIXPKGS}"\n'
    )

    @pytest.fixture
    def layout(self, tmp_path: Path) -> tuple[Path, Path]:
        repo, outside = tmp_path / "repo", tmp_path / "outside"
        repo.mkdir()
        outside.mkdir()
        (outside / "keep").mkdir()
        (outside / "keep" / "data.txt").write_text("precious\n")
        (outside / "file.txt").write_text("precious\n")
        (repo / "environment.toml").write_text(self.SPEC, encoding="utf-8")
        return repo, outside

    def test_a_symlinked_spec_renders_beside_the_link(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        repo, shared = tmp_path / "repo", tmp_path / "shared"
        repo.mkdir()
        shared.mkdir()
        (shared / "env.toml").write_text(self.SPEC, encoding="utf-8")
        (repo / "environment.toml").symlink_to(shared / "env.toml")
        code, _, err = render_in(repo, capsys, "render")
        assert code == 0, err
        assert sorted(p.name for p in shared.iterdir()) == ["env.toml"]
        assert (repo / "flake.nix").is_file() and (repo / ".devcontainer/Dockerfile").is_file()

    @pytest.mark.parametrize("link", ["flake.nix", ".devcontainer", ".env.example"])
    @pytest.mark.parametrize("force", [False, True], ids=["", "--force"])
    def test_render_refuses_to_write_through_a_link(
        self,
        link: str,
        force: bool,
        layout: tuple[Path, Path],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        repo, outside = layout
        target = outside / "keep" if link == ".devcontainer" else outside / "file.txt"
        (repo / link).symlink_to(target)
        before = tree(outside), tree(repo)
        code, out, err = render_in(repo, capsys, "render", *(["--force"] if force else []))
        assert (code, out) == (2, "")
        assert err == (
            "envparity: error\nrefusing to write, nothing written:\n"
            f"  {link}: is a symbolic link; envparity writes only real files and folders inside "
            "the repository (replace the link by a real folder or file)\n"
        )
        assert (tree(outside), tree(repo)) == before

    def test_lock_refuses_a_symlinked_locks_folder(
        self,
        layout: tuple[Path, Path],
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        from orchestrator import lock

        repo, outside = layout
        (repo / "locks").symlink_to(outside / "keep")
        resolved: list[object] = []

        def resolve(*args: object, **kwargs: object) -> str:
            resolved.append(args)
            return "six==1.17.0\n"

        monkeypatch.setattr(lock, "resolve", resolve)
        before = tree(outside)
        code, out, err = render_in(repo, capsys, "lock", "--force")
        assert (code, out) == (2, "")
        assert "  locks: is a symbolic link;" in err
        assert tree(outside) == before
        assert resolved == [], "refused before resolving"

    @pytest.mark.parametrize(
        "link",
        [
            ".envparity",
            *(
                f".envparity/{p}"
                for p in ("runtime", "venvs", "fingerprints", "devcontainer", "verify.lock")
            ),
        ],
    )
    def test_verify_refuses_a_symlinked_runtime_folder(
        self,
        link: str,
        layout: tuple[Path, Path],
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """A link at .envparity/runtime used to make verify delete every sub-folder of its
        target, and one at verify.lock truncated its target."""
        from orchestrator import verify

        repo, outside = layout
        (repo / ".envparity").mkdir(exist_ok=link != ".envparity") if link != ".envparity" else None
        target = outside / "file.txt" if link.endswith(".lock") else outside / "keep"
        (repo / link).symlink_to(target)
        (repo / "environment.toml").write_text(SPEC_HEAD + "[targets.host]\n", encoding="utf-8")
        monkeypatch.setattr(verify, "preflight", lambda spec, chosen: [])  # no locks needed here
        before = tree(outside)
        code, out, err = render_in(repo, capsys, "verify")
        assert (code, out) == (2, "")
        assert f"  {link}: is a symbolic link; envparity writes only real files" in err
        assert tree(outside) == before

    @pytest.mark.parametrize("kind", ["symlink", "folder", "fifo", "device"])
    @pytest.mark.parametrize("verb", ["probe --out", "capture --out", "verify --report"])
    def test_a_user_output_path_that_is_not_a_regular_file_is_refused(
        self,
        kind: str,
        verb: str,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """As root, ``verify --report /dev/null`` used to replace /dev/null with a plain file;
        here the device is a copy of /dev/null's node in a temporary folder."""
        import stat as stat_module

        path = tmp_path / "out"
        if kind == "symlink":
            (tmp_path / "elsewhere.json").write_text("precious\n")
            path.symlink_to(tmp_path / "elsewhere.json")
        elif kind == "folder":
            path.mkdir()
        elif kind == "fifo":
            os.mkfifo(path)
        else:
            try:
                os.mknod(path, 0o666 | stat_module.S_IFCHR, os.makedev(1, 3))
            except PermissionError:
                pytest.skip("making a device node needs root (CI runs as root)")
        (tmp_path / "environment.toml").write_text(SPEC_HEAD + "[targets.host]\n")
        monkeypatch.chdir(tmp_path)
        before = os.lstat(path)
        code = cli.main([*verb.split(), str(path)])
        out, err = capsys.readouterr()
        shown = {
            "symlink": "a symbolic link",
            "folder": "a folder",
            "fifo": "a named pipe",
            "device": "a character device",
        }[kind]
        assert (code, out) == (2, "")
        if kind == "folder" and verb != "verify --report":  # the fingerprint writer's words
            assert err == f"envparity: {path}: cannot write: is a folder\n"
        else:
            assert err == (
                f"envparity: {path}: exists and is {shown}; envparity writes only new or "
                "regular files (give another path)\n"
            )
        after = os.lstat(path)
        assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)

    @pytest.mark.parametrize("kind", ["file", "fifo", "device"])
    def test_verify_out_that_is_not_a_folder_is_refused_before_the_work(
        self,
        kind: str,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """``verify --out DIR`` used to provision and probe, then fail on "Not a directory"."""
        import stat as stat_module

        path = tmp_path / "out"
        if kind == "file":
            path.write_text("precious\n")
        elif kind == "fifo":
            os.mkfifo(path)
        else:
            try:
                os.mknod(path, 0o666 | stat_module.S_IFCHR, os.makedev(1, 3))
            except PermissionError:
                pytest.skip("making a device node needs root (CI runs as root)")
        (tmp_path / "environment.toml").write_text(SPEC_HEAD + "[targets.host]\n")
        monkeypatch.chdir(tmp_path)
        before = os.lstat(path)
        code = cli.main(["verify", "--out", str(path)])
        out, err = capsys.readouterr()
        shown = {"file": "a file", "fifo": "a named pipe", "device": "a character device"}[kind]
        assert (code, out) == (2, "")
        assert err == f"envparity: {path}: exists and is {shown}, not a folder (give a folder)\n"
        assert not (tmp_path / ".envparity").exists()  # nothing provisioned, nothing probed
        after = os.lstat(path)
        assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)


# --------------------------------------------------------------------------- property test

# Pieces a hostile string is drawn from: controls, Unicode digits and separators, quotes,
# interpolation and substitution syntax of every language the renderers write, and a few
# harmless characters so that values also pass the shape checks and reach the escapers.
FRAGMENTS = [
    *"\n\r\t\x1b\x7f\x85\x9b",  # C0 (newline, escape), DEL, C1 (NEL, CSI)
    *"\u2028\u2029\u00a0\u3000\u200b\u202e",  # separators, zero-width, bidi override
    *"\u0661\u06f3\uff11\u0967\u00b2",  # Arabic-Indic, Persian, fullwidth, Devanagari, superscript
    *"'\"`\\$#;&|*/=@:!()<>{}[] ",
    "${",
    "$(touch PWNED)",
    "`touch PWNED`",
    "''",
    "'${",
    "''${x}",
    "\\n",
    "*/",
    "<!--",
    *"abz019.-_+",
]
HOSTILE_TEXT = st.lists(
    st.one_of(
        st.sampled_from(FRAGMENTS),
        st.characters(codec="utf-8", blacklist_characters="\x00"),
    ),
    min_size=1,
    max_size=12,
).map("".join)
# Fields that take nearly any text: drawn three times as often, so that many hostile values
# pass the loader and the escapers' output is what the real tools judge.
FREE_TEXT_FIELDS = [
    "variable default",
    "variable description",
    "spec file name",
    "nixpkgs reference",
    "index url",
    "dependency markers",
]


def read_back_every_file(folder: Path, field: str, value: str) -> None:
    """Every generated file parses with the real tools, and sourcing .env.example runs nothing."""
    real_tools.nix_parse(folder / "flake.nix")
    instructions = real_tools.dockerfile_instructions(folder / ".devcontainer/Dockerfile")
    assert "FROM" in [c.cmd.upper() for c in instructions]
    devcontainer(folder)  # json5, then the official schema
    bash = real_tools.require("bash")
    real_tools._run([bash, "-n", ".env.example"], "bash -n .env.example", cwd=folder)
    sandbox = folder / "sandbox"
    sandbox.mkdir()
    (sandbox / ".env").write_text((folder / ".env.example").read_text(encoding="utf-8"))
    sourced = real_tools._run(
        [bash, "-c", 'set -a; . ./.env; printf "%s\\0%s" "$HOSTILE" "$PLAIN"'],
        "sourcing .env",
        cwd=sandbox,
    ).stdout.split("\0")
    assert sorted(p.name for p in sandbox.iterdir()) == [".env"], "sourcing .env ran something"
    assert sourced[1] == "plain value"
    if field == "variable default":
        assert sourced[0] == value


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(field=st.sampled_from(sorted(FIELDS) + 2 * FREE_TEXT_FIELDS), value=HOSTILE_TEXT)
def test_any_hostile_string_in_any_field_is_refused_or_parses(
    field: str, value: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    import contextlib
    import io

    f = FIELDS[field]
    data = copy.deepcopy(BASE)
    rendered_value = f.put(data, value)
    root = tmp_path_factory.mktemp("prop")
    folder = root / "project"
    folder.mkdir()
    spec = folder / (rendered_value if f.file_name else "environment.toml")
    try:
        spec.write_text(toml_text(data), encoding="utf-8")
    except OSError:  # a file name the file system refuses (too long): nothing to test
        assume(False)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(["--spec", str(spec), "render"])
    message = err.getvalue()
    outcome = "refused" if code == 2 else "rendered"
    if code == 2:
        shown = str(spec).encode("unicode_escape").decode() if f.file_name else str(spec)
        assert message.startswith(f"envparity: {shown}: {f.key}"), message
        assert message.count("\n") == 1, "one problem, one line"
        assert sorted(p.name for p in folder.iterdir()) == [spec.name], "a refused spec wrote"
    else:
        assert code == 0, message
        read_back_every_file(folder, field, rendered_value)
        f.check(folder, rendered_value)  # the exact value back: Nix, the hook and RUN lines run
    assert canaries(root) == [], "a hostile value ran"
    if STATS:
        with open(STATS, "a", encoding="utf-8") as fh:
            fh.write(json.dumps([field, outcome]) + "\n")
