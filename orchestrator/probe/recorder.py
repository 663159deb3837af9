"""The probe contract: a training function gets a ``Recorder`` and reports each stage to it.

A probe is any function ``train(rec: Recorder) -> None``. It seeds (or deliberately does
not), builds its model and data, and calls, in this order:

* ``rec.initial(model)`` once, after weight initialisation;
* for each of ``rec.steps`` steps: ``rec.batch(*tensors)`` with what entered the step, then
  ``rec.loss(loss)`` with the step's loss;
* ``rec.final(model, **metrics)`` once, with float metrics such as ``accuracy=0.93``.

``rec.seed``, ``rec.steps`` and ``rec.device`` (``"cpu"`` or ``"cuda"``) say what to run;
``rec.determinism`` holds the spec's ``[determinism]`` flags, to be applied with
``seed_everything(rec.seed, **rec.determinism)``. The recorder turns each call into digests
and exact values for the fingerprint.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any, TypedDict

from orchestrator.errors import UsageError


class DeterminismSettings(TypedDict):
    """The spec's ``[determinism]`` flags, as ``seed_everything`` takes them."""

    deterministic_algorithms: bool
    tf32: bool
    cudnn_benchmark: bool
    threads: int | None


def default_determinism() -> DeterminismSettings:
    """The spec's defaults: deterministic algorithms on, TF32 off, cuDNN benchmark off."""
    return {
        "deterministic_algorithms": True,
        "tf32": False,
        "cudnn_benchmark": False,
        "threads": None,
    }


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
        value = value.detach().cpu().contiguous().numpy()
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
    ) -> None:
        self.seed = seed
        self.steps = steps
        self.device = device
        self.determinism = default_determinism() if determinism is None else determinism
        self._name = name
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

    def batch(self, *tensors: Any) -> None:
        """Record what entered the next step (indices, inputs, labels, ...)."""
        self._batches.append(_sha([tensor_bytes(t) for t in tensors]))

    def loss(self, value: Any) -> None:
        """Record the step's loss exactly (as ``float.hex``)."""
        if hasattr(value, "detach"):
            value = value.detach()
        self._losses.append(float(value).hex())

    def final(self, model: Any, **metrics: float) -> None:
        """Record the trained parameters and final metrics (exactly, as ``float.hex``)."""
        self._final = params_digest(model)
        self._metrics = {name: float(v).hex() for name, v in sorted(metrics.items())}

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
            "data_order": self._batches,
            "losses": self._losses,
            "final_params": self._final,
            "metrics": self._metrics,
            "rng_final": rng_digests(),
        }
