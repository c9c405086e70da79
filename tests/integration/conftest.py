"""A live Corral server for the whole test session: real process, real port, real store."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from bench.procs import free_port


@dataclass
class LiveServer:
    url: str
    models_dir: Path
    cache_dir: Path
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(tmp: Path, extra_env: dict[str, str] | None = None, timeout: float = 180) -> LiveServer:
    port = free_port()
    models = tmp / "models"
    cache = Path((extra_env or {}).get("CORRAL_CACHE") or tmp / "cache")
    env = {
        **os.environ,
        "OLLAMA_HOST": f"127.0.0.1:{port}",
        "OLLAMA_MODELS": str(models),
        "CORRAL_CACHE": str(cache),
        "HOME": str(tmp / "home"),
        **(extra_env or {}),
    }
    env.pop("OLLAMA_API_KEY", None)
    log_path = tmp / "server.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "serve.cli", "serve"], env=env, cwd=Path(__file__).parents[2],
        stdout=open(log_path, "wb"), stderr=subprocess.STDOUT,
    )
    scheme = "https" if env.get("CORRAL_TLS_CERT") else "http"  # a self-signed test certificate
    server = LiveServer(f"{scheme}://127.0.0.1:{port}", models, cache, proc, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {server.log()}")
        try:
            if httpx.get(server.url + "/", timeout=1, verify=False).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.2)
    stop_server(server)
    raise RuntimeError(f"server did not start: {server.log()}")


def stop_server(server: LiveServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory, corral_cache: Path):
    """One server with the two embedded models, shared by every integration test."""
    server = start_server(tmp_path_factory.mktemp("live"), {"CORRAL_CACHE": str(corral_cache)})
    yield server
    stop_server(server)


@pytest.fixture
def ollama_client(live_server):
    import ollama

    return ollama.Client(host=live_server.url)
