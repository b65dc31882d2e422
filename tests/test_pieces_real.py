"""Detokenizing from remembered pieces gives llama-cpp-python's own bytes, on both
tiny models' whole vocabularies (pieces.py)."""

from __future__ import annotations

import random

import pytest

from localtable.backends.llamacpp.pieces import PieceCache, install
from localtable.config import load_config
from localtable.models.files import resolve
from tests.conftest import MODELS_TOML

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("model", ["smollm2-135m", "gemma3-270m"])
def test_pieces_give_the_same_bytes_as_llama_cpp_python(model: str) -> None:
    import llama_cpp

    path = resolve(model, load_config(MODELS_TOML)).path
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, verbose=False)
    try:
        plain = llm.tokenizer_
        install(llm)
        install(llm)  # once is enough: not a cache of a cache
        cache = llm.tokenizer_
        assert isinstance(cache, PieceCache) and cache.tokenizer is plain
        n_vocab = llm.n_vocab()
        bos = llm.token_bos()
        rng = random.Random(7)
        long_pieces = 0
        for special in (False, True):
            for token in range(n_vocab):  # every token alone, and after a BOS
                want = plain.detokenize([token], special=special)
                assert cache.detokenize([token], special=special) == want, token
                assert cache.detokenize([bos, token], special=special) == plain.detokenize(
                    [bos, token], special=special
                )
            long_pieces += sum(piece is None for piece in cache.pieces.values())
            for _ in range(300):  # sequences, asked twice: computed, then remembered
                tokens = [rng.randrange(n_vocab) for _ in range(rng.randrange(1, 60))]
                want = plain.detokenize(tokens, special=special)
                assert cache.detokenize(tokens, [1, 2], special) == want
                assert llm.detokenize(tokens, special=special) == want
        assert llm.tokenize(b"Hello there") == plain.tokenize(b"Hello there")  # passed on
        # both vocabularies have pieces over the 32-byte buffer: never remembered, their
        # calls go llama-cpp-python's way (whose bytes depend on what the buffer held)
        assert long_pieces > 0
    finally:
        llm.close()
