"""The documentation keeps its word: what README.md and docs/*.md show works as shown.

* Every ```toml block is a whole spec that ``spec.load`` accepts, unless the line before it
  says it is not: ``<!-- fragment: why -->`` (it must still be valid TOML).
* Every Python call docs/probe.md's contract section documents (the ```python blocks and the
  inline calls such as ``rec.initial(model)``) runs, in the documented order, as a probe
  against a real ``Recorder`` and torch, and the recorder accepts the result.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tomllib

from orchestrator import spec
from tests.helpers import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^```", re.S | re.M)
FRAGMENT = re.compile(r"<!-- fragment: (?P<why>.+?) -->\s*\Z")


def blocks(text: str, lang: str) -> list[tuple[int, str, str | None]]:
    """(line, body, fragment reason or None) of each ```lang block of ``text``."""
    out = []
    for m in FENCE.finditer(text):
        if m["lang"] != lang:
            continue
        before = text[: m.start()].rstrip("\n")
        marker = FRAGMENT.search(before.rsplit("\n", 1)[-1] + "\n")
        out.append(
            (text.count("\n", 0, m.start()) + 1, m["body"], marker["why"] if marker else None)
        )
    return out


TOML = [
    pytest.param(page, line, body, why, id=f"{page.name}:{line}")
    for page in PAGES
    for line, body, why in blocks(page.read_text(encoding="utf-8"), "toml")
]


def test_the_docs_show_toml() -> None:
    assert len(TOML) >= 2  # README's spec and docs/spec.md's reference at least


@pytest.mark.parametrize(("page", "line", "body", "why"), TOML)
def test_every_toml_block_is_a_spec_that_loads(
    page: Path, line: int, body: str, why: str | None, tmp_path: Path
) -> None:
    if why is not None:
        tomllib.loads(body)  # a fragment is still TOML
        return
    path = tmp_path / "environment.toml"
    path.write_text(body)
    try:
        spec.load(path)
    except spec.SpecError as exc:
        pytest.fail(
            f"{page.relative_to(REPO)} line {line}: the spec does not load (mark it "
            f"'<!-- fragment: why -->' if it is not meant to):\n{exc}"
        )


def _section(page: Path, heading: str) -> str:
    text = page.read_text(encoding="utf-8")
    start = text.index(f"\n## {heading}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


CONTRACT = _section(REPO / "docs" / "probe.md", "The probe contract")
# Inline code spans that call the contract's API (``rec`` and ``seed_everything``), in the
# order the page documents them. A call the page adds must be added here (and so is run).
CALLS = [
    "seed_everything(rec.seed)",
    "seed_everything(rec.determinism, threads=1)",
    "seed_everything(rec.seed, **rec.determinism)",  # deprecated, warns: still documented
    "rec.initial(model)",
    "rec.output(name, tensor)",
    "rec.batch(*tensors)",
    "rec.loss(loss)",
    "rec.final(model, **metrics)",
]


def _inline_calls(text: str) -> list[str]:
    found = []
    for span in re.findall(r"`([^`\n]+)`", re.sub(FENCE, "", text)):
        try:
            tree = ast.parse(span, mode="eval")
        except SyntaxError:
            continue
        func = tree.body.func if isinstance(tree.body, ast.Call) else None
        while isinstance(func, ast.Attribute):
            func = func.value
        if isinstance(func, ast.Name) and func.id in ("rec", "seed_everything"):
            found.append(span)
    return found


def test_the_contract_documents_these_calls() -> None:
    assert _inline_calls(CONTRACT) == CALLS


def test_every_call_of_the_probe_contract_runs() -> None:
    """The documented calls, as a probe of one step: ``rec`` is a real Recorder, ``model`` a
    torch module, and the recorder's ``stages()`` (what a fingerprint is made of) accepts
    what they recorded. In a subprocess: seed_everything sets torch's global flags."""
    pytest.importorskip("torch")
    snippets = [body for _, body, _ in blocks(CONTRACT, "python")]
    assert snippets, "the contract shows a python block"
    seeding = [c for c in CALLS if c.startswith("seed_everything")]
    ordered = [c for c in CALLS if c.startswith("rec.")]
    body = "\n".join(
        [
            *snippets,
            *seeding,
            ordered[0],  # initial
            ordered[1],  # output
            "for _ in range(rec.steps):",
            *(f"    {c}" for c in ordered[2:4]),  # batch, loss
            ordered[4],  # final
        ]
    )
    script = (
        textwrap.dedent(
            """
        import torch
        from orchestrator.determinism import seed_everything
        from orchestrator.determinism_settings import DeterminismSettings
        from orchestrator.probe.recorder import Recorder

        rec = Recorder(seed=3, steps=1, device="cpu", name="docs", determinism=DeterminismSettings(seed=3))
        assert (rec.seed, rec.steps, rec.device, rec.world_size) == (3, 1, "cpu", None)
        model = torch.nn.Linear(2, 1)
        name, tensor = "head", model(torch.ones(1, 2))
        tensors = (torch.arange(2), torch.ones(2, 2))
        loss = model(torch.ones(1, 2)).sum()
        metrics = {"accuracy": 0.93}
        """
        )
        + body
        + "\nstages = rec.stages()\nprint(len(stages['losses']), sorted(stages['outputs']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, script + done.stderr
    assert done.stdout == "1 ['head']\n"
