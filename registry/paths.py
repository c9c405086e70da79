"""Which server-side paths create may read: only those under the configured directories.

A caller of `/api/create` can name files on the server (`FROM /path`, `ADAPTER /path`, the old
`path` field). Each such path is resolved first (symlinks followed, `..` collapsed) and must lie
under one of the allowed roots; anything else gets one 403 text that says nothing about whether
the path exists, so create cannot be used to probe the server's disk. The check runs before any
stat of the path, and the resolved path is what gets opened.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from registry.errors import APIError

PATH_REFUSED = ("server-side paths outside CORRAL_LOCAL_MODELS are not allowed; "
                "upload the file with POST /api/blobs/:digest instead")


def refused() -> APIError:
    return APIError(403, PATH_REFUSED)


@dataclass(frozen=True)
class PathPolicy:
    """`roots=None`: every path (start-up work the operator configured); `()`: none."""

    roots: tuple[Path, ...] | None = None

    @classmethod
    def under(cls, roots: "tuple[str | os.PathLike[str], ...]") -> "PathPolicy":
        return cls(tuple(Path(os.path.realpath(os.path.expanduser(r))) for r in roots))

    def allows(self, path: str | os.PathLike[str]) -> bool:
        if self.roots is None:
            return True
        real = Path(os.path.realpath(path))
        return any(real == root or root in real.parents for root in self.roots)

    def check(self, path: str | os.PathLike[str]) -> Path:
        """The resolved path to open, or the one 403 (raised whether or not `path` exists)."""
        if not self.allows(path):
            raise refused()
        return Path(os.path.realpath(path)) if self.roots is not None else Path(path)


UNRESTRICTED = PathPolicy()
