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
    env: dict[str, str]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(tmp: Path, extra_env: dict[str, str] | None = None, timeout: float = 180) -> LiveServer:
    """A server whose start-up work is done (/ready 200)."""
    server = spawn_server(tmp, extra_env)
    try:
        wait_ready(server, timeout, api_key=server.env.get("CORRAL_API_KEY", "").split(",")[0].strip())
    except BaseException:
        stop_server(server)
        raise
    return server


def spawn_server(tmp: Path, extra_env: dict[str, str] | None = None) -> LiveServer:
    """A server process just started: it may not listen yet, nor have its models."""
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    models = Path((extra_env or {}).get("OLLAMA_MODELS") or tmp / "models")
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
    return LiveServer(f"http://127.0.0.1:{port}", models, cache, proc, log_path, env)


def ready_status(url: str, api_key: str = "") -> int:
    """/ready's status; a server without /ready (404) answers for `/` instead."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    status = httpx.get(url + "/ready", headers=headers, timeout=5).status_code
    if status == 404:
        status = httpx.get(url + "/", timeout=5).status_code
    return status


def wait_ready(server: LiveServer, timeout: float = 180, api_key: str = "") -> None:
    """Until /ready is 200: start-up work (default models, preloads) runs after the socket
    listens, so a test that talks to the server earlier may find its models missing."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}: {server.log()}")
        try:
            if ready_status(server.url, api_key) == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server not ready within {timeout:.0f} s: {server.log()[-4000:]}")


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
