"""``host``: the interpreter envparity runs in; nothing is provisioned (a GPU box, an existing env)."""

from __future__ import annotations

import importlib.util
import sys

from orchestrator.targets.base import Target


class HostTarget(Target):
    name = "host"

    def unavailable(self) -> str | None:
        if importlib.util.find_spec("torch") is None:
            return f"host: torch is not importable by {sys.executable}"
        return None

    def provision(self) -> None:
        return None

    def command(self, argv: list[str], *, env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        return [sys.executable if argv[0] == "python" else argv[0], *argv[1:]], env

    def key(self) -> str:
        """This interpreter and every distribution installed in it, with versions."""
        import importlib.metadata

        from orchestrator import files

        installed = sorted(
            f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions()
        )
        return files.inputs_hash(
            {"python": sys.version, "executable": sys.executable, "installed": installed}
        )
