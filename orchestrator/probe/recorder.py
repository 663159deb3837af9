"""The probe contract: a training function gets a ``Recorder`` and reports each stage to it.

A probe is any function ``train(rec: Recorder) -> None``. It seeds (or deliberately does
not), builds its model and data, and calls, in this order:

* ``rec.initial(model)`` once, after weight initialisation;
* optionally ``rec.output(name, tensor)``, at most once per name, for outputs of fixed inputs
  outside the training loop (the built-in probe records one per kernel it checks, so a
  verdict can say which kernel differs);
* for each of ``rec.steps`` steps: ``rec.batch(*tensors)`` with what entered the step, then
  ``rec.loss(loss)`` with the step's loss;
* ``rec.final(model, **metrics)`` once, with float metrics such as ``accuracy=0.93``.

``rec.seed``, ``rec.steps`` and ``rec.device`` (``"cpu"`` or ``"cuda"``) say what to run;
``rec.world_size`` is ``None`` (one process) or the number of data-parallel processes asked
for (``envparity probe --world-size N``); ``rec.determinism`` holds the spec's
``[determinism]`` settings (``orchestrator.determinism_settings.DeterminismSettings``, its
``seed`` equal to ``rec.seed``), to be applied with ``seed_everything(rec.determinism)``.
The recorder turns each call into digests and exact values for the fingerprint, and samples
torch's determinism flags at ``initial``, every ``loss`` and ``final`` (``flag_history``), so
a flag switched on and back off during training is seen.
"""

from __future__ import annotations

import hashlib
import random
import re
from typing import Any

from orchestrator.determinism_settings import DeterminismSettings
from orchestrator.errors import UsageError

# rec.output names: they become fingerprint keys and appear in verdicts.
_OUTPUT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def _sha(chunks: list[bytes]) -> str:
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(len(chunk).to_bytes(8, "little"))
        h.update(chunk)
    return "sha256:" + h.hexdigest()


def tensor_bytes(value: Any) -> bytes:
    """dtype, shape and raw bytes of a tensor or array (moved to the CPU first)."""
    import numpy as np

    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().contiguous()
        if str(value.dtype) == "torch.bfloat16":  # NumPy has no bfloat16: its bits as int16
            import torch

            return b"bfloat16" + tensor_bytes(value.view(torch.int16))
        value = value.numpy()
    array = np.ascontiguousarray(value)
    return f"{array.dtype.str}{array.shape}".encode() + array.tobytes()


def params_digest(model: Any) -> str:
    """Digest of every parameter and buffer, by name, in registration order."""
    chunks: list[bytes] = []
    for name, tensor in model.state_dict().items():
        chunks.append(name.encode())
        chunks.append(tensor_bytes(tensor))
    return _sha(chunks)


def rng_digests() -> dict[str, str]:
    """Digests of every RNG state this process has: Python, NumPy's global, torch, CUDA."""
    import numpy as np
    import torch

    digests = {
        "python": _sha([repr(random.getstate()).encode()]),
        "numpy": _sha([repr(np.random.get_state(legacy=False)).encode()]),
        "torch": _sha([tensor_bytes(torch.get_rng_state())]),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        digests["cuda"] = _sha([tensor_bytes(s) for s in torch.cuda.get_rng_state_all()])
    return digests


class Recorder:
    """Collects what a probe reports; ``stages()`` returns it for the fingerprint."""

    def __init__(
        self,
        *,
        seed: int,
        steps: int,
        device: str,
        name: str,
        determinism: DeterminismSettings | None = None,
        world_size: int | None = None,
    ) -> None:
        self.seed = seed
        self.steps = steps
        self.device = device
        self.world_size = world_size
        self.determinism = DeterminismSettings(seed=seed) if determinism is None else determinism
        if self.determinism.seed != seed:
            raise ValueError(f"seed {seed} but determinism.seed {self.determinism.seed}")
        self._name = name
        self._outputs: dict[str, dict[str, str]] = {}
        self._flags: list[tuple[str, dict[str, object]]] = []
        self._initial: str | None = None
        self._rng_initial: dict[str, str] = {}
        self._batches: list[str] = []
        self._losses: list[str] = []
        self._final: str | None = None
        self._metrics: dict[str, str] = {}

    def initial(self, model: Any) -> None:
        """Record the parameters after initialisation, and the RNG states at that point."""
        self._initial = params_digest(model)
        self._rng_initial = rng_digests()
        self._sample_flags("initial")

    def output(self, name: str, value: Any) -> None:
        """Record a named output of fixed inputs: digest, dtype and float64 L2 norm.

        ``name``: lower-case letters, digits and ``_``, each name once. The norm (as
        ``float.hex``) lets a comparison measure how far two differing outputs are apart.
        Raises ``UsageError`` for a bad or repeated name.
        """
        import torch

        if not isinstance(name, str) or not _OUTPUT_NAME.match(name):
            raise UsageError(
                f"probe {self._name}: rec.output name {name!r} is not lower-case letters, "
                "digits and '_' (at most 64, starting with a letter)"
            )
        if name in self._outputs:
            raise UsageError(f"probe {self._name}: rec.output({name!r}) called twice")
        tensor = torch.as_tensor(value).detach().cpu()
        self._outputs[name] = {
            "digest": _sha([tensor_bytes(tensor)]),
            "dtype": str(tensor.dtype).removeprefix("torch."),
            "norm": float(tensor.double().norm()).hex(),
        }

    def batch(self, *tensors: Any) -> None:
        """Record what entered the next step (indices, inputs, labels, ...)."""
        self._batches.append(_sha([tensor_bytes(t) for t in tensors]))

    def loss(self, value: Any) -> None:
        """Record the step's loss exactly (as ``float.hex``)."""
        if hasattr(value, "detach"):
            value = value.detach()
        self._losses.append(float(value).hex())
        self._sample_flags(f"step {len(self._losses) - 1}")

    def final(self, model: Any, **metrics: float) -> None:
        """Record the trained parameters and final metrics (exactly, as ``float.hex``)."""
        self._final = params_digest(model)
        self._metrics = {name: float(v).hex() for name, v in sorted(metrics.items())}
        self._sample_flags("final")

    def _sample_flags(self, when: str) -> None:
        from orchestrator.determinism import torch_flags

        flags = torch_flags()
        if not self._flags or self._flags[-1][1] != flags:
            self._flags.append((when, flags))

    def flag_history(self) -> list[tuple[str, dict[str, object]]]:
        """torch's determinism flags each time they changed: ``(when, flags)``, ``when`` being
        ``"initial"``, ``"step K"`` or ``"final"`` (see ``determinism.flag_findings``)."""
        return list(self._flags)

    def stages(self) -> dict[str, Any]:
        missing = [
            call
            for call, done in (
                ("rec.initial(model)", self._initial),
                ("rec.final(model)", self._final),
            )
            if done is None
        ]
        if not self._losses:
            missing.append("rec.loss(loss)")
        if missing:
            raise UsageError(f"probe {self._name} never called {', '.join(missing)}")
        for what, recorded, call in (
            ("losses", self._losses, "rec.loss"),
            ("batches", self._batches, "rec.batch"),
        ):
            if recorded and len(recorded) != self.steps:
                raise UsageError(
                    f"probe {self._name} recorded {len(recorded)} {what} for {self.steps} "
                    f"steps; call {call} once per step"
                )
        return {
            "initial_params": self._initial,
            "rng_initial": self._rng_initial,
            "outputs": self._outputs,
            "data_order": self._batches,
            "losses": self._losses,
            "final_params": self._final,
            "metrics": self._metrics,
            "rng_final": rng_digests(),
        }
