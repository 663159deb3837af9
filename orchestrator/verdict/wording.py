"""The one wording of a comparison's result: every verdict a user reads is made here.

``result(pair)`` is the phrase for one compared pair, wherever it appears (``envparity
compare``, verify's table and its notes, the HTML report, the reference lines, the CI
summary)::

    bitwise identical
    bitwise identical, with warnings
    within tolerance
    DIVERGED at initial_params
    DIVERGED at data_order batch 0
    DIVERGED at losses step 3

Every other function here builds on it: a headline over several fingerprints, the lines of
``envparity compare``, a comparison with a reference, and the problem lines verify and
``compare --references`` fail with. Nothing else in envparity words a verdict. Stdlib only.
"""

from __future__ import annotations

from collections.abc import Iterable

from orchestrator.probe.fingerprint import printable
from orchestrator.verdict.compare import KINDS, PairVerdict, Verdict

WORDS = {"bitwise": "bitwise identical", "tolerance": "within tolerance", "diverged": "DIVERGED"}
NOTHING = "nothing compared"  # a headline over no comparison at all
# What a diverged pair's step counts, by stage: training steps, or the batches they drew.
_STEP_WORDS = {"losses": "step", "data_order": "batch"}


def where(pair: PairVerdict) -> str:
    """Where a diverged pair first differs: ``losses step 3``, ``data_order batch 0``,
    ``initial_params`` ("" for a pair that did not diverge)."""
    if pair.stage is None:
        return ""
    if pair.step is None:
        return pair.stage
    return f"{pair.stage} {_STEP_WORDS.get(pair.stage, 'step')} {pair.step}"


def result(pair: PairVerdict) -> str:
    """The one phrase for a pair's result (module doc). ``, with warnings``: results that
    agree although something that could change them differs (``pair.warnings``)."""
    text = WORDS[pair.kind]
    if pair.kind == "diverged":
        return f"{text} at {where(pair)}"
    return text + (", with warnings" if pair.warnings else "")


def worst(kinds: Iterable[str]) -> str | None:
    """The worst of ``kinds`` (``diverged`` over ``tolerance`` over ``bitwise``); None when
    there are none."""
    return max(kinds, key=KINDS.index, default=None)


def word(kind: str | None) -> str:
    """The result of several comparisons, by the worst of them (``worst``): ``bitwise
    identical``, ``within tolerance``, ``DIVERGED``; ``nothing compared`` for None."""
    return WORDS[kind] if kind else NOTHING


def headline(kind: str | None, fingerprints: int, comparisons: int | None = None) -> str:
    """``DIVERGED (2 fingerprints)``; with ``comparisons`` (references compared):
    ``bitwise identical (3 fingerprints, 2 reference comparisons)``; ``kind`` None: nothing
    was compared."""
    counted = _count(fingerprints, "fingerprint")
    if comparisons is not None:
        counted += f", {_count(comparisons, 'reference comparison')}"
    return f"{word(kind)} ({counted})"


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def verdict_lines(verdict: Verdict) -> list[str]:
    """What ``envparity compare`` prints: the headline, then one block per compared pair,
    names and values in one order (the first fingerprint's first)."""
    lines = [headline(verdict.kind, len(verdict.pairs) + 1)]
    for pair in verdict.pairs:
        ref, other = printable(pair.reference), printable(pair.other)
        lines.append(f"{ref} vs {other}: {result(pair)}")
        if pair.kind == "diverged":
            lines.append(f"  first difference: {printable(pair.reason)}")
            if pair.values:
                lines.append(f"    {ref}: {pair.values[0]}")
                lines.append(f"    {other}: {pair.values[1]}")
            lines.append("  likely causes, most likely first:")
            lines += [f"    {i}. {cause}" for i, cause in enumerate(pair.causes, 1)]
            if pair.outputs:
                lines.append("  kernel outputs that differ:")
                lines += [f"    {o}" for o in pair.outputs]
        else:
            lines.append(f"  {pair.reason}")
            lines += [f"  warning: {w}" for w in pair.warnings]
            lines += [f"  kernel output differs: {o}" for o in pair.outputs]
            if pair.differences:
                lines.append("  although the runs differ in:")
                lines += [f"    {d}" for d in pair.differences]
    return lines


def against_reference(pair: PairVerdict, same_class: bool, *, reason: bool = True) -> str:
    """A run against a reference (or a run of another machine): ``bitwise identical (same
    hardware class)``, ``DIVERGED at losses step 3: loss at step 3 differs: ... (other
    hardware class, cross_device_rtol=0.0001)``; without ``reason`` (a table that shows it in
    a column of its own): ``DIVERGED at losses step 3 (same hardware class)``."""
    text = result(pair)
    if pair.kind == "diverged" and reason:
        text += f": {pair.reason}"
    how = (
        "same hardware class"
        if same_class
        else f"other hardware class, cross_device_rtol={pair.tolerance.get('rtol', 0):g}"
    )
    return f"{text} ({how})"


def diverged_from(name: str, against: str, pair: PairVerdict) -> str:
    """The problem line of a diverged comparison: ``venv: DIVERGED at losses step 2 from
    reference cpu-amd-epyc-avx512/venv (recorded ...)``."""
    return f"{name}: {result(pair)} from {against}"


def runs_diverged(name: str, pair: PairVerdict) -> str:
    """The problem line of a target whose own runs diverged: ``host: runs in the same
    environment DIVERGED at losses step 0``."""
    return f"{name}: runs in the same environment {result(pair)}"


def pair_line(a: str, b: str, pair: PairVerdict) -> str:
    """Two named runs (targets) and their result: ``host vs venv: bitwise identical``."""
    return f"{a} vs {b}: {result(pair)}"


def cause_key(cause: str) -> str:
    """The difference a cause names (``launch.MKL_CBWR`` of ``cpu_kernels: launch.MKL_CBWR:
    (absent) vs COMPATIBLE``); "" for a cause that names none (``unseeded_rng: ...``)."""
    parts = cause.split(": ", 2)
    return parts[1] if len(parts) == 3 and " " not in parts[1] else ""


def cause_line(cause: str, proven: bool) -> str:
    """A cause as verify's table and report show it: ``proven cause: ...`` when an experiment
    (``envparity bisect``, ``verify --bisect``) turned A's results into B's with it, else
    ``likely cause: ...`` (ranked by how well it explains the stage, not tested)."""
    return f"{'proven' if proven else 'likely'} cause: {cause}"
