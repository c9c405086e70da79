"""All configuration, read once from the environment into one object and passed down.

Ollama's variables mean what they mean in Ollama (reference §10); Corral's own are CORRAL_*.
Nothing below `serve` reads the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from registry.oci.auth import parse_credentials_spec
from serve.duration import env_keep_alive

DEFAULT_PORT = 11434


def _var(env: dict[str, str], key: str) -> str:
    """envconfig.Var: surrounding whitespace and quotes stripped."""
    return env.get(key, "").strip().strip("\"'").strip()


def _bool(env: dict[str, str], key: str, default: bool = False) -> bool:
    raw = _var(env, key)
    if not raw:
        return default
    lowered = raw.lower()
    if lowered in ("0", "false", "f", "no", "off"):
        return False
    # Ollama's BoolWithDefault: anything unparsable counts as true.
    return True


def _int(env: dict[str, str], key: str, default: int) -> int:
    raw = _var(env, key)
    try:
        return int(raw) if raw else default
    except ValueError:
        return default


def _float(env: dict[str, str], key: str, default: float) -> float:
    raw = _var(env, key)
    try:
        value = float(raw) if raw else default
    except ValueError:
        return default
    return value if value == value and value not in (float("inf"), float("-inf")) else default


def _choice(env: dict[str, str], key: str, allowed: tuple[str, ...], default: str) -> str:
    value = _var(env, key).lower()
    return value if value in allowed else default


def _list(env: dict[str, str], key: str) -> list[str]:
    return [item.strip() for item in _var(env, key).split(",") if item.strip()]


def _pairs(env: dict[str, str], key: str) -> tuple[tuple[str, str], ...]:
    """`a=x,b,c=y` as (name, value) pairs; a missing value is ""."""
    out = []
    for item in _list(env, key):
        name, _, value = item.partition("=")
        out.append((name.strip(), value.strip()))
    return tuple(out)


@dataclass(frozen=True)
class HostAddress:
    scheme: str
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_host(raw: str) -> HostAddress:
    """OLLAMA_HOST: `host`, `host:port`, `scheme://host[:port]`, `[ipv6]`; default 127.0.0.1:11434."""
    raw = raw.strip().strip("\"'")
    if not raw:
        return HostAddress("http", "127.0.0.1", DEFAULT_PORT)
    scheme, rest = "http", raw
    explicit_scheme = "://" in raw
    if explicit_scheme:
        scheme, rest = raw.split("://", 1)
    parts = urlsplit(f"//{rest}")
    host = parts.hostname or "127.0.0.1"
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        port = {"http": 80, "https": 443}.get(scheme, DEFAULT_PORT) if explicit_scheme else DEFAULT_PORT
    return HostAddress(scheme, host, port)


@dataclass(frozen=True)
class Settings:
    host: HostAddress = field(default_factory=lambda: parse_host(""))
    models_dir: Path = field(default_factory=lambda: Path.home() / ".ollama" / "models")
    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "corral")
    keep_alive: float = 300.0
    origins: tuple[str, ...] = ()
    num_parallel: int = 0  # 0: as many as the KV budget allows (at least 16)
    max_loaded_models: int = 0
    max_queue: int = 512
    context_length: int = 4096
    noprune: bool = False
    api_keys: tuple[str, ...] = ()
    default_models: bool = True
    max_body_bytes: int = 64 * 1024**3
    max_json_bytes: int = 64 * 1024**2
    devices: str = ""
    replicas: int = 1
    max_loras: int = 4  # LoRA adapters resident per loaded base model (CORRAL_MAX_LORAS)
    kv_cache_type: str = ""  # OLLAMA_KV_CACHE_TYPE: f16 | q8_0 | q4_0; "": the loader's choice
    debug: bool = False
    trace: bool = False  # OLLAMA_DEBUG=2: uvicorn's trace log, every ASGI message (redacted)
    # Registries (pull/push): basic credentials per host from CORRAL_REGISTRY_AUTH
    # (`host=user:password,...`, these win) and a docker config.json's `auths`; the ed25519
    # key that signs token requests to Ollama's registry (created at `serve` if missing).
    registry_auth: tuple[tuple[str, str, str], ...] = ()
    docker_config: Path | None = None
    key_path: Path | None = None
    # Access (serve/auth): a keys file of hashed, scoped keys beside the bare admin keys; the
    # directories create may read server-side paths from (None: any, as before; (): none);
    # per-key limits (0: none) and per-server option ceilings (0: none).
    api_keys_file: Path | None = None
    local_models: tuple[Path, ...] | None = None
    metrics_open: bool = False
    rate_limit: float = 0.0
    concurrency_limit: int = 0
    max_num_ctx: int = 0
    max_num_predict: int = 0
    # Transport (serve/transport.py): TLS files, the largest request head, and how long a
    # connection may take to send one.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_header_bytes: int = 64 * 1024
    header_timeout: float = 30.0

    @property
    def keys_configured(self) -> bool:
        return bool(self.api_keys) or self.api_keys_file is not None

    def option_ceilings(self) -> dict[str, int]:
        return {"max_num_ctx": self.max_num_ctx, "max_num_predict": self.max_num_predict}
    # Start-up work, done after the socket listens; /ready waits for it (issue 9).
    preload: tuple[tuple[str, str], ...] = ()  # (name, keep_alive as written; "" = default)
    pull: tuple[str, ...] = ()  # pulled when missing
    create: tuple[tuple[str, str], ...] = ()  # (name, Modelfile path)
    insecure_registries: tuple[str, ...] = ()  # host[:port] pulled over http
    drain_timeout: float = 30.0  # seconds in-flight work may take after SIGTERM
    stall_timeout: float = 300.0  # seconds one engine step may take before /health fails
    log_format: str = "text"  # text | json
    # How GGUF weights sit in memory (CORRAL_GGUF_WEIGHTS): "packed" (the quantized blocks
    # repacked into torch's int4/int8 kernels, backends/quant; CPU only, an accelerator keeps
    # float) or "float" (dequantized).
    gguf_weights: str = "packed"
    num_threads: int = 0  # torch's intra-op threads (CORRAL_NUM_THREADS); 0: one per usable core

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        home = Path(env.get("HOME") or Path.home())
        models = _var(env, "OLLAMA_MODELS")
        cache = _var(env, "CORRAL_CACHE")
        keys = [k.strip() for k in _var(env, "CORRAL_API_KEY").split(",") if k.strip()]
        docker = _var(env, "DOCKER_CONFIG")
        origins = [o.strip() for o in _var(env, "OLLAMA_ORIGINS").split(",") if o.strip()]
        keys_file = _var(env, "CORRAL_API_KEYS_FILE")
        local = _var(env, "CORRAL_LOCAL_MODELS")
        if local.lower() == "none":
            local_models: tuple[Path, ...] = ()
        elif local:
            local_models = tuple(Path(p.strip()).expanduser()
                                 for p in local.replace(os.pathsep, ",").split(",") if p.strip())
        else:  # Ollama reads any path for a local user; a shared, keyed server reads none
            local_models = () if keys or keys_file else (home,)
        tls_cert, tls_key = _var(env, "CORRAL_TLS_CERT"), _var(env, "CORRAL_TLS_KEY")
        return cls(
            host=parse_host(_var(env, "OLLAMA_HOST")),
            models_dir=Path(models).expanduser() if models else home / ".ollama" / "models",
            cache_dir=Path(cache).expanduser() if cache else home / ".cache" / "corral",
            keep_alive=env_keep_alive(_var(env, "OLLAMA_KEEP_ALIVE")),
            origins=tuple(origins),
            num_parallel=_int(env, "OLLAMA_NUM_PARALLEL", 0),
            max_loaded_models=_int(env, "OLLAMA_MAX_LOADED_MODELS", 0),
            max_queue=_int(env, "OLLAMA_MAX_QUEUE", 512),
            context_length=_int(env, "OLLAMA_CONTEXT_LENGTH", 0) or 4096,
            noprune=_bool(env, "OLLAMA_NOPRUNE"),
            api_keys=tuple(keys),
            default_models=not _bool(env, "CORRAL_NO_DEFAULT_MODELS"),
            max_body_bytes=_int(env, "CORRAL_MAX_BODY_BYTES", 64 * 1024**3),
            max_json_bytes=_int(env, "CORRAL_MAX_JSON_BYTES", 64 * 1024**2),
            devices=_var(env, "CORRAL_DEVICES"),
            replicas=max(1, _int(env, "CORRAL_REPLICAS", 1)),
            max_loras=max(1, _int(env, "CORRAL_MAX_LORAS", 4)),
            kv_cache_type=_var(env, "OLLAMA_KV_CACHE_TYPE").strip().lower(),
            debug=_bool(env, "OLLAMA_DEBUG"),
            trace=_int(env, "OLLAMA_DEBUG", 0) >= 2,
            registry_auth=tuple((host, user, pw) for host, (user, pw) in
                                parse_credentials_spec(_var(env, "CORRAL_REGISTRY_AUTH")).items()),
            docker_config=(Path(docker).expanduser() if docker else home / ".docker") / "config.json",
            key_path=home / ".ollama" / "id_ed25519",
            api_keys_file=Path(keys_file).expanduser() if keys_file else None,
            local_models=local_models,
            metrics_open=_bool(env, "CORRAL_METRICS_OPEN"),
            rate_limit=_float(env, "CORRAL_RATE_LIMIT", 0.0),
            concurrency_limit=_int(env, "CORRAL_CONCURRENCY_LIMIT", 0),
            max_num_ctx=_int(env, "CORRAL_MAX_NUM_CTX", 0),
            max_num_predict=_int(env, "CORRAL_MAX_NUM_PREDICT", 0),
            tls_cert=Path(tls_cert).expanduser() if tls_cert else None,
            tls_key=Path(tls_key).expanduser() if tls_key else None,
            max_header_bytes=_int(env, "CORRAL_MAX_HEADER_BYTES", 64 * 1024),
            header_timeout=_float(env, "CORRAL_HEADER_TIMEOUT", 30.0),
            preload=_pairs(env, "CORRAL_PRELOAD"),
            pull=tuple(_list(env, "CORRAL_PULL")),
            create=_pairs(env, "CORRAL_CREATE"),
            insecure_registries=tuple(_list(env, "CORRAL_INSECURE_REGISTRIES")),
            drain_timeout=max(0.0, _float(env, "CORRAL_DRAIN_TIMEOUT", 30.0)),
            stall_timeout=max(1.0, _float(env, "CORRAL_STALL_TIMEOUT", 300.0)),
            log_format="json" if _var(env, "CORRAL_LOG_FORMAT").lower() == "json" else "text",
            gguf_weights=_choice(env, "CORRAL_GGUF_WEIGHTS", ("float", "packed"), "packed"),
            num_threads=max(0, _int(env, "CORRAL_NUM_THREADS", 0)),
        )

