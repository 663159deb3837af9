"""``.env.example``: every variable of ``[variables]`` with its default and description.

Secret values are never written: a secret appears with an empty value. Defaults are written
as single-quoted shell words, so ``set -a; . ./.env`` and docker's ``--env-file`` readers that
understand quoting see exactly the default, and a ``$`` or backtick in it is inert data.
"""

from __future__ import annotations

from orchestrator.render.escape import shell_word
from orchestrator.spec import Spec


def render_dotenv(spec: Spec) -> str:
    lines = [
        "# Copy to .env (which git ignores) and fill in. Values here are defaults, never secrets."
    ]
    for v in spec.variables:
        notes = [w for w, on in (("required", v.required), ("secret", v.secret)) if on]
        lines.append("")
        head = f"# {v.name}" + (f" ({', '.join(notes)})" if notes else "")
        lines.append(head + (f": {v.description}" if v.description else ""))
        value = "" if v.secret or v.default is None else v.default
        lines.append(f"{v.name}={shell_word(value) if value else ''}")
    return "\n".join(lines) + "\n"
