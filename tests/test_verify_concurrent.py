"""``verify.run_targets``: provisioning in threads, probes one at a time as targets get ready."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import pytest

from orchestrator import verify
from orchestrator.errors import ToolError
from orchestrator.spec import loads
from orchestrator.targets.base import Context, Target

SPEC = """\
[environment]
name = "threads"
python = "3.11"

[targets.host]
[targets.venv]
[targets.nix]
nixpkgs = "github:NixOS/nixpkgs/03652d51808a3ea042cf9e6f0c658b8ca7c044ea"
"""

# how long each fake target takes to provision (seconds)
DELAYS = {"host": 0.0, "venv": 0.2, "nix": 0.6}


class Log:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[float, str, str, str]] = []

    def add(self, what: str, target: str, edge: str) -> None:
        with self.lock:
            self.events.append((time.monotonic(), what, target, edge))

    def spans(self, what: str) -> dict[str, tuple[float, float]]:
        starts = {t: at for at, w, t, e in self.events if w == what and e == "start"}
        ends = {t: at for at, w, t, e in self.events if w == what and e == "end"}
        return {t: (starts[t], ends[t]) for t in starts}


def fake_targets(ctx: Context, log: Log, failing: str | None = None) -> list[Target]:
    out: list[Target] = []
    for name, delay in DELAYS.items():

        class Fake(Target):
            def unavailable(self) -> str | None:
                return None

            def provision(self, delay: float = delay) -> None:
                log.add("provision", self.name, "start")
                time.sleep(delay)
                log.add("provision", self.name, "end")
                if self.name == failing:
                    raise ToolError(f"{self.name}: build failed")

            def command(
                self, argv: list[str], *, env: dict[str, str]
            ) -> tuple[list[str], dict[str, str]]:
                raise AssertionError("not probed here")

        Fake.name = name
        out.append(Fake(ctx))
    return out


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    path = tmp_path / "environment.toml"
    path.write_text(SPEC)
    return Context(spec=loads(SPEC, path=path), cache=tmp_path, runtime=tmp_path)


@pytest.fixture
def log(monkeypatch: pytest.MonkeyPatch) -> Log:
    log = Log()

    def probe(
        target: Target, ctx: Context, hw: str, result: verify.TargetResult
    ) -> verify.TargetResult:
        log.add("probe", target.name, "start")
        time.sleep(0.1)
        log.add("probe", target.name, "end")
        return result

    monkeypatch.setattr(verify, "probe_target", probe)
    return log


class TestRunTargets:
    def test_provisioning_overlaps_and_probes_never_do(self, ctx: Context, log: Log) -> None:
        results = verify.run_targets(fake_targets(ctx, log), ctx, "hw", concurrent=True)
        assert [r.name for r in results] == ["host", "venv", "nix"]  # the order asked for
        provision, probe = log.spans("provision"), log.spans("probe")
        # every build started before venv's (0.2 s) finished: they ran at once
        assert max(s for s, _ in provision.values()) < provision["venv"][1]
        ordered = sorted(probe.values())
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(ordered))
        # host was probed while nix was still building
        assert probe["host"][0] < provision["nix"][1]

    def test_sequential_provisions_one_after_another(self, ctx: Context, log: Log) -> None:
        verify.run_targets(fake_targets(ctx, log), ctx, "hw", concurrent=False)
        spans = sorted(log.spans("provision").values())
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans))

    def test_a_failed_build_fails_its_target_only(self, ctx: Context, log: Log) -> None:
        results = verify.run_targets(fake_targets(ctx, log, failing="venv"), ctx, "hw")
        assert [(r.name, r.status, r.reason) for r in results] == [
            ("host", "ok", ""),
            ("venv", "failed", "venv: build failed"),
            ("nix", "ok", ""),
        ]
