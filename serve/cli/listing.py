"""The store and residency commands: list, ps, show, cp, rm, stop."""

from __future__ import annotations

import argparse

from serve.cli.client import Client, StatusError
from serve.cli.errors import CLIError, _err, _out
from serve.cli.format import human_bytes, human_time, processor, render_table, until
from serve.cli.show import show_info


def cmd_list(args: argparse.Namespace, client: Client) -> int:
    resp = client.request("GET", "/api/tags") or {}
    rows = []
    prefix = (args.prefix or "").lower()
    for m in resp.get("models") or []:
        name = m.get("name") or m.get("model") or ""
        if prefix and not name.lower().startswith(prefix):
            continue
        size = "-" if m.get("remote_model") else human_bytes(int(m.get("size") or 0))
        rows.append([name, (m.get("digest") or "")[:12], size, human_time(m.get("modified_at"), "Never")])
    _out(render_table(rows, header=["NAME", "ID", "SIZE", "MODIFIED"]), end="")
    return 0


def cmd_ps(args: argparse.Namespace, client: Client) -> int:
    resp = client.request("GET", "/api/ps") or {}
    rows = []
    for m in resp.get("models") or []:
        name = m.get("name") or m.get("model") or ""
        if args.prefix and not name.startswith(args.prefix):
            continue
        size, vram = int(m.get("size") or 0), int(m.get("size_vram") or 0)
        rows.append(
            [
                name,
                (m.get("digest") or "")[:12],
                human_bytes(size),
                processor(size, vram),
                str(int(m.get("context_length") or 0)),
                until(m.get("expires_at")),
            ]
        )
    _out(render_table(rows, header=["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]), end="")
    return 0


_SHOW_FIELDS = ("license", "modelfile", "parameters", "system", "template")


def cmd_show(args: argparse.Namespace, client: Client) -> int:
    chosen = [f for f in _SHOW_FIELDS if getattr(args, f)]
    if len(chosen) > 1:
        raise CLIError(
            "only one of '--license', '--modelfile', '--parameters', '--system', or '--template' can be specified"
        )
    resp = client.request("POST", "/api/show", {"model": args.model, "verbose": args.verbose}) or {}
    if "image" in (resp.get("capabilities") or []):
        raise CLIError("image generation models are not currently supported")
    if chosen:
        value = str(resp.get(chosen[0]) or "")
        # Ollama prints system and template without a trailing newline of its own.
        _out(value, end="" if chosen[0] in ("system", "template") else "\n")
        return 0
    _out(show_info(resp, verbose=args.verbose), end="")
    return 0


def cmd_cp(args: argparse.Namespace, client: Client) -> int:
    client.request("POST", "/api/copy", {"source": args.source, "destination": args.destination})
    _out(f"copied '{args.source}' to '{args.destination}'")
    return 0


def cmd_rm(args: argparse.Namespace, client: Client) -> int:
    for name in args.models:
        try:  # unload first, so the weights are not held by a runner after removal
            unload(client, name)
        except StatusError as exc:
            if "not found" not in str(exc).lower():
                _err(f"Warning: unable to stop model '{name}'")
        client.request("DELETE", "/api/delete", {"model": name})
        _out(f"deleted '{name}'")
    return 0


def unload(client: Client, name: str) -> None:
    for _ in client.stream("/api/generate", {"model": name, "keep_alive": 0}):
        pass


def cmd_stop(args: argparse.Namespace, client: Client) -> int:
    try:
        unload(client, args.model)
    except StatusError as exc:
        if "not found" in str(exc):
            raise CLIError(f'couldn\'t find model "{args.model}" to stop') from exc
        raise
    return 0
