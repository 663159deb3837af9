"""Your own training code as the probe: ``envparity probe --probe examples.user_probe:train``.

A probe is a function taking an ``orchestrator.probe.recorder.Recorder`` and returning
nothing. Run it from the folder that holds ``examples/`` (the current directory is put on the
import path). ``train`` is the right way; ``train_unseeded_loader`` is a common mistake that
``envparity compare`` catches: its model is seeded, its DataLoader is not.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from orchestrator.determinism import dataloader_kwargs, seed_everything
from orchestrator.probe.recorder import Recorder


def _data(seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 10, generator=g)
    y = (x[:, :3].sum(1) > 0).long()
    return TensorDataset(torch.arange(256), x, y)


def _model(generator: torch.Generator | None = None) -> nn.Module:
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 2))
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-0.3, 0.3, generator=generator)
    return model


def _fit(rec: Recorder, model: nn.Module, loader: DataLoader[tuple[torch.Tensor, ...]]) -> None:
    model.to(rec.device)
    rec.initial(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = nn.CrossEntropyLoss()
    step = 0
    while step < rec.steps:
        for index, x, y in loader:
            if step == rec.steps:
                break
            x = x + 0.05 * torch.from_numpy(np.random.standard_normal(x.shape).astype("f4"))
            rec.batch(index, x, y)
            optimizer.zero_grad()
            loss = loss_fn(model(x.to(rec.device)), y.to(rec.device))
            loss.backward()
            optimizer.step()
            rec.loss(loss)
            step += 1
    model.eval()
    data = loader.dataset
    assert isinstance(data, TensorDataset)
    with torch.no_grad():
        _, x, y = data.tensors
        accuracy = (model(x.to(rec.device)).argmax(1).cpu() == y).double().mean().item()
    rec.final(model, accuracy=accuracy)


def train(rec: Recorder) -> None:
    """Seeded throughout, with the spec's [determinism] flags: repeatable in one environment."""
    seed_everything(rec.determinism)
    loader = DataLoader(
        _data(rec.seed),
        batch_size=32,
        shuffle=True,
        num_workers=2,
        **dataloader_kwargs(rec.seed),
    )
    _fit(rec, _model(), loader)


def train_unseeded_loader(rec: Recorder) -> None:
    """The mistake: Python, NumPy and the model are seeded, the DataLoader is not.

    Without ``generator=``, the loader's shuffle order and its workers' seeds come from
    torch's global RNG, which nothing here seeded: they change in every process.
    """
    random.seed(rec.seed)
    np.random.seed(rec.seed)
    model = _model(torch.Generator().manual_seed(rec.seed))
    loader = DataLoader(_data(rec.seed), batch_size=32, shuffle=True, num_workers=2)
    _fit(rec, model, loader)
