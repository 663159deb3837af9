"""The fingerprint: a versioned JSON record of one probe run (format in docs/probe.md).

Loading validates the shape and raises ``FingerprintError`` (exit 2) naming the file and the
problem. Stdlib only: ``compare`` never imports torch.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator import files
from orchestrator.errors import UsageError
from orchestrator.probe.capture import CAPTURE_FORMAT, CAPTURE_VERSION

FORMAT = "envparity-fingerprint"
VERSION = 1

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_HEX_FLOAT = re.compile(r"^-?(0x[0-9a-f](\.[0-9a-f]*)?p[+-]\d+|inf|nan)$")


class FingerprintError(UsageError):
    """A fingerprint or capture file that is missing or malformed (exit 2)."""


@dataclass(frozen=True)
class Fingerprint:
    """A loaded fingerprint; ``source`` is the file it came from (for messages)."""

    source: str
    probe: str  # "orchestrator.probe.workload:train" or the user's "module:function"
    seed: int
    steps: int
    device: str  # "cpu" or "cuda"
    environment: dict[str, Any]
    stages: dict[str, Any]
    audit: list[str]
    # the [determinism] flags the probe ran with; {} in files written before they were recorded
    determinism: dict[str, Any] = field(default_factory=dict)

    @property
    def losses(self) -> list[float]:
        return [float.fromhex(h) for h in self.stages["losses"]]


def dumps(data: dict[str, Any]) -> str:
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


def write(path: Path, data: dict[str, Any]) -> None:
    """Write atomically (``files.atomic_write``): ``path`` holds the old file or the new one."""
    check_writable(path)
    try:
        files.atomic_write(path, dumps(data))
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror or exc}") from None


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FingerprintError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FingerprintError(f"{path}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise FingerprintError(f"{path}: not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise FingerprintError(f"{path}: not an envparity fingerprint (top level is not an object)")
    return data


def load(path: str | Path) -> Fingerprint:
    """Load and validate a fingerprint file."""
    path = Path(path)
    data = read_json(path)
    if data.get("format") != FORMAT:
        raise FingerprintError(
            f"{path}: not an envparity fingerprint (format is "
            f"{data.get('format')!r}, expected {FORMAT!r})"
        )
    if data.get("version") != VERSION:
        raise FingerprintError(
            f"{path}: fingerprint version {data.get('version')!r} is not "
            f"supported (this envparity reads version {VERSION})"
        )
    problems = _problems(data)
    if problems:
        raise FingerprintError(f"{path}: " + "; ".join(problems))
    probe, stages = data["probe"], data["stages"]
    return Fingerprint(
        source=str(path),
        probe=probe["name"],
        seed=probe["seed"],
        steps=probe["steps"],
        device=probe["device"],
        environment=data["environment"],
        stages=stages,
        audit=data["audit"],
        determinism=probe.get("determinism", {}),
    )


def load_capture(path: str | Path) -> dict[str, Any]:
    """A capture file, or the environment part of a fingerprint file."""
    path = Path(path)
    data = read_json(path)
    if data.get("format") == FORMAT:
        return load(path).environment
    if data.get("format") != CAPTURE_FORMAT or data.get("version") != CAPTURE_VERSION:
        raise FingerprintError(
            f"{path}: not an envparity capture (format {data.get('format')!r} version "
            f"{data.get('version')!r}; expected {CAPTURE_FORMAT!r} version {CAPTURE_VERSION})"
        )
    return data


def _problems(data: dict[str, Any]) -> list[str]:
    problems: list[str] = []

    def expect(key: str, value: Any, kind: type | tuple[type, ...], what: str) -> bool:
        if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            return True
        problems.append(f"{key}: expected {what}, got {value!r}"[:200])
        return False

    probe, stages = data.get("probe"), data.get("stages")
    expect("environment", data.get("environment"), dict, "an object")
    expect("audit", data.get("audit"), list, "a list")
    steps: int | None = None
    if expect("probe", probe, dict, "an object") and isinstance(probe, dict):
        expect("probe.name", probe.get("name"), str, "a string")
        expect("probe.seed", probe.get("seed"), int, "an integer")
        if expect("probe.steps", probe.get("steps"), int, "an integer"):
            steps = probe["steps"]
        expect("probe.device", probe.get("device"), str, "a string")
        if "determinism" in probe:
            expect("probe.determinism", probe["determinism"], dict, "an object")
    if not expect("stages", stages, dict, "an object") or not isinstance(stages, dict):
        return problems
    for key in ("initial_params", "final_params"):
        if not (isinstance(stages.get(key), str) and _DIGEST.match(stages[key])):
            problems.append(f"stages.{key}: expected 'sha256:<64 hex digits>'")
    for key, pattern in (("data_order", _DIGEST), ("losses", _HEX_FLOAT)):
        items = stages.get(key)
        if not isinstance(items, list) or not all(
            isinstance(x, str) and pattern.match(x) for x in items
        ):
            shape = "digests" if key == "data_order" else "float.hex() strings"
            problems.append(f"stages.{key}: expected a list of {shape}")
        # data_order is empty when the probe never calls rec.batch (optional), else per step
        elif steps is not None and len(items) != steps and (key == "losses" or items):
            problems.append(f"stages.{key}: {len(items)} entries but probe.steps is {steps}")
    for key in ("rng_initial", "rng_final", "metrics"):
        expect(f"stages.{key}", stages.get(key), dict, "an object")
    return problems
