"""envparity: one environment spec, rendered to every target, proven equivalent by a seeded probe.

Import-light by design: this package's top level imports nothing heavy, so that
``envparity check`` starts fast and the probe can run inside a bare target environment
with only torch and numpy on its path.
"""

__version__ = "0.1.0"
