"""Incremental detokenizer on the real Gemma 3 tokenizer (sentencepiece with byte fallback)."""

from __future__ import annotations

import pytest

from backends.detokenizer import IncrementalDetokenizer, token_bytes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gemma_tokenizer(gemma_gguf):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gemma_gguf.parent), gguf_file=gemma_gguf.name)


def stream(det: IncrementalDetokenizer, ids: list[int]) -> list[str]:
    return [det.add(i) for i in ids] + [det.flush()]


@pytest.mark.parametrize(
    "text",
    [
        "Hello, world! Ça va? naïve café",
        "日本語のテキストと中文 한국어",
        "emoji 😀🎉🫨🪿 and more",
        "hieroglyphs 𓀀𓁐𠀋 ꙮ end",
        "  spaces\n\n  and\ttabs  ",
    ],
)
def test_streams_to_the_full_decode_without_replacement_chars(gemma_tokenizer, text):
    ids = gemma_tokenizer.encode(text, add_special_tokens=False)
    det = IncrementalDetokenizer(gemma_tokenizer, [])
    chunks = stream(det, ids)
    assert all("\ufffd" not in c for c in chunks)
    assert "".join(chunks) == gemma_tokenizer.decode(ids) == text


def test_byte_fallback_characters_arrive_whole(gemma_tokenizer):
    ids = gemma_tokenizer.encode("a𓀀b", add_special_tokens=False)
    pieces = gemma_tokenizer.convert_ids_to_tokens(ids)
    assert sum(p.startswith("<0x") for p in pieces) == 4
    first = next(i for i, p in enumerate(pieces) if p.startswith("<0x"))
    chunks = stream(IncrementalDetokenizer(gemma_tokenizer, []), ids)
    assert chunks[first : first + 3] == ["", "", ""]
    assert "𓀀" in chunks[first + 3]
    assert "".join(chunks) == "a𓀀b"


def test_output_after_a_prompt_keeps_its_leading_space(gemma_tokenizer):
    prompt = gemma_tokenizer.encode("<start_of_turn>model\nSure", add_special_tokens=True)
    full = gemma_tokenizer.encode("<start_of_turn>model\nSure, 日本 here")
    assert full[: len(prompt)] == prompt
    det = IncrementalDetokenizer(gemma_tokenizer, [], prompt_token_ids=prompt)
    assert "".join(stream(det, full[len(prompt) :])) == ", 日本 here"


def test_end_of_turn_stop_string_and_split_stop(gemma_tokenizer):
    text = "The answer is 42.<end_of_turn>\nignored"
    ids = gemma_tokenizer.encode(text, add_special_tokens=False)
    det = IncrementalDetokenizer(gemma_tokenizer, ["<end_of_turn>"])
    assert "".join(stream(det, ids)) == "The answer is 42." and det.stopped

    ids = gemma_tokenizer.encode("one two three four", add_special_tokens=False)
    det = IncrementalDetokenizer(gemma_tokenizer, ["o thr", "never"])
    assert "".join(stream(det, ids)) == "one tw" and det.stop_string == "o thr"


def test_token_bytes_rebuild_the_utf8_text(gemma_tokenizer):
    text = "Hi 😀 𓀀 日本語 <end_of_turn> héllo"
    ids = gemma_tokenizer.encode(text, add_special_tokens=False)
    assert b"".join(token_bytes(gemma_tokenizer, i) for i in ids) == text.encode()
