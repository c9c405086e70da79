"""The report: raw figures, the ratios the engine's targets name with PASS/MISS, and a plot.

Absolute figures on a shared 2-core CPU are noise; the ratios, measured side by side in one run,
are what the targets are about (DESIGN.md, "Testing and measuring").
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.hf_baseline import HFRow
from bench.metrics import PhaseStats
from bench.scenarios import ScenarioResult

# The targets of the engine issue (#3) and the structured-output issue (#6), in one place.
# `>=`: the ratio must reach the figure; `<=`: stay at or below it.
TARGETS: dict[str, tuple[str, float, str]] = {
    # key: (op, figure, why)
    "single_vs_hf": (">=", 1.2, "single-stream decode beats generate() by a fifth"),
    "batch_vs_hf": (">=", 1.0, "continuous batching at least matches a static batch of 16"),
    "scaling": (">=", 6.0, "batching pays: aggregate at 16 clients vs one"),
    "vs_llama": (">=", 1.0, "beat llama-server -np 32's aggregate at 32 clients"),
    "single_vs_llama": (">=", 0.7, "a single stream within reach of llama.cpp's on its own GGUF"),
    "memory_vs_llama": ("<=", 1.5, "resident memory serving 32 x 1024 tokens near llama-server's"),
    "prefix_cache": ("<=", 0.5, "a warm history at least halves TTFT"),
    "busy_ttft": ("<=", 3.0, "chunked prefill bounds the wait behind 15 decodes"),
    "load_time": (">=", 10.0, "the converted-weights cache makes the second load 10x faster"),
    "structured": (">=", 0.8, "JSON-schema masks cost at most 20% throughput"),
    "lora_throughput": (">=", 0.7, "adapters batched on one base keep 70% of its throughput"),
    "lora_memory": ("<=", 1.1, "4 adapter models share one copy of the base"),
}


@dataclass
class Ratio:
    key: str
    name: str
    value: float | None
    status: str | None = None  # overrides the verdict: "not supported", "not measured", ...

    @property
    def target(self) -> tuple[str, float, str]:
        return TARGETS[self.key]

    @property
    def verdict(self) -> str:
        if self.status:
            return self.status
        if self.value is None:
            return "n/a"
        op, figure, _ = self.target
        ok = self.value >= figure if op == ">=" else self.value <= figure
        return "PASS" if ok else "MISS"


@dataclass
class BenchResults:
    meta: dict[str, Any] = field(default_factory=dict)
    phases: list[PhaseStats] = field(default_factory=list)
    hf: list[HFRow] = field(default_factory=list)
    scenarios: list[ScenarioResult] = field(default_factory=list)
    extra_phases: list[PhaseStats] = field(default_factory=list)  # scenario phases, shown raw
    notes: list[str] = field(default_factory=list)

    def phase(self, system: str, concurrency: int) -> PhaseStats | None:
        for stats in self.phases:
            if stats.system == system and stats.concurrency == concurrency:
                return stats
        return None

    def hf_row(self, mode: str) -> HFRow | None:
        return next((row for row in self.hf if row.mode == mode), None)

    def scenario(self, key: str) -> ScenarioResult | None:
        return next((s for s in self.scenarios if s.key == key), None)


def div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def compute_ratios(results: BenchResults, batch: int, top: int) -> list[Ratio]:
    """`batch`: the static-batch size (and the concurrency compared with it); `top`: the highest
    concurrency, compared with llama-server."""

    def tok_s(system: str, c: int) -> float | None:
        stats = results.phase(system, c)
        return stats.tok_s if stats else None

    single, static = results.hf_row("single"), results.hf_row("static batch")
    hf_batch = static.batch if static else batch
    def rss(system: str, c: int) -> float | None:
        stats = results.phase(system, c)
        return stats.peak_rss_bytes if stats else None

    llama = None if any(p.system == "llama-server" for p in results.phases) else "not measured"
    ratios = [
        Ratio("single_vs_hf", "Corral@1 / transformers single", div(tok_s("corral", 1), single and single.tok_s)),
        Ratio("batch_vs_hf", f"Corral@{hf_batch} / transformers static batch {hf_batch}",
              div(tok_s("corral", hf_batch), static and static.tok_s)),
        Ratio("scaling", f"Corral@{batch} / Corral@1", div(tok_s("corral", batch), tok_s("corral", 1))),
        Ratio("vs_llama", f"Corral@{top} / llama-server@{top}", div(tok_s("corral", top), tok_s("llama-server", top)),
              status=llama),
        Ratio("single_vs_llama", "Corral@1 / llama-server@1", div(tok_s("corral", 1), tok_s("llama-server", 1)),
              status=llama),
        Ratio("memory_vs_llama", f"Peak RSS Corral@{top} / llama-server@{top}",
              div(rss("corral", top), rss("llama-server", top)), status=llama),
    ]
    for key, name, invert in (
        ("prefix_cache", "Prefix cache TTFT warm / cold", False),
        ("busy_ttft", "TTFT busy / idle", False),
        ("load_time", "Load speedup first / second", True),
        ("structured", "Throughput schema / unconstrained", False),
        ("lora_throughput", "LoRA throughput 4 adapter models / base", False),
        ("lora_memory", "LoRA memory base + 4 adapter models / base", False),
    ):
        scenario = results.scenario(key)
        if scenario is None:
            ratios.append(Ratio(key, name, None, status="not measured"))
        elif invert:
            ratios.append(Ratio(key, name, div(scenario.base, scenario.subject), status=scenario.status))
        else:
            ratios.append(Ratio(key, name, div(scenario.subject, scenario.base), status=scenario.status))
    return ratios


def _f(value: float | None, digits: int = 1, scale: float = 1.0) -> str:
    return "–" if value is None else f"{value * scale:.{digits}f}"


def _ms(value: float | None) -> str:
    return _f(value, 1, 1000.0)


def _figure(value: float | None, unit: str) -> str:
    """Seconds as ms below 1 s and as s above; other units as they are."""
    if value is None:
        return "–"
    if unit != "s":
        return f"{value:.1f} {unit}"
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def format_ratio(ratio: Ratio) -> list[str]:
    op, figure, why = ratio.target
    shown = "–" if ratio.value is None else f"{ratio.value:.2f}×"
    return [ratio.name, shown, f"{'≥' if op == '>=' else '≤'} {figure:g}×", ratio.verdict, why]


def render(results: BenchResults, ratios: list[Ratio]) -> str:
    meta = results.meta
    out = ["# Corral benchmark", ""]
    out += [f"- {k}: {v}" for k, v in meta.items()]
    out += ["", "## Ratios (the targets)", ""]
    out += _table(["ratio", "measured", "target", "verdict", "why"], [format_ratio(r) for r in ratios])
    out += ["", "## Serving throughput and latency", ""]
    header = ["system", "C", "requests", "errors", "out tokens", "wall s", "tok/s",
              "TTFT p50 ms", "TTFT p99 ms", "ITL p50 ms", "ITL p99 ms", "TPOT mean ms", "peak RSS MiB"]
    rows = [
        [p.system, str(p.concurrency), str(p.requests), str(p.errors), str(p.output_tokens), _f(p.wall_s, 2),
         _f(p.tok_s), _ms(p.ttft_p50), _ms(p.ttft_p99), _ms(p.itl_p50), _ms(p.itl_p99), _ms(p.tpot_mean),
         _f(p.peak_rss_bytes, 0, 2.0**-20)]
        for p in results.phases + results.extra_phases
    ]
    out += _table(header, rows) if rows else ["(no serving phase ran)"]
    out += ["", "## transformers generate (same GGUF, float32, greedy)", ""]
    rows = [[h.mode, str(h.batch), str(h.output_tokens), _f(h.seconds, 2), _f(h.tok_s)] for h in results.hf]
    out += _table(["mode", "batch", "out tokens", "seconds", "tok/s"], rows) if rows else ["(skipped)"]
    out += ["", "## Scenarios (Corral, HTTP API)", ""]
    rows = []
    for s in results.scenarios:
        rows.append([s.title, f"{s.base_label}: {_figure(s.base, s.unit)}",
                     f"{s.subject_label}: {_figure(s.subject, s.unit)}", s.status or "ok", s.detail])
    out += _table(["scenario", "baseline", "measured", "status", "detail"], rows) if rows else ["(skipped)"]
    errors = [p for p in results.phases + results.extra_phases if p.first_error]
    if errors or results.notes:
        out += ["", "## Notes", ""]
        out += [f"- {p.system}@{p.concurrency}: first error: {p.first_error}" for p in errors]
        out += [f"- {note}" for note in results.notes]
    return "\n".join(out) + "\n"


def plot(results: BenchResults, path: Path) -> Path | None:
    """Aggregate tok/s against concurrency, one line per server, the transformers rows as points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    systems: dict[str, list[tuple[int, float]]] = {}
    for p in results.phases:
        if p.tok_s is not None:
            systems.setdefault(p.system, []).append((p.concurrency, p.tok_s))
    for system, points in systems.items():
        points.sort()
        ax.plot([c for c, _ in points], [t for _, t in points], marker="o", label=system)
    hf = sorted((row.batch, row.tok_s) for row in results.hf if row.tok_s is not None)
    if hf:
        ax.plot([b for b, _ in hf], [t for _, t in hf], marker="s", linestyle="--", color="gray",
                label="transformers generate (static batch)")
    if not ax.has_data():
        plt.close(fig)
        return None
    ax.set_xscale("log", base=2)
    ticks = sorted({c for points in systems.values() for c, _ in points} | {row.batch for row in results.hf})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    top = max([t for points in systems.values() for _, t in points] + [r.tok_s or 0 for r in results.hf])
    ax.set_ylim(0, top * 1.15)
    ax.set_xlabel("concurrent streams (batch size for transformers)")
    ax.set_ylabel("aggregate output tok/s")
    ax.set_title(str(results.meta.get("model", "")) + " output throughput")
    ax.grid(True, alpha=0.3)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def to_json(results: BenchResults, ratios: list[Ratio]) -> str:
    data = {
        "meta": results.meta,
        "phases": [asdict(p) for p in results.phases],
        "extra_phases": [asdict(p) for p in results.extra_phases],
        "transformers": [dict(asdict(h), tok_s=h.tok_s) for h in results.hf],
        "scenarios": [asdict(s) for s in results.scenarios],
        "ratios": [dict(key=r.key, name=r.name, value=r.value, target=list(r.target[:2]), verdict=r.verdict)
                   for r in ratios],
        "notes": results.notes,
    }
    return json.dumps(data, indent=2)
