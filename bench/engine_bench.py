"""The engine alone against transformers `generate`, on a random model of gemma3:270m's shapes.

No server, no weights file: it measures the engine's batching (continuous batching over the
paged KV cache) against the baseline every user can run, on whatever device is given. It is
the GPU half of `make gpu-check` (bf16 on CUDA) and runs on CPU too (`--quick` for a smoke run).

    python -m bench.engine_bench --device cuda --dtype bfloat16 --clients 1,16,64
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import torch

from backends.loader import LoadedModel
from backends.sampling_params import SamplingParams
from backends.testing import ByteTokenizer, transformers_attention
from scheduler.engine import EngineConfig, LLMEngine

# gemma3:270m (Gemma3ForCausalLM): 18 layers, 640 wide, one KV head of 256, 262k vocabulary.
GEMMA3_270M = dict(
    vocab_size=262144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18,
    num_attention_heads=4, num_key_value_heads=1, head_dim=256, max_position_embeddings=32768,
    sliding_window=512, query_pre_attn_scalar=256,
)
QUICK = dict(vocab_size=4096, hidden_size=128, intermediate_size=256, num_hidden_layers=4,
             num_attention_heads=4, num_key_value_heads=1, head_dim=32, max_position_embeddings=2048,
             sliding_window=64, query_pre_attn_scalar=32)


def build_model(shape: dict, device: str, dtype: torch.dtype) -> LoadedModel:
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    layers = shape["num_hidden_layers"]
    cfg = Gemma3TextConfig(**shape, attn_implementation="sdpa",
                           layer_types=[("full_attention" if (i + 1) % 6 == 0 else "sliding_attention")
                                        for i in range(layers)])
    model = Gemma3ForCausalLM(cfg).to(device=device, dtype=dtype).eval()
    return LoadedModel(model=model, tokenizer=ByteTokenizer(cfg.vocab_size), config=cfg,
                       device=torch.device(device), dtype=dtype, max_context=cfg.max_position_embeddings,
                       eos_token_ids=[], kind="causal")


def prompt(i: int, n: int, vocab: int) -> list[int]:
    return [(i * 7919 + j * 104729) % (vocab - 10) + 5 for j in range(n)]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def engine_tok_s(loaded: LoadedModel, clients: int, prompt_len: int, new_tokens: int, device: str) -> float:
    """Output tokens per second with `clients` requests in flight at once."""
    engine = LLMEngine(loaded, EngineConfig(block_size=16, num_kv_blocks=max(64, clients * 8 + 16),
                                            num_ctx=prompt_len + new_tokens + 16,
                                            max_num_seqs=max(16, clients), max_num_batched_tokens=2048))
    vocab = loaded.config.vocab_size
    try:
        engine.generate(prompt(999, prompt_len, vocab), SamplingParams(temperature=0.0, num_predict=4))  # warm-up
        _sync(device)
        counts = [0] * clients

        def client(i: int) -> None:
            stream = engine.add_request(prompt(i, prompt_len, vocab),
                                        SamplingParams(temperature=0.0, num_predict=new_tokens))
            for out in stream:
                counts[i] += len(out.token_ids)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        _sync(device)
        return sum(counts) / (time.perf_counter() - start)
    finally:
        engine.shutdown()


def generate_tok_s(loaded: LoadedModel, batch: int, prompt_len: int, new_tokens: int, device: str) -> float:
    """transformers `generate`, greedy, one padded batch of `batch` prompts of equal length."""
    vocab = loaded.config.vocab_size
    ids = torch.tensor([prompt(i, prompt_len, vocab) for i in range(batch)], device=device)
    mask = torch.ones_like(ids)
    kw = dict(attention_mask=mask, do_sample=False, eos_token_id=None, pad_token_id=0)
    with transformers_attention(loaded.model), torch.inference_mode():
        loaded.model.generate(ids[:1], max_new_tokens=4, min_new_tokens=4, **{**kw, "attention_mask": mask[:1]})
        _sync(device)
        start = time.perf_counter()
        loaded.model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **kw)
        _sync(device)
    return batch * new_tokens / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--clients", default="1,16,64")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="a tiny model: checks the bench runs")
    args = ap.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    loaded = build_model(QUICK if args.quick else GEMMA3_270M, args.device, dtype)
    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "CPU"
    print(f"engine vs transformers generate: {name}, {args.dtype}, prompt {args.prompt_len}, "
          f"{args.new_tokens} new tokens, gemma3:270m shapes{' (quick: tiny)' if args.quick else ''}")
    print(f"{'clients':>8} {'engine tok/s':>13} {'generate tok/s':>15} {'ratio':>7}")
    single = None
    for c in (int(x) for x in args.clients.split(",")):
        eng = statistics.median(engine_tok_s(loaded, c, args.prompt_len, args.new_tokens, args.device)
                                for _ in range(args.repeats))
        ref = statistics.median(generate_tok_s(loaded, c, args.prompt_len, args.new_tokens, args.device)
                                for _ in range(args.repeats))
        single = single or eng
        print(f"{c:>8} {eng:>13.1f} {ref:>15.1f} {eng / ref:>6.2f}x   ({eng / single:.1f}x the 1-client rate)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
