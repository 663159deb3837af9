"""``orchestrator.messages``: how values appear in messages (short, one line) and how URLs'
credentials are hidden, whatever the value."""

from __future__ import annotations

import pytest

from orchestrator.messages import clip, quote, redact


class TestRedact:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("https://user:tok@host/simple", "https://***@host/simple"),
            ("https://tok@host", "https://***@host"),
            ("https://u:p@ss@host:8443/x", "https://***@host:8443/x"),  # an unencoded @
            ("git+https://tok@github.com/a/b", "git+https://***@github.com/a/b"),
            ("--extra-index-url 'https://u:t@h/s' x", "--extra-index-url 'https://***@h/s' x"),
            ("a https://u:t@h/1 and http://v:w@i/2", "a https://***@h/1 and http://***@i/2"),
            ("https://host/path?mail=a@b", "https://host/path?mail=a@b"),
            ("https://host/a@b", "https://host/a@b"),
            ("user@host:path", "user@host:path"),  # no scheme: not a URL
            ("no url here", "no url here"),
        ],
    )
    def test_userinfo_becomes_stars(self, text: str, expected: str) -> None:
        assert redact(text) == expected


class TestQuote:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("3.11", "'3.11'"),
            ("a\nb", "'a\\nb'"),
            ("x" * 161, "'" + "x" * 160 + "'... (161 characters)"),
            (42, "42"),
            (True, "True"),
            (10**40 - 1, "9" * 40),
            (-(10**40), "an integer of 41 digits"),
            pytest.param(10**5000, "an integer of thousands of digits", id="5001 digits"),
            ([1, 2, 3, 4, 5, 6], "[1, 2, 3, 4, ...]"),
            ({"url": "https://u:t@h"}, "{'url': 'https://***@h'}"),
            ("https://u:t@h/s", "'https://***@h/s'"),
        ],
    )
    def test_short_one_line_and_without_credentials(self, value: object, expected: str) -> None:
        assert quote(value) == expected

    def test_clip_cuts_and_redacts(self) -> None:
        assert clip("https://u:t@h " + "y" * 300) == (
            "https://***@h " + "y" * 186 + "... (314 characters)"
        )
