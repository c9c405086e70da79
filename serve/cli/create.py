"""`corral create`: parse the Modelfile here, upload local files as blobs, send the structured request.

This is Ollama's client-side create (cmd/cmd.go `CreateHandler`): the server never reads the
client's disk, so every FROM/ADAPTER/DRAFT path is hashed and uploaded to /api/blobs first and
the create request names files by relative filename -> digest.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from registry.errors import APIError
from registry.modelfile import modelfile_fields, parse_modelfile
from registry.names import ModelName
from serve.cli.client import Client, StatusError
from serve.cli.progress import Progress, ProgressPrinter, Spinner


class CreateError(Exception):
    pass


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


def _read_modelfile(filename: str) -> tuple[str, Path]:
    """The Modelfile text and the directory its relative paths resolve against."""
    path = Path(filename or "Modelfile").absolute()
    if path.is_file():
        return path.read_text(encoding="utf-8-sig"), path.parent
    if filename:
        raise CreateError("specified Modelfile wasn't found")
    return "FROM .\n", Path.cwd()


def upload_blob(client: Client, path: Path, digest: str, progress: Progress) -> None:
    """HEAD the blob; POST the file when the server lacks it, showing `copying file <digest> N%`."""
    spinner = Spinner(f"copying file {digest} 0%")
    progress.add(spinner)
    try:
        if client.head(f"/api/blobs/{digest}") == 200:
            return
        size = max(path.stat().st_size, 1)
        sent = 0

        def on_bytes(n: int) -> None:
            nonlocal sent
            sent += n
            spinner.message = f"copying file {digest} {min(100, sent * 100 // size)}%"

        with open(path.resolve(), "rb") as f:
            client.upload(f"/api/blobs/{digest}", f, on_bytes)
    finally:
        spinner.message = f"copying file {digest} 100%"
        spinner.stop()


def _upload_all(client: Client, files: dict[str, Path], progress: Progress) -> dict[str, str]:
    """name -> local path, uploaded; returns name -> digest. A path that is a digest passes through."""
    out: dict[str, str] = {}
    for name, path in files.items():
        text = str(path)
        if text.startswith("sha256") and not path.exists():
            out[name] = text
            continue
        digest = sha256_file(path)
        upload_blob(client, path, digest, progress)
        out[name] = digest
    return out


def build_request(model: str, fields: Any, quantize: str) -> dict[str, Any]:
    req: dict[str, Any] = {"model": model, "stream": True}
    if fields.from_:
        req["from"] = fields.from_
    for key in ("template", "system"):
        if getattr(fields, key) is not None:
            req[key] = getattr(fields, key)
    for key in ("renderer", "parser", "requires"):
        if getattr(fields, key):
            req[key] = getattr(fields, key)
    if fields.license:
        req["license"] = list(fields.license)
    if fields.parameters:
        req["parameters"] = dict(fields.parameters)
    if fields.messages:
        req["messages"] = list(fields.messages)
    if quantize:
        req["quantize"] = quantize
    return req


def create(client: Client, model: str, filename: str, quantize: str) -> int:
    from serve.cli.errors import CLIError

    if not ModelName.parse(model).is_valid():
        raise CLIError(f"invalid model name: {model}")
    try:
        text, relative_dir = _read_modelfile(filename)
        modelfile = parse_modelfile(text)
    except (CreateError, APIError) as exc:
        raise CLIError(str(exc)) from exc

    printer = ProgressPrinter("creating")
    try:
        printer.status_line("gathering model components")
        try:
            fields = modelfile_fields(modelfile, relative_dir)
        except APIError as exc:
            raise CLIError(str(exc)) from exc
        if printer.spinner is not None:
            printer.spinner.stop()
        req = build_request(model, fields, quantize)
        files = dict(fields.blob_files)
        files.update(_upload_all(client, fields.files, printer.progress))
        if files:
            req["files"] = files
        if fields.adapters:
            req["adapters"] = _upload_all(client, fields.adapters, printer.progress)
        if fields.draft_files:
            req["draft_files"] = _upload_all(client, fields.draft_files, printer.progress)
        printer.status = ""  # the server's first status gets a line of its own
        try:
            for resp in client.stream("/api/create", req):
                printer.update(resp)
        except StatusError as exc:
            if "path or Modelfile are required" in str(exc):
                raise CLIError("the corral server must be updated to use `corral create` with this client") from exc
            raise
    finally:
        printer.stop()
    return 0
