"""The /api/show response (server/routes.go `GetModelInfo`, api/types.go `ShowResponse`)."""

from __future__ import annotations

from typing import Any

from registry.create import model_details
from registry.model import DEFAULT_TEMPLATE, ModelNotFoundError, get_model
from registry.model_info import read_gguf
from registry.modelfile import parameters_text, show_modelfile
from registry.names import ModelName
from registry.store import Store


def show_model(
    store: Store,
    name: str,
    *,
    verbose: bool = False,
    system: str | None = None,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The show response dict; ModelNotFoundError 404 `model '<name:tag>' not found`."""
    try:
        m = get_model(store, name)
    except ModelNotFoundError as e:
        n = ModelName.parse(name)
        raise ModelNotFoundError(e.name, f"model '{n.model}:{n.tag}' not found") from None
    params = dict(m.params)
    params.update(options or {})
    sys_text = system if system else m.system
    template = m.template if m.template is not None else DEFAULT_TEMPLATE
    if m.is_safetensors:
        model_path = m.display_name
    else:
        model_path = str(m.weights_path or "")
    modelfile = show_modelfile(
        m.display_name,
        model_path,
        adapters=[str(p) for p in m.adapters],
        projectors=[str(p) for p in m.projectors],
        template=template,
        system=sys_text,
        renderer=m.config.renderer,
        parser=m.config.parser,
        params=params,
        licenses=m.licenses,
        messages=m.messages,
    )
    resp: dict[str, Any] = {}
    if m.licenses:
        resp["license"] = "\n".join(m.licenses)
    resp["modelfile"] = modelfile
    if params:
        resp["parameters"] = parameters_text(params)
    resp["template"] = template
    if sys_text:
        resp["system"] = sys_text
    if m.config.renderer:
        resp["renderer"] = m.config.renderer
    if m.config.parser:
        resp["parser"] = m.config.parser
    resp["details"] = model_details(m)
    if m.messages:
        resp["messages"] = m.messages
    if m.config.remote_model:
        resp["remote_model"] = m.config.remote_model
    if m.config.remote_host:
        resp["remote_host"] = m.config.remote_host
    meta = m.metadata
    resp["model_info"] = meta.model_info(verbose) if meta is not None else {}
    if m.projectors:
        resp["projector_info"] = read_gguf(m.projectors[0]).model_info(verbose)
    if meta is not None and meta.format == "gguf" and meta.tensors:
        resp["tensors"] = meta.tensors
    if m.capabilities:
        resp["capabilities"] = m.capabilities
    resp["modified_at"] = m.modified_at
    if m.config.requires:
        resp["requires"] = m.config.requires
    return resp
