"""Structured output: `format` parsing, xgrammar masks on a tiny tokenizer, the sampler's mask."""

from __future__ import annotations

import json

import pytest
import torch

from backends.sampler import Sampler, SamplingRow
from backends.sampling_params import SamplingParams
from backends.structured import (GrammarCache, GrammarSpec, allocate_bitmask, apply_constraints,
                                 parse_format, unpack_bitmask)
from registry.errors import APIError

EOS = 0
# A word-level vocabulary: enough pieces to spell small JSON objects several ways.
VOCAB = ["<eos>", "{", "}", '{"', '"', ":", ": ", ",", ", ", "a", "b", "ok", "true", "false",
         "1", "2", "[", "]", " ", "\n", "null", '"}', "x", "red", "green", "color"]
SCHEMA = {"type": "object",
          "properties": {"ok": {"type": "boolean"}, "color": {"enum": ["red", "green"]}},
          "required": ["ok", "color"]}


class WordTokenizer:
    vocab_size = len(VOCAB)

    def decode(self, ids, **_):
        return "".join(VOCAB[i] for i in ids)


@pytest.fixture(scope="module")
def cache() -> GrammarCache:
    # Logits padded past the tokenizer, as a model's vocab often is.
    return GrammarCache(WordTokenizer(), 32, [EOS])


def allowed(constraint, vocab: int = 32) -> set[str]:
    bm = allocate_bitmask(1, vocab)
    constraint.fill_bitmask(bm, 0)
    ids = unpack_bitmask(bm, vocab)[0].nonzero().flatten().tolist()
    return {VOCAB[i] if i < len(VOCAB) else f"pad{i}" for i in ids}


# ---- format --------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [None, ""])
def test_absent_format_is_ignored(value):
    assert parse_format(value) is None


def test_json_and_schema_formats():
    assert parse_format("json") == GrammarSpec("json")
    spec = parse_format(SCHEMA)
    assert spec.kind == "schema" and json.loads(spec.schema) == SCHEMA
    # Property order is the order the output is written in, so it survives.
    assert list(json.loads(spec.schema)["properties"]) == ["ok", "color"]


@pytest.mark.parametrize("value, raw", [
    ("xml", r'"\"xml\""'), (5, '"5"'), ([1], '"[1]"'), (True, '"true"'),
    ({"type": "nonsense"}, r'"{\"type\":\"nonsense\"}"'),
])
def test_invalid_format_is_ollamas_error(value, raw):
    with pytest.raises(APIError) as e:
        parse_format(value)
    assert e.value.status == 400
    assert str(e.value) == f'invalid format: {raw}; expected "json" or a valid JSON Schema object'


# ---- masks ---------------------------------------------------------------------------------

def test_json_mask_starts_with_an_object(cache):
    c = cache.constraint(GrammarSpec("json"))
    assert allowed(c) == {"{", '{"'}


def test_schema_mask_walks_the_schema_and_ends_with_eos(cache):
    c = cache.constraint(parse_format(SCHEMA))
    path = ['{"', "ok", '"', ": ", "true", ", ", '"', "color", '"', ": ", '"', "red", '"}']
    for piece in path:
        mask = allowed(c)
        assert piece in mask, (piece, mask)
        if piece == "color":  # strict: "ok" is written, "color" is the only key left
            assert mask == {"color"}
        if piece == "red":
            assert mask == {"red", "green"}
        assert c.accept(VOCAB.index(piece))
    assert allowed(c) == {"<eos>"}
    assert json.loads("".join(path)) == {"ok": True, "color": "red"}


def test_a_token_outside_the_mask_is_rejected(cache):
    c = cache.constraint(parse_format(SCHEMA))
    assert not c.accept(VOCAB.index("x"))
    assert c.accept(VOCAB.index("{"))


def test_completed_grammar_allows_only_eos(cache):
    c = cache.constraint(parse_format({"type": "object", "properties": {"a": {"type": "null"}},
                                       "required": ["a"]}))
    for piece in ['{"', "a", '"', ": ", "null"]:
        assert c.accept(VOCAB.index(piece)), piece
    assert allowed(c) == {"}"}  # no free whitespace
    assert c.accept(VOCAB.index("}"))
    assert allowed(c) == {"<eos>"}
    assert c.accept(EOS)
    assert c.is_terminated
    assert allowed(c) == {"<eos>"}  # still only the stop token, never an empty mask


def test_padding_past_the_tokenizer_is_masked(cache):
    c = cache.constraint(GrammarSpec("json"))
    assert not any(a.startswith("pad") for a in allowed(c))


def test_unpack_matches_xgrammars_own_apply():
    import xgrammar as xgr

    torch.manual_seed(0)
    bitmask = torch.randint(-(2**31), 2**31 - 1, (3, 2), dtype=torch.int32)
    logits = torch.randn(3, 50)
    want = logits.clone()
    xgr.apply_token_bitmask_inplace(want, bitmask, backend="torch_native")
    mask = unpack_bitmask(bitmask, 50)
    got = logits.masked_fill(~mask, float("-inf"))
    assert torch.equal(got, want)


def test_compiled_grammars_are_cached_lru():
    c = GrammarCache(WordTokenizer(), 32, [EOS], capacity=2)
    a, b, d = GrammarSpec("json"), parse_format(SCHEMA), parse_format({"type": "integer"})
    assert c.compile(a) is c.compile(a)
    c.compile(b)
    assert c.num_compiles == 2
    c.compile(a)  # a is now the most recent; d evicts b
    c.compile(d)
    c.compile(a)
    assert c.num_compiles == 3
    c.compile(b)
    assert c.num_compiles == 4


# ---- the sampler -----------------------------------------------------------------------------

def test_rows_without_constraint_are_untouched(cache):
    logits = torch.randn(3, 32)
    before = logits.clone()
    constraints = [None, cache.constraint(GrammarSpec("json")), None]
    out = apply_constraints(logits.clone(), constraints)
    assert torch.equal(out[0], before[0]) and torch.equal(out[2], before[2])
    kept = {VOCAB[i] for i in torch.isfinite(out[1]).nonzero().flatten().tolist()}
    assert kept == {"{", '{"'}


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_sampled_json_always_parses(cache, temperature):
    torch.manual_seed(1)
    sampler = Sampler(torch.Generator().manual_seed(3))
    for trial in range(5):
        c = cache.constraint(parse_format(SCHEMA))
        params = SamplingParams(temperature=temperature, top_k=0, top_p=1.0)
        text = []
        for _ in range(40):
            tok = int(sampler.sample(torch.randn(1, 32) * 3, [SamplingRow(params, constraint=c)])[0])
            if tok == EOS:
                break
            text.append(VOCAB[tok])
        else:
            pytest.fail(f"no EOS: {''.join(text)!r}")
        obj = json.loads("".join(text))
        assert set(obj) == {"ok", "color"} and isinstance(obj["ok"], bool)
        assert obj["color"] in ("red", "green")


def test_constrained_row_leaves_batch_mates_identical(cache):
    torch.manual_seed(2)
    sampler = Sampler(torch.Generator().manual_seed(0))
    logits = torch.randn(3, 32)
    free = [SamplingRow(SamplingParams(temperature=0.0, logprobs=True, top_logprobs=3)),
            SamplingRow(SamplingParams(temperature=0.7, seed=5),
                        generator=torch.Generator().manual_seed(5)),
            SamplingRow(SamplingParams(temperature=0.0))]
    alone, alone_lp = sampler.sample_with_logprobs(logits.clone(), free)
    free[1].generator.manual_seed(5)
    rows = free[:2] + [SamplingRow(SamplingParams(temperature=0.0),
                                   constraint=cache.constraint(GrammarSpec("json")))] + free[2:]
    mixed = torch.cat([logits[:2], torch.randn(1, 32), logits[2:]])
    before = mixed.clone()
    tokens, lps = sampler.sample_with_logprobs(mixed, rows)
    assert torch.equal(mixed, before)  # the caller's logits are not masked in place
    assert tokens[[0, 1, 3]].tolist() == alone.tolist()
    assert VOCAB[int(tokens[2])] in ("{", '{"')
    assert lps[0] == alone_lp[0]


def test_constrained_logprobs_come_from_the_masked_distribution(cache):
    sampler = Sampler()
    c = cache.constraint(GrammarSpec("json"))
    params = SamplingParams(temperature=0.0, logprobs=True, top_logprobs=5)
    tokens, lps = sampler.sample_with_logprobs(torch.randn(1, 32), [SamplingRow(params, constraint=c)])
    lp = lps[0]
    assert lp.token_id == int(tokens[0]) and lp.top[0][0] == lp.token_id
    assert {VOCAB[t] for t, _ in lp.top} <= {"{", '{"'}
    assert abs(sum(torch.tensor([v for _, v in lp.top]).exp().tolist()) - 1.0) < 1e-5
