"""The one place that runs subprocesses: argument lists only, never a shell string."""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import ToolError

log = logging.getLogger("envparity")


@dataclass(frozen=True)
class Completed:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float


class CommandFailed(ToolError):
    def __init__(self, result: Completed) -> None:
        self.result = result
        tail = (result.stderr or result.stdout).strip().splitlines()[-15:]
        detail = "\n".join("  " + line for line in tail)
        super().__init__(
            f"command failed with exit code {result.returncode}: {shlex.join(result.args)}"
            + (f"\n{detail}" if detail else "")
        )


def run(
    args: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    extra_env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    check: bool = True,
    capture: bool = True,
    timeout: float | None = None,
    input: str | None = None,
) -> Completed:
    """Run ``args`` and return what happened; raise ``CommandFailed`` when ``check`` and it fails.

    ``env`` replaces the environment; ``extra_env`` is laid over it (or over os.environ).
    A missing executable is a ``ToolError`` naming it, not a traceback.
    """
    argv = tuple(os.fspath(a) for a in args)
    full_env = dict(os.environ if env is None else env)
    if extra_env:
        full_env.update(extra_env)
    log.debug("$ %s", shlex.join(argv))
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            argv,
            env=full_env,
            cwd=None if cwd is None else Path(cwd),
            capture_output=capture,
            text=True,
            timeout=timeout,
            input=input,
            check=False,
        )
    except FileNotFoundError as exc:
        raise ToolError(f"{argv[0]}: not found on PATH (needed to run {shlex.join(argv)})") from exc
    except subprocess.TimeoutExpired as exc:
        raise ToolError(f"timed out after {timeout:g}s: {shlex.join(argv)}") from exc
    result = Completed(
        argv, proc.returncode, proc.stdout or "", proc.stderr or "", time.perf_counter() - start
    )
    if check and result.returncode != 0:
        raise CommandFailed(result)
    return result
