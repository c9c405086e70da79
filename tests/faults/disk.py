"""A small tmpfs mounted by a test (CI runs as root): the disk that fills up. A machine where
mounting fails fails the test instead of skipping it, so CI never silently loses the check."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def small_disk(path: Path, size_mib: int) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(path)],
                           capture_output=True, text=True)
    assert mount.returncode == 0, f"cannot mount a {size_mib} MiB tmpfs (root needed): {mount.stderr}"
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)
