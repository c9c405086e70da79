"""The smallest GGUF create accepts: a header, a few keys and one tensor; no model runs it."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
from gguf import GGUFWriter


def tiny_gguf(path: Path, file_type: int = 1, arch: str = "llama",
              extra: Mapping[str, int] | None = None, chat_template: str | None = None) -> Path:
    w = GGUFWriter(str(path), arch)
    w.add_uint32("general.file_type", file_type)
    w.add_context_length(128)
    w.add_embedding_length(8)
    if chat_template is not None:
        w.add_string("tokenizer.chat_template", chat_template)
    for key, value in (extra or {}).items():
        w.add_uint32(key, value)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
