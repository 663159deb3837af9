"""Every GPU check of the probe in one run, for a lent GPU machine (about 3 to 5 minutes).

Run from the repository root::

    PYTHONPATH=. python3 bench/gpu_checks.py            # on the GPU machine
    PYTHONPATH=. python3 bench/gpu_checks.py --quick    # CPU-only dry run of every code path

It prints a table and writes every result to ``$OUT/gpu.json`` (``./gpu.json`` when ``OUT``
is unset), with the fingerprints it compared under ``fingerprints/`` beside it:

a. the built-in probe on CUDA twice, deterministic algorithms on, each in a fresh process
   started with the launch environment: the verdict (bitwise expected);
b. deterministic algorithms off: the probe twice on CUDA: the verdict; and ``index_add_`` and
   an embedding backward with many duplicate indices (float32), repeated in one process,
   counting distinct result digests with deterministic mode on and off;
c. the probe on the CPU against (a)'s CUDA run: the verdict and the relative loss difference
   at every step;
   and, per kernel output of the probe (``rec.output``: softmax/layer norm over 37/100/257,
   matmul_512, sdpa, autocast), whether CPU and CUDA agree and how far their norms are apart;
d. the cost of deterministic mode: training steps per second of the probe's model on CUDA
   (batches prepared beforehand, timed after a warm-up), on against off;
e. the GPU model, SM count, driver, torch, CUDA and cuDNN versions, ``get_arch_list()`` and
   whether the build has kernels for this GPU (``compat.runs_on``);
f. TF32 allowed (``--tf32``) against (a)'s run: the verdict and which kernel outputs changed;
g. ``--deterministic-algorithms warn`` against (a)'s run: the verdict and the audit;
h. data-parallel training (``--world-size 2``) twice, and world size 1 against 2: NCCL on
   CUDA when two GPUs are visible, else gloo on the CPU (recorded as ``device``);
i. the host checks of ``envparity doctor`` against the real tools: ``nvidia-smi -q`` as
   ``gpus.driver()`` reads it (driver, its CUDA, each GPU's brand and bus ID), whether the
   NVIDIA_REQUIRE_CUDA of each recorded nvidia/cuda image holds here
   (``cuda_host.requirement_holds``), the host nvcc's release, and the start of the raw
   ``nvidia-smi -q`` output, so that the stand-ins of tests/gpu_stand_ins.py can be checked
   against it.

``gpu.json`` holds one key per part (``a``, ``b``, ``b_atomics``, ``c``, ``d``, ``e``, ``f``,
``g``, ``h``, ``i``). Part ``c`` also gives the verdict with the spec's default
``cross_device_rtol`` (``[verify]``) and the largest relative loss difference, from which a
tolerance is calibrated.
Each part runs alone: a failure is recorded as that part's error and the others still run,
and a part that would start after the time budget is recorded as skipped. With ``--quick``
every probe runs on the CPU for a few steps ("CPU vs CUDA" then compares two CPU runs).
The measurements that need their own process (b's atomics, d's timing, e's versions) run
this file again with ``--worker``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orchestrator import files, process  # noqa: E402
from orchestrator.determinism import LAUNCH_VARIABLES  # noqa: E402
from orchestrator.determinism_settings import DeterminismSettings  # noqa: E402
from orchestrator.errors import ToolError  # noqa: E402
from orchestrator.probe import fingerprint  # noqa: E402
from orchestrator.probe.fingerprint import Fingerprint  # noqa: E402
from orchestrator.tolerances import DEFAULTS, Tolerances  # noqa: E402
from orchestrator.verdict.compare import compare  # noqa: E402

SEED = 0
Result = dict[str, Any]
CROSS_DEVICE_RTOL = DEFAULTS.cross_device_rtol  # the spec's default ([verify])


class Checks:
    """Runs the parts in order, each in try/except, within a time budget."""

    def __init__(self, *, quick: bool, budget: float, out: Path) -> None:
        self.quick = quick
        self.device = "cpu" if quick else "cuda"
        self.steps = 6 if quick else 30
        self.budget = budget
        self.out = out
        self.start = time.perf_counter()
        self.fingerprints: dict[str, Fingerprint] = {}
        self.results: Result = {"quick": quick, "device": self.device, "probe_steps": self.steps}

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.start)

    def part(self, name: str, run: Callable[[], Result]) -> None:
        if self.left() < 15:
            self.results[name] = {"skipped": f"time budget of {self.budget:g} s spent"}
            return
        began = time.perf_counter()
        try:
            result = run()
        except Exception as exc:  # one part's failure must not lose the others
            lines = traceback.format_exception_only(type(exc), exc)
            result = {"error": "".join(lines).strip()[-2000:]}
        result["seconds"] = round(time.perf_counter() - began, 1)
        self.results[name] = result

    # ----------------------------------------------------------------------- subprocesses

    def environment(self, *, deterministic: bool) -> dict[str, str]:
        """This environment less inherited launch variables, plus the launch environment."""
        base = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES}
        launch = settings(deterministic).launch_env()
        return {**base, **launch, "PYTHONPATH": str(REPO)}

    def probe(
        self,
        name: str,
        device: str,
        *,
        deterministic: bool | str = True,
        tf32: bool = False,
        world_size: int | None = None,
    ) -> Fingerprint:
        out = self.out / "fingerprints" / f"{name}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "orchestrator", "probe", "--out", str(out)]
        argv += ["--device", device, "--steps", str(self.steps)]
        argv += settings(deterministic, tf32=tf32).probe_arguments()
        argv += [] if world_size is None else ["--world-size", str(world_size)]
        env = self.environment(deterministic=deterministic is not False)
        if tf32:
            env.pop("NVIDIA_TF32_OVERRIDE", None)
        process.run(argv, env=env, cwd=REPO, timeout=max(self.left(), 30))
        self.fingerprints[name] = fingerprint.load(out)
        return self.fingerprints[name]

    def worker(self, *args: str, deterministic: bool = True) -> Result:
        argv = [sys.executable, str(Path(__file__).resolve()), "--worker", *args]
        argv += ["--device", self.device] + (["--quick"] if self.quick else [])
        env = self.environment(deterministic=deterministic)
        done = process.run(argv, env=env, cwd=REPO, timeout=max(self.left(), 30))
        return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]

    # ----------------------------------------------------------------------- the parts

    def repeat_on(self) -> Result:
        runs = [self.probe(f"{self.device}_on_{i}", self.device) for i in (1, 2)]
        return verdict(runs)

    def repeat_off(self) -> Result:
        runs = [
            self.probe(f"{self.device}_off_{i}", self.device, deterministic=False) for i in (1, 2)
        ]
        return verdict(runs)

    def atomics(self) -> Result:
        return self.worker("atomics")

    def cpu_vs_cuda(self) -> Result:
        cuda = self.fingerprints.get(f"{self.device}_on_1") or self.probe(
            f"{self.device}_on_1", self.device
        )
        cpu = self.probe("cpu_on", "cpu")
        result = verdict([cpu, cuda])
        result["cross_device_rtol"] = CROSS_DEVICE_RTOL
        result["with_cross_device_rtol"] = verdict([cpu, cuda], cross_device_rtol=CROSS_DEVICE_RTOL)
        relative = [
            abs(a - b) / abs(a) if a else abs(b)
            for a, b in zip(cpu.losses, cuda.losses, strict=True)
        ]
        result["relative_loss_difference"] = [float(f"{r:.3g}") for r in relative]
        result["max_relative_loss_difference"] = max(relative)
        result["metrics"] = {
            key: [float.fromhex(cpu.stages.metrics[key]), float.fromhex(value)]
            for key, value in sorted(cuda.stages.metrics.items())
        }
        result["outputs"] = outputs_apart(cpu, cuda)
        return result

    def reference(self) -> Fingerprint:
        name = f"{self.device}_on_1"
        return self.fingerprints.get(name) or self.probe(name, self.device)

    def tf32(self) -> Result:
        reference = self.reference()
        allowed = self.probe(f"{self.device}_tf32", self.device, tf32=True)
        result = verdict([reference, allowed])
        result["outputs"] = outputs_apart(reference, allowed)
        return result

    def warn_mode(self) -> Result:
        reference = self.reference()
        warn = self.probe(f"{self.device}_warn", self.device, deterministic="warn")
        result = verdict([reference, warn])
        result["determinism"] = warn.determinism
        result["audit"] = warn.audit
        return result

    def data_parallel(self) -> Result:
        import torch

        device = "cuda" if not self.quick and torch.cuda.device_count() >= 2 else "cpu"
        two = [self.probe(f"ddp_{device}_2_{i}", device, world_size=2) for i in (1, 2)]
        one = self.probe(f"ddp_{device}_1", device, world_size=1)
        return {
            "device": device,
            "backend": "nccl" if device == "cuda" else "gloo",
            "gpus_visible": torch.cuda.device_count(),
            "two_vs_two": verdict(two),
            "one_vs_two": verdict([one, two[0]]),
            "one_vs_two_same_data_order": one.stages.data_order == two[0].stages.data_order,
        }

    def cost(self) -> Result:
        on = self.worker("timing", deterministic=True)
        off = self.worker("timing", "--no-deterministic", deterministic=False)
        return {"on": on, "off": off, "on_over_off": on["steps_per_s"] / off["steps_per_s"]}

    def host_tools(self) -> Result:
        from orchestrator import compat, cuda_host, gpus

        raw = gpus.nvidia_smi("-q")
        driver = gpus.driver()
        result: Result = {
            "nvidia_smi_q_head": None if raw is None else raw.splitlines()[:16],
            "driver": None
            if driver is None
            else {
                "version": driver.version,
                "cuda": driver.cuda,
                "cuda_from_table": compat.cuda_of_driver(driver.version),
                "gpus": [vars(g) for g in driver.gpus],
            },
        }
        if driver is not None:
            result["images_start"] = {
                cuda: [
                    cuda_host.requirement_holds(
                        requirement.expression,
                        cuda_host.HostFacts(
                            cuda=driver.cuda or compat.cuda_of_driver(driver.version),
                            driver=driver.version,
                            brand=cuda_host.brand_word(gpu.brand),
                        ),
                    )
                    for gpu in driver.gpus
                ]
                for cuda, requirement in sorted(compat.table().images.items())
            }
        home = cuda_host.cuda_home()
        nvcc = None if home is None else home / "bin" / "nvcc"
        result["nvcc"] = None if nvcc is None else [str(nvcc), cuda_host.nvcc_release(nvcc)]
        result["CUDA_DEVICE_ORDER_in_launch"] = settings(True).launch_env().get("CUDA_DEVICE_ORDER")
        return result

    def versions(self) -> Result:
        result = self.worker("info")
        query = ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"]
        try:
            smi = process.run(query, check=False, timeout=30)
            result["nvidia_smi"] = (smi.stdout or smi.stderr).strip()
        except ToolError as exc:  # no nvidia-smi (the CPU dry run)
            result["nvidia_smi"] = str(exc)
        return result


def settings(deterministic: bool | str, *, tf32: bool = False) -> DeterminismSettings:
    mode: Any = deterministic
    return DeterminismSettings(seed=SEED, deterministic_algorithms=mode, tf32=tf32)


def outputs_apart(a: Fingerprint, b: Fingerprint) -> Result:
    """Per kernel output both recorded: identical or not, and the relative norm difference."""
    oa, ob = a.stages.outputs, b.stages.outputs
    result: Result = {}
    for name in sorted(set(oa) & set(ob)):
        na, nb = float.fromhex(oa[name].norm), float.fromhex(ob[name].norm)
        result[name] = {
            "identical": oa[name].digest == ob[name].digest,
            "relative_norm_difference": float(f"{abs(na - nb) / abs(na) if na else abs(nb):.3g}"),
        }
    result["only_in_second"] = sorted(set(ob) - set(oa))
    return result


def verdict(runs: list[Fingerprint], *, cross_device_rtol: float = CROSS_DEVICE_RTOL) -> Result:
    """The worst pair's verdict: bitwise within a device, ``cross_device_rtol`` across."""
    v = compare(runs, Tolerances(cross_device_rtol=cross_device_rtol)).worst
    return {
        "kind": v.kind,
        "stage": v.stage,
        "step": v.step,
        "values": list(v.values) if v.values else None,
        "reason": v.reason,
        "causes": list(v.causes[:4]),
        "probe_seconds": [fp_seconds(fp) for fp in runs],
    }


def fp_seconds(fp: Fingerprint) -> float | None:
    data = json.loads(Path(fp.source).read_text(encoding="utf-8"))
    seconds = data.get("seconds")
    return float(seconds) if isinstance(seconds, int | float) else None


# --------------------------------------------------------------------------- workers


def digest(tensor: Any) -> str:
    return hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def distinct(compute: Callable[[], Any], repeats: int) -> Result:
    """How many different results ``repeats`` runs of ``compute`` give (1: repeatable)."""
    try:
        digests = {digest(compute()) for _ in range(repeats)}
    except RuntimeError as exc:  # no deterministic implementation: torch says so
        return {"error": str(exc).splitlines()[0][:300]}
    return {"distinct": len(digests), "repeats": repeats}


def atomics(device: str, quick: bool) -> Result:
    """index_add_ and an embedding backward: float32 sums over many duplicate indices."""
    import torch

    rows, width, targets = (1 << 12, 16, 8) if quick else (1 << 20, 64, 16)
    repeats = 3 if quick else 20
    g = torch.Generator().manual_seed(SEED)
    index = torch.randint(0, targets, (rows,), generator=g).to(device)
    source = torch.randn(rows, width, generator=g).to(device)
    embedding = torch.nn.Embedding(targets, width).to(device)

    def index_add() -> Any:
        return torch.zeros(targets, width, device=device).index_add_(0, index, source)

    def embedding_backward() -> Any:
        embedding.weight.grad = None
        (embedding(index) * source).sum().backward()
        return embedding.weight.grad

    result: Result = {"rows": rows, "distinct_indices": targets}
    for mode in (True, False):
        torch.use_deterministic_algorithms(mode)
        result["deterministic_on" if mode else "deterministic_off"] = {
            "index_add_": distinct(index_add, repeats),
            "embedding_backward": distinct(embedding_backward, repeats),
        }
    return result


def timing(device: str, quick: bool, deterministic: bool) -> Result:
    """Training steps per second of the probe's model, data prepared beforehand."""
    import torch
    from torch import nn

    from orchestrator.determinism import seed_everything
    from orchestrator.probe import workload

    warmup, steps, rounds = (3, 10, 2) if quick else (30, 300, 3)
    seed_everything(settings(deterministic))
    images, tokens, names = workload.make_data(SEED, workload.TRAIN_SIZE)
    labels = workload.label_numbers(names)
    data = workload.ProbeData(images, tokens, labels, augment=True)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(SEED))
    batches = []
    for start in range(0, (warmup + steps) * workload.BATCH, workload.BATCH):
        items = [data[int(order[i % len(data)])] for i in range(start, start + workload.BATCH)]
        _, image, token, label = (torch.stack(column) for column in zip(*items, strict=True))
        batches.append((image.to(device), token.to(device), label.to(device)))
    model = workload.ProbeNet(torch.Generator().manual_seed(SEED)).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def synchronize() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def train(part: list[tuple[Any, Any, Any]]) -> float:
        synchronize()
        began = time.perf_counter()
        for image, token, label in part:
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(image, token), label).backward()
            optimizer.step()
        synchronize()
        return time.perf_counter() - began

    train(batches[:warmup])
    rates = [steps / train(batches[warmup:]) for _ in range(rounds)]
    return {
        "measures": "forward, backward and SGD step of the probe's model on prepared batches "
        "(no DataLoader, no recorder), after a warm-up; best of the rounds",
        "deterministic": deterministic,
        "steps": steps,
        "rounds": rounds,
        "steps_per_s": max(rates),
        "steps_per_s_median": statistics.median(rates),
    }


def info(device: str) -> Result:
    import torch

    cudnn: Any = torch.backends.cudnn  # its functions carry no annotations
    result: Result = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": cudnn.version() if cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available(),
    }
    result["arch_list"] = torch.cuda.get_arch_list()
    if device == "cuda" and torch.cuda.is_available():
        from orchestrator import compat

        props = torch.cuda.get_device_properties(0)
        capability = f"{props.major}.{props.minor}"
        result |= {
            "gpu": props.name,
            "capability": capability,
            "sm_count": props.multi_processor_count,
            "memory_gib": round(props.total_memory / 2**30, 1),
            "gpus_visible": torch.cuda.device_count(),
            "runs_on": compat.runs_on(compat.archs_from_torch(result["arch_list"]), capability),
        }
    return result


# --------------------------------------------------------------------------- output


def table(results: Result) -> list[str]:
    """One line per check; an error shows as its last line (gpu.json has the whole of it)."""
    rows: list[tuple[str, str]] = []
    device = results["device"]

    def failed(part: Result) -> str | None:
        if "skipped" in part:
            return f"SKIPPED: {part['skipped']}"
        if "error" in part:
            return "ERROR " + str(part["error"]).strip().splitlines()[-1][:200]
        return None

    def show(name: str, part: Result, text: Callable[[Result], str]) -> None:
        rows.append((name, failed(part) or text(part)))

    def kind(v: Result) -> str:
        where = f" at {v['stage']}" + (f" step {v['step']}" if v["step"] is not None else "")
        return failed(v) or str(v["kind"]) + (where if v["stage"] else "")

    def changed(outputs: Result) -> str:
        return ", ".join(
            k for k, v in outputs.items() if isinstance(v, dict) and not v["identical"]
        )

    def counts(r: Result) -> str:
        return "; ".join(
            f"{mode.removeprefix('deterministic_')}: "
            + ", ".join(
                f"{op} {c['distinct']}/{c['repeats']} distinct"
                if "distinct" in c
                else f"{op} error"
                for op, c in r[mode].items()
            )
            for mode in ("deterministic_on", "deterministic_off")
        )

    show(f"a) {device} x2, deterministic", results["a"], kind)
    show(f"b) {device} x2, deterministic off", results["b"], kind)
    show("b) atomics (index_add_, embedding bwd)", results["b_atomics"], counts)
    show(
        f"c) cpu vs {device}",
        results["c"],
        lambda r: (
            f"{kind(r)}; with cross_device_rtol {r['cross_device_rtol']:g}: "
            f"{kind(r['with_cross_device_rtol'])}; max relative loss difference "
            f"{r['max_relative_loss_difference']:.3g}; "
            f"outputs differing: {changed(r['outputs']) or 'none'}"
        ),
    )
    show(
        "d) deterministic cost",
        results["d"],
        lambda r: (
            f"on {r['on']['steps_per_s']:.0f} steps/s, off {r['off']['steps_per_s']:.0f} "
            f"steps/s, on/off {r['on_over_off']:.3f}"
        ),
    )
    show(
        "e) versions",
        results["e"],
        lambda r: (
            f"{r.get('gpu', 'no GPU')} ({r.get('sm_count', '-')} SMs), torch {r['torch']}, "
            f"CUDA {r['cuda']}, cuDNN {r['cudnn']}, arch list {r['arch_list'] or '[]'} "
            f"({r.get('runs_on', '-')} here), nvidia-smi: {r['nvidia_smi'] or '-'}"
        ),
    )
    show(
        f"f) {device} tf32 vs not",
        results["f"],
        lambda r: f"{kind(r)}; outputs changed: {changed(r['outputs']) or 'none'}",
    )
    show(
        f"g) {device} warn mode vs on",
        results["g"],
        lambda r: f"{kind(r)}; audit: {'; '.join(r['audit']) or 'nothing'}",
    )
    show(
        "h) data parallel (world size 2)",
        results["h"],
        lambda r: (
            f"{r['backend']} on {r['device']}: 2 vs 2 {kind(r['two_vs_two'])}; "
            f"1 vs 2 {kind(r['one_vs_two'])}, same data order: "
            f"{r['one_vs_two_same_data_order']}"
        ),
    )
    show(
        "i) host tools (doctor)",
        results["i"],
        lambda r: (
            f"driver {(r['driver'] or {}).get('version', '-')} CUDA "
            f"{(r['driver'] or {}).get('cuda', '-')}; images that start: "
            + (", ".join(c for c, ok in (r.get("images_start") or {}).items() if all(ok)) or "none")
            + f"; nvcc {r['nvcc'][1] if r['nvcc'] else 'none'}; "
            f"CUDA_DEVICE_ORDER {r['CUDA_DEVICE_ORDER_in_launch']}"
        ),
    )
    width = max(len(name) for name, _ in rows)
    return [f"{name:<{width}}  {text}" for name, text in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="CPU-only dry run, few steps")
    parser.add_argument("--budget", type=float, default=300.0, help="seconds for all parts")
    parser.add_argument("--worker", choices=("atomics", "timing", "info"), help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    parser.add_argument("--no-deterministic", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        work: dict[str, Callable[[], Result]] = {
            "atomics": lambda: atomics(args.device, args.quick),
            "timing": lambda: timing(args.device, args.quick, not args.no_deterministic),
            "info": lambda: info(args.device),
        }
        print(json.dumps(work[args.worker]()))
        return 0
    out = Path(os.environ.get("OUT") or ".")
    checks = Checks(quick=args.quick, budget=args.budget, out=out)
    for name, run in (
        ("i", checks.host_tools),  # first: it takes a second, and tests the stand-ins
        ("e", checks.versions),
        ("a", checks.repeat_on),
        ("b", checks.repeat_off),
        ("b_atomics", checks.atomics),
        ("c", checks.cpu_vs_cuda),
        ("d", checks.cost),
        ("f", checks.tf32),
        ("g", checks.warn_mode),
        ("h", checks.data_parallel),
    ):
        checks.part(name, run)
        print(f"[{time.perf_counter() - checks.start:5.0f} s] part {name} done", flush=True)
    checks.results["total_seconds"] = round(time.perf_counter() - checks.start, 1)
    files.atomic_write(
        out / "gpu.json", json.dumps(checks.results, indent=1, sort_keys=True) + "\n"
    )
    print("\n".join(table(checks.results)))
    print(f"wrote {out / 'gpu.json'} ({checks.results['total_seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
