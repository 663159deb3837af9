"""Deprecated: the verdict moved to ``orchestrator.verdict``.

``orchestrator.probe.compare`` keeps working for one release, with a ``DeprecationWarning``:
``compare`` (with its ``rtol``/``atol``/``cross_device_rtol`` keywords), the verdict types and
``likely_causes`` are ``orchestrator.verdict.compare``'s (where ``compare`` takes one
``orchestrator.tolerances.Tolerances``), and ``verdict_lines`` is
``orchestrator.verdict.wording``'s. Nothing in envparity imports this module.
"""

from __future__ import annotations

import warnings

from orchestrator.probe.fingerprint import Fingerprint
from orchestrator.tolerances import DEFAULTS
from orchestrator.verdict import compare as _compare
from orchestrator.verdict.compare import (
    KINDS,
    STAGES,
    PairVerdict,
    Verdict,
    category,
    differences_between,
    likely_causes,
)
from orchestrator.verdict.wording import verdict_lines

__all__ = [
    "KINDS",
    "STAGES",
    "PairVerdict",
    "Verdict",
    "category",
    "compare",
    "differences_between",
    "likely_causes",
    "verdict_lines",
]

warnings.warn(
    "orchestrator.probe.compare is deprecated: import compare and the verdict types from "
    "orchestrator.verdict.compare (compare takes an orchestrator.tolerances.Tolerances) and "
    "verdict_lines from orchestrator.verdict.wording",
    DeprecationWarning,
    stacklevel=2,
)


def compare(
    fingerprints: list[Fingerprint],
    *,
    rtol: float | None = None,
    atol: float | None = None,
    cross_device_rtol: float | None = None,
) -> Verdict:
    """``orchestrator.verdict.compare.compare`` with the tolerances as keywords."""
    tolerances = DEFAULTS.given(rtol=rtol, atol=atol, cross_device_rtol=cross_device_rtol)
    return _compare.compare(fingerprints, tolerances)
