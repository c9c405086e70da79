"""The matmul kernels over packed weights, and the choice between them per CPU and batch size.

The layers' kernels are weight-only: activations go in as bf16. Quantizing them too (int8 x
int8 through `torch._int_mm`, VNNI's strength) made the layers' batch matmuls fastest in
isolation on an AVX-512 EPYC, but end to end it served no faster (134.7 vs 141.2 tok/s at 32
clients), held 280 MiB more resident (oneDNN's copies of the weights) and cost greedy quality
below target (96.5% top-1 against float32, 97.5% weight-only); on AVX2 it was an order of
magnitude slower. It does serve the tied LM head's approximate pass (`int8_dynamic`): the best
candidates of that pass are rescored from the rows, so its error does not choose the token.
int8 weights have two weight-only kernels: torch's packed kernel, and the codes widened to bf16
for one GEMM (batch rows on CPUs with bf16 arithmetic). Where a format has several candidates
they are timed at a decode row count and a batch row count on a slice of that shape, once per
CPU (the result is cached in a JSON file keyed by the CPU's model name, torch's capability
level and thread count).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from backends.quant.pack import INT4_GROUP, cpu_int4_pack

log = logging.getLogger(__name__)

# Row counts up to this are "decode"; above, "batch" (prefill, many sequences).
DECODE_ROWS = 8
_PROBE_ROWS = {"decode": 1, "batch": 32}
# Each kernel is timed on a slice of the weight's rows: all of them up to 64 MiB of int8, and
# a smaller weight in as many copies as fill 64 MiB, run one after another as a model's layers
# are. A weight that stays in cache times a bandwidth-bound pass as compute-bound: on a
# 4096-row slice of gemma3's [262144 x 640] head, int8 x int8 looked faster than int4 at 1
# row, over all rows 2.5x slower; gemma3's [1536 x 640] q/k/v, timed alone, picked
# `_weight_int8pack_mm` over int4x2, which streams 1.8x faster from memory.
_PROBE_BYTES = 64 << 20
_PROBE_COPIES = 64  # a tiny weight (a test model's) is timed in cache: its choice costs little


def int4_weight_only(x: torch.Tensor, w: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch._weight_int4pack_mm_for_cpu(x.to(torch.bfloat16), w["int4pack"], INT4_GROUP,
                                             w["scale_zeros"])


def int4x2(x: torch.Tensor, w: dict[str, torch.Tensor]) -> torch.Tensor:
    """An int4x2 weight (pack.int4x2_tensors): the int4 kernel over [x, x], so a 5- to 8-bit
    code costs two nibbles, the bytes of int8. At a decode row it ran gemma3:270m's
    [4096 x 640] gate/up in 191 against 347 us of `_weight_int8pack_mm` on an AVX-512 EPYC (the
    int4 kernel streams its weight faster); at 32 rows it is compute-bound, 3.0 against 1.1 ms
    of `int8_widened`, so the table picks per bucket and the weight keeps both forms."""
    return int4_weight_only(torch.cat([x, x], -1), w)


def int8_weight_only(x: torch.Tensor, w: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch._weight_int8pack_mm(x.to(torch.bfloat16), w["qweight"], w["qscale_bf16"])


def int8_widened(x: torch.Tensor, w: dict[str, torch.Tensor]) -> torch.Tensor:
    """The int8 codes widened to bf16 (exact: |code| <= 127) for one bf16 GEMM, each output
    column then scaled. Where the CPU has bf16 arithmetic, at batch rows this beats
    `_weight_int8pack_mm`, which runs its rows one dot product at a time: at 32 rows of
    gemma3:270m's [2048 x 640] 394 against 736 us on an AVX-512 bf16 EPYC; on AVX2 the table
    keeps the packed kernel."""
    return torch.nn.functional.linear(x.to(torch.bfloat16), w["qweight"].to(torch.bfloat16)) \
        * w["qscale_bf16"]


# Output columns per int8 x int8 call: each call's int32 result (4 MiB at 32 rows) is scaled
# into the float32 output while still in cache, and the full-width int32 result is never held
# (32 MiB at 32 rows of gemma3's head, next to the float32 one at the step's memory peak).
_INT8_DYNAMIC_COLUMNS = 32768


def int8_dynamic(x: torch.Tensor, w: dict[str, torch.Tensor]) -> torch.Tensor:
    """float32 out: each row of `x` quantized to symmetric int8 too, for int8 x int8 GEMMs
    (`torch._int_mm`, VNNI on AVX-512). Approximate, so only for a pass an exact one follows:
    the rescored head's at batch rows, where on an AVX-512 EPYC it took 26 against 67 ms at 16
    rows of gemma3's [262144 x 640] and 50 against 95 at 32 (the int4 kernel is compute-bound
    there); at 1 row it reads twice the int4 copy's bytes (14 against 6 ms)."""
    x = x.float()
    step = x.abs().amax(1, keepdim=True).clamp_min(1e-12) / 127
    xq = torch.round(x / step).clamp_(-127, 127).to(torch.int8)
    weight, scale = w["qweight"], w["qscale"]
    out = torch.empty(x.shape[0], weight.shape[0])
    for start in range(0, weight.shape[0], _INT8_DYNAMIC_COLUMNS):
        cols = slice(start, start + _INT8_DYNAMIC_COLUMNS)
        torch.mul(torch._int_mm(xq, weight[cols].t()), step, out=out[:, cols]).mul_(scale[cols])
    return out


KERNELS: dict[str, Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]] = {
    "int4_weight_only": int4_weight_only,
    "int4x2": int4x2,
    "int8_weight_only": int8_weight_only,
    "int8_widened": int8_widened,
    "int8_dynamic": int8_dynamic,
}
CANDIDATES = {"int4": ("int4_weight_only",), "int8": ("int8_weight_only", "int8_widened"),
              "int4x2": ("int4x2", "int8_weight_only", "int8_widened"),
              "rescored": ("int4_weight_only", "int8_dynamic")}
# The runtime tensors each kernel reads (an int4x2 weight drops the form its kernels don't).
READS = {"int4_weight_only": ("int4pack", "scale_zeros"), "int4x2": ("int4pack", "scale_zeros"),
         "int8_weight_only": ("qweight", "qscale_bf16"), "int8_widened": ("qweight", "qscale_bf16"),
         "int8_dynamic": ("qweight", "qscale")}


def runtime_tensors(fmt: str, stored: dict[str, torch.Tensor],
                    reads: set[str] | None = None) -> dict[str, torch.Tensor]:
    """What the kernels read, derived from the stored (portable) tensors; an int4 weight whose
    CPU pack was cached (`stored["int4pack"]`, see loader.int4pack_file) is not packed again.
    A rescored head reads both: its own int4 copy and its embedding's int8 rows. `reads`
    limits the result to the forms holding those keys (an int4x2 weight's chosen kernels)."""
    out = {}
    if fmt in ("int4", "int4x2", "rescored") and (reads is None or "int4pack" in reads):
        pack = stored.get("int4pack")
        out |= {"int4pack": cpu_int4_pack(stored["nibbles"]) if pack is None else pack,
                "scale_zeros": stored["scale_zeros"]}
    if fmt in ("int8", "int4x2", "rescored") and (reads is None or "qweight" in reads):
        out |= {"qweight": aligned(stored["qweight"]), "qscale": stored["qscale"],
                "qscale_bf16": stored["qscale"].to(torch.bfloat16)}
    return out


def aligned(t: torch.Tensor, to: int = 64) -> torch.Tensor:
    """`t` at an address that is a multiple of `to` bytes, copied only where it is not.
    torch's AVX-512 `_weight_int8pack_mm` reads the weight with aligned vector loads and
    segfaults on a weight 8 bytes off, where safetensors maps a tensor inside its file. The
    loader reads cached int8 weights unmapped (loader._read_unmapped); this guards any other
    source of a weight, at the one place every int8 kernel input is made."""
    return t if t.data_ptr() % to == 0 else t.clone(memory_format=torch.contiguous_format)


def _synthetic(fmt: str, n: int, k: int) -> dict[str, torch.Tensor]:
    codes = 2 * k if fmt == "int4x2" else k  # int4x2 packs two nibbles per element
    stored = {"nibbles": torch.randint(0, 256, (n, codes // 2), dtype=torch.uint8),
              "scale_zeros": torch.rand(codes // INT4_GROUP, n, 2).to(torch.bfloat16),
              "qweight": torch.randint(-127, 128, (n, k), dtype=torch.int8),
              "qscale": torch.rand(n) / 100}
    return runtime_tensors(fmt, stored)


def _time(fn: Callable, x: torch.Tensor, weights: list[dict[str, torch.Tensor]]) -> float:
    """The fastest of 5 runs over `weights`: a neighbour's load only ever adds time, and a
    shared 2-core machine picked the slower kernel for a [4096 x 640] weight by the median
    of 3."""
    fn(x, weights[0])
    runs = []
    for _ in range(5):
        t = time.perf_counter()
        for w in weights:
            fn(x, w)
        runs.append(time.perf_counter() - t)
    return min(runs)


def cpu_key() -> str:
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{name}|{torch.backends.cpu.get_cpu_capability()}|threads={torch.get_num_threads()}"
            f"|torch={torch.__version__}")


class KernelTable:
    """Chosen kernel per (format, n, k, bucket), measured once per CPU and remembered on disk."""

    def __init__(self, cache_file: Path | None = None, forced: str = ""):
        self.cache_file = cache_file
        self.forced = forced  # a kernel name that overrides every measured choice (tests)
        self._lock = threading.Lock()
        self._choices: dict[str, str] = {}
        self._key = cpu_key()
        if cache_file is not None and cache_file.is_file():
            try:
                self._choices = json.loads(cache_file.read_text()).get(self._key, {})
            except (OSError, ValueError):
                self._choices = {}

    def choose(self, fmt: str, n: int, k: int) -> dict[str, str]:
        """{"decode": kernel, "batch": kernel} for a weight of [n, k] in `fmt`."""
        candidates = list(CANDIDATES[fmt])
        if self.forced:
            pick = self.forced if self.forced in candidates else candidates[0]
            return {b: pick for b in _PROBE_ROWS}
        out = {}
        with self._lock:
            for bucket, rows in _PROBE_ROWS.items():
                # The candidates and the slice are part of the key: a kernel added later, or a
                # slice changed, is measured again.
                probe_n = min(n, max(4096, _PROBE_BYTES // k // 64 * 64))  # whole int4 tiles
                copies = min(_PROBE_COPIES, max(1, _PROBE_BYTES // (probe_n * k)))
                key = f"{fmt}:{n}x{k}@{probe_n}x{copies}:{bucket}:{'|'.join(candidates)}"
                if key not in self._choices:
                    self._choices[key] = self._measure(fmt, probe_n, k, rows, candidates, copies)
                out[bucket] = self._choices[key]
        return out

    def _measure(self, fmt: str, n: int, k: int, rows: int, candidates: list[str],
                 copies: int) -> str:
        if len(candidates) == 1:
            return candidates[0]
        first = _synthetic(fmt, n, k)  # copies of it: their values don't matter, only bytes
        weights = [first] + [{key: t.clone() for key, t in first.items()} for _ in range(copies - 1)]
        x = torch.randn(rows, k)
        times = {c: _time(KERNELS[c], x, weights) for c in candidates}
        log.info("kernel timings %s [%d x %d] rows=%d: %s", fmt, n, k, rows,
                 {c: f"{t * 1e3:.2f} ms" for c, t in times.items()})
        return min(times, key=times.get)

    def save(self) -> None:
        if self.cache_file is None:
            return
        try:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            data = json.loads(self.cache_file.read_text()) if self.cache_file.is_file() else {}
            data[self._key] = self._choices
            tmp = self.cache_file.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
            os.replace(tmp, self.cache_file)
        except (OSError, ValueError) as err:
            log.warning("could not save kernel choices to %s: %s", self.cache_file, err)
