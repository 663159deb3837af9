"""Deprecated: the launch environment now lives in ``orchestrator.determinism_settings``.

``from orchestrator.launch import launch_environment`` (and ``SET_AT_LAUNCH``,
``THREAD_VARIABLES``) keeps working for one release, with a ``DeprecationWarning``; import
them from ``orchestrator.determinism_settings`` instead. Nothing in envparity imports this
module.
"""

from __future__ import annotations

import warnings

from orchestrator.determinism_settings import SET_AT_LAUNCH, THREAD_VARIABLES, launch_environment

__all__ = ["SET_AT_LAUNCH", "THREAD_VARIABLES", "launch_environment"]

warnings.warn(
    "orchestrator.launch is deprecated: import launch_environment, SET_AT_LAUNCH and "
    "THREAD_VARIABLES from orchestrator.determinism_settings",
    DeprecationWarning,
    stacklevel=2,
)
