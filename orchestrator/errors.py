"""The error types that reach the user. The CLI turns each into a message and an exit code.

Library code raises these freely; only ``orchestrator.cli`` prints and exits.
"""

from __future__ import annotations

from dataclasses import dataclass


class EnvparityError(Exception):
    """An error the user should see as one clear message, never a traceback."""

    exit_code = 2


class UsageError(EnvparityError):
    """Bad command-line usage or an unusable argument (exit 2)."""


class CheckFailed(EnvparityError):
    """A check or comparison found a difference (exit 1)."""

    exit_code = 1


class ToolError(EnvparityError):
    """An external tool (uv, nix, podman, ...) could not do its job (exit 2)."""


@dataclass(frozen=True)
class Problem:
    """One problem in an input file: where it is and what is wrong."""

    file: str
    key: str  # dotted key path, e.g. "dependencies.torch"; "" for the whole file
    message: str

    def __str__(self) -> str:
        return (
            f"{self.file}: {self.key}: {self.message}"
            if self.key
            else f"{self.file}: {self.message}"
        )


class SpecError(EnvparityError):
    """Every problem found in a spec, reported together."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))
