"""This machine's NVIDIA driver and CUDA toolkit against what the spec generates (for doctor).

* ``image_verdict``: whether the NVIDIA container toolkit starts the devcontainer's image on
  this driver. An ``nvidia/cuda`` image carries ``NVIDIA_REQUIRE_CUDA`` (recorded per CUDA
  minor in ``orchestrator/data/compat.toml``); the toolkit's prestart hook evaluates it for
  every visible GPU and refuses the container when it does not hold ("unsatisfied condition:
  cuda>=12.8, please update your driver to a newer version, or use an earlier cuda
  container"). Evaluated here as NVIDIA/libnvidia-container does (``requirement_holds``).
  Its ``brand=...,driver>=N,driver<N+1`` alternatives are CUDA forward compatibility: an older
  driver of those branches runs the image's newer CUDA through its cuda-compat libraries, on
  data-centre (and some workstation) GPUs only
  (https://docs.nvidia.com/deploy/cuda-compatibility/ "Forward Compatibility"). The driver's
  CUDA comes from ``nvidia-smi -q``, else from NVIDIA's table "CUDA Toolkit and Corresponding
  Driver Versions" (``compat.cuda_of_driver``), which also gives the driver a fix names.
  CUDA minor-version compatibility (a 12.x driver >= 525 runs 12.x programs with a limited
  feature set: https://docs.nvidia.com/deploy/cuda-compatibility/minor-version-compatibility.html)
  does not count for that check: ``cuda>=12.8`` compares the driver's own CUDA version.
* ``nvcc_verdict``: the host ``nvcc`` that ``torch.utils.cpp_extension`` would build
  extensions (flash-attn, xformers, ...) with, against ``[cuda] version``: torch refuses a
  different major ("The detected CUDA version (12.4) mismatches the version that was used to
  compile PyTorch (13.0)") and warns on a different minor.
* ``device_order_verdict``: GPUs of different models with ``CUDA_DEVICE_ORDER`` other than
  ``PCI_BUS_ID``: CUDA then numbers them fastest first, nvidia-smi by PCI bus ID.

Each returns a ``Finding`` (or None when it does not apply); doctor words the section.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from orchestrator import compat, gpus, process
from orchestrator.errors import EnvparityError
from orchestrator.spec import DevcontainerTarget, Spec

# Where torch.utils.cpp_extension looks last for a CUDA toolkit (_find_cuda_home, on Linux).
DEFAULT_CUDA_HOME = Path("/usr/local/cuda")
# The toolkit's message, from NVIDIA/libnvidia-container src/cli/dsl.c (dsl_evaluate).
REFUSAL = "unsatisfied condition: {condition}, please update your driver to a newer version, or use an earlier cuda container"


@dataclass(frozen=True)
class Finding:
    level: Literal["ok", "warn", "fail"]
    message: str
    fix: str = ""


# --------------------------------------------------------------------------- NVIDIA_REQUIRE_CUDA


@dataclass(frozen=True)
class HostFacts:
    """What the toolkit compares a requirement with, for one GPU: ``cuda`` the driver's CUDA
    version (``"12.4"``), ``driver`` its version (``"551.78"``), ``brand`` the GPU's brand
    in the requirement's words (``"geforce"``), ``arch`` its compute capability; None: unknown."""

    cuda: str | None
    driver: str | None
    brand: str | None = None
    arch: str | None = None


def requirement_holds(expression: str, facts: HostFacts) -> bool | None:
    """Whether the ``NVIDIA_REQUIRE_*`` ``expression`` holds for ``facts``, as
    NVIDIA/libnvidia-container evaluates it (src/cli/dsl.c ``dsl_evaluate``): space-separated
    alternatives, any of which suffices, each of comma-separated conditions ``name op value``
    that must all hold; names ``cuda``, ``driver``, ``arch`` (versions, compared number by
    number, trailing zeros ignored) and ``brand`` (a case-insensitive string); operators
    ``= != < <= > >=``. None when the answer depends on a fact that is None.

    Raises ``ValueError`` for a condition it cannot read (the toolkit: "invalid expression").
    """
    undecided = False
    for alternative in expression.split():
        value: bool | None = True
        for condition in filter(None, alternative.split(",")):
            holds = _condition(condition, facts)
            if holds is False:
                value = False
                break
            if holds is None:
                value = None
        if value is True:
            return True
        undecided = undecided or value is None
    return None if undecided else False


_CONDITION = re.compile(r"^(?P<name>[a-zA-Z]+)(?P<op><=|>=|!=|=|<|>)(?P<value>[^<>=!]+)$")


def _condition(text: str, facts: HostFacts) -> bool | None:
    found = _CONDITION.match(text)
    if found is None:
        raise ValueError(f"not a requirement condition: {text!r}")
    name, op, value = found["name"].lower(), found["op"], found["value"]
    if name == "brand":
        if op not in ("=", "!="):
            raise ValueError(f"not a requirement condition: {text!r}")
        if facts.brand is None:
            return None
        return (facts.brand.lower() == value.lower()) == (op == "=")
    have = {"cuda": facts.cuda, "driver": facts.driver, "arch": facts.arch}.get(name, "")
    if have == "":
        raise ValueError(f"not a requirement condition: {text!r}")
    if have is None:
        return None
    a, b = _padded(have, value)
    return {
        "=": a == b,
        "!=": a != b,
        "<": a < b,
        "<=": a <= b,
        ">": a > b,
        ">=": a >= b,
    }[op]


def _padded(a: str, b: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    x = [int(p) for p in a.split(".") if p.isdigit()]
    y = [int(p) for p in b.split(".") if p.isdigit()]
    width = max(len(x), len(y))
    return tuple(x + [0] * (width - len(x))), tuple(y + [0] * (width - len(y)))


# nvidia-smi -q's "Product Brand" -> the brand word of NVIDIA_REQUIRE_CUDA (NVML's brand
# types, nvmlBrandType_t: https://docs.nvidia.com/deploy/nvml-api/); any other is its lower-case
# letters and digits ("GeForce RTX" -> "geforcertx", "NVIDIA" -> "nvidia").
_BRANDS = {
    "nvidiavirtualapplications": "vapps",
    "nvidiavirtualpc": "vpc",
    "nvidiavirtualcomputeserver": "vcs",
    "nvidiartxvirtualworkstation": "vws",
    "nvidiacloudgaming": "cloudgaming",
}


def brand_word(printed: str | None) -> str | None:
    """``"GeForce"`` -> ``"geforce"``, ``"NVIDIA Virtual PC"`` -> ``"vpc"``; None stays None."""
    if printed is None:
        return None
    word = re.sub(r"[^a-z0-9]", "", printed.lower())
    return _BRANDS.get(word, word)


def image_verdict(spec: Spec, driver: gpus.Driver | None) -> Finding | None:
    """Whether the NVIDIA container toolkit starts the devcontainer's image with this driver;
    None when the spec has no devcontainer of a CUDA flavor."""
    dc = spec.targets.get("devcontainer")
    if not isinstance(dc, DevcontainerTarget) or not spec.flavor_of("devcontainer").startswith(
        "cu"
    ):
        return None
    image = dc.image.split("@", 1)[0]
    cuda = compat.image_cuda(dc.image)
    if cuda is None:
        return Finding(
            "warn",
            f"devcontainer image {image}: not an nvidia/cuda tag, so its NVIDIA_REQUIRE_CUDA is "
            "not known here: whether the NVIDIA container toolkit starts it on this driver was "
            "not checked",
            f"docker inspect --format '{{{{json .Config.Env}}}}' {image} shows it",
        )
    if driver is None:
        return Finding(
            "warn",
            f"devcontainer image {image} requires cuda>={cuda}: 'nvidia-smi -q' printed no driver "
            "version, so whether the NVIDIA container toolkit starts it was not checked",
        )
    host_cuda = driver.cuda or compat.cuda_of_driver(driver.version)
    requirement = compat.table().images.get(cuda)
    expression = requirement.expression if requirement is not None else f"cuda>={cuda}"
    devices = driver.gpus or (gpus.Gpu(name="(no GPU listed)", bus_id="", brand=None),)
    results = [
        (
            gpu,
            requirement_holds(
                expression,
                HostFacts(cuda=host_cuda, driver=driver.version, brand=brand_word(gpu.brand)),
            ),
        )
        for gpu in devices
    ]
    runs = f"driver {driver.version} runs CUDA {host_cuda or '(unknown)'}"
    if all(holds for _, holds in results):
        if host_cuda is not None and requirement_holds(f"cuda>={cuda}", HostFacts(host_cuda, None)):
            return Finding("ok", f"devcontainer image {image} requires cuda>={cuda}: {runs}")
        return Finding(
            "ok",
            f"devcontainer image {image} requires cuda>={cuda}; {runs}, and it starts through CUDA "
            "forward compatibility (the image's cuda-compat libraries, on this GPU brand and "
            "driver branch)",
        )
    refused = [gpu for gpu, holds in results if holds is False]
    unknown = [gpu for gpu, holds in results if holds is None]
    if not refused:
        return Finding(
            "warn",
            f"devcontainer image {image} requires cuda>={cuda}; {runs}: whether it starts through "
            f"forward compatibility depends on the brand of {_names(unknown)}, which "
            "'nvidia-smi -q' did not print",
        )
    if requirement is None:
        return Finding(
            "warn",
            f"devcontainer image {image} requires cuda>={cuda}; {runs}: the NVIDIA container toolkit "
            f"refuses it ('{REFUSAL.format(condition=f'cuda>={cuda}')}') unless one of the "
            "image's forward-compatibility clauses holds, which the compatibility table does not "
            f"record for CUDA {cuda}",
            _image_fixes(spec, cuda, host_cuda, driver.version),
        )
    brands = ", ".join(sorted({f"{g.name} ({g.brand or 'brand unknown'})" for g in refused}))
    return Finding(
        "fail",
        f"devcontainer image {image} requires cuda>={cuda} (its NVIDIA_REQUIRE_CUDA); {runs}, and "
        f"no forward-compatibility clause of the image holds for {brands}: the NVIDIA container "
        f"toolkit refuses to start it ('{REFUSAL.format(condition=f'cuda>={cuda}')}')",
        _image_fixes(spec, cuda, host_cuda, driver.version),
    )


def _image_fixes(spec: Spec, cuda: str, host_cuda: str | None, driver: str) -> str:
    """A driver that runs the image, or an image (and cuda.version) this driver runs."""
    toolkit = compat.table().toolkits.get(cuda)
    linux = f" (Linux: {toolkit.driver} or newer)" if toolkit is not None else ""
    fixes = [f"install a driver that runs CUDA {cuda} or newer{linux}"]
    versions = compat.admitted_versions(spec)
    builds = {
        v: [c for c in r.builds if host_cuda is not None and _at_most(c, host_cuda)]
        for v in versions
        if (r := compat.table().release_of(v)) is not None
    }
    usable = sorted({c for cs in builds.values() for c in cs}, key=lambda c: _padded(c, "0")[0])
    if usable:
        best = usable[-1]
        with_it = [v for v, cs in builds.items() if best in cs]
        span = with_it[0] if len(with_it) == 1 else f"{with_it[0]} to {with_it[-1]}"
        fixes.append(
            f'or an image this driver runs: cuda.version = "{best}" and an '
            f"nvidia/cuda:{compat.image_patch(best) or best + '.0'}-* tag (torch {span} has a "
            f"CUDA {best} build)"
        )
    floor = compat.min_driver_minor_compat(cuda)
    if floor is not None and _at_most(floor, driver):
        fixes.append(
            f"by hand, `docker run -e NVIDIA_DISABLE_REQUIRE=1` skips the check: this driver runs "
            f"CUDA {cuda} programs under minor-version compatibility (torch's wheels, not PTX "
            "compiled for newer GPUs)"
        )
    return "; ".join(fixes)


def _at_most(a: str, b: str) -> bool:
    x, y = _padded(a, b)
    return x <= y


def _names(devices: Sequence[gpus.Gpu]) -> str:
    return ", ".join(sorted({g.name for g in devices}))


# --------------------------------------------------------------------------- nvcc


def cuda_home() -> Path | None:
    """The CUDA toolkit ``torch.utils.cpp_extension`` builds extensions with, found as it does
    (``_find_cuda_home``): ``CUDA_HOME``, else ``CUDA_PATH``, else the folder above the
    ``bin`` of the ``nvcc`` on ``PATH``, else ``/usr/local/cuda`` if it exists."""
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home:
        return Path(home)
    nvcc = shutil.which("nvcc")
    if nvcc is not None:
        return Path(nvcc).parent.parent
    return DEFAULT_CUDA_HOME if DEFAULT_CUDA_HOME.exists() else None


def nvcc_release(nvcc: Path) -> str | None:
    """``"12.4"`` from ``nvcc --version`` ("Cuda compilation tools, release 12.4, V12.4.131");
    None when it does not run or prints no release."""
    try:
        out = process.run([nvcc, "--version"], timeout=30).stdout
    except EnvparityError:
        return None
    found = re.search(r"release (\d+\.\d+)", out)
    return found[1] if found else None


def nvcc_verdict(spec: Spec) -> Finding | None:
    """The host nvcc against ``[cuda] version``; None for a spec without ``[cuda]``."""
    if spec.cuda is None:
        return None
    want = spec.cuda.version
    home = cuda_home()
    if home is None:
        return Finding(
            "ok",
            "no CUDA toolkit on this host (CUDA_HOME, CUDA_PATH, nvcc on PATH, /usr/local/cuda): "
            f"extensions are built where nvcc {want} is, the nix shell or the devcontainer",
        )
    nvcc = home / "bin" / "nvcc"
    if not nvcc.is_file():
        return Finding(
            "warn",
            f'{home} has no bin/nvcc: torch.utils.cpp_extension fails there ("nvcc not found at '
            f"'{nvcc}'\")",
            f"point CUDA_HOME at a CUDA {want} toolkit, or build extensions in the nix shell or "
            "the devcontainer",
        )
    have = nvcc_release(nvcc)
    if have is None:
        return Finding(
            "warn", f"{nvcc} --version printed no release: not compared with CUDA {want}"
        )
    if have == want:
        return Finding("ok", f"host nvcc {have} ({nvcc}) is cuda.version {want}")
    fix = (
        f"build extensions in the nix shell or the devcontainer (nvcc {want}), or point CUDA_HOME "
        f"at a CUDA {want} toolkit"
    )
    if have.split(".")[0] != want.split(".")[0]:
        return Finding(
            "fail",
            f"host nvcc {have} ({nvcc}) is not cuda.version {want}: torch.utils.cpp_extension "
            "refuses to build extensions such as flash-attn against torch's CUDA "
            f"('The detected CUDA version ({have}) mismatches the version that was used to "
            f"compile PyTorch ({want})')",
            fix,
        )
    older = _at_most(have, want)
    why = (
        "an nvcc older than torch's CUDA may not know the GPU targets and headers torch was "
        "built with, and extension builds such as flash-attn's then fail"
        if older
        else "extensions are then compiled against other CUDA headers than torch's"
    )
    return Finding(
        "warn",
        f"host nvcc {have} ({nvcc}) is not cuda.version {want}: torch.utils.cpp_extension builds "
        f"with it after a warning ('minor version mismatch'), but {why}",
        fix,
    )


# --------------------------------------------------------------------------- device order


def device_order_verdict(names: Sequence[str]) -> Finding | None:
    """GPUs of more than one model need ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` for an index to name
    the same GPU in CUDA as in nvidia-smi (CUDA C++ Programming Guide, "CUDA Environment
    Variables": the default, FASTEST_FIRST, puts the fastest first). None for one model."""
    models = sorted(set(names))
    if len(models) < 2:
        return None
    order = os.environ.get("CUDA_DEVICE_ORDER")
    listed = ", ".join(models)
    if order == "PCI_BUS_ID":
        return Finding(
            "ok", f"GPUs of {len(models)} models ({listed}), numbered by PCI bus ID in CUDA too"
        )
    return Finding(
        "warn",
        f"GPUs of {len(models)} models ({listed}) and CUDA_DEVICE_ORDER is "
        f"{'not set' if order is None else repr(order)}: CUDA numbers them fastest first, "
        "nvidia-smi by PCI bus ID, so CUDA_VISIBLE_DEVICES=1 (or cuda:1) is another GPU for torch "
        "than for nvidia-smi",
        "set CUDA_DEVICE_ORDER=PCI_BUS_ID before Python starts ('envparity run', the nix shell "
        "and the devcontainer set it)",
    )
