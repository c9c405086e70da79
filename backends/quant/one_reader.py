"""One parse of a GGUF file's metadata while it is packed or converted.

gguf's `GGUFReader` parses every metadata array element by element through numpy memmap
views: about 22 s for gemma3:270m's 262k-token vocabulary and 515k merges on these machines.
transformers builds a reader of its own in each GGUF entry point (the config and tensor names
in `load_gguf_checkpoint`, again for the tokenizer's config), so a pack parsed the file three
times (two thirds of its first load) and a float conversion twice. Inside `lend_reader(path)`
every reader asked for that path, on that thread, is the one built there.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

_lent = threading.local()


def _key(path: Any) -> str:
    return os.path.realpath(os.fspath(path))


def _lending_class(base: type) -> type:
    class LendingReader(base):  # type: ignore[misc, valid-type]
        def __new__(cls, path, *args, **kwargs):
            lent = getattr(_lent, "readers", {}).get(_key(path))
            return lent if lent is not None else super().__new__(cls)

        def __init__(self, path, *args, **kwargs):
            if not getattr(self, "_parsed", False):  # a lent reader is parsed already
                super().__init__(path, *args, **kwargs)
                self._parsed = True

    return LendingReader


def _install() -> type:
    import gguf

    if not getattr(gguf.GGUFReader, "_lends", False):
        gguf.GGUFReader = _lending_class(gguf.GGUFReader)
        gguf.GGUFReader._lends = True
    return gguf.GGUFReader


@contextlib.contextmanager
def lend_reader(path: Any) -> Iterator[Any]:
    """The file's reader, lent to every `gguf.GGUFReader(path)` on this thread meanwhile."""
    reader_class = _install()
    reader = reader_class(os.fspath(path))
    readers = getattr(_lent, "readers", {})
    _lent.readers = {**readers, _key(path): reader}
    try:
        yield reader
    finally:
        _lent.readers = readers
