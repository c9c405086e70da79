"""The CLI's HTTP client for the Ollama API: JSON calls, NDJSON streams, Ollama's error shape."""

from __future__ import annotations

import json
import os
import ssl
from typing import Any, BinaryIO, Callable, Iterator

import httpx

from serve.settings import parse_host


class ConnectError(Exception):
    """No server answers at OLLAMA_HOST."""


class StatusError(Exception):
    """A non-2xx reply or an `{"error": ...}` line in a stream; str() is the server's error text."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


def _error_text(response: httpx.Response) -> str:
    body = response.read()
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("error"):
        return str(data["error"])
    text = body.decode("utf-8", "replace").strip()
    return text or f"{response.status_code} {response.reason_phrase}"


def _tls_verify() -> ssl.SSLContext | bool:
    """An https OLLAMA_HOST is verified against SSL_CERT_FILE when set (a private CA or a
    self-signed server certificate), else the system's CAs; proxies stay ignored."""
    cafile = os.environ.get("SSL_CERT_FILE", "").strip()
    return ssl.create_default_context(cafile=cafile) if cafile else True


class Client:
    """Talks to the server at OLLAMA_HOST, with `Authorization: Bearer $OLLAMA_API_KEY` when set."""

    def __init__(self, base_url: str, api_key: str = "", transport: httpx.BaseTransport | None = None) -> None:
        headers = {"User-Agent": "corral-cli", "Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        # No read timeout: a stream waits as long as a model takes to load and answer.
        self._http = httpx.Client(
            base_url=base_url,
            headers=headers,
            timeout=httpx.Timeout(None, connect=10.0),
            transport=transport,
            trust_env=False,
            verify=_tls_verify(),
        )

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Client":
        env = dict(os.environ if env is None else env)
        return cls(parse_host(env.get("OLLAMA_HOST", "")).url, env.get("OLLAMA_API_KEY", "").strip())

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """One JSON call; returns the decoded body, or None for an empty one."""
        try:
            response = self._http.request(method, path, json=body)
        except httpx.TransportError as exc:
            raise ConnectError(str(exc)) from exc
        if response.status_code >= 400:
            raise StatusError(response.status_code, _error_text(response))
        if not response.content.strip():
            return None
        try:
            return response.json()
        except ValueError:
            return None

    def stream(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """POST and yield each NDJSON object; an `error` line raises StatusError."""
        try:
            with self._http.stream("POST", path, json=body) as response:
                if response.status_code >= 400:
                    raise StatusError(response.status_code, _error_text(response))
                for line in response.iter_lines():
                    if not line.strip():
                        continue
                    item = json.loads(line)
                    if isinstance(item, dict) and item.get("error"):
                        raise StatusError(response.status_code, str(item["error"]))
                    yield item
        except httpx.TransportError as exc:
            raise ConnectError(str(exc)) from exc

    def head(self, path: str) -> int:
        try:
            return self._http.head(path).status_code
        except httpx.TransportError as exc:
            raise ConnectError(str(exc)) from exc

    def upload(self, path: str, stream: BinaryIO, on_bytes: Callable[[int], None] | None = None) -> None:
        """POST a file's bytes without reading it all into memory."""

        def chunks() -> Iterator[bytes]:
            while chunk := stream.read(1 << 20):
                if on_bytes:
                    on_bytes(len(chunk))
                yield chunk

        try:
            response = self._http.post(path, content=chunks(), headers={"Content-Type": "application/octet-stream"})
        except httpx.TransportError as exc:
            raise ConnectError(str(exc)) from exc
        if response.status_code >= 400:
            raise StatusError(response.status_code, _error_text(response))
