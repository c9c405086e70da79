"""Structured output: Ollama's `format` ("json" or a JSON Schema) as an xgrammar constraint.

Per loaded model one `GrammarCache`: the xgrammar `TokenizerInfo` is built once (lazily: it
walks the whole vocabulary) and compiled grammars are kept in an LRU keyed by the format. Per
constrained sequence one `GrammarConstraint` (an xgrammar `GrammarMatcher`): the sampler masks
that row's logits with the matcher's token bitmask, samples, and the matcher accepts the chosen
token. Only sampled tokens reach the matcher, so a recompute (preemption, context shift) keeps
its state instead of replaying the prompt into it.

Both formats are compiled without free whitespace (`any_whitespace=False`): a small model given
`"\\n"` as an option can emit whitespace until num_predict runs out, and the JSON stays as valid.
xgrammar is imported with this module, never lazily inside a request: a first import racing a
model load on another thread sees transformers' lazy modules half initialized.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
import xgrammar as xgr
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from registry.errors import APIError

log = logging.getLogger(__name__)


# Ollama's built-in JSON grammar (llm/llama_server.go grammarJSON) has an object at the root.
_JSON_OBJECT = '{"type": "object"}'


@dataclass(frozen=True)
class GrammarSpec:
    """A validated `format`: `kind` is "json" or "schema"; `schema` its canonical JSON text."""

    kind: str
    schema: str = ""


def format_error(value: Any) -> APIError:
    # Ollama quotes the raw JSON it was sent with Go's %q.
    raw = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    quoted = json.dumps(raw, ensure_ascii=False)
    return APIError(400, f'invalid format: {quoted}; expected "json" or a valid JSON Schema object')


def parse_format(value: Any) -> GrammarSpec | None:
    """The request's `format`: None for absent/null/"", else a spec; APIError 400 otherwise.

    A schema is checked by converting it to an xgrammar grammar (no tokenizer needed), so an
    unusable schema fails before any model is loaded.
    """
    if value is None or value == "":
        return None
    if value == "json":
        return GrammarSpec("json")
    if not isinstance(value, dict):
        raise format_error(value)
    # Property order is kept: it is the order the grammar writes them in.
    schema = json.dumps(value, ensure_ascii=False)
    try:
        xgr.Grammar.from_json_schema(schema, any_whitespace=False)
    except Exception as exc:  # noqa: BLE001 - xgrammar raises RuntimeError/ValueError variants
        log.debug("format rejected: %s", exc)
        raise format_error(value) from None
    return GrammarSpec("schema", schema)


def _tokenizer_info(tokenizer: Any, vocab_size: int, stop_token_ids: list[int]):
    if isinstance(tokenizer, PreTrainedTokenizerBase):
        return xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=stop_token_ids or None)
    # Any other tokenizer (the tiny test models'): each id's decoded text, byte for byte.
    n = min(vocab_size, getattr(tokenizer, "vocab_size", vocab_size))
    vocab = [tokenizer.decode([i]) for i in range(n)]
    return xgr.TokenizerInfo(vocab, xgr.VocabType.RAW, vocab_size=vocab_size,
                             stop_token_ids=stop_token_ids or None)


class GrammarCache:
    """One model's grammar compiler and its compiled grammars (LRU). Thread-safe."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_token_ids: list[int],
                 capacity: int = 64):
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.stop_token_ids = list(stop_token_ids)
        self.capacity = capacity
        self._compiler = None
        self._compiled: OrderedDict[GrammarSpec, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.num_compiles = 0

    def _get_compiler(self):
        if self._compiler is None:
        
            info = _tokenizer_info(self.tokenizer, self.vocab_size, self.stop_token_ids)
            self._compiler = xgr.GrammarCompiler(info, max_threads=2, cache_enabled=False)
        return self._compiler

    def compile(self, spec: GrammarSpec):
        """The compiled grammar for `spec`, compiling it on a miss (can take a while: call it
        off the event loop)."""
        with self._lock:
            hit = self._compiled.get(spec)
            if hit is not None:
                self._compiled.move_to_end(spec)
                return hit
            compiler = self._get_compiler()
            try:
                compiled = compiler.compile_json_schema(
                    spec.schema if spec.kind == "schema" else _JSON_OBJECT,
                    any_whitespace=False, strict_mode=spec.kind == "schema")
            except Exception as exc:  # noqa: BLE001
                log.debug("format rejected by the compiler: %s", exc)
                raise format_error(json.loads(spec.schema or '"json"')) from None
            self.num_compiles += 1
            self._compiled[spec] = compiled
            while len(self._compiled) > self.capacity:
                self._compiled.popitem(last=False)
            return compiled

    def constraint(self, spec: GrammarSpec) -> "GrammarConstraint":
        return GrammarConstraint(self.compile(spec), self.stop_token_ids)


class GrammarConstraint:
    """One sequence's position in its grammar."""

    def __init__(self, compiled: Any, stop_token_ids: list[int]):
    
        self.matcher = xgr.GrammarMatcher(compiled)
        self.stop_token_ids = list(stop_token_ids)
        self.rejected = 0

    @property
    def is_terminated(self) -> bool:
        return self.matcher.is_terminated()

    def fill_bitmask(self, bitmask: Tensor, row: int) -> None:
        """Write the allowed next tokens into `bitmask[row]` (int32, 32 tokens per word)."""
        if self.matcher.is_terminated():
            # The grammar is complete: only a stop token may follow, so the sequence ends.
            bitmask[row].zero_()
            for t in self.stop_token_ids:
                bitmask[row, t // 32] |= _bit(t % 32)
            return
        self.matcher.fill_next_token_bitmask(bitmask, row)

    def accept(self, token_id: int) -> bool:
        if self.matcher.is_terminated():
            return token_id in self.stop_token_ids
        ok = self.matcher.accept_token(int(token_id))
        if not ok:
            self.rejected += 1
        return ok


def _bit(i: int) -> int:
    # Bit 31 of an int32 word is its sign bit.
    return (1 << i) - (1 << 32) if i == 31 else 1 << i


def allocate_bitmask(rows: int, vocab_size: int) -> Tensor:
    return torch.full((rows, (vocab_size + 31) // 32), -1, dtype=torch.int32)


def unpack_bitmask(bitmask: Tensor, vocab_size: int) -> Tensor:
    """[rows, words] int32 -> [rows, vocab_size] bool, True where the token is allowed."""
    shifts = torch.arange(32, dtype=torch.int32, device=bitmask.device)
    bits = (bitmask.unsqueeze(-1) >> shifts) & 1
    return bits.reshape(bitmask.shape[0], -1)[:, :vocab_size].bool()


def apply_constraints(logits: Tensor, constraints: list[GrammarConstraint | None]) -> Tensor:
    """Mask the rows that have a constraint (in place); rows without one are untouched.

    `logits` is [rows, vocab] with one constraint (or None) per row. Returns `logits`."""
    idx = [i for i, c in enumerate(constraints) if c is not None]
    if not idx:
        return logits
    vocab = logits.shape[1]
    bitmask = allocate_bitmask(len(idx), vocab)
    for j, i in enumerate(idx):
        constraints[i].fill_bitmask(bitmask, j)
    allowed = unpack_bitmask(bitmask.to(logits.device), vocab)
    rows = torch.tensor(idx, device=logits.device)
    logits[rows] = logits[rows].masked_fill(~allowed, float("-inf"))
    return logits
