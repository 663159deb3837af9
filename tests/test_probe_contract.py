"""Every documented probe contract (docs/probe.md, "The probe contract"), one test each.

A user probe is a function ``train(rec)`` in the user's project; these tests write such
projects into a temporary folder and run them in this process with ``run_probe`` (or the CLI's
``main``, for the exit codes), a few steps each. Contracts tested elsewhere, with real
subprocess runs, are named here so that the list stays whole:

* the current folder first on the import path, for ``python -m orchestrator`` and the
  ``envparity`` script: ``test_probe.py::test_the_user_probe_is_imported_from_the_current_folder_and_its_inputs_recorded``;
* recorded batch and loss counts other than ``rec.steps``:
  ``test_probe.py::test_recorder_refuses_a_loss_or_batch_count_other_than_steps``;
* a bad or repeated ``rec.output`` name: ``test_probe.py::test_recorder_refuses_a_bad_or_repeated_output_name``;
* a flag toggled during training is an audit line:
  ``test_probe.py::test_recorder_samples_the_flags_so_a_toggle_during_training_is_reported``;
* ``examples/user_probe.py:train`` repeats and ``train_unseeded_loader`` diverges at the data
  order: ``test_probe.py::test_user_probe_seeded_with_dataloader_kwargs_repeats`` and the test
  after it;
* ``--probe os:system`` refused: ``test_compare.py`` (the CLI's refusals);
* every call the section shows runs, in order, against a real Recorder:
  ``test_docs.py::test_every_call_of_the_probe_contract_runs``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.determinism_settings import DeterminismSettings
from orchestrator.probe.fingerprint import Fingerprint
from orchestrator.probe.run import run_probe

torch = pytest.importorskip("torch")

HEAD = """\
import torch

from orchestrator.determinism import dataloader_kwargs, seed_everything

SEEN = {}


def model():
    return torch.nn.Linear(4, 2)
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A project folder as the current folder; its probe modules are forgotten afterwards."""
    import sys

    monkeypatch.chdir(tmp_path)
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith("contract_"):
            del sys.modules[name]
    torch.use_deterministic_algorithms(True)  # what seed_everything's default leaves


def probe(folder: Path, name: str, body: str) -> str:
    (folder / f"{name}.py").write_text(HEAD + body)
    return f"{name}:train"


def run(reference: str, **kwargs: object) -> tuple[Fingerprint, dict[str, object]]:
    import sys

    fp = run_probe(probe=reference, steps=2, device="cpu", **kwargs)  # type: ignore[arg-type]
    return fp, sys.modules[reference.split(":")[0]].SEEN  # type: ignore[attr-defined]


TRAIN = """
def train(rec):
    SEEN.update(seed=rec.seed, steps=rec.steps, device=rec.device,
                world_size=rec.world_size, determinism=rec.determinism)
    {seeding}
    SEEN["threads"] = torch.get_num_threads()
    SEEN["deterministic"] = torch.are_deterministic_algorithms_enabled()
    net = model()
    rec.initial(net)
    rec.output("twice_4", net(torch.ones(1, 4)) * 2)
    for _ in range(rec.steps):
        x = torch.ones(3, 4)
        rec.batch(x)
        loss = net(x).pow(2).mean()
        loss.backward()
        rec.loss(loss)
    rec.final(net, accuracy=0.5)
"""


def test_a_probe_is_a_function_of_the_recorder_and_its_attributes_say_what_to_run(
    project: Path,
) -> None:
    """``rec.seed``, ``rec.steps``, ``rec.device``, ``rec.world_size`` (None) and
    ``rec.determinism`` (DeterminismSettings, its seed ``rec.seed``); the calls in order are
    recorded: initial, output, batch and loss per step, final with float metrics."""
    settings = DeterminismSettings(seed=11, threads=1)
    fp, seen = run(
        probe(project, "contract_attrs", TRAIN.format(seeding="pass")), determinism=settings
    )
    assert seen["seed"] == 11 and seen["steps"] == 2 and seen["device"] == "cpu"
    assert seen["world_size"] is None
    assert seen["determinism"] == settings
    assert isinstance(seen["determinism"], DeterminismSettings)
    assert (fp.seed, fp.steps, fp.device, fp.probe) == (11, 2, "cpu", "contract_attrs:train")
    assert list(fp.stages.outputs) == ["twice_4"]
    assert fp.stages.outputs["twice_4"].dtype == "float32"
    assert len(fp.stages.data_order) == len(fp.stages.losses) == 2
    assert fp.stages.metrics == {"accuracy": (0.5).hex()}
    assert fp.determinism == settings.flags()


@pytest.mark.parametrize(
    ("seeding", "threads", "deterministic"),
    [
        ("seed_everything(rec.determinism)", 1, False),  # the spec's settings applied
        ("seed_everything(rec.determinism, threads=2)", 2, False),  # keywords override
        ("seed_everything(rec.seed)", None, True),  # the defaults, not the spec's
    ],
    ids=["settings", "keyword-overrides", "seed-only"],
)
def test_seed_everything_applies_the_settings_as_documented(
    project: Path, seeding: str, threads: int | None, deterministic: bool
) -> None:
    before = torch.get_num_threads()
    settings = DeterminismSettings(seed=5, threads=1, deterministic_algorithms=False)
    try:
        _, seen = run(
            probe(project, "contract_seeding", TRAIN.format(seeding=seeding)),
            determinism=settings,
        )
    finally:
        torch.set_num_threads(before)
    assert seen["threads"] == (before if threads is None else threads)
    assert seen["deterministic"] is deterministic


def test_the_formerly_documented_keyword_form_still_works_with_a_deprecation_warning(
    project: Path,
) -> None:
    """``seed_everything(rec.seed, **rec.determinism)``, documented while ``rec.determinism``
    was a dict, gives what ``seed_everything(rec.determinism)`` gives, and warns."""
    before = torch.get_num_threads()
    settings = DeterminismSettings(seed=5, threads=1, deterministic_algorithms=False)
    reference = probe(
        project,
        "contract_old",
        TRAIN.format(seeding="seed_everything(rec.seed, **rec.determinism)"),
    )
    try:
        with pytest.warns(DeprecationWarning) as caught:
            old, seen = run(reference, determinism=settings)
        new, _ = run(
            probe(
                project, "contract_new", TRAIN.format(seeding="seed_everything(rec.determinism)")
            ),
            determinism=settings,
        )
    finally:
        torch.set_num_threads(before)
    assert (seen["threads"], seen["deterministic"]) == (1, False)
    assert old.stages == new.stages
    assert str(caught[0].message) == (
        "rec.determinism as a mapping (seed_everything(rec.seed, **rec.determinism), "
        "rec.determinism['threads']) is deprecated: pass the value itself, "
        "seed_everything(rec.determinism), and read its attributes (rec.determinism.threads)"
    )
    assert caught[0].filename == str(project / "contract_old.py")  # points at the user's line


def test_the_old_mapping_reads_of_rec_determinism_keep_working() -> None:
    settings = DeterminismSettings(seed=3, threads=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert dict(settings) == {
            "deterministic_algorithms": True,
            "tf32": False,
            "cudnn_benchmark": False,
            "threads": 2,
        }
        assert settings["threads"] == 2 and settings.get("seed") is None
    assert settings == DeterminismSettings(seed=3, threads=2)  # still a value, hashable
    assert len({settings, DeterminismSettings(seed=3, threads=2)}) == 1


@pytest.mark.parametrize(
    ("body", "missing"),
    [
        ("def train(rec):\n    pass\n", "rec.initial(model), rec.final(model), rec.loss(loss)"),
        (
            "def train(rec):\n    rec.initial(model())\n    rec.final(model())\n",
            "rec.loss(loss)",
        ),
    ],
    ids=["nothing", "no-loss"],
)
def test_a_probe_that_skips_a_call_exits_2_naming_the_probe_and_the_call(
    project: Path, capsys: pytest.CaptureFixture[str], body: str, missing: str
) -> None:
    reference = probe(project, "contract_skip", body)
    code = main(["probe", "--out", str(project / "fp.json"), "--steps", "2", "--probe", reference])
    assert code == 2
    assert capsys.readouterr().err == f"envparity: probe {reference} never called {missing}\n"
    assert not (project / "fp.json").exists()


def test_a_function_of_two_arguments_is_refused_before_it_runs(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reference = probe(project, "contract_two", "def train(rec, other):\n    SEEN['ran'] = True\n")
    code = main(["probe", "--out", str(project / "fp.json"), "--probe", reference])
    assert code == 2
    assert capsys.readouterr().err == (
        f"envparity: --probe {reference}: contract_two.train(rec, other) is not a probe: "
        "a probe takes one argument, the Recorder\n"
    )


def test_dataloader_kwargs_give_a_seeded_generator_and_a_worker_init_fn() -> None:
    from orchestrator.determinism import dataloader_kwargs, seed_worker

    kwargs = dataloader_kwargs(9)
    assert sorted(kwargs) == ["generator", "worker_init_fn"]
    assert kwargs["generator"].initial_seed() == 9
    assert kwargs["worker_init_fn"] is seed_worker
