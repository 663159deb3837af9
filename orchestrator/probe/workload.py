"""The built-in probe: a small seeded training run touching every source of randomness.

* synthetic data made from the seed (no downloads): 12x12 images, token bags, labels;
* labels named by strings and numbered by iterating a ``set`` of those names, so the label
  numbering (and so every loss) depends on Python's str hash order;
* a shuffling DataLoader with two worker processes, drawing augmentation inside the workers
  from Python's ``random`` (flips), NumPy's global RNG (noise) and torch (token dropout);
* weight initialisation, dropout;
* ``index_add_`` and an embedding (whose CUDA backward accumulates with atomics) and a
  convolution backward;
* kernels whose results depend on the CPU's vector width and the GPU's math modes, both in
  the model (so the losses show them) and as named outputs of fixed inputs recorded with
  ``rec.output`` before training (so a verdict can name the kernel): softmax and layer norm
  over 37, 100 and 257 features (past AVX2's 8 and AVX-512's 16 float32 lanes, and not
  multiples of them), ``scaled_dot_product_attention`` over 37 positions, a 256x256 layer
  in the model and a 512x512 matmul (blocking; TF32 on GPUs), and an autocast stage
  (bfloat16 on the CPU; bfloat16 and float16 on CUDA) recorded as outputs only, so that
  training stays in float32 and CPU and CUDA runs stay comparable within a tolerance.

Measured here (torch 2.13.0+cpu, AVX-512 Xeon): ``ATEN_CPU_CAPABILITY=avx2`` changes the
softmax, log-softmax, cross-entropy-gradient and attention outputs at widths 32 and up
(not layer norm); before these stages the whole fingerprint was bitwise identical.

Every random draw happens on the CPU, whatever ``rec.device`` is: weights are initialised
before the model moves, and dropout masks come from a seeded CPU ``torch.Generator`` and are
then moved to the device. So a CPU run and a CUDA run draw the same numbers and differ only
by numerics (``nn.Dropout`` on CUDA would draw from the GPU's own RNG: different masks, and
a loss difference of about 1% at step 0 on an H100, not a numerics difference).

``rec.world_size`` (``envparity probe --world-size N``) switches to data-parallel training
in N processes (``train_data_parallel``). It uses ``orchestrator.determinism`` the way user
code should (``seed_everything(rec.determinism)``); user probes follow the same
``train(rec)`` contract (``orchestrator.probe.recorder``).
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from orchestrator.determinism import dataloader_kwargs, seed_everything
from orchestrator.determinism_settings import DeterminismSettings
from orchestrator.errors import UsageError
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
KERNEL_STREAM = 2**33  # the same for the kernel checks' inputs
WIDTHS = (37, 100, 257)  # softmax / layer-norm widths past the CPU's vector length
HEADS, HEAD_DIM = 2, 16  # attention over the 36 pooled image positions plus a class token
CHANNELS = 8
POSITIONS = (SIDE // 2) ** 2 + 1  # 37
SQUARE = 256  # a 256x256 layer in the model
MATMUL = 512  # the kernel check's square matmul


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
        if not self.training or self.p == 0:
            return x
        keep = torch.rand(x.shape, generator=self.generator) >= self.p
        return x * keep.to(device=x.device, dtype=x.dtype) / (1.0 - self.p)


def softmax_gate(x: torch.Tensor) -> torch.Tensor:
    """``x * (1 + softmax(x))``: a softmax over the whole last dimension, bounded by ``2x``."""
    return x * (1 + torch.softmax(x, -1))


class ProbeNet(nn.Module):
    """Convolution, embedding bag, attention, wide layer norms and softmaxes, a 256x256 layer."""

    def __init__(self, dropout_generator: torch.Generator, dropout: float = DROPOUT) -> None:
        super().__init__()
        wide, narrow = WIDTHS[2], WIDTHS[1]
        self.conv = nn.Conv2d(1, CHANNELS, 3, padding=1)
        self.embed = nn.Embedding(VOCAB, CHANNELS)
        self.cls = nn.Parameter(0.02 * torch.randn(1, 1, CHANNELS))
        self.qkv = nn.Linear(CHANNELS, 3 * HEADS * HEAD_DIM)
        self.wide = nn.Linear(CHANNELS * (POSITIONS - 1) + CHANNELS + HEADS * HEAD_DIM, wide)
        self.wide_norm = nn.LayerNorm(wide)
        self.hidden = nn.Linear(wide, SQUARE)
        self.square = nn.Linear(SQUARE, SQUARE)
        self.drop = CPUDropout(dropout, dropout_generator)
        self.narrow = nn.Linear(SQUARE, narrow)
        self.narrow_norm = nn.LayerNorm(narrow)
        self.out = nn.Linear(narrow, len(CLASS_NAMES))

    def forward(self, image: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        n = len(image)
        pooled = torch.max_pool2d(torch.relu(self.conv(image)), 2)  # n, 8, 6, 6
        # Attention over the 36 positions and a class token: softmax over 37 keys.
        seq = torch.cat([self.cls.expand(n, 1, CHANNELS), pooled.flatten(2).transpose(1, 2)], 1)
        q, k, v = self.qkv(seq).view(n, POSITIONS, 3, HEADS, HEAD_DIM).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v)[:, :, 0].reshape(n, HEADS * HEAD_DIM)
        # Sum each item's token embeddings with index_add_ (atomics on CUDA).
        rows = torch.arange(n, device=tokens.device).repeat_interleave(TOKENS)
        bag = torch.zeros(n, CHANNELS, device=image.device, dtype=image.dtype)
        bag = bag.index_add(0, rows, self.embed(tokens.flatten()))
        x = torch.cat([pooled.flatten(1), bag / TOKENS, attended], 1)
        x = softmax_gate(self.wide_norm(self.wide(x)))  # 257 wide
        x = torch.relu(self.hidden(x))
        x = self.drop(x + torch.relu(self.square(x)))  # 256x256
        x = softmax_gate(self.narrow_norm(self.narrow(x)))  # 100 wide
        return self.out(x)  # type: ignore[no-any-return]


def kernel_checks(rec: Recorder, device: torch.device) -> None:
    """Record each vector-width- or math-mode-sensitive kernel on fixed inputs (``rec.output``).

    Inputs come from a CPU generator seeded from the seed and are moved to ``device``. Names:
    ``softmax_W``, ``layer_norm_W`` (W in ``WIDTHS``), ``matmul_512``, ``sdpa``,
    ``autocast_bfloat16`` and, on CUDA, ``autocast_float16``.
    """
    g = torch.Generator().manual_seed(rec.seed + KERNEL_STREAM)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).to(device)

    with torch.no_grad():
        for width in WIDTHS:
            x = 3 * randn(64, width)
            rec.output(f"softmax_{width}", torch.softmax(x, -1))
            rec.output(f"layer_norm_{width}", F.layer_norm(x, (width,)))
        a, b = randn(MATMUL, MATMUL), randn(MATMUL, MATMUL)
        rec.output(f"matmul_{MATMUL}", a @ b)
        q, k, v = (randn(4, HEADS, POSITIONS, HEAD_DIM) for _ in range(3))
        rec.output("sdpa", F.scaled_dot_product_attention(q, k, v))
        dtypes = (torch.bfloat16, torch.float16) if device.type == "cuda" else (torch.bfloat16,)
        for dtype in dtypes:
            with torch.autocast(device.type, dtype=dtype):
                y = torch.softmax(F.linear(a[:64], b[:SQUARE]), -1) @ b[:SQUARE, : WIDTHS[0]]
            rec.output(f"autocast_{str(dtype).removeprefix('torch.')}", y)


class MomentumSGD:
    """SGD with momentum, the operations of ``torch.optim.SGD(params, lr, momentum)`` on the
    CPU (its single-tensor path, ``torch/optim/sgd.py:_single_tensor_sgd``, no dampening, no
    weight decay, no Nesterov): bitwise the same parameters (tested).

    The probe does not use ``torch.optim`` because its first ``step()`` imports
    ``torch._dynamo`` (a graph break in ``_use_grad_for_differentiable``), 1.7 s here: more
    than the probe's training, paid by every bisect experiment. Training code that uses
    ``torch.optim`` pays it as a user probe.
    """

    def __init__(self, params: list[nn.Parameter], lr: float, momentum: float) -> None:
        self.params, self.lr, self.momentum = params, lr, momentum
        self.buffers: list[torch.Tensor | None] = [None] * len(params)

    def zero_grad(self) -> None:
        for param in self.params:
            param.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for i, param in enumerate(self.params):
            grad = param.grad
            if grad is None:
                continue
            buf = self.buffers[i]
            if buf is None:
                buf = self.buffers[i] = grad.detach().clone()
            else:
                buf.mul_(self.momentum).add_(grad, alpha=1)  # 1 - dampening
            param.add_(buf, alpha=-self.lr)


def label_numbers(names: list[str]) -> torch.Tensor:
    """Number the classes in set iteration order: a common bug, kept on purpose.

    With PYTHONHASHSEED unset the numbering (so every target, every loss) changes per process.
    """
    index = {name: i for i, name in enumerate(set(names))}
    return torch.tensor([index[n] for n in names])


def train(rec: Recorder) -> None:
    """The built-in probe (``orchestrator.probe.workload:train``)."""
    if rec.world_size is not None:
        train_data_parallel(rec)
        return
    seed_everything(rec.determinism)
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
    kernel_checks(rec, device)
    optimizer = MomentumSGD(list(model.parameters()), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    step = 0
    while step < rec.steps:
        for index, image, token, label in loader:
            if step == rec.steps:
                break
            rec.batch(index, image, token, label)
            optimizer.zero_grad()
            logits = model(image.to(device), token.to(device))
            loss = loss_fn(logits, label.to(device))
            loss.backward()
            optimizer.step()
            rec.loss(loss)
            step += 1
    rec.final(model, **evaluate(model, images, tokens, labels, device))


def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    tokens: torch.Tensor,
    labels: torch.Tensor,
    device: torch.device,
) -> dict[str, float]:
    """``eval_loss`` and ``accuracy`` on the held-out samples (those after ``TRAIN_SIZE``)."""
    model.eval()
    with torch.no_grad():
        held_out = slice(TRAIN_SIZE, None)
        logits = model(images[held_out].to(device), tokens[held_out].to(device))
        eval_labels = labels[held_out].to(device)
        final_loss = nn.functional.cross_entropy(logits, eval_labels).item()
        accuracy = (logits.argmax(1) == eval_labels).double().mean().item()
    return {"eval_loss": final_loss, "accuracy": accuracy}


# --------------------------------------------------------------------------- data parallel


def train_data_parallel(rec: Recorder) -> None:
    """The probe as data-parallel training in ``rec.world_size`` processes.

    This process is rank 0 and records; ranks 1.. are spawned (``multiprocessing`` "spawn")
    and meet through a file rendezvous in a temporary folder. Backend: gloo on the CPU, NCCL
    on CUDA (one GPU per rank: ``UsageError`` with fewer GPUs). Each rank trains on its shard
    of every global batch of ``BATCH`` samples (``DistributedSampler``, seeded); DDP averages
    the gradients. No augmentation and no dropout here, and the recorded batch is the global
    one in sampler order, so world sizes 1 and 2 see the same samples in the same order and
    differ only in how the loss and gradients are reduced. The recorded loss is the mean of
    the ranks' losses. Raises ``UsageError`` when a rank fails.
    """
    world = rec.world_size or 1
    if BATCH % world:
        raise UsageError(f"--world-size {world}: the probe's batch of {BATCH} does not divide")
    if rec.device == "cuda" and torch.cuda.device_count() < world:
        raise UsageError(
            f"--world-size {world} on cuda: one GPU per process, but torch sees "
            f"{torch.cuda.device_count()}"
        )
    context = torch.multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="envparity-ddp-") as folder:
        rendezvous = str(Path(folder) / "rendezvous")
        others = [
            context.Process(
                target=_rank_main,
                args=(rank, world, rendezvous, rec.determinism, rec.steps, rec.device),
                daemon=True,
            )
            for rank in range(1, world)
        ]
        for process in others:
            process.start()
        try:
            _data_parallel(0, world, rendezvous, rec.determinism, rec.steps, rec.device, rec)
        finally:
            for process in others:
                process.join(timeout=60)
                if process.is_alive():
                    process.terminate()
        failed = [str(p.exitcode) for p in others if p.exitcode != 0]
        if failed:
            raise UsageError(f"data-parallel probe: a rank exited with {', '.join(failed)}")


def _rank_main(
    rank: int, world: int, rendezvous: str, settings: DeterminismSettings, steps: int, device: str
) -> None:
    _data_parallel(rank, world, rendezvous, settings, steps, device, None)


def _data_parallel(
    rank: int,
    world: int,
    rendezvous: str,
    settings: DeterminismSettings,
    steps: int,
    device_name: str,
    rec: Recorder | None,
) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    seed_everything(settings)
    cuda = device_name == "cuda"
    device = torch.device(f"cuda:{rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # the ranks share this machine
    dist.init_process_group(
        "nccl" if cuda else "gloo",
        init_method=f"file://{rendezvous}",
        rank=rank,
        world_size=world,
    )
    try:
        images, tokens, names = make_data(settings.seed, TRAIN_SIZE + EVAL_SIZE)
        labels = label_numbers(names).to(device)
        dist.broadcast(labels, 0)  # rank 0's numbering (str hash order) for every rank
        labels = labels.cpu()
        train_set = ProbeData(images[:TRAIN_SIZE], tokens[:TRAIN_SIZE], labels[:TRAIN_SIZE], False)
        sampler: DistributedSampler[tuple[torch.Tensor, ...]] = DistributedSampler(
            train_set, num_replicas=world, rank=rank, shuffle=True, seed=settings.seed
        )
        loader: DataLoader[tuple[torch.Tensor, ...]] = DataLoader(
            train_set, batch_size=BATCH // world, sampler=sampler
        )
        module = ProbeNet(torch.Generator(), dropout=0.0).to(device)  # no masks drawn
        if rec is not None:
            rec.initial(module)
            kernel_checks(rec, device)
        module.train()
        model = DistributedDataParallel(module, device_ids=[rank] if cuda else None)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        loss_fn = nn.CrossEntropyLoss()
        step, epoch = 0, 0
        while step < steps:
            sampler.set_epoch(epoch)
            for index, image, token, label in loader:
                if step == steps:
                    break
                batch = _global_batch(world, index, image, token, label, device=device)
                if rec is not None:
                    rec.batch(*batch)
                optimizer.zero_grad(set_to_none=True)
                logits: torch.Tensor = model(image.to(device), token.to(device))
                loss = loss_fn(logits, label.to(device))
                loss.backward()
                optimizer.step()
                mean = loss.detach().clone()
                dist.all_reduce(mean)
                if rec is not None:
                    rec.loss(mean / world)
                step += 1
            epoch += 1
        if rec is not None:
            rec.final(module, **evaluate(module, images, tokens, labels, device))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _global_batch(world: int, *tensors: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
    """Every rank's part of the batch, gathered and put back in sampler order.

    ``DistributedSampler`` gives rank r the positions r, r + world, ...; interleaving the
    gathered parts restores the order a single process sees.
    """
    import torch.distributed as dist

    out = []
    for tensor in tensors:
        local = tensor.to(device)
        parts = [torch.empty_like(local) for _ in range(world)]
        dist.all_gather(parts, local)
        out.append(torch.stack(parts, 1).flatten(0, 1).cpu())
    return out
