"""The Nix escapers (orchestrator.render.escape), judged by Nix itself: every escaped value is
evaluated with ``nix-instantiate --eval`` and must come back exactly, on its own and indented
the way the flake renderer indents it. Many values go into one evaluation (a list), so the
corpus and the property test stay fast."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import real_tools
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.render.escape import nix_indented_string, nix_string
from orchestrator.render.flake import _indent

# Each is a sequence the Nix lexer treats specially in indented strings, or next to one.
INDENTED = {
    "quote before interpolation": "'${x}",
    "escaped-looking interpolation": "''${x}",
    "trailing quote": "a'",
    "only a quote": "'",
    "two quotes": "''",
    "three quotes": "'''",
    "four quotes": "''''",
    "quote dollar": "'$",
    "dollar quote": "$'",
    "double dollar brace": "$${x}",
    "quote backslash": "''\\n",
    "escape-looking sequences": "''\\t ''$ '''",
    "interpolation": '${builtins.abort "PWNED"}',
    "interpolation at the end": "x ${",
    "dollar at the end": "x$",
    "every line indented": "  a\n    b\n  c",
    "last line of spaces": "a\n   ",
    "only spaces": "   ",
    "blank middle line": "a\n\n  b",
    "spaces-only middle line": "  a\n \n  b",
    "tabs": "\ta\n\t\tb",
    "leading newline": "\nx",
    "trailing newline": "x\n",
    "carriage return": "a\r\nb",
    "empty": "",
    "shell hook": "if [ \"${a:-}\" = '' ]; then\n  echo '${b}' \"$c\"\nfi\n",
    "non-ASCII": "naïve 日本語 ✓ \u2028 \x85",
}


def evaluate(exprs: list[str], tmp_path: Path) -> list[str]:
    """The values of the Nix expressions, in one ``nix-instantiate --eval`` run."""
    result: list[str] = real_tools.nix_eval_json(
        "[\n" + "\n".join(f"({e})" for e in exprs) + "\n]", cwd=tmp_path
    )
    return result


def forms(value: str) -> list[str]:
    """The indented string alone, and as the flake writes it (lines after the first indented)."""
    escaped = nix_indented_string(value)
    return [escaped, _indent(escaped, 14)]


class TestIndentedString:
    @pytest.mark.parametrize("name", INDENTED)
    def test_nix_reads_back_the_value(self, name: str, tmp_path: Path) -> None:
        value = INDENTED[name]
        assert evaluate(forms(value), tmp_path) == [value, value]

    def test_a_nul_is_refused(self) -> None:
        with pytest.raises(ValueError, match="NUL character"):
            nix_indented_string("a\x00b")

    def test_the_shell_hook_stays_readable(self) -> None:
        """Escapes appear only where Nix needs them: the hook's own indentation is kept."""
        assert nix_indented_string("if x; then\n  y\nfi\n") == "''\nif x; then\n  y\nfi\n''"


class TestDoubleQuotedString:
    @pytest.mark.parametrize("name", INDENTED)
    def test_nix_reads_back_the_value(self, name: str, tmp_path: Path) -> None:
        value = INDENTED[name]
        assert evaluate([nix_string(value)], tmp_path) == [value]


# Text the way a hostile spec or hook would hold it: quotes, dollars, braces, backslashes,
# spaces and newlines are drawn often, so the special sequences meet each other.
NIX_TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from(["'", "$", "{", "}", "\\", " ", "\n", "\t", "\r", '"', "a"]),
        st.characters(blacklist_characters="\x00", codec="utf-8"),
    ),
    max_size=24,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(values=st.lists(NIX_TEXT, min_size=1, max_size=25))
def test_any_text_round_trips_through_both_escapers(values: list[str], tmp_path: Path) -> None:
    exprs = [e for v in values for e in [*forms(v), nix_string(v)]]
    got = evaluate(exprs, tmp_path)
    assert got == [v for v in values for _ in range(3)], json.dumps(values)
