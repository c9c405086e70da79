"""The smallest GGUF create accepts: a header, a few keys and one tensor; no model runs it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGUFWriter


def tiny_gguf(path: Path) -> Path:
    w = GGUFWriter(str(path), "llama")
    w.add_uint32("general.file_type", 1)
    w.add_context_length(128)
    w.add_embedding_length(8)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
