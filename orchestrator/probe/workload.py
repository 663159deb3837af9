"""The built-in probe: a small seeded training run touching every source of randomness.

* synthetic data made from the seed (no downloads): 12x12 images, token bags, labels;
* labels named by strings and numbered by iterating a ``set`` of those names, so the label
  numbering (and so every loss) depends on Python's str hash order;
* a shuffling DataLoader with two worker processes, drawing augmentation inside the workers
  from Python's ``random`` (flips), NumPy's global RNG (noise) and torch (token dropout);
* weight initialisation, dropout;
* ``index_add_`` and an embedding (whose CUDA backward accumulates with atomics) and a
  convolution backward.

Every random draw happens on the CPU, whatever ``rec.device`` is: weights are initialised
before the model moves, and dropout masks come from a seeded CPU ``torch.Generator`` and are
then moved to the device. So a CPU run and a CUDA run draw the same numbers and differ only
by numerics (``nn.Dropout`` on CUDA would draw from the GPU's own RNG: different masks, and
a loss difference of about 1% at step 0 on an H100, not a numerics difference).

It uses ``orchestrator.determinism`` the way user code should
(``seed_everything(rec.seed, **rec.determinism)``); user probes follow the same ``train(rec)``
contract (``orchestrator.probe.recorder``).
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from orchestrator.determinism import dataloader_kwargs, seed_everything
from orchestrator.probe.recorder import Recorder

CLASS_NAMES = ("ant", "bee", "cat", "dog")
VOCAB = 64
TOKENS = 6
SIDE = 12
TRAIN_SIZE = 512
EVAL_SIZE = 256
BATCH = 16
WORKERS = 2
DROPOUT = 0.2
# Added to the seed for the dropout generator: valid seeds are below 2**32, so its stream
# never coincides with the DataLoader's generator, seeded with the seed itself.
DROPOUT_STREAM = 2**32


def make_data(seed: int, size: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Images, token bags and label names, all from ``seed``, labelled by a random teacher."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(size, 1, SIDE, SIDE, generator=g)
    tokens = torch.randint(0, VOCAB, (size, TOKENS), generator=g)
    teacher = torch.randn(SIDE * SIDE + VOCAB, len(CLASS_NAMES), generator=g)
    bags = torch.zeros(size, VOCAB).scatter_add_(1, tokens, torch.ones(size, TOKENS))
    scores = torch.cat([images.flatten(1), bags], 1) @ teacher
    names = [CLASS_NAMES[i] for i in scores.argmax(1).tolist()]
    return images, tokens, names


class ProbeData(Dataset[tuple[torch.Tensor, ...]]):
    """Training items with augmentation drawn (in the worker) from all three RNGs."""

    def __init__(
        self, images: torch.Tensor, tokens: torch.Tensor, labels: torch.Tensor, augment: bool
    ) -> None:
        self.images, self.tokens, self.labels, self.augment = images, tokens, labels, augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        image, tokens = self.images[i], self.tokens[i]
        if self.augment:
            if random.random() < 0.5:
                image = image.flip(-1)
            noise = np.random.normal(0.0, 0.1, size=tuple(image.shape)).astype(np.float32)
            image = image + torch.from_numpy(noise)
            keep = torch.rand(TOKENS) > 0.2
            tokens = torch.where(keep, tokens, torch.zeros_like(tokens))
        return torch.tensor(i), image, tokens, self.labels[i]


class CPUDropout(nn.Module):
    """Dropout whose masks come from a CPU generator, the same masks on every device."""

    def __init__(self, p: float, generator: torch.Generator) -> None:
        super().__init__()
        self.p, self.generator = p, generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        keep = torch.rand(x.shape, generator=self.generator) >= self.p
        return x * keep.to(device=x.device, dtype=x.dtype) / (1.0 - self.p)


class ProbeNet(nn.Module):
    def __init__(self, dropout_generator: torch.Generator) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.embed = nn.Embedding(VOCAB, 8)
        self.hidden = nn.Linear(8 * (SIDE // 2) ** 2 + 8, 32)
        self.drop = CPUDropout(DROPOUT, dropout_generator)
        self.out = nn.Linear(32, len(CLASS_NAMES))

    def forward(self, image: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv(image)), 2).flatten(1)
        # Sum each item's token embeddings with index_add_ (atomics on CUDA).
        rows = torch.arange(len(tokens), device=tokens.device).repeat_interleave(TOKENS)
        bag = torch.zeros(len(tokens), 8, device=x.device, dtype=x.dtype)
        bag = bag.index_add(0, rows, self.embed(tokens.flatten()))
        h = self.drop(torch.relu(self.hidden(torch.cat([x, bag / TOKENS], 1))))
        return self.out(h)  # type: ignore[no-any-return]


def label_numbers(names: list[str]) -> torch.Tensor:
    """Number the classes in set iteration order: a common bug, kept on purpose.

    With PYTHONHASHSEED unset the numbering (so every target, every loss) changes per process.
    """
    index = {name: i for i, name in enumerate(set(names))}
    return torch.tensor([index[n] for n in names])


def train(rec: Recorder) -> None:
    """The built-in probe (``orchestrator.probe.workload:train``)."""
    seed_everything(rec.seed, **rec.determinism)
    device = torch.device(rec.device)
    images, tokens, names = make_data(rec.seed, TRAIN_SIZE + EVAL_SIZE)
    labels = label_numbers(names)
    train_set = ProbeData(images[:TRAIN_SIZE], tokens[:TRAIN_SIZE], labels[:TRAIN_SIZE], True)
    loader: DataLoader[tuple[torch.Tensor, ...]] = DataLoader(
        train_set,
        batch_size=BATCH,
        shuffle=True,
        num_workers=WORKERS,
        persistent_workers=True,
        **dataloader_kwargs(rec.seed),
    )
    # initialised on the CPU from torch's seeded RNG, then moved
    model = ProbeNet(torch.Generator().manual_seed(rec.seed + DROPOUT_STREAM)).to(device)
    rec.initial(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    step = 0
    while step < rec.steps:
        for index, image, token, label in loader:
            if step == rec.steps:
                break
            rec.batch(index, image, token, label)
            optimizer.zero_grad(set_to_none=True)
            logits = model(image.to(device), token.to(device))
            loss = loss_fn(logits, label.to(device))
            loss.backward()
            optimizer.step()
            rec.loss(loss)
            step += 1
    model.eval()
    with torch.no_grad():
        held_out = slice(TRAIN_SIZE, None)
        logits = model(images[held_out].to(device), tokens[held_out].to(device))
        eval_labels = labels[held_out].to(device)
        final_loss = loss_fn(logits, eval_labels).item()
        accuracy = (logits.argmax(1) == eval_labels).double().mean().item()
    rec.final(model, eval_loss=final_loss, accuracy=accuracy)
