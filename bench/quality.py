"""Greedy quality of packed GGUF weights against the float32 dequantized model
(`python -m bench.quality [--cache-dir DIR] [--gguf FILE]`).

On a fixed 512-token text: top-1 agreement of the next-token predictions and the mean KL
divergence KL(float32 || packed) per token, once with the packed layers on the kernels they
run at batch rows (a 512-token forward is one batch) and once on those they run at decode rows
(`decode_*`: where the kernel table chose another kernel, or another form of the weight, for
few rows); then the greedy continuation of a fixed prompt (8 tokens) from both. Prints one
JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import sys
import time
from pathlib import Path

import torch

from backends.loader import LoadOptions, load_gguf

TOKENS = 512
PROMPT = "The sky is blue because"
# A fixed text (written for this bench) repeated to TOKENS tokens: varied prose, numbers, code.
TEXT = """\
The old lighthouse keeper kept a ledger of every ship that passed the point, and in forty years
he had filled eleven volumes. Each entry gave the hour, the wind, the state of the sea and a few
words about the vessel: a schooner low in the water with timber, a steamer trailing black smoke
toward the harbour, a fishing boat that came home late with its lamps still burning. When the
council decided to automate the light, they asked him what should become of the books. He said
they belonged to the town, and so they went to the library, where a student later counted them:
31,407 ships, 212 storms worth naming, and one night in 1953 when the fog was so thick that he
rang the bell by hand from dusk until half past four in the morning.
Photosynthesis turns light into chemical energy. In the chloroplast, water is split, oxygen is
released, and the energy captured by chlorophyll drives the synthesis of ATP and NADPH, which
the Calvin cycle then uses to fix carbon dioxide into sugars. Plants that grow in hot, dry
places often use a variant of this pathway that opens their pores only at night.
def fibonacci(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a
A recipe for bread needs only four things: flour, water, salt and yeast. Mix 500 grams of flour
with 350 grams of warm water, rest it for twenty minutes, add ten grams of salt and a little
yeast, then knead until the dough is smooth. Let it rise, shape it, let it rise again, and bake
it in a hot oven until the crust sounds hollow when you knock on the bottom of the loaf.
"""


def _sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


def fixed_ids(tokenizer, n: int = TOKENS) -> torch.Tensor:
    ids = tokenizer.encode(TEXT)
    while len(ids) < n:
        ids += tokenizer.encode(TEXT, add_special_tokens=False)
    return torch.tensor([ids[:n]])


def compare(reference, candidate, ids: torch.Tensor) -> dict[str, float]:
    """Top-1 agreement and mean KL(reference || candidate) over every position of `ids`."""
    with torch.inference_mode():
        ref = reference(ids).logits[0].float().log_softmax(-1)
        got = candidate(ids).logits[0].float().log_softmax(-1)
    agree = (ref.argmax(-1) == got.argmax(-1)).float().mean().item()
    kl = (ref.exp() * (ref - got)).sum(-1).mean().item()
    return {"top1_agreement": agree, "mean_kl_nats": kl, "positions": ids.shape[1]}


@contextlib.contextmanager
def decode_kernels(model):
    """Every packed layer of `model` on its decode-row kernel at any row count."""
    from backends.quant.modules import PackedLinear

    layers = [m for m in model.modules() if isinstance(m, PackedLinear)]
    saved = [m.kernels for m in layers]
    for m in layers:
        m.kernels = {"decode": m.kernels["decode"], "batch": m.kernels["decode"]}
    try:
        yield
    finally:
        for m, kernels in zip(layers, saved):
            m.kernels = kernels


def greedy(lm, prompt: str = PROMPT, n: int = 8) -> list[int]:
    ids = torch.tensor([lm.tokenizer.encode(prompt)])
    with torch.inference_mode():
        out = lm.model.generate(ids, max_new_tokens=n, do_sample=False,
                                attention_mask=torch.ones_like(ids))
    return out[0, ids.shape[1]:].tolist()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "corral")
    parser.add_argument("--gguf", type=Path, default=None, help="default: the packaged gemma3:270m")
    a = parser.parse_args(argv)
    if a.gguf is None:
        from bench.cli import gguf_path
        a.gguf = gguf_path()
    digest = _sha256(a.gguf)
    loads = {}
    for weights in ("float", "packed"):
        t = time.perf_counter()
        loads[weights] = load_gguf(a.gguf, digest, LoadOptions(cache_dir=a.cache_dir, weights=weights))
        print(f"loaded {weights} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    ids = fixed_ids(loads["float"].tokenizer)
    result = compare(loads["float"].model, loads["packed"].model, ids)
    with decode_kernels(loads["packed"].model):
        decode = compare(loads["float"].model, loads["packed"].model, ids)
    result |= {f"decode_{k}": v for k, v in decode.items() if k != "positions"}
    tok = loads["float"].tokenizer
    for weights, lm in loads.items():
        cont = greedy(lm)
        result[f"greedy_{weights}"] = {"ids": cont, "text": tok.decode(cont)}
    result["greedy_equal"] = result["greedy_float"]["ids"] == result["greedy_packed"]["ids"]
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
