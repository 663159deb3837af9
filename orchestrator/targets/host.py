"""``host``: the interpreter the user's code runs in (``interpreter.user_interpreter``: the one
running envparity, or the ``python3`` on PATH when envparity is an isolated tool); nothing is
provisioned (a GPU box, an existing env). verify reports how it differs from the spec."""

from __future__ import annotations

from orchestrator.interpreter import user_interpreter
from orchestrator.targets.base import Target


class HostTarget(Target):
    name = "host"

    def unavailable(self) -> str | None:
        interpreter = user_interpreter()
        if not interpreter.has("torch"):
            return f"host: torch is not installed in {interpreter.executable}"
        return None  # a CUDA flavor without a GPU runs on the CPU (verify.probe_device)

    def provision(self) -> None:
        return None

    def command(self, argv: list[str], *, env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        python = user_interpreter().executable
        return [python if argv[0] == "python" else argv[0], *argv[1:]], env

    def key(self) -> str:
        """This interpreter and every distribution installed in it, with versions."""
        from orchestrator import files

        interpreter = user_interpreter()
        return files.inputs_hash(
            {
                "python": interpreter.version,
                "executable": interpreter.executable,
                "installed": sorted(f"{n}=={v}" for n, v in interpreter.packages.items()),
            }
        )
