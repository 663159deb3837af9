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
from typing import Any, NoReturn, TypeAlias

from orchestrator import files
from orchestrator.errors import UsageError

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
    """

    code: Mapping[str, CodeFile] = field(default_factory=dict)
    data: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": {name: vars(f).copy() for name, f in sorted(self.code.items())},
            "data": dict(sorted(self.data.items())),
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
        ``source`` and the field at the first problem."""
        try:
            return _fingerprint(data, source)
        except _Bad as bad:
            raise FingerprintError(f"{printable(source)}: {bad}") from None


# --------------------------------------------------------------------------- validation


class _Bad(ValueError):
    """A field that does not match the format: its dotted name and the problem."""


def _fail(where: str, what: str, value: object) -> NoReturn:
    raise _Bad(f"{where}: expected {what}, got {_brief(value)}")


def _brief(value: object) -> str:
    kind = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
        type(None): "null",
    }.get(type(value), type(value).__name__)
    if isinstance(value, (list, dict)):
        return kind
    text = repr(value)
    return f"{kind} {text if len(text) <= 40 else text[:37] + '...'}"


def _get(obj: Mapping[str, object], key: str, where: str) -> object:
    if key not in obj:
        raise _Bad(f"{where}{key}: missing")
    return obj[key]


def _object(value: object, where: str) -> Mapping[str, object]:
    if not isinstance(value, dict):
        _fail(where, "an object", value)
    return value


def _str(value: object, where: str, pattern: re.Pattern[str] | None = None, what: str = "") -> str:
    if not isinstance(value, str) or (pattern is not None and not pattern.fullmatch(value)):
        _fail(where, what or "a string", value)
    return value


def _int(value: object, where: str, low: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        _fail(where, f"an integer >= {low}", value)
    return value


def _scalar(value: object, where: str) -> Scalar:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    _fail(where, "a string, number, boolean or null", value)


def _json(value: object, where: str, depth: int = 0) -> JsonValue:
    if depth > MAX_DEPTH:
        raise _Bad(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, list):
        return [_json(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _json(v, f"{where}.{k}", depth + 1) for k, v in value.items()}
    return _scalar(value, where)


def _map(value: object, where: str, item: Any) -> dict[str, Any]:
    """An object whose keys are any strings and whose values pass ``item(value, where)``."""
    return {k: item(v, f"{where}.{k}") for k, v in _object(value, where).items()}


def _digest(value: object, where: str) -> str:
    return _str(value, where, _DIGEST, "'sha256:' and 64 hex digits")


def _hex_float(value: object, where: str) -> str:
    text = _str(value, where, _HEX_FLOAT, "a float.hex() string")
    try:
        float.fromhex(text)
    except (ValueError, OverflowError):
        _fail(where, "a float.hex() string", value)
    return text


def _identifier_map(value: object, where: str, item: Any) -> dict[str, Any]:
    found = _map(value, where, item)
    for key in found:
        if not key.isidentifier():
            raise _Bad(f"{where}: key {key!r} is not an identifier")
    return found


def _list(value: object, where: str, item: Any) -> tuple[Any, ...]:
    if not isinstance(value, list):
        _fail(where, "a list", value)
    return tuple(item(v, f"{where}[{i}]") for i, v in enumerate(value))


def _environment(value: object, where: str) -> Environment:
    env = _object(value, where)
    p = where + "."
    py = _object(_get(env, "python", p), p + "python")
    pp = p + "python."
    torch = _map(_get(env, "torch", p), p + "torch", _scalar)
    _str(_get(torch, "version", p + "torch."), p + "torch.version")

    def gpu(value: object, where: str) -> Gpu:
        g = _object(value, where)
        return Gpu(
            name=_str(_get(g, "name", where + "."), where + ".name"),
            capability=_str(_get(g, "capability", where + "."), where + ".capability"),
            sm_count=_int(_get(g, "sm_count", where + "."), where + ".sm_count"),
            memory=_int(_get(g, "memory", where + "."), where + ".memory"),
        )

    def optional_str(value: object, where: str) -> str | None:
        return None if value is None else _str(value, where)

    return Environment(
        python=PythonInfo(
            version=_str(_get(py, "version", pp), pp + "version"),
            implementation=_str(_get(py, "implementation", pp), pp + "implementation"),
            executable=_str(_get(py, "executable", pp), pp + "executable"),
            hash_seed=_str(
                _get(py, "hash_seed", pp), pp + "hash_seed", _HASH_SEED, "'fixed:N' or 'random'"
            ),
        ),
        platform=_map(_get(env, "platform", p), p + "platform", _scalar),
        launch=_map(_get(env, "launch", p), p + "launch", optional_str),
        numpy=_map(_get(env, "numpy", p), p + "numpy", _scalar),
        torch=torch,
        flags=_map(_get(env, "flags", p), p + "flags", _scalar),
        gpus=_list(_get(env, "gpus", p), p + "gpus", gpu),
        collect_env=_map(_get(env, "collect_env", p), p + "collect_env", _json),
        packages=_map(_get(env, "packages", p), p + "packages", _str),
    )


_OUTPUT_NAME = re.compile(r"[a-z0-9_]+")


def _kernel_output(value: object, where: str) -> KernelOutput:
    o = _object(value, where)
    w = where + "."
    return KernelOutput(
        digest=_digest(_get(o, "digest", w), w + "digest"),
        dtype=_str(_get(o, "dtype", w), w + "dtype", _DOTTED, "a dtype name"),
        norm=_hex_float(_get(o, "norm", w), w + "norm"),
    )


def _stages(value: object, steps: int) -> Stages:
    s = _object(value, "stages")
    w = "stages."
    outputs = _map(s.get("outputs", {}), w + "outputs", _kernel_output)
    for name in outputs:
        if not _OUTPUT_NAME.fullmatch(name):
            raise _Bad(f"stages.outputs: key {name!r} is not lower-case letters, digits and _")
    losses = _list(_get(s, "losses", w), w + "losses", _hex_float)
    data_order = _list(_get(s, "data_order", w), w + "data_order", _digest)
    # data_order is empty when the probe never calls rec.batch (optional), else one per step
    for key, items in (("losses", losses), ("data_order", data_order)):
        if len(items) != steps and (key == "losses" or items):
            raise _Bad(f"stages.{key}: {len(items)} entries but probe.steps is {steps}")
    return Stages(
        initial_params=_digest(_get(s, "initial_params", w), w + "initial_params"),
        rng_initial=_identifier_map(_get(s, "rng_initial", w), w + "rng_initial", _digest),
        data_order=data_order,
        losses=losses,
        final_params=_digest(_get(s, "final_params", w), w + "final_params"),
        metrics=_identifier_map(_get(s, "metrics", w), w + "metrics", _hex_float),
        rng_final=_identifier_map(_get(s, "rng_final", w), w + "rng_final", _digest),
        outputs=outputs,
    )


def _inputs(value: object) -> Inputs:
    i = _object(value, "inputs")

    def code_file(value: object, where: str) -> CodeFile:
        f = _object(value, where)
        return CodeFile(
            path=_str(_get(f, "path", where + "."), where + ".path"),
            sha256=_digest(_get(f, "sha256", where + "."), where + ".sha256"),
        )

    code = _map(_get(i, "code", "inputs."), "inputs.code", code_file)
    for name in code:
        if not _DOTTED.fullmatch(name):
            raise _Bad(f"inputs.code: key {name!r} is not a module name")
    return Inputs(code=code, data=_map(_get(i, "data", "inputs."), "inputs.data", _digest))


def _header(data: object, source: str) -> Mapping[str, object]:
    if not isinstance(data, dict):
        raise FingerprintError(
            f"{printable(source)}: not an envparity fingerprint (top level is not an object)"
        )
    return data


def _fingerprint(data: object, source: str) -> Fingerprint:
    d = _header(data, source)
    if d.get("format") != FORMAT:
        raise _Bad(
            f"not an envparity fingerprint (format is {d.get('format')!r}, expected {FORMAT!r})"
        )
    version = d.get("version")
    if version not in READABLE or isinstance(version, bool):
        raise _Bad(
            f"fingerprint version {version!r} is not supported (this envparity reads versions "
            f"{', '.join(map(str, READABLE))})"
        )
    probe = _object(_get(d, "probe", ""), "probe")
    w = "probe."
    steps = _int(_get(probe, "steps", w), w + "steps", low=1)
    world_size = probe.get("world_size")
    if world_size is not None:
        world_size = _int(world_size, w + "world_size", low=1)
    seconds = d.get("seconds")
    if seconds is not None and (not isinstance(seconds, (int, float)) or isinstance(seconds, bool)):
        _fail("seconds", "a number", seconds)
    return Fingerprint(
        source=source,
        probe=_str(_get(probe, "name", w), w + "name", _PROBE_NAME, "'package.module:function'"),
        seed=_int(_get(probe, "seed", w), w + "seed"),
        steps=steps,
        device=_str(
            _get(probe, "device", w),
            w + "device",
            re.compile("cpu|cuda|mps"),
            "'cpu', 'cuda' or 'mps'",
        ),
        determinism=_identifier_map(probe.get("determinism", {}), w + "determinism", _scalar),
        environment=_environment(_get(d, "environment", ""), "environment"),
        stages=_stages(_get(d, "stages", ""), steps),
        audit=_list(_get(d, "audit", ""), "audit", _str),
        inputs=_inputs(_get(d, "inputs", "")) if version >= 2 else Inputs(),
        seconds=None if seconds is None else float(seconds),
        world_size=world_size,
    )


def capture_from_dict(data: object, source: str) -> Environment:
    """Validate a capture file's data; ``FingerprintError`` naming ``source`` and the field."""
    d = _header(data, source)
    try:
        if d.get("format") != CAPTURE_FORMAT or d.get("version") != CAPTURE_VERSION:
            raise _Bad(
                f"not an envparity capture (format {d.get('format')!r} version "
                f"{d.get('version')!r}; expected {CAPTURE_FORMAT!r} version {CAPTURE_VERSION})"
            )
        return _environment(d, "capture")
    except _Bad as bad:
        raise FingerprintError(f"{printable(source)}: {bad}") from None


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
