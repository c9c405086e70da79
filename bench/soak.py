"""Soak: a live Corral under a mixed workload for N minutes, its resources sampled throughout.

`python -m bench.soak --minutes 30` (`make soak`); the test suite runs `--minutes 3`.
Workload, all at once: native generate/chat (streamed and not), embeddings, structured output,
tool calls, the OpenAI and Anthropic routes; 10% of streams cut mid-way and some read slowly;
two models created from gemma3:270m that a short keep_alive unloads and the next request loads
again; create/copy/delete churn; push once and then delete/pull again from a loopback registry.
Every few seconds: RSS, threads, open fds, KV blocks free/total, running and waiting sequences.

Pass: no 5xx, no other error, no hung request, every uncut stream complete, KV blocks back to
full once idle, and no upward trend after warm-up. A trend is a Theil–Sen slope (median of
pairwise slopes, robust to outliers) over the minima of 20 s buckets (a leak raises the floor).
Memory is taken at "quiet" windows instead, one median per window: the 10 s after each swap
model has unloaded, with neither loaded or loading, so every point is the same state and a leak
across evict/reload shows as a rising level instead of hiding in the 1.7 GB steps of the loads. Short runs on a loaded 2-core
machine measure allocator noise, so their bounds are wide but far below a real leak (the one
found before grew 585 MiB/min and 3.8 threads/min); 20 minutes and more get strict bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.loadgen import make_client
from bench.procs import ManagedServer, corral_server

OUT = Path(__file__).parent / "out"
SOURCE = "gemma3:270m"
# The served model: gemma3:270m with a template that declares tools, so tool calls can be asked.
BASE = "soak-base"
TOOLS_TEMPLATE = Path(__file__).parents[1] / "tests" / "fixtures" / "gemma3_tools.gotmpl"
SWAP_MODELS = ("soak-a", "soak-b")
BUCKET_S = 20.0


@dataclass(frozen=True)
class Bounds:
    rss_mib_per_min: float
    threads_per_min: float
    fds_per_min: float
    threads_growth: int  # end (idle) over the first bucket after warm-up
    fds_growth: int


STRICT = Bounds(rss_mib_per_min=24.0, threads_per_min=0.5, fds_per_min=1.0,
                threads_growth=16, fds_growth=32)
SHORT = Bounds(rss_mib_per_min=200.0, threads_per_min=8.0, fds_per_min=16.0,
               threads_growth=40, fds_growth=96)


def bounds_for(minutes: float) -> Bounds:
    return STRICT if minutes >= 20 else SHORT


def warmup_for(minutes: float) -> float:
    """Seconds left out of the trend: the first loads, pulls and allocator growth (a short run
    rose ~180 MiB in its first minute and then stayed flat)."""
    return minutes * 60 / 3 if minutes >= 20 else max(60.0, minutes * 60 / 2)


@dataclass
class Tally:
    requests: int = 0
    tokens: int = 0
    cut: int = 0
    slow: int = 0
    server_errors: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    hung: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)
    by_kind: dict[str, int] = field(default_factory=dict)

    def count(self, kind: str) -> None:
        self.requests += 1
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1

    def failed(self, kind: str, status: int, text: str) -> None:
        line = f"{kind}: HTTP {status}: {text[:300]}"
        (self.server_errors if status >= 500 else self.errors).append(line)


# ---------------------------------------------------------------------------------- requests

def _request(kind: str, rng: random.Random) -> tuple[str, dict[str, Any], str]:
    """(path, body, stream format) for one request of `kind`."""
    prompt = rng.choice(["Why is the sky blue?", "Name three colours.", "Count to five.",
                         "Write a haiku about rain.", "What is 2+2?"])
    small = {"num_predict": rng.randint(4, 16), "temperature": 0, "seed": 7}
    stream = rng.random() < 0.7
    if kind == "generate":
        return "/api/generate", {"model": BASE, "prompt": prompt, "options": small,
                                 "stream": stream}, "ndjson" if stream else "json"
    if kind == "chat":
        return "/api/chat", {"model": BASE, "messages": [{"role": "user", "content": prompt}],
                             "options": small, "stream": stream}, "ndjson" if stream else "json"
    if kind == "structured":
        schema = {"type": "object", "properties": {"answer": {"type": "string"}},
                  "required": ["answer"]}
        return "/api/chat", {"model": BASE, "messages": [{"role": "user", "content": prompt}],
                             "format": schema, "options": small, "stream": stream}, (
            "ndjson" if stream else "json")
    if kind == "tools":
        tool = {"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}}}}
        return "/api/chat", {"model": BASE, "tools": [tool], "options": small, "stream": stream,
                             "messages": [{"role": "user", "content": "Weather in Paris?"}]}, (
            "ndjson" if stream else "json")
    if kind == "embed":
        return "/api/embed", {"model": "all-minilm", "input": [prompt, prompt[::-1]]}, "json"
    if kind == "openai":
        return "/v1/chat/completions", {"model": BASE, "stream": stream, "max_tokens": 12,
                                        "temperature": 0,
                                        "messages": [{"role": "user", "content": prompt}]}, (
            "sse-openai" if stream else "json")
    if kind == "anthropic":
        return "/v1/messages", {"model": BASE, "stream": stream, "max_tokens": 12,
                                "messages": [{"role": "user", "content": prompt}]}, (
            "sse-anthropic" if stream else "json")
    raise ValueError(kind)


def _complete(fmt: str, lines: list[str]) -> tuple[bool, int]:
    """Whether a whole stream arrived, and its token-ish chunk count."""
    if fmt == "ndjson":
        objs = [json.loads(x) for x in lines if x.strip()]
        ok = bool(objs) and objs[-1].get("done") is True and not any("error" in o for o in objs)
        return ok, max(0, len(objs) - 1)
    if fmt == "sse-openai":
        data = [x for x in lines if x.startswith("data:")]
        return bool(data) and data[-1].strip() == "data: [DONE]", max(0, len(data) - 2)
    events = [x for x in lines if x.startswith("event:")]
    return bool(events) and events[-1].strip() == "event: message_stop", len(events)


async def one_request(client: httpx.AsyncClient, url: str, kind: str, tally: Tally,
                      rng: random.Random) -> None:
    path, body, fmt = _request(kind, rng)
    tally.count(kind)
    cut = fmt != "json" and rng.random() < 0.10
    slow = fmt != "json" and not cut and rng.random() < 0.05
    try:
        if fmt == "json":
            r = await client.post(url + path, json=body)
            if r.status_code != 200:
                tally.failed(kind, r.status_code, r.text)
            return
        async with client.stream("POST", url + path, json=body) as r:
            if r.status_code != 200:
                tally.failed(kind, r.status_code, (await r.aread()).decode(errors="replace"))
                return
            lines: list[str] = []
            async for line in r.aiter_lines():
                lines.append(line)
                if cut and len(lines) >= 2:
                    tally.cut += 1
                    return  # leaving the block closes the connection mid-stream
                if slow:
                    await asyncio.sleep(0.3)
            tally.slow += slow
            ok, tokens = _complete(fmt, lines)
            tally.tokens += tokens
            if not ok:
                tally.incomplete.append(f"{kind}: {lines[-3:]}")
    except httpx.TimeoutException as err:
        tally.hung.append(f"{kind}: {type(err).__name__} {body}")
    except httpx.HTTPError as err:
        tally.errors.append(f"{kind}: {type(err).__name__}: {err}")


async def inference_worker(client, url, tally, deadline, seed) -> None:
    rng = random.Random(seed)
    kinds = ("generate", "chat", "structured", "tools", "embed", "openai", "anthropic")
    while time.monotonic() < deadline:
        await one_request(client, url, rng.choice(kinds), tally, rng)


async def _call(client, tally: Tally, kind: str, method: str, url: str, body: dict,
                ok: tuple[int, ...] = (200,)) -> bool:
    tally.count(kind)
    try:
        r = await client.request(method, url, json=body)
    except httpx.TimeoutException as err:
        tally.hung.append(f"{kind}: {type(err).__name__} {body}")
        return False
    except httpx.HTTPError as err:
        tally.errors.append(f"{kind}: {type(err).__name__}: {err}")
        return False
    if r.status_code not in ok:
        tally.failed(kind, r.status_code, r.text)
        return False
    return True


async def _swap_models_gone(client, url: str, timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            loaded = {m["name"] for m in (await client.get(url + "/api/ps")).json()["models"]}
        except (httpx.HTTPError, ValueError, KeyError):
            loaded = set()
        if not loaded & {f"{m}:latest" for m in SWAP_MODELS}:
            return True
        await asyncio.sleep(1.0)
    return False


async def swap_worker(client, url, tally, deadline, quiet: dict) -> None:
    """Alternate two models with a short keep_alive: each request loads, each idle unloads.
    Between swaps, once neither is loaded, `quiet` is on for 10 s: memory measured then is the
    same state every time, so a leak across evict/reload shows as a rising quiet level."""
    i = 0
    while time.monotonic() < deadline:
        model = SWAP_MODELS[i % 2]
        await _call(client, tally, "swap", "POST", url + "/api/generate", {
            "model": model, "prompt": "Hi", "stream": False, "keep_alive": "1s",
            "options": {"num_predict": 4, "temperature": 0}})
        i += 1
        if await _swap_models_gone(client, url):
            quiet["on"] = True
            await asyncio.sleep(10.0)
            quiet["on"] = False


async def churn_worker(client, url, tally, deadline, registry: str | None) -> None:
    i = 0
    while time.monotonic() < deadline:
        made, copied = f"soak-tmp-{i}", f"soak-copy-{i}"
        if await _call(client, tally, "create", "POST", url + "/api/create",
                       {"model": made, "from": SOURCE, "system": f"run {i}", "stream": False}):
            await _call(client, tally, "copy", "POST", url + "/api/copy",
                        {"source": made, "destination": copied})
            for name in (made, copied):
                await _call(client, tally, "delete", "DELETE", url + "/api/delete",
                            {"model": name}, ok=(200, 404))
        if registry:
            remote = f"{registry}/soak/a:latest"
            await _call(client, tally, "delete", "DELETE", url + "/api/delete",
                        {"model": remote}, ok=(200, 404))
            await _call(client, tally, "pull", "POST", url + "/api/pull",
                        {"model": remote, "insecure": True, "stream": False})
        i += 1
        await asyncio.sleep(1.0)


# ---------------------------------------------------------------------------------- sampling

def _metric_sum(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{"))


async def sample(client, url: str, proc: psutil.Process, start: float,
                 quiet: dict | None = None) -> dict[str, float]:
    mem = proc.memory_info().rss / 2**20
    metrics = (await client.get(url + "/metrics")).text
    return {
        "t": time.monotonic() - start, "rss_mib": mem, "threads": proc.num_threads(),
        "fds": proc.num_fds(),
        "kv_free": _metric_sum(metrics, "corral_kv_blocks_free"),
        "kv_total": _metric_sum(metrics, "corral_kv_blocks_total"),
        "running": _metric_sum(metrics, "corral_sequences_running"),
        "waiting": _metric_sum(metrics, "corral_sequences_waiting"),
        "quiet": 1.0 if quiet and quiet["on"] else 0.0,
    }


async def sampler(client, url, proc, start, deadline, samples: list, every_s: float,
                  tally: Tally, quiet: dict) -> None:
    while time.monotonic() < deadline:
        try:
            samples.append(await sample(client, url, proc, start, quiet))
        except httpx.HTTPError as err:
            tally.errors.append(f"metrics: {type(err).__name__}: {err}")
        await asyncio.sleep(every_s)


# ---------------------------------------------------------------------------------- judging

def theil_sen(points: list[tuple[float, float]]) -> float:
    slopes = [(y2 - y1) / (x2 - x1) for i, (x1, y1) in enumerate(points)
              for x2, y2 in points[i + 1:] if x2 > x1]
    return statistics.median(slopes) if slopes else 0.0


def bucket_minima(samples: list[dict], key: str, since: float) -> list[tuple[float, float]]:
    buckets: dict[int, list[dict]] = {}
    for s in samples:
        if s["t"] >= since:
            buckets.setdefault(int((s["t"] - since) // BUCKET_S), []).append(s)
    out = []
    for group in buckets.values():
        low = min(group, key=lambda s: s[key])
        out.append((low["t"] / 60.0, low[key]))  # per minute
    return out


def quiet_levels(samples: list[dict], key: str, since: float) -> list[tuple[float, float]]:
    """One point per quiet window (consecutive quiet samples): its median, at its mid-time."""
    windows: list[list[dict]] = []
    for s in samples:
        if s["t"] < since or not s.get("quiet"):
            continue
        if windows and s["t"] - windows[-1][-1]["t"] <= 5.0:
            windows[-1].append(s)
        else:
            windows.append([s])
    return [(statistics.mean(x["t"] for x in w) / 60.0, statistics.median(x[key] for x in w))
            for w in windows]


def judge(samples: list[dict], idle: dict, tally: Tally, warmup_s: float,
          bounds: Bounds) -> tuple[list[str], dict[str, float]]:
    failures: list[str] = []
    for name, items in (("5xx", tally.server_errors), ("errors", tally.errors),
                        ("hung", tally.hung), ("incomplete streams", tally.incomplete)):
        if items:
            failures.append(f"{len(items)} {name}: " + " | ".join(items[:5]))
    if idle["kv_total"] == 0:
        failures.append("no engine loaded at the end: KV blocks could not be checked")
    elif idle["kv_free"] != idle["kv_total"]:
        failures.append(f"KV blocks not back to full once idle: {idle['kv_free']:.0f} free "
                        f"of {idle['kv_total']:.0f}")
    figures: dict[str, float] = {}
    for key, bound, growth in (("rss_mib", bounds.rss_mib_per_min, None),
                               ("threads", bounds.threads_per_min, bounds.threads_growth),
                               ("fds", bounds.fds_per_min, bounds.fds_growth)):
        # memory at the quiet windows where the run has at least two of them, else bucket floors
        levels = quiet_levels(samples, key, warmup_s) if key == "rss_mib" else []
        minima = levels if len(levels) >= 2 else bucket_minima(samples, key, warmup_s)
        slope = theil_sen(minima)
        figures[f"{key}_slope_per_min"] = slope
        if len(minima) < 2:
            failures.append(f"{key}: only {len(minima)} points after warm-up; run longer")
        elif slope > bound:
            failures.append(f"{key} trend {slope:+.2f}/min after warm-up exceeds {bound}/min; "
                            f"bucket minima (min, value): {[(round(t, 2), v) for t, v in minima]}")
        if growth is not None and minima:
            grew = idle[key] - minima[0][1]
            figures[f"{key}_growth"] = grew
            if grew > growth:
                failures.append(f"{key} grew by {grew:.0f} (idle at the end {idle[key]:.0f}, "
                                f"first bucket after warm-up {minima[0][1]:.0f}) > {growth}; "
                                f"bucket minima: {[v for _, v in minima]}")
    return failures, figures


# ---------------------------------------------------------------------------------- running

async def _prepare(client, url: str, registry: str | None) -> None:
    r = await client.post(url + "/api/create", json={
        "model": BASE, "from": SOURCE, "template": TOOLS_TEMPLATE.read_text(), "stream": False})
    r.raise_for_status()
    for name in SWAP_MODELS:
        r = await client.post(url + "/api/create", json={
            "model": name, "from": SOURCE, "system": f"You are {name}.", "stream": False})
        r.raise_for_status()
    if registry:
        remote = f"{registry}/soak/a:latest"
        (await client.post(url + "/api/copy", json={"source": SOURCE,
                                                    "destination": remote})).raise_for_status()
        r = await client.post(url + "/api/push", json={"model": remote, "insecure": True,
                                                       "stream": False}, timeout=600)
        r.raise_for_status()


async def _wait_idle(client, url, proc, start, timeout_s: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        s = await sample(client, url, proc, start)
        if (s["running"] == s["waiting"] == 0 and s["kv_free"] == s["kv_total"]) or \
                time.monotonic() > deadline:
            return s
        await asyncio.sleep(1.0)


async def soak(url: str, pid: int, minutes: float, registry: str | None,
               workers: int = 4, sample_s: float = 2.0) -> dict[str, Any]:
    proc = psutil.Process(pid)
    tally = Tally()
    samples: list[dict] = []
    async with make_client(workers + 4, read_timeout=300.0) as client:
        await _prepare(client, url, registry)
        start = time.monotonic()
        deadline = start + minutes * 60
        tasks = [inference_worker(client, url, tally, deadline, seed) for seed in range(workers)]
        quiet = {"on": False}
        tasks += [swap_worker(client, url, tally, deadline, quiet),
                  churn_worker(client, url, tally, deadline, registry),
                  sampler(client, url, proc, start, deadline, samples, sample_s, tally, quiet)]
        await asyncio.gather(*tasks)
        # one more request holds the base model loaded, so its KV pool is what idle measures
        await _call(client, tally, "final", "POST", url + "/api/generate", {
            "model": BASE, "prompt": "Hi", "stream": False, "keep_alive": "10m",
            "options": {"num_predict": 2}})
        await asyncio.sleep(5.0)  # let cut streams' aborts land
        idle = await _wait_idle(client, url, proc, start)
    warmup_s = warmup_for(minutes)
    failures, figures = judge(samples, idle, tally, warmup_s, bounds_for(minutes))
    return {"minutes": minutes, "tally": tally, "samples": samples, "idle": idle,
            "failures": failures, "figures": figures, "warmup_s": warmup_s}


def write_report(result: dict[str, Any], out: Path = OUT) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    tally: Tally = result["tally"]
    idle = result["idle"]
    bounds = bounds_for(result["minutes"])
    lines = [
        f"# Soak, {result['minutes']:g} minutes: {'FAIL' if result['failures'] else 'PASS'}", "",
        "| figure | value |", "|---|---|",
        f"| requests | {tally.requests} ({', '.join(f'{k} {v}' for k, v in sorted(tally.by_kind.items()))}) |",
        f"| streamed chunks | {tally.tokens} |",
        f"| streams cut / read slowly | {tally.cut} / {tally.slow} |",
        f"| 5xx / other errors / hung / incomplete | {len(tally.server_errors)} / "
        f"{len(tally.errors)} / {len(tally.hung)} / {len(tally.incomplete)} |",
        f"| KV blocks free once idle | {idle['kv_free']:.0f} / {idle['kv_total']:.0f} |",
        f"| RSS slope after warm-up | {result['figures'].get('rss_mib_slope_per_min', 0):+.2f} "
        f"MiB/min (bound {bounds.rss_mib_per_min}) |",
        f"| threads slope / growth | {result['figures'].get('threads_slope_per_min', 0):+.2f}/min"
        f" / {result['figures'].get('threads_growth', 0):+.0f} (bounds {bounds.threads_per_min},"
        f" {bounds.threads_growth}) |",
        f"| fds slope / growth | {result['figures'].get('fds_slope_per_min', 0):+.2f}/min / "
        f"{result['figures'].get('fds_growth', 0):+.0f} (bounds {bounds.fds_per_min}, "
        f"{bounds.fds_growth}) |",
        f"| warm-up | {result['warmup_s']:.0f} s |", "",
    ]
    lines += [f"- {f}" for f in result["failures"]]
    report = out / "soak.md"
    report.write_text("\n".join(lines) + "\n")
    (out / "soak_samples.json").write_text(json.dumps(result["samples"]))
    _plot(result["samples"], out / "soak.png")
    return report


def _plot(samples: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ("rss_mib", "threads", "fds", "kv_free", "running", "waiting")
    fig, axes = plt.subplots(len(keys), 1, figsize=(8, 12), sharex=True)
    t = [s["t"] / 60 for s in samples]
    for ax, key in zip(axes, keys):
        ax.plot(t, [s[key] for s in samples])
        ax.set_ylabel(key)
    axes[-1].set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run_with_server(minutes: float, cache_dir: Path | None, registry: str | None,
                    workers: int = 4) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="corral-soak-") as tmp:
        root = Path(tmp)
        server = corral_server(
            models_dir=root / "models", cache_dir=cache_dir or root / "cache",
            log_path=OUT / "logs" / "soak-server.log", num_parallel=0,
            extra_env={"OLLAMA_KEEP_ALIVE": "5m", "CORRAL_DEVICES": "cpu:8GiB",
                       "HOME": str(root / "home")})
        with server:
            server.wait_ready(timeout_s=600)
            assert server.proc is not None
            try:
                result = asyncio.run(soak(server.url, server.proc.pid, minutes, registry,
                                          workers))
            except BaseException:
                print(server.log_tail(4000))
                raise
            result["server_log_tail"] = server.log_tail(4000)
            return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--cache", type=Path, default=None, help="CORRAL_CACHE to reuse")
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args(argv)
    from tests.registry.test_oci_helpers import start_registry

    with tempfile.TemporaryDirectory(prefix="corral-soak-registry-") as reg_dir:
        registry = start_registry(Path(reg_dir))
        try:
            result = run_with_server(args.minutes, args.cache, registry.host, args.workers)
        finally:
            registry.stop()
    report = write_report(result)
    print(report.read_text())
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
