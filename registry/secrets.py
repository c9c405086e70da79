"""Files that hold secrets (the ed25519 signing key, docker credentials) read only when private.

As ssh does for private keys, a file whose mode gives the group or others any access is too
open. The signing key is then refused (ssh refuses to use such a key); docker's config.json is
read with a warning, since docker itself writes it 0600 but does not check it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("corral.registry")

OPEN_BITS = 0o077


class UnsafePermissions(PermissionError):
    pass


def problem(path: str | os.PathLike[str], mode: int) -> str | None:
    """Why a file with `mode` is too open to hold a secret, or None."""
    if mode & OPEN_BITS:
        return (f"{path}: permissions {mode & 0o777:04o} are too open; a secret must be "
                f"accessible by its owner only (chmod 600 {path})")
    return None


def check_private(path: str | os.PathLike[str]) -> str | None:
    """`problem` for an existing file; None when it is private or absent."""
    try:
        return problem(path, Path(path).stat().st_mode)
    except OSError:
        return None


def read_private(path: str | os.PathLike[str], *, refuse: bool) -> bytes:
    """The file's bytes; too open: raise UnsafePermissions (`refuse`) or warn and read it."""
    with open(path, "rb") as f:
        why = problem(path, os.fstat(f.fileno()).st_mode)  # the file opened, not a path re-read
        if why and refuse:
            raise UnsafePermissions(why + "; refusing to use it")
        if why:
            log.warning("%s; reading it anyway", why)
        return f.read()
