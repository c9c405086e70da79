"""Incremental detokenization with stop strings, one token at a time.

Text is produced by decoding a short sliding window of tokens twice (with and without the
newest ones) and emitting the difference, as vLLM's and TGI's incremental detokenizers do.
Decoding a window, not single tokens, keeps the tokenizer's own rules for leading spaces
(sentencepiece `▁`, byte-level `Ġ`) and merges byte-fallback tokens (`<0xE2>`...) into whole
characters: while the window's text ends in U+FFFD a multi-byte character is still incomplete,
so nothing is emitted yet.

Stop strings are matched on the text not yet emitted. Text that could still be the start of a
stop string is held back; once a stop string matches, it and everything after it are dropped.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

_REPLACEMENT = "\ufffd"
# Prompt tokens kept as the first output token's decoding context (leading-space rules).
_CONTEXT_TOKENS = 5
# A UTF-8 character is at most 4 bytes; a window still ending in U+FFFD after this many
# pending tokens holds a genuine replacement character, not a split one.
_MAX_PENDING_TOKENS = 6


class IncrementalDetokenizer:
    """Feeds one request's generated tokens, emits text that is safe to stream.

    `tokenizer` is a transformers tokenizer or a `tokenizers.Tokenizer`. `prompt_token_ids`
    (the end of the prompt) gives the first output token its decoding context, so a leading
    space is kept as it appears in the full decode. Special tokens are rendered as text, as
    llama.cpp's token_to_piece does for Ollama, so stop strings such as `<end_of_turn>` match.
    """

    def __init__(
        self,
        tokenizer: Any,
        stop: list[str] | None = None,
        prompt_token_ids: list[int] | None = None,
        skip_special_tokens: bool = False,
    ):
        self._tokenizer = tokenizer
        self._is_transformers = hasattr(tokenizer, "convert_ids_to_tokens")
        self._skip_special = skip_special_tokens
        self._stop = [s for s in (stop or []) if s]
        self._ids = self._prompt_context(prompt_token_ids or [])
        self._read_offset = len(self._ids)  # ids before it are emitted context
        self._pending = ""  # decoded, not yet emitted (a possible stop-string start)
        self._emitted: list[str] = []
        self.stopped = False
        self.stop_string: str | None = None  # the stop string that matched, if any

    @property
    def text(self) -> str:
        return "".join(self._emitted)

    def add(self, token_id: int) -> str:
        """Take one generated token; return the text that may be sent now (often "")."""
        if self.stopped:
            return ""
        self._ids.append(int(token_id))
        return self._release(self._decode_new(final=False))

    def flush(self) -> str:
        """At the end of generation: the held-back text (empty after a stop string)."""
        if self.stopped:
            return ""
        new = self._decode_new(final=True)
        if self.stopped:
            return ""
        text = self._pending + new
        self._pending = ""
        stop_at = self._find_stop(text)
        if stop_at is not None:
            text = text[:stop_at]
        return self._emit(text)

    def _prompt_context(self, prompt: list[int]) -> list[int]:
        # A context that starts inside a byte-fallback run would decode its whole run, and
        # the first output character with it, to U+FFFD; start after the broken bytes.
        context = list(prompt[-_CONTEXT_TOKENS:])
        while context and self._decode(context).startswith(_REPLACEMENT):
            context.pop(0)
        return context

    def _decode(self, ids: list[int]) -> str:
        if self._is_transformers:
            # Clean-up would rewrite " ." to "." inside the window and break the diff.
            return self._tokenizer.decode(
                ids, skip_special_tokens=self._skip_special, clean_up_tokenization_spaces=False
            )
        return self._tokenizer.decode(ids, skip_special_tokens=self._skip_special)

    def _decode_new(self, final: bool) -> str:
        if self._read_offset >= len(self._ids):
            return ""
        prefix = self._decode(self._ids[: self._read_offset])
        full = self._decode(self._ids)
        waiting = len(self._ids) - self._read_offset
        if not final and full.endswith(_REPLACEMENT) and waiting < _MAX_PENDING_TOKENS:
            return ""
        # Slice by length, not by prefix match: vLLM's rule, robust to decoders that rewrite
        # the window's first characters the same way in both decodes.
        new = full[len(prefix) :]
        # The tokens just emitted become the next context: they start on a character
        # boundary, whereas a fixed-size tail could start inside a byte-fallback run, and
        # the decoder would then turn the whole run, new character included, into U+FFFD.
        self._ids = self._ids[self._read_offset :]
        self._read_offset = len(self._ids)
        return new

    def _release(self, new: str) -> str:
        if not new:
            return ""
        text = self._pending + new
        stop_at = self._find_stop(text)
        if stop_at is not None:
            self._pending = ""
            self.stopped = True
            return self._emit(text[:stop_at])
        hold = self._partial_stop_len(text)
        self._pending = text[len(text) - hold :] if hold else ""
        return self._emit(text[: len(text) - hold])

    def _find_stop(self, text: str) -> int | None:
        best: int | None = None
        for s in self._stop:
            at = text.find(s)
            if at >= 0 and (best is None or at < best):
                best, self.stop_string = at, s
        return best

    def _partial_stop_len(self, text: str) -> int:
        """Length of the longest suffix of `text` that is a proper prefix of a stop string."""
        longest = 0
        for s in self._stop:
            for n in range(min(len(s) - 1, len(text)), longest, -1):
                if text.endswith(s[:n]):
                    longest = n
                    break
        return longest

    def _emit(self, text: str) -> str:
        if text:
            self._emitted.append(text)
        return text


_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@lru_cache(maxsize=1)
def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-to-printable-character table, inverted: byte-level BPE pieces spell each
    byte as one printable character (space is `Ġ`)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[chr(b)] = b
        else:
            table[chr(256 + extra)] = b
            extra += 1
    return table


def token_bytes(tokenizer: Any, token_id: int) -> bytes:
    """The UTF-8 bytes one token stands for, as Ollama's logprobs report them (§2.9):
    `<0xNN>` byte-fallback tokens give their byte, sentencepiece `▁` a space, byte-level
    BPE pieces their raw bytes; special tokens their text."""
    if hasattr(tokenizer, "convert_ids_to_tokens"):
        piece = tokenizer.convert_ids_to_tokens(int(token_id))
        backend = getattr(tokenizer, "backend_tokenizer", None)
    else:
        piece = tokenizer.id_to_token(int(token_id))
        backend = getattr(tokenizer, "_tokenizer", tokenizer)
    if piece is None:
        return b""
    if m := _BYTE_TOKEN.fullmatch(piece):
        return bytes([int(m.group(1), 16)])
    decoder = getattr(backend, "decoder", None)
    if decoder is not None and "ByteLevel" in repr(decoder):
        alphabet = _byte_level_alphabet()
        if all(ch in alphabet for ch in piece):
            return bytes(alphabet[ch] for ch in piece)
    return piece.replace("\u2581", " ").encode()
