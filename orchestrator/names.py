"""Package names compared as Python packaging compares them: PEP 503 normalisation.

``canonical_name`` is envparity's one normaliser. It is PEP 503's rule
(https://peps.python.org/pep-0503/#normalized-names: runs of ``-``, ``_`` and ``.`` become one
``-``, and the name is lower-cased), the rule ``packaging.utils.canonicalize_name`` implements
(packaging 26.4, ``src/packaging/utils.py``, ``validate=False``). It is written out here because
importing ``packaging.utils`` imports ``packaging.tags``, and with it logging, subprocess,
platform, sysconfig and the ELF reader (about 13 ms, as long as a bare interpreter start), which
``envparity check`` must not pay for on every commit. ``tests/test_names.py`` holds it to
packaging's own on names of every shape.
"""

from __future__ import annotations

import re

_SEPARATORS = re.compile(r"[-_.]+")


def canonical_name(name: str) -> str:
    """``name`` normalised (``"Foo.Bar_baz"`` -> ``"foo-bar-baz"``); not validated."""
    return _SEPARATORS.sub("-", name).lower()
