"""The comparison tolerances: one typed value, from the spec's ``[verify]`` table to the verdict.

``Tolerances`` holds the three numbers every comparison of fingerprints uses, with their
defaults, written nowhere else:

* ``rtol``/``atol``: between runs on the same device model (the same hardware class, for
  references): ``0.0`` and ``0.0``, bitwise;
* ``cross_device_rtol``: between device models (CPU vs CUDA, two GPU models) and between
  hardware classes: ``1e-4``, because kernels differ there and bitwise equality is not
  expected.

The spec loader builds it (``Spec.verify.tolerances``); ``envparity compare`` builds it from
its options over the spec's; ``orchestrator.verdict`` applies it. It lives beside the spec,
stdlib only, rather than inside ``orchestrator.verdict``: the spec holds it, and
``envparity check`` (which loads the spec) imports nothing of the verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

NAMES = ("rtol", "atol", "cross_device_rtol")
RANGE = "[0, 1)"  # every tolerance; a value of 1 or more would call any two runs equal


def valid(value: float) -> bool:
    """Whether ``value`` is a tolerance: in ``RANGE`` (nan is not)."""
    return 0.0 <= value < 1.0


@dataclass(frozen=True, kw_only=True)
class Tolerances:
    """``rtol``/``atol`` within a device model, ``cross_device_rtol`` across (module doc).

    Values are compared as ``abs(a - b) <= atol + rtol * abs(a)``. Raises ``ValueError``
    naming the tolerance when a value is outside ``RANGE``.
    """

    rtol: float = 0.0
    atol: float = 0.0
    cross_device_rtol: float = 1e-4

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not valid(value):
                raise ValueError(f"{f.name} {value!r}: not a tolerance in {RANGE}")

    @property
    def bitwise(self) -> bool:
        """Whether runs on the same device model must agree bitwise (``rtol == atol == 0``)."""
        return self.rtol == self.atol == 0.0

    def given(self, **values: float | None) -> Tolerances:
        """These tolerances with each value that is not None replaced (``--rtol`` over the
        spec's). Raises ``TypeError`` for a name not in ``NAMES``."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})

    def across_classes(self) -> Tolerances:
        """The tolerances between two hardware classes: ``cross_device_rtol`` also between
        two runs of one device model (two CPU models), where kernels may differ."""
        return replace(self, rtol=self.cross_device_rtol)


DEFAULTS = Tolerances()  # the spec's defaults: bitwise within a device model, 1e-4 across
