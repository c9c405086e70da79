"""The summary `corral show MODEL` prints (cmd/cmd.go `showInfo`)."""

from __future__ import annotations

from typing import Any

from registry.modelfile import go_v as go_value
from serve.cli.format import human_number, render_table

_WIDE_SECTIONS = ("Template", "System", "License")


def _section(header: str, rows: list[list[str]]) -> str:
    width = 100 if header in _WIDE_SECTIONS else 30
    return f"  {header}\n" + (render_table(rows, max_width=width) if rows else "") + "\n"


def _number(v: Any) -> str | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def _model_rows(resp: dict[str, Any]) -> list[list[str]]:
    details = resp.get("details") or {}
    info = resp.get("model_info")
    rows: list[list[str]] = []
    if resp.get("remote_host"):
        rows.append(["", "Remote model", str(resp.get("remote_model") or "")])
        rows.append(["", "Remote URL", str(resp["remote_host"])])
    if info is not None:
        arch = info.get("general.architecture") or ""
        if arch:
            rows.append(["", "architecture", str(arch)])
        params = details.get("parameter_size") or ""
        if not params and _number(info.get("general.parameter_count")) is not None:
            params = human_number(int(info["general.parameter_count"]))
        if params:
            rows.append(["", "parameters", params])
        for key, label in (("context_length", "context length"), ("embedding_length", "embedding length")):
            value = _number(info.get(f"{arch}.{key}"))
            if value is not None:
                rows.append(["", label, value])
    else:
        rows.append(["", "architecture", str(details.get("family") or "")])
        rows.append(["", "parameters", str(details.get("parameter_size") or "")])
    rows.append(["", "quantization", str(details.get("quantization_level") or "")])
    if resp.get("requires"):
        rows.append(["", "requires", str(resp["requires"])])
    return rows


def _head(text: str, n: int) -> list[list[str]]:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    rows = [["", line] for line in lines[:n]]
    if len(lines) > n:
        rows.append(["", "..."])
    return rows


def _short_list(values: list[Any]) -> str:
    """A long array in the metadata table: as many items as fit in 10 columns, then "...+N more"."""
    shown, width = 0, 1
    for i, item in enumerate(values):
        w = len(go_value(item)) + (2 if i > 0 else 0)
        if width + w > 10 and i > 0:
            break
        width += w
        shown += 1
    if shown < len(values):
        return go_value(values[:shown])[:-1] + f" ...+{len(values) - shown} more]"
    return go_value(values)


def _metadata_rows(info: dict[str, Any]) -> list[list[str]]:
    rows = []
    for key in sorted(info):
        value = info[key]
        if isinstance(value, list):
            text = _short_list(value)
        elif isinstance(value, (bool, str, int, float)):
            text = go_value(float(value) if isinstance(value, int) and not isinstance(value, bool) else value)
        else:
            text = type(value).__name__
        rows.append(["", key, text])
    return rows


def show_info(resp: dict[str, Any], verbose: bool = False) -> str:
    out = [_section("Model", _model_rows(resp))]
    capabilities = resp.get("capabilities") or []
    if capabilities:
        out.append(_section("Capabilities", [["", str(c)] for c in capabilities]))
    projector = resp.get("projector_info")
    if projector:
        arch = projector.get("general.architecture") or ""
        rows = []
        if arch:
            rows.append(["", "architecture", str(arch)])
        if _number(projector.get("general.parameter_count")) is not None:
            rows.append(["", "parameters", human_number(int(projector["general.parameter_count"]))])
        out.append(_section("Projector", rows))
    if resp.get("parameters"):
        rows = [[""] + line.split() for line in resp["parameters"].splitlines() if line.strip()]
        out.append(_section("Parameters", rows))
    if verbose and resp.get("model_info") is not None:
        out.append(_section("Metadata", _metadata_rows(resp["model_info"])))
    if verbose and resp.get("tensors"):
        rows = [["", t.get("name", ""), t.get("type", ""), go_value(t.get("shape") or [])] for t in resp["tensors"]]
        out.append(_section("Tensors", rows))
    if resp.get("system"):
        out.append(_section("System", _head(resp["system"], 2)))
    if resp.get("license"):
        out.append(_section("License", _head(resp["license"], 2)))
    return "".join(out)
