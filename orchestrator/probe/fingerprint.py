"""The fingerprint: a versioned JSON record of one probe run (format in docs/probe.md).

A fingerprint is a typed value (``Fingerprint``, built of frozen dataclasses) with
``to_dict``/``from_dict``. ``from_dict`` is the one validation, against the documented format:
any file that is not exactly that shape (a wrong type, a missing key, a float that is not
``float.hex()`` text, a digest that is not ``sha256:`` and 64 hex digits, digits outside ASCII,
a file over ``MAX_BYTES``) raises ``FingerprintError`` (exit 2) naming the file and the field.
After loading, nothing downstream (compare, report, verify) handles untyped data.

Text that came from a file is shown through ``printable`` so that control and escape
characters never reach a terminal raw. Stdlib only: ``compare`` never imports torch.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

from orchestrator import files
from orchestrator.errors import UsageError
from orchestrator.messages import quote
from orchestrator.schema import (
    SCALAR,
    Item,
    Reader,
    at_least,
    expected,
    index,
    join,
    of,
    shape,
    tables,
)

FORMAT = "envparity-fingerprint"
VERSION = 2  # 2: `inputs` (code and data files the probe read); readers also take 1
READABLE = (1, 2)
CAPTURE_FORMAT = "envparity-capture"
CAPTURE_VERSION = 1
MAX_BYTES = 64 * 2**20  # a 30-step fingerprint is ~40 kB; a project with many data files more
MAX_DEPTH = 16  # nesting of free-form values (collect_env); a capture needs 2

Scalar: TypeAlias = str | int | float | bool | None
JsonValue: TypeAlias = "Scalar | list[JsonValue] | dict[str, JsonValue]"

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# float.hex(): sign, 0x, hex mantissa, binary exponent (at most 4 ASCII digits), or inf/nan
_HEX_FLOAT = re.compile(r"-?0x[0-9a-f]\.?[0-9a-f]*p[+-][0-9]{1,4}|-?inf|nan")
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_PROBE_NAME = re.compile(_DOTTED.pattern + ":" + r"[A-Za-z_][A-Za-z0-9_]*")
_HASH_SEED = re.compile(r"fixed:[0-9]{1,10}|random")
_DEVICES = ("cpu", "cuda", "mps")


class FingerprintError(UsageError):
    """A fingerprint or capture file that is missing or malformed (exit 2)."""


def printable(text: object) -> str:
    """``text`` with control, format and line-separator characters escaped (``\\x1b``,
    ``\\n``, ``\\u202e``), so a value read from a file cannot move the cursor, recolour the
    terminal or reorder the line it is printed on."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in s)


# --------------------------------------------------------------------------- the typed value


@dataclass(frozen=True)
class Gpu:
    """One visible GPU as torch reports it."""

    name: str
    capability: str  # "9.0"
    sm_count: int
    memory: int  # bytes


@dataclass(frozen=True)
class PythonInfo:
    version: str  # "3.11.7"
    implementation: str  # "CPython"
    executable: str  # never compared
    hash_seed: str  # "fixed:N" or "random", from the start-up environment


@dataclass(frozen=True)
class Environment:
    """A capture: what the probe's numbers depend on besides the code (docs/probe.md)."""

    python: PythonInfo
    platform: Mapping[str, Scalar]
    launch: Mapping[str, str | None]  # start-up values; None: unset
    numpy: Mapping[str, Scalar]
    torch: Mapping[str, Scalar]
    flags: Mapping[str, Scalar]
    gpus: tuple[Gpu, ...]
    collect_env: Mapping[str, JsonValue]  # torch.utils.collect_env's report, free-form
    packages: Mapping[str, str]  # installed distribution (normalised name) -> version

    @property
    def torch_version(self) -> str:
        return str(self.torch.get("version", "?"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": CAPTURE_FORMAT,
            "version": CAPTURE_VERSION,
            "python": vars(self.python).copy(),
            "platform": dict(self.platform),
            "launch": dict(self.launch),
            "numpy": dict(self.numpy),
            "torch": dict(self.torch),
            "flags": dict(self.flags),
            "gpus": [vars(g).copy() for g in self.gpus],
            "collect_env": dict(self.collect_env),
            "packages": dict(self.packages),
        }

    def leaves(self) -> Iterator[tuple[str, JsonValue]]:
        """Every comparable value with its dotted key (``packages.numpy``, ``gpus[0].name``)."""
        data = self.to_dict()
        for key in ("format", "version"):
            del data[key]
        yield from _leaves(data, "")


def _leaves(value: JsonValue, path: str) -> Iterator[tuple[str, JsonValue]]:
    if isinstance(value, dict) and value:
        for key in sorted(value):
            yield from _leaves(value[key], f"{path}.{key}" if path else key)
    elif isinstance(value, list) and value:
        for i, item in enumerate(value):
            yield from _leaves(item, f"{path}[{i}]")
    else:
        yield path, value


@dataclass(frozen=True)
class KernelOutput:
    """``rec.output(name, tensor)``: a kernel's output on fixed inputs."""

    digest: str  # sha256:... of dtype, shape and bytes
    dtype: str  # "float32", "bfloat16"
    norm: str  # float64 L2 norm as float.hex()


@dataclass(frozen=True)
class Stages:
    """Digests and exact values of every stage of the run, in run order."""

    initial_params: str  # sha256:...
    rng_initial: Mapping[str, str]  # RNG name -> sha256:...
    data_order: tuple[str, ...]  # one digest per step, or none (the probe never called batch)
    losses: tuple[str, ...]  # float.hex(), one per step
    final_params: str
    metrics: Mapping[str, str]  # name -> float.hex()
    rng_final: Mapping[str, str]
    outputs: Mapping[str, KernelOutput] = field(default_factory=dict)  # none in older files

    def to_dict(self) -> dict[str, Any]:
        return {
            "initial_params": self.initial_params,
            "rng_initial": dict(self.rng_initial),
            "outputs": {name: vars(o).copy() for name, o in sorted(self.outputs.items())},
            "data_order": list(self.data_order),
            "losses": list(self.losses),
            "final_params": self.final_params,
            "metrics": dict(self.metrics),
            "rng_final": dict(self.rng_final),
        }


@dataclass(frozen=True)
class CodeFile:
    """A Python module the probe ran: its file (relative to the project folder when it is in
    it, else absolute) and the sha256 of its bytes."""

    path: str
    sha256: str


@dataclass(frozen=True)
class Inputs:
    """What the run read besides the environment (empty in version-1 files).

    ``code``: module name -> file, for every module imported from the project folder and the
    probe's own module. ``data``: project-relative path -> sha256 of every other file the
    probe opened for reading under the project folder (datasets, vocabularies, configs).
    ``outside``: absolute paths of files it read outside the project folder and
    ``ENVPARITY_DATA_PATHS``, not hashed. ``imported``: the installed distributions (normalised
    names) whose modules the run had imported by its end. Both absent in older files: empty.
    """

    code: Mapping[str, CodeFile] = field(default_factory=dict)
    data: Mapping[str, str] = field(default_factory=dict)
    outside: tuple[str, ...] = ()
    imported: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": {name: vars(f).copy() for name, f in sorted(self.code.items())},
            "data": dict(sorted(self.data.items())),
            "outside": sorted(self.outside),
            "imported": sorted(self.imported),
        }

    def files(self) -> dict[str, str]:
        """Every recorded file (code and data) -> its digest."""
        return {**{f.path: f.sha256 for f in self.code.values()}, **self.data}


@dataclass(frozen=True)
class Fingerprint:
    """A loaded fingerprint; ``source`` is the file it came from (for messages)."""

    source: str
    probe: str  # "orchestrator.probe.workload:train" or the user's "module:function"
    seed: int
    steps: int
    device: str  # "cpu", "cuda" or "mps" (Apple GPUs)
    environment: Environment
    stages: Stages
    audit: tuple[str, ...]
    # the [determinism] flags the probe ran with; {} in files written before they were recorded
    determinism: Mapping[str, Scalar] = field(default_factory=dict)
    inputs: Inputs = field(default_factory=Inputs)
    seconds: float | None = None  # training time; informational
    world_size: int | None = None  # data-parallel processes (--world-size); None: one process

    @property
    def losses(self) -> list[float]:
        return [float.fromhex(h) for h in self.stages.losses]

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form written to disk (current ``VERSION``)."""
        data: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "probe": {
                "name": self.probe,
                "seed": self.seed,
                "steps": self.steps,
                "device": self.device,
                "determinism": dict(self.determinism),
                **({} if self.world_size is None else {"world_size": self.world_size}),
            },
            "stages": self.stages.to_dict(),
            "audit": list(self.audit),
            "environment": {
                k: v
                for k, v in self.environment.to_dict().items()
                if k not in ("format", "version")
            },
            "inputs": self.inputs.to_dict(),
        }
        if self.seconds is not None:
            data["seconds"] = self.seconds
        return data

    @classmethod
    def from_dict(cls, data: object, source: str) -> Fingerprint:
        """Validate ``data`` (parsed JSON) against the format; ``FingerprintError`` naming
        ``source`` and the key path of every problem, one line each."""
        return _fingerprint(data, source)


# --------------------------------------------------------------------------- validation

_digest = shape(_DIGEST, "a sha256 digest ('sha256:' and 64 hex digits)")
_hex_float_shape = shape(_HEX_FLOAT, "a float.hex() string")


def _identifier(key: str) -> str | None:
    return None if key.isidentifier() else f"{quote(key)} is not an identifier"


_OUTPUT_NAME = re.compile(r"[a-z0-9_]+")


def _hex_float(text: str) -> str | None:
    problem = _hex_float_shape(text)
    if problem is None:
        try:
            float.fromhex(text)
        except (ValueError, OverflowError):  # an exponent past a float's range
            return f"{quote(text)} is not a float.hex() string"
    return problem


_DIGESTS = of(str, _digest)
_HEX_FLOATS = of(str, _hex_float)
_STRINGS = of(str)
_SCALARS = of(SCALAR)


def _json(r: Reader, value: object, path: str, depth: int = 0) -> JsonValue:
    """A free-form JSON value (collect_env's report): scalars, arrays and tables, at most
    ``MAX_DEPTH`` levels deep."""
    if depth > MAX_DEPTH:
        r.problem(path, f"nested deeper than {MAX_DEPTH} levels")
        return None
    if isinstance(value, list):
        return [_json(r, v, index(path, i), depth + 1) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _json(r, v, join(path, k), depth + 1) for k, v in value.items()}
    found: Scalar = r.value(value, path, SCALAR)
    return found


def _gpu(r: Reader, g: dict[str, Any]) -> Gpu:
    return Gpu(
        name=r.require(g, "name", "", str),
        capability=r.require(g, "capability", "", str),
        sm_count=r.require(g, "sm_count", "", int, check=at_least(0)),
        memory=r.require(g, "memory", "", int, check=at_least(0)),
    )


def _python(r: Reader, py: dict[str, Any]) -> PythonInfo:
    return PythonInfo(
        version=r.require(py, "version", "", str),
        implementation=r.require(py, "implementation", "", str),
        executable=r.require(py, "executable", "", str),
        hash_seed=r.require(
            py, "hash_seed", "", str, check=shape(_HASH_SEED, "'fixed:N' or 'random'")
        ),
    )


def _environment(r: Reader, env: dict[str, Any]) -> Environment:
    torch = r.entries(env, "torch", "", _SCALARS, required=True)
    if "torch" in env and isinstance(env["torch"], dict):
        r.get(env["torch"], "version", "torch", str, required=True)
    python = r.section(env, "python", "", _python, required=True)
    return Environment(
        python=python or PythonInfo("", "", "", ""),  # with a problem: never returned
        platform=r.entries(env, "platform", "", _SCALARS, required=True),
        launch=r.entries(env, "launch", "", of((str, type(None))), required=True),
        numpy=r.entries(env, "numpy", "", _SCALARS, required=True),
        torch=torch,
        flags=r.entries(env, "flags", "", _SCALARS, required=True),
        gpus=r.array(env, "gpus", "", tables(_gpu), required=True),
        collect_env=r.entries(env, "collect_env", "", Item(read=_json), required=True),
        packages=r.entries(env, "packages", "", _STRINGS, required=True),
    )


def _kernel_output(r: Reader, o: dict[str, Any]) -> KernelOutput:
    return KernelOutput(
        digest=r.require(o, "digest", "", str, check=_digest),
        dtype=r.require(o, "dtype", "", str, check=shape(_DOTTED, "a dtype name")),
        norm=r.require(o, "norm", "", str, check=_hex_float),
    )


def _stages(r: Reader, s: dict[str, Any], steps: int | None) -> Stages:
    # data_order is empty when the probe never calls rec.batch (optional), else one per step
    for key in ("losses", "data_order"):
        items = s.get(key)
        if steps is None or not isinstance(items, list):
            continue  # with a problem of its own
        if len(items) != steps and (key == "losses" or items):
            r.problem(key, f"{len(items)} entries but probe.steps is {steps}")
    output_name = shape(_OUTPUT_NAME, "a name of lower-case letters, digits and '_'")
    return Stages(
        initial_params=r.require(s, "initial_params", "", str, check=_digest),
        rng_initial=r.entries(s, "rng_initial", "", _DIGESTS, required=True, key_check=_identifier),
        data_order=r.array(s, "data_order", "", _DIGESTS, required=True),
        losses=r.array(s, "losses", "", _HEX_FLOATS, required=True),
        final_params=r.require(s, "final_params", "", str, check=_digest),
        metrics=r.entries(s, "metrics", "", _HEX_FLOATS, required=True, key_check=_identifier),
        rng_final=r.entries(s, "rng_final", "", _DIGESTS, required=True, key_check=_identifier),
        outputs=r.entries(s, "outputs", "", tables(_kernel_output), key_check=output_name),
    )


def _code_file(r: Reader, f: dict[str, Any]) -> CodeFile:
    return CodeFile(
        path=r.require(f, "path", "", str), sha256=r.require(f, "sha256", "", str, check=_digest)
    )


def _inputs(r: Reader, i: dict[str, Any]) -> Inputs:
    module = shape(_DOTTED, "a module name")
    return Inputs(
        code=r.entries(i, "code", "", tables(_code_file), required=True, key_check=module),
        data=r.entries(i, "data", "", _DIGESTS, required=True),
        outside=r.array(i, "outside", "", _STRINGS),
        imported=r.array(i, "imported", "", _STRINGS),
    )


def _header(data: object, source: str, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise FingerprintError(
            f"{printable(source)}: not an envparity {what} ({expected('a table', data)})"
        )
    return data


def _done(r: Reader) -> None:
    """Raise every problem ``r`` found, one line each."""
    if r.problems:
        raise FingerprintError("\n".join(str(p) for p in r.problems))


def _fingerprint(data: object, source: str) -> Fingerprint:
    d = _header(data, source, "fingerprint")
    if d.get("format") != FORMAT:
        raise FingerprintError(
            f"{printable(source)}: not an envparity fingerprint (format is "
            f"{quote(d.get('format'))}, expected {FORMAT!r})"
        )
    version = d.get("version")
    if version not in READABLE or isinstance(version, bool):
        raise FingerprintError(
            f"{printable(source)}: fingerprint version {quote(version)} is not supported (this "
            f"envparity reads versions {', '.join(map(str, READABLE))})"
        )
    r = Reader(printable(source))
    probe = r.section(d, "probe", "", _probe, required=True)
    steps = None if probe is None else probe["steps"]
    environment = r.section(d, "environment", "", _environment, required=True)
    stages = r.section(d, "stages", "", lambda r, s: _stages(r, s, steps), required=True)
    audit = r.array(d, "audit", "", _STRINGS, required=True)
    inputs = r.section(d, "inputs", "", _inputs, required=True) if version >= 2 else None
    seconds = r.get(d, "seconds", "", float)
    _done(r)
    assert probe is not None and environment is not None and stages is not None
    return Fingerprint(
        source=source,
        **probe,
        environment=environment,
        stages=stages,
        audit=audit,
        inputs=inputs or Inputs(),
        seconds=seconds,
    )


def _probe(r: Reader, p: dict[str, Any]) -> dict[str, Any]:
    """The ``probe`` table as ``Fingerprint`` fields."""
    name = shape(_PROBE_NAME, "a probe reference 'package.module:function'")
    return {
        "probe": r.require(p, "name", "", str, check=name),
        "seed": r.require(p, "seed", "", int, check=at_least(0)),
        "steps": r.require(p, "steps", "", int, check=at_least(1)),
        "device": r.require(
            p,
            "device",
            "",
            str,
            check=lambda d: None if d in _DEVICES else f"{quote(d)} is not 'cpu', 'cuda' or 'mps'",
        ),
        "determinism": r.entries(p, "determinism", "", _SCALARS, key_check=_identifier),
        "world_size": r.get(p, "world_size", "", int, check=at_least(1)),
    }


def capture_from_dict(data: object, source: str) -> Environment:
    """Validate a capture file's data; ``FingerprintError`` naming ``source`` and every field
    with a problem."""
    d = _header(data, source, "capture")
    if d.get("format") != CAPTURE_FORMAT or d.get("version") != CAPTURE_VERSION:
        raise FingerprintError(
            f"{printable(source)}: not an envparity capture (format {quote(d.get('format'))} "
            f"version {quote(d.get('version'))}; expected {CAPTURE_FORMAT!r} version "
            f"{CAPTURE_VERSION})"
        )
    r = Reader(printable(source))
    environment = r.nested("capture", lambda inner: _environment(inner, d))
    _done(r)
    assert environment is not None
    return environment


# --------------------------------------------------------------------------- files


def dumps(data: Mapping[str, Any]) -> str:
    """Fingerprint or capture data as the JSON text written to disk (sorted, newline-ended)."""
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def check_writable(path: Path) -> None:
    """Refuse, before any work is done, a path that ``write`` could not write."""
    folder = path.parent
    if path.is_dir():
        problem = "is a folder"
    elif not folder.exists():
        problem = f"folder {folder} does not exist"
    elif not folder.is_dir():
        problem = f"{folder} is not a folder"
    elif not os.access(folder, os.W_OK | os.X_OK):
        problem = f"folder {folder} is not writable"
    else:
        return
    raise UsageError(f"{path}: cannot write: {problem}")


def write(path: Path, data: Mapping[str, Any]) -> None:
    """Write atomically (``files.atomic_write``): ``path`` holds the old file or the new one."""
    check_writable(path)
    try:
        files.atomic_write(path, dumps(data))
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror or exc}") from None


def read_json(path: Path) -> object:
    """Parsed JSON of ``path``; ``FingerprintError`` if it is missing, too big or not JSON."""
    shown = printable(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise FingerprintError(f"{shown}: no such file") from None
    except OSError as exc:
        raise FingerprintError(f"{shown}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:
        raise FingerprintError(f"{shown}: larger than {MAX_BYTES // 2**20} MiB: not a fingerprint")
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise FingerprintError(f"{shown}: not UTF-8 text ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise FingerprintError(f"{shown}: not JSON: {exc}") from None
    except RecursionError:
        raise FingerprintError(f"{shown}: not JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise FingerprintError(f"{shown}: not JSON: {exc}") from None


def load(path: str | Path) -> Fingerprint:
    """Load and validate a fingerprint file (``FingerprintError`` naming it and the field)."""
    return Fingerprint.from_dict(read_json(Path(path)), str(path))


def load_capture(path: str | Path) -> Environment:
    """A capture file, or the environment part of a fingerprint file."""
    path = Path(path)
    data = read_json(path)
    if isinstance(data, dict) and data.get("format") == FORMAT:
        return Fingerprint.from_dict(data, str(path)).environment
    return capture_from_dict(data, str(path))
