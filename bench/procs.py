"""Servers under test as subprocesses: Corral (`corral serve`) and llama.cpp's `llama-server`.

Both listen on a free loopback port; their output goes to a log file under bench/out/logs so a
failed start can be diagnosed. Stopping is terminate, then kill after a grace period.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Sequence

import httpx


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerFailed(RuntimeError):
    pass


class ManagedServer:
    """A server subprocess on 127.0.0.1:<port>, stopped on exit of the `with` block."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], port: int, log_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = env
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ManagedServer":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        # A new session, so stopping it also stops any worker processes it forks.
        self.proc = subprocess.Popen(
            self.argv, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        return self

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text("utf-8", "replace")[-chars:]
        except OSError:
            return ""

    def wait_ready(self, path: str = "/ready", timeout_s: float = 300.0) -> float:
        """Poll GET `path` until it answers 200; returns the seconds it took.

        Corral's /ready turns 200 once its start-up work (model imports, preloads) is done; a
        server without /ready (404) is polled on `/` instead."""
        start = time.perf_counter()
        deadline = start + timeout_s
        with httpx.Client(timeout=5.0, trust_env=False) as client:
            while time.perf_counter() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise ServerFailed(
                        f"{self.name} exited with {self.proc.returncode} while starting:\n{self.log_tail()}"
                    )
                try:
                    status = client.get(self.url + path).status_code
                    if status == 404 and path != "/":
                        status = client.get(self.url + "/").status_code
                    if status == 200:
                        return time.perf_counter() - start
                except httpx.HTTPError:
                    pass
                time.sleep(0.25)
        raise ServerFailed(f"{self.name} not ready within {timeout_s:.0f} s:\n{self.log_tail()}")

    def stop(self, grace_s: float = 15.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> "ManagedServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def corral_argv() -> list[str]:
    """`corral serve` from this interpreter's environment (the repo's .venv under `make bench`)."""
    script = Path(sys.executable).parent / "corral"
    if script.exists():
        return [str(script), "serve"]
    found = shutil.which("corral")
    if found:
        return [found, "serve"]
    return [sys.executable, "-c", "import sys; from serve.cli.main import main; sys.exit(main())", "serve"]


def corral_server(
    *, models_dir: Path, cache_dir: Path, log_path: Path, num_parallel: int, extra_env: dict[str, str] | None = None
) -> ManagedServer:
    port = free_port()
    env = dict(os.environ)
    env.update(
        {
            "OLLAMA_HOST": f"127.0.0.1:{port}",
            "OLLAMA_MODELS": str(models_dir),
            "CORRAL_CACHE": str(cache_dir),
            "OLLAMA_NUM_PARALLEL": str(num_parallel),
            # The bench decides when models unload (the prefix-cache scenario does, explicitly).
            "OLLAMA_KEEP_ALIVE": "-1",
        }
    )
    env.update(extra_env or {})
    return ManagedServer("corral", corral_argv(), env, port, log_path)


def llama_server(
    binary: str, *, gguf: Path, parallel: int, ctx_per_slot: int, threads: int, log_path: Path
) -> ManagedServer:
    port = free_port()
    argv = [
        binary,
        "-m", str(gguf),
        "--host", "127.0.0.1",
        "--port", str(port),
        "-np", str(parallel),
        "-c", str(parallel * ctx_per_slot),
        "-t", str(threads),
        "-tb", str(threads),
    ]
    return ManagedServer(f"llama-server -np {parallel}", argv, dict(os.environ), port, log_path)
