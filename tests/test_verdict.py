"""The verdict's one wording (``orchestrator.verdict.wording``) and the tolerances it applies.

Every user-facing verdict string envparity prints is made by ``wording``; this is where each
is pinned, exactly (``test_shared_facts.py`` holds that no other module words one).
``test_compare.py`` tests how pairs are judged; ``test_references.py`` and
``test_verify.py`` the screens these words appear on.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.tolerances import DEFAULTS, Tolerances
from orchestrator.verdict import wording
from orchestrator.verdict.compare import PairVerdict, Verdict


def pair(kind: str, **fields: object) -> PairVerdict:
    return PairVerdict("a.json", "b.json", kind, **fields)  # type: ignore[arg-type]


DIVERGED = pair(
    "diverged",
    stage="losses",
    step=3,
    values=("1.0", "1.5"),
    reason="loss at step 3 differs: 1.0 vs 1.5 (relative difference 0.5)",
    causes=("threads: torch.num_threads: 2 vs 1",),
)


@pytest.mark.parametrize(
    ("p", "words"),
    [
        (pair("bitwise"), "bitwise identical"),
        (pair("bitwise", warnings=("rng_final: ...",)), "bitwise identical, with warnings"),
        (pair("tolerance"), "within tolerance"),
        (pair("tolerance", warnings=("rng_final: ...",)), "within tolerance, with warnings"),
        (pair("diverged", stage="initial_params"), "DIVERGED at initial_params"),
        (pair("diverged", stage="data_order", step=0), "DIVERGED at data_order batch 0"),
        (pair("diverged", stage="data_order"), "DIVERGED at data_order"),
        (DIVERGED, "DIVERGED at losses step 3"),
        (pair("diverged", stage="metrics"), "DIVERGED at metrics"),
    ],
)
def test_the_one_phrase_for_a_pair(p: PairVerdict, words: str) -> None:
    assert wording.result(p) == words


def test_headlines_and_the_lines_built_on_the_phrase() -> None:
    assert wording.headline("diverged", 2) == "DIVERGED (2 fingerprints)"
    assert wording.headline("bitwise", 4, 1) == (
        "bitwise identical (4 fingerprints, 1 reference comparison)"
    )
    assert (
        wording.headline(None, 1, 0) == "nothing compared (1 fingerprint, 0 reference comparisons)"
    )
    assert [wording.word(k) for k in ("bitwise", "tolerance", "diverged", None)] == [
        "bitwise identical",
        "within tolerance",
        "DIVERGED",
        "nothing compared",
    ]
    assert wording.worst(["bitwise", "diverged", "tolerance"]) == "diverged"
    assert wording.worst([]) is None
    assert wording.pair_line("host", "venv", DIVERGED) == "host vs venv: DIVERGED at losses step 3"
    assert wording.runs_diverged("host", DIVERGED) == (
        "host: runs in the same environment DIVERGED at losses step 3"
    )
    assert wording.diverged_from("venv", "reference cpu-x/venv (recorded ...)", DIVERGED) == (
        "venv: DIVERGED at losses step 3 from reference cpu-x/venv (recorded ...)"
    )


def test_a_comparison_with_a_reference() -> None:
    assert wording.against_reference(pair("bitwise"), True) == (
        "bitwise identical (same hardware class)"
    )
    cross = pair("tolerance", tolerance={"rtol": 1e-4, "atol": 0.0})
    assert wording.against_reference(cross, False) == (
        "within tolerance (other hardware class, cross_device_rtol=0.0001)"
    )
    assert wording.against_reference(DIVERGED, True) == (
        "DIVERGED at losses step 3: loss at step 3 differs: 1.0 vs 1.5 (relative difference 0.5) "
        "(same hardware class)"
    )


def test_what_envparity_compare_prints() -> None:
    agreed = pair(
        "tolerance",
        reason="same device model; tolerance rtol=0.001, atol=0 from the caller",
        warnings=("rng_final: the numpy RNG state after training differs",),
        differences=("torch.num_threads: 2 vs 1",),
    )
    assert wording.verdict_lines(Verdict("tolerance", (agreed,))) == [
        "within tolerance (2 fingerprints)",
        "a.json vs b.json: within tolerance, with warnings",
        "  same device model; tolerance rtol=0.001, atol=0 from the caller",
        "  warning: rng_final: the numpy RNG state after training differs",
        "  although the runs differ in:",
        "    torch.num_threads: 2 vs 1",
    ]
    same = pair("bitwise", reason="every result identical")
    assert wording.verdict_lines(Verdict("diverged", (same, DIVERGED))) == [
        "DIVERGED (3 fingerprints)",
        "a.json vs b.json: bitwise identical",
        "  every result identical",
        "a.json vs b.json: DIVERGED at losses step 3",
        "  first difference: loss at step 3 differs: 1.0 vs 1.5 (relative difference 0.5)",
        "    a.json: 1.0",
        "    b.json: 1.5",
        "  likely causes, most likely first:",
        "    1. threads: torch.num_threads: 2 vs 1",
    ]


def test_tolerances_one_value_with_the_spec_defaults() -> None:
    assert Tolerances(rtol=0.0, atol=0.0, cross_device_rtol=1e-4) == DEFAULTS
    assert DEFAULTS.bitwise
    assert DEFAULTS.given(rtol=1e-3, atol=None) == Tolerances(rtol=1e-3)
    assert Tolerances(rtol=1e-6, cross_device_rtol=1e-3).across_classes() == Tolerances(
        rtol=1e-3, cross_device_rtol=1e-3
    )
    with pytest.raises(ValueError, match=r"^atol nan: not a tolerance in \[0, 1\)$"):
        Tolerances(atol=float("nan"))


def test_the_spec_holds_the_same_tolerances(tmp_path: Path) -> None:
    from orchestrator import spec

    (tmp_path / "environment.toml").write_text(
        '[environment]\nname = "t"\npython = "3.11"\n[verify]\nrtol = 1e-6\n'
    )
    loaded = spec.load(tmp_path / "environment.toml")
    assert loaded.verify.tolerances == Tolerances(rtol=1e-6)
    assert spec.Verify().tolerances == DEFAULTS


def test_verify_fails_naming_the_targets_that_diverged(tmp_path: Path) -> None:
    """Across targets, each diverged pair is a problem line in the one wording, named by its
    targets (not by the cached fingerprint files)."""
    import json

    from orchestrator import spec, verify
    from orchestrator.probe import fingerprint
    from orchestrator.verdict.compare import compare
    from tests.helpers import REPO

    (committed,) = sorted(REPO.glob("fingerprints/*/host.json"))[:1]
    data = json.loads(committed.read_text())
    runs = []
    for name, factor in (("host", 1.0), ("venv", 1.5), ("nix", 1.0)):
        data["stages"]["losses"][2] = float.hex(float.fromhex(data["stages"]["losses"][2]) * factor)
        path = tmp_path / f"{name}-cache-1.json"
        path.write_text(json.dumps(data))
        runs.append((name, path, fingerprint.load(path)))
    targets = [
        verify.TargetResult(name, "ok", runs=[verify.Run(1, path, fp, False)])
        for name, path, fp in runs
    ]
    result = verify.VerifyResult(
        spec.load(REPO / "environment.toml"),
        targets,
        compare([fp for _, _, fp in runs]),
        strict=False,
    )
    assert result.problems == [
        "host vs venv: DIVERGED at losses step 2",
        "host vs nix: DIVERGED at losses step 2",
    ]
