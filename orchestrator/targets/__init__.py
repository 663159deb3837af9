"""Verify targets by name. Each implements ``orchestrator.targets.base.Target``."""

from __future__ import annotations

from orchestrator.targets.base import Target
from orchestrator.targets.devcontainer import DevcontainerTarget
from orchestrator.targets.host import HostTarget
from orchestrator.targets.nix import NixTarget
from orchestrator.targets.venv import VenvTarget

TARGETS: dict[str, type[Target]] = {
    "host": HostTarget,
    "venv": VenvTarget,
    "devcontainer": DevcontainerTarget,
    "nix": NixTarget,
}
