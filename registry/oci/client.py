"""An HTTP client for one registry: scheme rules, auth challenges, retries and error texts.

Mirrors server/images.go `makeRequestWithRetry`: a 401 is answered once with credentials from
its challenge, a 404 is "file does not exist", other 4xx/5xx are `<code>: <body>`. Connection
failures and 502/503/504 on idempotent requests are retried with exponential backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from registry.errors import APIError
from registry.names import ModelName
from registry.oci.auth import (Challenge, SigningKey, basic_header, parse_challenge,
                               signed_token_data, token_url)

log = logging.getLogger("corral.registry.oci")

ERR_NOT_EXIST = "file does not exist"
ERR_UNAUTHORIZED = "unauthorized: access denied"
ERR_INSECURE = "insecure protocol http"
_RETRY_STATUS = {502, 503, 504}


@dataclass
class RegistryOptions:
    """How to reach registries; built by `serve` from its settings, per request."""

    insecure: bool = False
    credentials: dict[str, tuple[str, str]] = field(default_factory=dict)  # host -> (user, pw)
    key_path: Path | None = None  # ed25519 key for signed token requests
    user_agent: str = "corral"
    connect_timeout: float = 30.0
    stall_timeout: float = 30.0  # no bytes for this long: the part is retried
    retries: int = 6
    backoff: float = 1.0  # first retry waits this long, then doubling
    part_size: int | None = None  # None: Ollama's total/16 clamped to [100 MB, 1000 MB]
    max_parts: int = 16
    noprune: bool = False
    transport: httpx.BaseTransport | None = None  # tests hand in a mock

    def backoff_s(self, attempt: int) -> float:
        return self.backoff * (2 ** attempt)


class RegistryError(APIError):
    def __init__(self, message: str, status_code: int = 0):
        super().__init__(500, message)
        self.status_code = status_code

    def before_stream(self) -> APIError:
        """The error as a reply before the first progress line: the registry's 401/404 is the
        client's problem (a missing model, no access), so it keeps that status."""
        status = self.status_code if self.status_code in (401, 403, 404) else 500
        return APIError(status, self.message)


def base_url(name: ModelName, options: RegistryOptions) -> str:
    """`https://<host>`; `insecure` forces http; an explicit `http://` needs `insecure`."""
    scheme = (name.scheme or "https").lower()
    if options.insecure:
        scheme = "http"
    elif scheme == "http":
        raise APIError(400, ERR_INSECURE)
    return f"{scheme}://{name.host}"


class RegistryClient:
    """Requests against one registry host, sharing one auth state across threads."""

    def __init__(self, name: ModelName, options: RegistryOptions):
        self.name = name
        self.options = options
        self.base = base_url(name, options)
        self.repo = f"{name.namespace}/{name.model}"
        self.host = name.host.lower()
        self._auth: str | None = None
        self._auth_lock = threading.Lock()
        self.http = httpx.Client(
            trust_env=True,
            follow_redirects=False,
            headers={"User-Agent": options.user_agent},
            timeout=httpx.Timeout(options.stall_timeout, connect=options.connect_timeout),
            transport=options.transport,
        )

    def fork(self) -> "RegistryClient":
        """A client of its own (a download outlives the pull that started it), same auth."""
        other = RegistryClient(self.name, self.options)
        other._auth = self._auth
        return other

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "RegistryClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def url(self, path: str) -> str:
        return f"{self.base}/v2/{self.repo}/{path}"

    def same_host(self, url: str) -> bool:
        return urlsplit(url).netloc.lower() == urlsplit(self.base).netloc.lower()

    # --- requests ------------------------------------------------------------------------

    def request(self, method: str, url: str, *, headers: dict[str, str] | None = None,
                content: Any = None, stream: bool = False, auth: bool = True,
                ok_status: tuple[int, ...] = ()) -> httpx.Response:
        """Send with auth and retries; returns a 2xx/3xx (or `ok_status`) response."""
        idempotent = method in ("GET", "HEAD")
        attempt = 0
        authorized = False
        while True:
            hdrs = dict(headers or {})
            if auth and self._auth and self.same_host(url):
                hdrs["Authorization"] = self._auth
            body = content() if callable(content) else content
            try:
                req = self.http.build_request(method, url, headers=hdrs, content=body)
                resp = self.http.send(req, stream=stream)
            except httpx.TransportError as err:
                if not idempotent or attempt >= self.options.retries:
                    raise RegistryError(f"{method} {url}: {err or type(err).__name__}") from err
                self._sleep(attempt)
                attempt += 1
                continue
            status = resp.status_code
            if status in ok_status or status < 400:
                return resp
            text = self._read_text(resp)
            if status == 401 and auth and not authorized:
                authorized = True
                self._answer_challenge(resp.headers.get("www-authenticate", ""), url)
                continue
            if status == 401:
                raise RegistryError(ERR_UNAUTHORIZED, 401)
            if status == 404:
                raise RegistryError(ERR_NOT_EXIST, 404)
            if status in _RETRY_STATUS and idempotent and attempt < self.options.retries:
                self._sleep(attempt)
                attempt += 1
                continue
            raise RegistryError(f"{status}: {text}", status)

    @staticmethod
    def _read_text(resp: httpx.Response) -> str:
        try:
            return resp.read().decode(errors="replace").strip()
        except httpx.HTTPError:
            return ""
        finally:
            resp.close()

    def _sleep(self, attempt: int) -> None:
        time.sleep(self.options.backoff_s(attempt))

    # --- auth ----------------------------------------------------------------------------

    def _answer_challenge(self, header: str, url: str) -> None:
        challenge = parse_challenge(header) if header else Challenge("")
        creds = self.options.credentials.get(self.host)
        if challenge.scheme == "basic":
            if creds is None:
                raise RegistryError(ERR_UNAUTHORIZED, 401)
            value = basic_header(*creds)
        elif challenge.scheme == "bearer" and challenge.realm:
            value = "Bearer " + self._fetch_token(challenge, creds, url)
        else:
            raise RegistryError(ERR_UNAUTHORIZED, 401)
        with self._auth_lock:
            self._auth = value

    def _fetch_token(self, challenge: Challenge, creds: tuple[str, str] | None, url: str) -> str:
        turl = token_url(challenge)
        headers: dict[str, str] = {}
        realm_host = urlsplit(challenge.realm).netloc.lower()
        if creds is not None:
            headers["Authorization"] = basic_header(*creds)
        elif self.options.key_path is not None and Path(self.options.key_path).is_file():
            # The signature is only ever shown to the registry the request was meant for.
            if realm_host != urlsplit(url).netloc.lower():
                raise RegistryError(f'realm host "{realm_host}" does not match original host '
                                    f'"{urlsplit(url).netloc.lower()}"')
            try:
                key = SigningKey.load(self.options.key_path)
            except OSError as err:
                raise RegistryError(str(err)) from err
            headers["Authorization"] = key.sign(signed_token_data(turl))
        try:
            resp = self.http.get(turl, headers=headers, follow_redirects=True)
        except httpx.TransportError as err:
            raise RegistryError(f"GET {challenge.realm}: {err or type(err).__name__}") from err
        if resp.status_code in (401, 403):
            raise RegistryError(ERR_UNAUTHORIZED, 401)
        if resp.status_code >= 400:
            raise RegistryError(f"{resp.status_code}: {resp.text.strip()}", resp.status_code)
        try:
            data = resp.json()
        except ValueError:
            data = {}
        token = (data.get("token") or data.get("access_token")) if isinstance(data, dict) else None
        if not token:
            raise RegistryError(ERR_UNAUTHORIZED, 401)
        return str(token)

    @property
    def auth_header(self) -> str | None:
        return self._auth

    # --- blob location -------------------------------------------------------------------

    def blob_location(self, digest: str) -> tuple[str, bool]:
        """(URL to read the blob from, whether to send auth there).

        Same-host redirects are followed; at a cross-host redirect its Location is the direct
        URL (a CDN), read without our credentials (download.go).
        """
        url = self.url(f"blobs/{digest}")
        for _ in range(10):
            resp = self.request("GET", url, headers={"Range": "bytes=0-0"}, stream=True)
            resp.close()
            if resp.status_code not in (301, 302, 303, 307, 308):
                return url, True
            target = urljoin(url, resp.headers.get("location", ""))
            if not self.same_host(target):
                return target, False
            url = target
        raise RegistryError(f"GET {url}: too many redirects")

