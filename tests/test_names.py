"""``orchestrator.names.canonical_name`` normalises as ``packaging.utils.canonicalize_name``."""

from __future__ import annotations

import pytest
from packaging.utils import canonicalize_name

from orchestrator.names import canonical_name

NAMES = [
    "torch",
    "Django",
    "oslo.concurrency",
    "zope.interface",
    "typing_extensions",
    "Flask-SQLAlchemy",
    "nvidia-cudnn-cu12",
    "ruamel.yaml.clib",
    "a_.-b",
    "A--B__C..D",
    "_private",
    "trailing-",
    "x",
    "ÜNICODE_name",
    "",
]


@pytest.mark.parametrize("name", NAMES)
def test_the_same_name_as_packaging_gives(name: str) -> None:
    assert canonical_name(name) == str(canonicalize_name(name))


def test_pep_503_examples() -> None:
    """https://peps.python.org/pep-0503/#normalized-names"""
    assert {
        canonical_name(n)
        for n in (
            "friendly-bard",
            "Friendly-Bard",
            "FRIENDLY-BARD",
            "friendly.bard",
            "friendly_bard",
            "friendly--bard",
            "FrIeNdLy-._.-bArD",
        )
    } == {"friendly-bard"}
