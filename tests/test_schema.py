"""The one typed reader (orchestrator/schema.py) and the one wording every reader gets from it."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator import compat, references, schema, spec
from orchestrator.errors import SpecError
from orchestrator.probe import fingerprint
from orchestrator.schema import Reader, of, tables
from tests.helpers import MINIMAL, REPO

FINGERPRINT = next((REPO / "fingerprints").glob("*/host.json"))

# --------------------------------------------------------------------------- the four readers
# Each reader is given a file with one wrong value and returns every problem line it reports.


def spec_problems(tmp_path: Path, wrong: str) -> tuple[str, list[str]]:
    text = {
        "string": MINIMAL.replace('name = "demo"', "name = 1"),
        "table": MINIMAL.replace('[environment]\nname = "demo"\npython = "3.11"\n', "").replace(
            "[dependencies]", 'environment = "x"\n[dependencies]'
        ),
        "strings": MINIMAL.replace('python = "3.11"', 'python = "3.11"\nsystems = "x"'),
    }[wrong]
    key = {"string": "environment.name", "table": "environment", "strings": "environment.systems"}
    with pytest.raises(SpecError) as info:
        spec.loads(text, path="environment.toml")
    return f"environment.toml: {key[wrong]}", str(info.value).splitlines()


def fingerprint_problems(tmp_path: Path, wrong: str) -> tuple[str, list[str]]:
    data = json.loads(FINGERPRINT.read_text())
    key = {"string": "probe.name", "table": "probe", "strings": "audit"}[wrong]
    if wrong == "string":
        data["probe"]["name"] = 1
    else:
        data[key] = "x"
    with pytest.raises(fingerprint.FingerprintError) as info:
        fingerprint.Fingerprint.from_dict(data, "host.json")
    return f"host.json: {key}", str(info.value).splitlines()


def compat_problems(tmp_path: Path, wrong: str) -> tuple[str, list[str]]:
    text = (REPO / "orchestrator/data/compat.toml").read_text()
    if wrong == "string":
        text, key = re.sub(r"(?m)^checked = .*$", "checked = 1", text, count=1), "checked"
    else:  # the first release's versions
        first = re.search(r'\[torch\."([^"]+)"\]\nversions = \[[^\]]*\]', text)
        assert first is not None
        key = f'torch."{first[1]}".versions'
        text = text.replace(first[0], f'[torch."{first[1]}"]\nversions = "x"', 1)
    path = tmp_path / "compat.toml"
    path.write_text(text)
    with pytest.raises(compat.TableError) as info:
        compat.load_table(path)
    return f"{path}: {key}", str(info.value).splitlines()


def reference_problems(tmp_path: Path, wrong: str) -> tuple[str, list[str]]:
    folder = tmp_path / FINGERPRINT.parent.name
    shutil.copytree(FINGERPRINT.parent, folder)
    meta = folder / "reference.json"
    data = json.loads(meta.read_text())
    target = sorted(data["targets"])[0]
    if wrong == "string":
        data["targets"][target]["machine"], key = 1, f"targets.{target}.machine"
    else:
        data["targets"][target], key = "x", f"targets.{target}"
    meta.write_text(json.dumps(data))
    with pytest.raises(fingerprint.FingerprintError) as info:
        references.load_all(tmp_path)
    return f"{meta}: {key}", str(info.value).splitlines()


READERS: dict[str, Callable[[Path, str], tuple[str, list[str]]]] = {
    "spec": spec_problems,
    "fingerprint": fingerprint_problems,
    "compat table": compat_problems,
    "reference metadata": reference_problems,
}
WRONG = {
    "string": "expected a string, got an integer 1",
    "table": "expected a table, got a string 'x'",
    "strings": "expected an array of strings, got a string 'x'",
}
CASES = [
    pytest.param(reader, wrong, id=f"{reader}-{wrong}")
    for reader in READERS
    for wrong in WRONG
    # the compat table's tables are TOML headers; reference metadata holds no array
    if (reader, wrong) not in (("compat table", "table"), ("reference metadata", "strings"))
]


@pytest.mark.parametrize(("reader", "wrong"), CASES)
def test_every_reader_words_a_wrong_type_the_same(tmp_path: Path, reader: str, wrong: str) -> None:
    """The same wrong type reads the same in the spec, a fingerprint, reference metadata and
    the compat table: the file, the key path, then one wording."""
    where, lines = READERS[reader](tmp_path, wrong)
    assert f"{where}: {WRONG[wrong]}" in lines


# --------------------------------------------------------------------------- the wording


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("a", "a string 'a'"),
        (1, "an integer 1"),
        (1.5, "a number 1.5"),
        (True, "a boolean True"),
        ([1, 2], "an array [1, 2]"),
        ({"a": 1}, "a table {'a': 1}"),
        (None, "null"),
    ],
)
def test_one_word_for_each_type(value: object, shown: str) -> None:
    assert schema.shown(value) == shown


def test_toml_dates_have_their_own_words() -> None:
    import tomllib

    data = tomllib.loads("a = 2026-12-08T10:00:00\nb = 2026-12-08\nc = 10:00:00\n")
    assert [schema.type_word(v) for v in data.values()] == ["a date-time", "a date", "a time"]


@pytest.mark.parametrize(
    ("typ", "words"),
    [
        (str, "a string"),
        (dict, "a table"),
        ((str, type(None)), "a string or null"),
        (schema.SCALAR, "a string, a number, a boolean or null"),
    ],
)
def test_what_a_getter_expects_is_worded_from_the_types(typ: Any, words: str) -> None:
    assert schema.words(typ) == words


@pytest.mark.parametrize(
    ("path", "key", "joined"),
    [
        ("", "environment", "environment"),
        ("environment", "name", "environment.name"),
        ("environment.packages", "zope.interface", 'environment.packages."zope.interface"'),
        ("variables", "A\x1bB", 'variables."A\\u001bB"'),
        ("k", "x" * 100, 'k."' + "x" * 60 + '"... (100 characters)'),
    ],
)
def test_key_paths_quote_keys_that_are_not_plain_words(path: str, key: str, joined: str) -> None:
    assert schema.join(path, key) == joined


# --------------------------------------------------------------------------- the reader


def test_every_problem_is_collected_with_its_key_path() -> None:
    r = Reader("f.toml")
    data = {"name": 1, "count": True, "ratio": 2, "tags": ["a", 3, "b"]}
    assert r.get(data, "name", "t", str) is None
    assert r.get(data, "count", "t", int, 7) == 7
    assert r.get(data, "ratio", "t", float) == 2.0  # an integer passes for a number
    assert r.strings(data, "tags", "t") == ("a", "b")  # the bad item is left out
    assert r.get(data, "missing", "t", str, required=True) is None
    assert [str(p) for p in r.problems] == [
        "f.toml: t.name: expected a string, got an integer 1",
        "f.toml: t.count: expected an integer, got a boolean True",
        "f.toml: t.tags[1]: expected a string, got an integer 3",
        "f.toml: t.missing: missing (expected a string)",
    ]


def test_a_check_words_a_value_of_the_right_type_in_the_wrong_shape() -> None:
    r = Reader("f")
    digest = schema.shape(re.compile(r"sha256:[0-9a-f]{64}"), "a sha256 digest")
    assert r.get({"d": "md5:x"}, "d", "", str, check=digest) is None
    assert r.get({"n": 0}, "n", "", int, check=schema.at_least(1)) is None
    assert [p.message for p in r.problems] == [
        "'md5:x' is not a sha256 digest",
        "0 is less than 1",
    ]


def test_problems_of_nested_tables_bubble_up_under_the_parent_key() -> None:
    """As pylock.py chains the parent key into its error: a table read with key paths of its
    own comes back under the key it sits at, and a table with a problem is left out."""

    def gpu(r: Reader, g: dict[str, Any]) -> tuple[str, int]:
        return r.require(g, "name", "", str), r.require(g, "sm_count", "", int)

    r = Reader("fp.json")
    data = {"env": {"gpus": [{"name": "H100", "sm_count": 132}, {"name": 2}, "x"]}}
    env = r.section(data, "env", "", lambda r, e: r.array(e, "gpus", "", tables(gpu)))
    assert env is None  # a problem inside: the section is not used
    assert [str(p) for p in r.problems] == [
        "fp.json: env.gpus[1].name: expected a string, got an integer 2",
        "fp.json: env.gpus[1].sm_count: missing (expected an integer)",
        "fp.json: env.gpus[2]: expected a table, got a string 'x'",
    ]
    clean = Reader("fp.json")
    got = clean.array({"gpus": [{"name": "H100", "sm_count": 132}]}, "gpus", "", tables(gpu))
    assert got == (("H100", 132),) and not clean.problems


def test_a_table_of_names_checks_each_key_and_value() -> None:
    def ident(key: str) -> str | None:
        return None if key.isidentifier() else f"{key!r} is not a name"

    r = Reader("f")
    got = r.entries(
        {"m": {"ok": "1", "a b": "2", "n": 3}}, "m", "s", of(str), key_check=ident, required=True
    )
    assert got == {"ok": "1"}
    assert [str(p) for p in r.problems] == [
        "f: s.m.\"a b\": 'a b' is not a name",
        "f: s.m.n: expected a string, got an integer 3",
    ]
    assert r.entries({}, "m", "s", of(str)) == {}
    r.entries({"m": [1]}, "m", "s", of(str))
    assert str(r.problems[-1]) == "f: s.m: expected a table of strings, got an array [1]"


def test_unknown_keys_get_the_nearest_known_key_or_the_list() -> None:
    r = Reader("environment.toml")
    r.known_keys({"pyton": 1, "zzz": 2, "name": 3}, "environment", ("name", "python"))
    assert [p.message for p in r.problems] == [
        "unknown key; did you mean 'python'?",
        "unknown key (known keys: name, python)",
    ]


def test_a_fingerprint_reports_every_problem_at_once() -> None:
    data = json.loads(FINGERPRINT.read_text())
    data["probe"]["seed"] = "0"
    data["stages"]["losses"][0] = "1.25"
    data["environment"]["packages"]["numpy"] = 2
    with pytest.raises(fingerprint.FingerprintError) as info:
        fingerprint.Fingerprint.from_dict(data, "host.json")
    assert str(info.value).splitlines() == [
        "host.json: probe.seed: expected an integer, got a string '0'",
        "host.json: environment.packages.numpy: expected a string, got an integer 2",
        "host.json: stages.losses[0]: '1.25' is not a float.hex() string",
    ]


def test_the_shipped_compat_table_reads_cleanly() -> None:
    t = compat.load_table(REPO / "orchestrator/data/compat.toml")
    assert t == compat.table() and t.releases and t.toolkits


def test_a_typo_in_the_compat_table_is_named(tmp_path: Path) -> None:
    text = (REPO / "orchestrator/data/compat.toml").read_text()
    path = tmp_path / "compat.toml"
    path.write_text(text.replace("\ncudnn = ", "\ncudnnn = ", 1))
    with pytest.raises(compat.TableError) as info:
        compat.load_table(path)
    (line,) = str(info.value).splitlines()
    assert re.fullmatch(
        rf'{re.escape(str(path))}: torch\."[0-9.]+"\.cuda\."[0-9.]+"\.cudnnn: unknown key; '
        "did you mean 'cudnn'\\?",
        line,
    )
