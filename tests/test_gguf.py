"""Reading a GGUF header (fast, no llama.cpp): a real file, and the same file cut or
damaged inside its vocabulary, which the reader skips string by string."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from localtable.errors import ModelFileError
from localtable.models.gguf import read_gguf
from tests.realmodels import smollm2_path


def test_a_real_header_is_read_past_its_vocabulary() -> None:
    info = read_gguf(smollm2_path())
    assert info.architecture == "llama"
    assert info.trained_context == 8192
    assert info.chat_template  # stored after the 49k-token vocabulary


@pytest.mark.parametrize("cut", [30, 2_000, 200_000, 700_000])
def test_a_header_cut_inside_is_named(tmp_path: Path, cut: int) -> None:
    model = tmp_path / "model.gguf"
    model.write_bytes(smollm2_path().read_bytes()[:cut])
    # (cut early, an array's count is already more than the bytes left: "corrupt")
    with pytest.raises(ModelFileError, match="cut short|corrupt GGUF header"):
        read_gguf(model)


def test_a_string_longer_than_the_file_is_named(tmp_path: Path) -> None:
    data = bytearray(smollm2_path().read_bytes()[:3_000_000])
    # the vocabulary's first string, found by its key: its length is made absurd
    key = b"tokenizer.ggml.tokens"
    at = data.index(key) + len(key) + 4 + 4 + 8  # value type, item type, count
    struct.pack_into("<Q", data, at, 1 << 40)
    model = tmp_path / "model.gguf"
    model.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="cut short"):
        read_gguf(model)
