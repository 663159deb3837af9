"""Offline stand-ins for the two images a generated Dockerfile names, built on this machine.

No image registry is reachable here, so the devcontainer tests make:

- ``BASE_IMAGE``: Debian bookworm (minbase) from debootstrap, with python3 (3.11) and
  ca-certificates. It also carries what the registry-less build needs to install a lock:
  this machine's CA certificates, named by ``SSL_CERT_FILE`` (https to PyPI passes only
  through them), and the local torch CPU wheel at the path it has here
  (``tests.helpers.torch_wheel``), which test specs name as a find-links source (the PyTorch
  CPU index is not reachable).
  Like Ubuntu 24.04's images it has a user with uid 1000 (``ubuntu``), which the generated
  Dockerfile must move out of the way of its own user.
- ``UV_IMAGE``: ``/uv`` and ``/uvx`` of the uv release the Dockerfile pins
  (``render.devcontainer.UV_RELEASE``), from its PyPI wheel. The Dockerfile names uv's image by
  digest, which no image built here can have, so tests name this one through the Dockerfile's
  ``UV_IMAGE`` build argument (``ENVPARITY_UV_IMAGE``), as a user names a mirror.

Each is built once per machine and reused while its ``RECIPE_LABEL`` matches this file (and,
for ``BASE_IMAGE``, the wheel's path).
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

from orchestrator import process
from orchestrator.render.devcontainer import UV_RELEASE
from tests.helpers import torch_wheel

HERE = Path(__file__).resolve().parent
CONTAINERS_CONF = HERE / "containers.conf"
BASE_IMAGE = "localhost/envparity-test-base:bookworm"
UV_IMAGE = f"localhost/envparity-test-uv:{UV_RELEASE}"
UID_1000_USER = "ubuntu"  # as in Ubuntu 24.04's images
DEBIAN_MIRROR = "http://deb.debian.org/debian"
HOST_CA = Path("/usr/local/share/ca-certificates")
RECIPE_LABEL = "dev.envparity.test-recipe"
RECIPE = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


class Unavailable(Exception):
    """Why the stand-in images cannot be made on this machine."""


def _current(engine: str, image: str, recipe: str = RECIPE) -> bool:
    found = process.run(
        [
            engine,
            "image",
            "inspect",
            "--format",
            f'{{{{index .Config.Labels "{RECIPE_LABEL}"}}}}',
            image,
        ],
        check=False,
    )
    return found.returncode == 0 and found.stdout.strip() == recipe


def _import(engine: str, tar: Path, image: str, changes: list[str], recipe: str = RECIPE) -> None:
    args = [engine, "import"]
    for change in [*changes, f"LABEL {RECIPE_LABEL}={recipe}"]:
        args += ["--change", change]
    process.run([*args, str(tar), image])


def ensure_base_image(engine: str) -> float | None:
    """Build ``BASE_IMAGE`` unless it is current; return the seconds a build took (None: reused)."""
    wheel = torch_wheel()  # fails the test when this machine has none
    recipe = hashlib.sha256(f"{RECIPE} {wheel}".encode()).hexdigest()[:16]
    if _current(engine, BASE_IMAGE, recipe):
        return None
    for tool in ("debootstrap", "chroot"):
        if shutil.which(tool) is None:
            raise Unavailable(f"{tool} is not installed (apt-get install debootstrap)")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="envparity-base-") as tmp:
        root = Path(tmp, "rootfs")
        process.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,ca-certificates",
                "bookworm",
                str(root),
                DEBIAN_MIRROR,
            ],
            timeout=900,
        )
        for cert in HOST_CA.glob("*.crt"):
            shutil.copy2(cert, root / "usr/local/share/ca-certificates" / cert.name)
        process.run(["chroot", str(root), "update-ca-certificates"])
        process.run(
            ["chroot", str(root), "useradd", "--create-home", "--uid", "1000", UID_1000_USER]
        )
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (root / cache).glob("*"):
                if item.is_file():
                    item.unlink()
        wheels = root / wheel.parent.relative_to("/")
        wheels.mkdir(parents=True)
        shutil.copy2(wheel, wheels / wheel.name)
        tar = Path(tmp, "rootfs.tar")
        process.run(["tar", "--create", "--file", str(tar), "--directory", str(root), "."])
        _import(
            engine,
            tar,
            BASE_IMAGE,
            ["ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt", 'CMD ["/bin/bash"]'],
            recipe,
        )
    return time.perf_counter() - start


def ensure_uv_image(engine: str) -> None:
    """Build ``UV_IMAGE``: ``/uv`` and ``/uvx`` of ``UV_RELEASE``, from PyPI."""
    if _current(engine, UV_IMAGE):
        return
    version = UV_RELEASE
    with tempfile.TemporaryDirectory(prefix="envparity-uv-") as tmp:
        installed = Path(tmp, "uv")
        process.run(
            [
                "uv",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--target",
                str(installed),
                f"uv=={version}",
            ]
        )
        tar = Path(tmp, "uv.tar")
        with tarfile.open(tar, "w") as out:
            for name in ("uv", "uvx"):
                out.add(installed / "bin" / name, arcname=name)
        _import(engine, tar, UV_IMAGE, [])
