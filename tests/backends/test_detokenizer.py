"""Incremental detokenizer on tiny in-process tokenizers: UTF-8 safety, stop strings, flush."""

from __future__ import annotations

import pytest
from tokenizers import ByteLevelBPETokenizer, Tokenizer, decoders, models, normalizers
from transformers import PreTrainedTokenizerFast

from backends.detokenizer import IncrementalDetokenizer, token_bytes


def sentencepiece_style() -> Tokenizer:
    """A sentencepiece-like BPE: `▁` for spaces, byte fallback `<0xNN>` for unknown chars."""
    vocab = {"<unk>": 0, "<eot>": 1}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    chars = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.,!?é日本") + ["▁"]
    merges = [("▁", "w"), ("S", "T"), ("O", "P"), ("▁", "h"), ("e", "n")]
    for piece in chars + [a + b for a, b in merges]:
        vocab[piece] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    tok.add_special_tokens(["<eot>"])
    return tok


def byte_level() -> ByteLevelBPETokenizer:
    tok = ByteLevelBPETokenizer()
    corpus = ["the quick brown fox jumps over the lazy dog", "hello world, hello there"] * 5
    tok.train_from_iterator(corpus, vocab_size=300, min_frequency=1, show_progress=False)
    return tok


SPM = sentencepiece_style()
BYTE_LEVEL = byte_level()
TOKENIZERS = {
    "spm-raw": SPM,
    "spm-transformers": PreTrainedTokenizerFast(tokenizer_object=SPM),
    "bytelevel-raw": BYTE_LEVEL,
}


@pytest.fixture(params=sorted(TOKENIZERS))
def tok(request):
    return TOKENIZERS[request.param]


def encode(tok, text: str) -> list[int]:
    if isinstance(tok, PreTrainedTokenizerFast):
        return tok.encode(text, add_special_tokens=False)
    return tok.encode(text).ids


def stream(det: IncrementalDetokenizer, ids: list[int], flush: bool = True) -> list[str]:
    chunks = [det.add(i) for i in ids]
    return chunks + [det.flush()] if flush else chunks


MULTIBYTE = [
    "héllo wörld",
    "日本語のテキスト",
    "emoji 😀🎉 mixed ✓ in",
    "𓀀𓁐 hieroglyphs",
    "tail 😀",
]


@pytest.mark.parametrize("text", MULTIBYTE)
def test_multibyte_text_streams_without_replacement_chars(tok, text):
    ids = encode(tok, text)
    assert len(ids) > len(text.split())  # some characters really are split into bytes
    det = IncrementalDetokenizer(tok, [])
    chunks = stream(det, ids)
    assert all("\ufffd" not in c for c in chunks)
    assert "".join(chunks) == tok.decode(ids) == text
    assert det.text == text


def test_prompt_context_keeps_the_leading_space(tok):
    prompt, output = encode(tok, "hi there"), encode(tok, " when")
    det = IncrementalDetokenizer(tok, [], prompt_token_ids=prompt)
    assert "".join(stream(det, output)) == " when"


def test_stop_string_split_across_tokens():
    ids = encode(SPM, "ab STOP cd")
    assert SPM.id_to_token(ids[3]) == "ST" and SPM.id_to_token(ids[4]) == "OP"
    det = IncrementalDetokenizer(SPM, ["STOP"])
    chunks = stream(det, ids, flush=False)
    assert "".join(chunks) == "ab " == det.text
    assert chunks[3] == ""  # "ST" held back until "OP" decides
    assert det.stopped and det.stop_string == "STOP"
    assert det.add(ids[0]) == "" and det.flush() == ""


def test_stop_string_at_the_very_start(tok):
    det = IncrementalDetokenizer(tok, ["STOP"])
    assert "".join(stream(det, encode(tok, "STOP and more"))) == ""
    assert det.stopped and det.text == ""


def test_earliest_of_several_stop_strings_wins(tok):
    det = IncrementalDetokenizer(tok, ["cd", "P c", "zzz"])
    assert "".join(stream(det, encode(tok, "ab STOP cd"))) == "ab STO"
    assert det.stop_string == "P c"


def test_stop_string_completed_by_a_later_token_cuts_earlier_text():
    # "lo w" spans three tokens; the "lo" emitted before is held back, never sent.
    det = IncrementalDetokenizer(SPM, ["lo w"])
    chunks = stream(det, encode(SPM, "hello world"))
    assert "".join(chunks) == "hel"


def test_diverging_prefix_of_a_stop_string_is_emitted(tok):
    det = IncrementalDetokenizer(tok, ["STOP"])
    ids = encode(tok, "STOne STOP")
    chunks = stream(det, ids)
    assert "".join(chunks) == "STOne " and det.stopped


def test_held_back_text_is_released_incrementally():
    det = IncrementalDetokenizer(SPM, ["STOP"])
    ids = encode(SPM, "STOne")
    assert [SPM.id_to_token(i) for i in ids] == ["ST", "O", "n", "e"]
    assert [det.add(i) for i in ids] == ["", "", "STOn", "e"]


def test_flush_returns_a_held_back_stop_prefix(tok):
    det = IncrementalDetokenizer(tok, ["STOP"])
    chunks = stream(det, encode(tok, "hello ST"), flush=False)
    assert "".join(chunks) == "hello "
    assert det.flush() == "ST"
    assert det.text == "hello ST" and not det.stopped


def test_flush_releases_an_incomplete_character():
    ids = encode(SPM, "a😀")
    det = IncrementalDetokenizer(SPM, [])
    assert "".join(det.add(i) for i in ids[:-1]) == "a"
    assert det.flush() == SPM.decode(ids[:-1])[1:]


def test_special_tokens_render_as_text_so_stop_strings_see_them():
    ids = encode(SPM, "hi") + [SPM.token_to_id("<eot>")] + encode(SPM, "x")
    det = IncrementalDetokenizer(SPM, ["<eot>"])
    assert "".join(stream(det, ids)) == "hi" and det.stopped
    skip = IncrementalDetokenizer(SPM, [], skip_special_tokens=True)
    assert "".join(stream(skip, ids)) == "hix"


class CountingTokenizer:
    """Records the longest id list it was asked to decode."""

    def __init__(self, inner):
        self.inner, self.longest = inner, 0

    def decode(self, ids, skip_special_tokens=False):
        self.longest = max(self.longest, len(ids))
        return self.inner.decode(ids, skip_special_tokens=skip_special_tokens)


def test_each_token_decodes_a_bounded_window():
    counting = CountingTokenizer(SPM)
    text = "hello world 日本 " * 40
    ids = encode(SPM, text)
    det = IncrementalDetokenizer(counting, ["never"], prompt_token_ids=list(range(300, 400)))
    assert "".join(stream(det, ids)) == text
    assert counting.longest <= 12


def test_prompt_ending_inside_a_byte_run_does_not_corrupt_the_output():
    prompt = encode(SPM, "ab😀")[-2:]  # the emoji's last two bytes, a broken run
    det = IncrementalDetokenizer(SPM, [], prompt_token_ids=prompt)
    assert "".join(stream(det, encode(SPM, "😀x"))) == "😀x"


@pytest.mark.parametrize("name", ["spm-raw", "spm-transformers", "bytelevel-raw"])
def test_token_bytes_concatenate_to_the_utf8_text(name):
    tok = TOKENIZERS[name]
    text = "hello wörld 😀 日本"
    ids = encode(tok, text)
    assert b"".join(token_bytes(tok, i) for i in ids) == text.encode()


def test_token_bytes_of_byte_fallback_and_special_tokens():
    assert token_bytes(SPM, SPM.token_to_id("<0xF0>")) == b"\xf0"
    assert token_bytes(SPM, SPM.token_to_id("▁w")) == b" w"
    assert token_bytes(SPM, SPM.token_to_id("<eot>")) == b"<eot>"
