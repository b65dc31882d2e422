"""Detokenizing by remembered pieces.

llama-cpp-python's create_completion detokenizes the whole completion again after
every token (to look for stop strings), one ctypes call per token: a 100-token
answer makes 5,050 calls, 0.1-0.15 s of a tiny-panel debate's 1.1 s of
sampling. A token's piece never changes, so each is asked once per model.

The result is byte for byte llama-cpp-python's (LlamaModel.detokenize): the same
llama_token_to_piece call, pieces joined, the leading space dropped after a BOS
token. A piece longer than its 32-byte buffer comes back from that code garbled
by whatever the buffer held before; such a token is never remembered and its
call goes the original way.
"""

from __future__ import annotations

import ctypes
from typing import Any

_BUFFER = 32  # LlamaModel.detokenize's buffer size
_UNASKED = object()  # the lookup's default: a token not asked yet


class PieceCache:
    """A drop-in for a Llama's tokenizer_ (LlamaTokenizer): detokenize from pieces."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.model = tokenizer._model
        self.bos = self.model.token_bos()
        self.pieces: dict[tuple[int, bool], Any] = {}  # bytes; None: longer than the buffer

    def __getattr__(self, name: str) -> Any:  # tokenize, encode, decode: unchanged
        return getattr(self.tokenizer, name)

    def detokenize(
        self, tokens: list[int], prev_tokens: list[int] | None = None, special: bool = False
    ) -> bytes:
        parts = []
        for token in tokens:
            piece = self.pieces.get((token, special), _UNASKED)
            if piece is _UNASKED:
                piece = self._piece(token, special)
            if piece is None:
                original: bytes = self.tokenizer.detokenize(tokens, prev_tokens, special)
                return original
            parts.append(piece)
        out = b"".join(parts)
        if tokens and tokens[0] == self.bos and out[:1] == b" ":
            return out[1:]
        return out

    def _piece(self, token: int, special: bool) -> bytes | None:
        import llama_cpp

        buffer = (ctypes.c_char * _BUFFER)()
        n = llama_cpp.llama_token_to_piece(
            self.model.vocab, llama_cpp.llama_token(token), buffer, _BUFFER, 0, special
        )
        piece = buffer.raw[:n] if 0 <= n <= _BUFFER else None
        self.pieces[(token, special)] = piece
        return piece


def install(llm: Any) -> None:
    """Detokenize `llm`'s text (and its twins', which share its tokenizer_) by pieces."""
    if not isinstance(llm.tokenizer_, PieceCache):
        llm.tokenizer_ = PieceCache(llm.tokenizer_)
