"""`make loadtest` (`python -m bench.guidellm`): GuideLLM's concurrency sweep against Corral's `/v1`.

GuideLLM (PyPI `guidellm`, in its own venv `.venv-guidellm`, built by `make install-test`) is run
as its CLI with a scenario file this module writes: the `openai_http` backend on
`/v1/chat/completions` (streamed, `stream_options.include_usage`), a `concurrent` profile over
the sweep's stream counts, synthetic prompts of a fixed token length, and per level a request
count and a duration cap. Its report (json, html, csv, console) lands in `bench/out/guidellm/`
beside the bench report, with a short `summary.md`.

It starts `corral serve` itself (temporary store, the bench's shared converted-weights cache)
unless `--url`/`$LOADTEST_URL` names a running server. GuideLLM counts tokens with a tokenizer it
loads by `from_pretrained`, offline: the one `corral tokenizer MODEL DIR` writes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.ollama_ops import load_model
from bench.procs import corral_server

REPO = Path(__file__).resolve().parent.parent
GUIDELLM = Path(os.environ.get("GUIDELLM") or REPO / ".venv-guidellm" / "bin" / "guidellm")
CACHE = Path(os.environ.get("CORRAL_BENCH_CACHE", Path.home() / ".cache" / "corral-bench"))


@dataclass
class Sweep:
    streams: list[int]
    prompt_tokens: int = 128
    output_tokens: int = 64
    requests: list[int] | None = None  # per level; None: 2 per stream, at least 8
    max_seconds: float = 120.0  # per level
    request_format: str = "/v1/chat/completions"

    def request_counts(self) -> list[int]:
        return self.requests or [max(8, 2 * s) for s in self.streams]


def scenario(sweep: Sweep, *, target: str, model: str, tokenizer: str, api_key: str = "") -> dict[str, Any]:
    """GuideLLM's scenario file (`guidellm run -c FILE`): the whole benchmark in one document,
    since the CLI's `kind=...,key=value` options cannot carry per-level lists."""
    backend: dict[str, Any] = {"kind": "openai_http", "target": target, "model": model,
                               "request_format": sweep.request_format}
    if api_key:
        backend["api_key"] = api_key
    return {
        "metadata": {"name": "corral-sweep", "description": "Corral /v1, concurrent streams"},
        "spec": {
            "backend": backend,
            "profile": {"kind": "concurrent", "streams": sweep.streams},
            "tokenizer": {"kind": "huggingface_auto", "model": tokenizer},
            "data": [{"kind": "synthetic_text", "prompt_tokens": sweep.prompt_tokens,
                      "output_tokens": sweep.output_tokens}],
            "constraints": [
                {"kind": "max_requests", "count": sweep.request_counts()},
                {"kind": "max_duration", "seconds": sweep.max_seconds},
            ],
        },
    }


def guidellm_argv(scenario_path: Path, out_dir: Path, binary: Path = GUIDELLM) -> list[str]:
    outputs = [f"kind=json,path={out_dir / 'report.json'}", f"kind=html,path={out_dir / 'report.html'}",
               f"kind=csv,path={out_dir / 'report.csv'}", "kind=console"]
    argv = [str(binary), "run", "-c", str(scenario_path), "--disable-progress"]
    for output in outputs:
        argv += ["--output", output]
    return argv


def guidellm_env(workers: int = 2) -> dict[str, str]:
    """Offline (the tokenizer is a local directory), and few worker processes: each is a spawned
    interpreter importing transformers, which costs more start-up than it adds on a small CPU."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "NO_COLOR": "1"}
    env.setdefault("GUIDELLM__MAX_WORKER_PROCESSES", str(workers))
    return env


def run_guidellm(sweep: Sweep, *, target: str, model: str, tokenizer: str, out_dir: Path,
                 api_key: str = "", timeout_s: float | None = None) -> subprocess.CompletedProcess[str]:
    """Write the scenario, run GuideLLM on it; its console output goes to `console.log`."""
    if not GUIDELLM.exists():
        raise FileNotFoundError(f"{GUIDELLM} is missing: `make install-test` builds the GuideLLM venv")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "scenario.json"
    path.write_text(json.dumps(scenario(sweep, target=target, model=model, tokenizer=tokenizer,
                                        api_key=api_key), indent=2))
    # cwd: GuideLLM may write a log file into its working directory.
    done = subprocess.run(guidellm_argv(path, out_dir), cwd=out_dir, env=guidellm_env(),
                          capture_output=True, text=True, timeout=timeout_s)
    (out_dir / "console.log").write_text(done.stdout + done.stderr)
    return done


# --- the report ------------------------------------------------------------------------------

def summary_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per concurrency level of GuideLLM's json report."""
    rows = []
    for bench in report.get("benchmarks") or []:
        metrics = bench["metrics"]

        def stat(name: str, key: str, group: str = "successful") -> float:
            return float((metrics.get(name) or {}).get(group, {}).get(key) or 0.0)

        totals = metrics["request_totals"]
        rows.append({
            "streams": bench["config"]["strategy"]["streams"],
            "completed": int(totals.get("successful") or 0),
            "errored": int(totals.get("errored") or 0),
            "incomplete": int(totals.get("incomplete") or 0),
            "duration_s": float(bench.get("duration") or 0.0),
            "requests_per_s": stat("requests_per_second", "mean"),
            "output_tok_per_s": stat("output_tokens_per_second", "mean", "total"),
            "ttft_ms_p50": stat("time_to_first_token_ms", "median"),
            "itl_ms_p50": stat("inter_token_latency_ms", "median"),
            "output_tokens_mean": stat("output_token_count", "mean"),
        })
    return rows


def summary_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| C | completed | errored | incomplete | req/s | output tok/s | TTFT p50 ms | ITL p50 ms |"
             " output tok/req |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['streams']} | {r['completed']} | {r['errored']} | {r['incomplete']} "
                     f"| {r['requests_per_s']:.2f} | {r['output_tok_per_s']:.1f} | {r['ttft_ms_p50']:.0f} "
                     f"| {r['itl_ms_p50']:.0f} | {r['output_tokens_mean']:.1f} |")
    return "\n".join(lines)


# --- the run ---------------------------------------------------------------------------------

def write_tokenizer(model: str, out: Path, models_dir: Path | None = None, cache_dir: Path | None = None) -> Path:
    """`corral tokenizer MODEL DIR` in-process, on the store and cache of the server it tests
    (by default those `corral serve` would use here)."""
    from serve.cli.tokenizer import save_tokenizer
    from serve.settings import Settings

    settings = Settings.from_env()
    return save_tokenizer(models_dir or settings.models_dir, cache_dir or settings.cache_dir, model, out)


def warm_up(url: str, model: str, api_key: str = "", timeout_s: float = 900.0) -> float:
    """Load the model before GuideLLM's clock starts: the first level must not time a load."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def go() -> float:
        async with httpx.AsyncClient(headers=headers, trust_env=False) as client:
            wall, _ = await load_model(client, url, model, timeout_s=timeout_s)
            return wall

    return asyncio.run(go())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.guidellm", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=os.environ.get("LOADTEST_URL") or None,
                   help="a running server (default: $LOADTEST_URL; none: start corral serve)")
    p.add_argument("--api-key", default=os.environ.get("LOADTEST_API_KEY", ""))
    p.add_argument("--model", default=os.environ.get("LOADTEST_MODEL") or "gemma3:270m")
    p.add_argument("--tokenizer", default=os.environ.get("LOADTEST_TOKENIZER") or None,
                   help="a tokenizer directory (default: `corral tokenizer` from the local store)")
    p.add_argument("--streams", default="1,4,16,32", help="concurrency levels (default 1,4,16,32)")
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--output-tokens", type=int, default=64)
    p.add_argument("--max-seconds", type=float, default=120.0, help="cap per level")
    p.add_argument("--request-format", default="/v1/chat/completions",
                   choices=["/v1/chat/completions", "/v1/completions"])
    p.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "guidellm")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sweep = Sweep([int(s) for s in args.streams.split(",")], args.prompt_tokens, args.output_tokens,
                  max_seconds=args.max_seconds, request_format=args.request_format)
    shutil.rmtree(args.out, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix="corral-loadtest-"))
    server = None
    try:
        url, models_dir, cache_dir = args.url, None, None
        if url is None:
            models_dir, cache_dir = work / "models", CACHE / "corral-cache"
            server = corral_server(models_dir=models_dir, cache_dir=cache_dir,
                                   log_path=args.out / "corral.log", num_parallel=max(sweep.streams))
            server.start()
            print(f"corral: starting on {server.url} (log {server.log_path})", file=sys.stderr)
            server.wait_ready()
            url = server.url
        print(f"loading {args.model}: {warm_up(url, args.model, args.api_key):.1f} s", file=sys.stderr)
        # Beside the report, so `guidellm run -c bench/out/guidellm/scenario.json` runs again.
        tokenizer = args.tokenizer or str(write_tokenizer(args.model, args.out / "tokenizer", models_dir, cache_dir))
        print(f"guidellm: streams {sweep.streams}, report in {args.out}", file=sys.stderr)
        done = run_guidellm(sweep, target=url, model=args.model, tokenizer=tokenizer, out_dir=args.out,
                            api_key=args.api_key)
        if done.returncode != 0 or not (args.out / "report.json").exists():
            print((done.stdout + done.stderr)[-4000:], file=sys.stderr)
            return done.returncode or 1
        table = summary_table(summary_rows(json.loads((args.out / "report.json").read_text())))
        (args.out / "summary.md").write_text(table + "\n")
        print(table)
        return 0
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
