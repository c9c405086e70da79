"""The CPU image, built once per session by docker/build.py (offline: debootstrap base + host
wheelhouse + Corral's wheel built on the host), shared by every image test."""

from __future__ import annotations

import shutil
import time

import pytest

from tests.deploy.pod import BUILD

# Every tool these tests need is installed by `make install-test`; a missing one fails.
TOOLS = ("podman", "runc", "debootstrap", "nsenter", "docker-registry")


def require_tools(*names: str) -> None:
    missing = [n for n in names if not shutil.which(n, path=BUILD.SBIN_PATH)]
    if missing:
        pytest.fail(f"missing {missing}: `make install-test` installs them (apt-get install podman "
                    "runc debootstrap docker-registry)", pytrace=False)


@pytest.fixture(scope="session")
def cpu_image() -> dict:
    """Tag, build seconds and size of localhost/corral:cpu built from this checkout."""
    require_tools(*TOOLS)
    start = time.monotonic()
    try:
        tag = BUILD.build("cpu", tag="localhost/corral:cpu-test")
    except BUILD.BuildError as exc:
        pytest.fail(f"image build failed:\n{exc}", pytrace=False)
    seconds = time.monotonic() - start
    size = BUILD.podman("image", "inspect", "-f", "{{.Size}}", tag).stdout.strip()
    print(f"\nimage {tag}: built in {seconds:.0f}s, {int(size) / 1e9:.2f} GB")
    return {"tag": tag, "seconds": seconds, "size": int(size)}
