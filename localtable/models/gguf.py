"""Check a GGUF file's header before llama.cpp sees it.

llama.cpp reports a truncated or garbage file as "Failed to load model from
file" and hides the reason; a bad file can also crash it. Reading the header
here (magic, version, counts, metadata, tensor table) and checking that every
declared tensor fits inside the file turns all of that into one clear error
that names the file.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from localtable.errors import ModelFileError
from localtable.safefiles import FileRefused, open_regular

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
# Sanity bounds: real models have at most a few thousand tensors and keys.
MAX_TENSORS = 1_000_000
MAX_KV = 1_000_000

# ggml tensor type -> (elements per block, bytes per block), from ggml.c's type traits.
GGML_TYPE_SIZES: dict[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24),
    8: (32, 34), 9: (32, 36), 10: (256, 84), 11: (256, 110), 12: (256, 144),
    13: (256, 176), 14: (256, 210), 15: (256, 292), 16: (256, 66), 17: (256, 74),
    18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82),
    23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8),
    29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66), 39: (32, 17),
}  # fmt: skip

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}  # fmt: skip
_STRING, _ARRAY = 8, 9
_U64 = struct.Struct("<Q")
# Metadata we keep: small scalars and strings; big arrays (the vocabulary) are skipped.
_KEEP_ARRAY_MAX = 64
# Arrays of arrays, at most this deep: llama.cpp writes flat arrays, and a header from
# the Hub is untrusted (100,000 nested arrays would be a RecursionError).
MAX_ARRAY_DEPTH = 4

MetadataValue = str | int | float | bool | list[str | int | float | bool]


class GGUFInfo(BaseModel):
    """What the header says about a model file."""

    model_config = ConfigDict(frozen=True)
    version: int
    tensor_count: int
    metadata: dict[str, MetadataValue]
    data_end: int  # last byte any tensor needs

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", "unknown"))

    @property
    def chat_template(self) -> str | None:
        value = self.metadata.get("tokenizer.chat_template")
        return value if isinstance(value, str) and value.strip() else None

    @property
    def trained_context(self) -> int | None:
        value = self.metadata.get(f"{self.architecture}.context_length")
        return value if isinstance(value, int) else None


class _Truncated(Exception):
    pass


class _Reader:
    def __init__(self, buf: mmap.mmap | bytes) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.buf):
            raise _Truncated
        chunk = self.buf[self.pos : end]
        self.pos = end
        return bytes(chunk)

    def scalar(self, fmt: str) -> int | float | bool:
        size = struct.calcsize(fmt)
        value: int | float | bool = struct.unpack(fmt, self.take(size))[0]
        return value

    def u32(self) -> int:
        return int(self.scalar("<I"))

    def u64(self) -> int:
        return int(self.scalar("<Q"))

    def string(self) -> str:
        n = self.u64()
        return self.take(n).decode("utf-8", errors="replace")

    def value(self, vtype: int, depth: int = 0) -> MetadataValue | None:
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            if depth >= MAX_ARRAY_DEPTH:
                raise ValueError(f"arrays nested more than {MAX_ARRAY_DEPTH} deep")
            item_type = self.u32()
            count = self.u64()
            if count > len(self.buf):
                raise ValueError(f"array of {count} items is larger than the file")
            if count > _KEEP_ARRAY_MAX:
                self._skip_array(item_type, count, depth + 1)
                return None
            items = [self.value(item_type, depth + 1) for _ in range(count)]
            return [i for i in items if isinstance(i, str | int | float | bool)]
        raise ValueError(f"unknown metadata value type {vtype}")

    def _skip_array(self, item_type: int, count: int, depth: int) -> None:
        if item_type in _SCALARS:
            self.take(0)
            size = struct.calcsize(_SCALARS[item_type]) * count
            if self.pos + size > len(self.buf):
                raise _Truncated
            self.pos += size
        elif item_type == _STRING:  # a vocabulary: 262k strings, so a tight loop
            buf, pos, end = self.buf, self.pos, len(self.buf)
            length = _U64.unpack_from
            for _ in range(count):
                if pos + 8 > end:
                    raise _Truncated
                pos += 8 + length(buf, pos)[0]
            if pos > end:
                raise _Truncated
            self.pos = pos
        else:
            for _ in range(count):
                self.value(item_type, depth)


def read_gguf(path: Path) -> GGUFInfo:
    """Parse and check the header; raise ModelFileError naming the file and the problem."""
    try:
        fd = open_regular(path)  # a FIFO or a device is no model, and never hangs the open
        with os.fdopen(fd, "rb") as fh:
            size = os.fstat(fd).st_size
            if size < 24:
                raise ModelFileError(
                    f"{path}: not a GGUF model ({size} bytes); re-download or re-pull it"
                )
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _parse(path, buf, size)
    except FileNotFoundError:
        raise ModelFileError(f"{path}: model file is missing") from None
    except FileRefused as exc:
        raise ModelFileError(f"{path}: not a model file: it {exc}") from None
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read model file ({exc.strerror})") from None


def _parse(path: Path, buf: mmap.mmap, size: int) -> GGUFInfo:
    fix = "re-download or re-pull it (localtable pull)"
    r = _Reader(buf)
    try:
        if r.take(4) != GGUF_MAGIC:
            raise ModelFileError(f"{path}: not a GGUF file (bad magic bytes); {fix}")
        version = r.u32()
        if version not in SUPPORTED_VERSIONS:
            raise ModelFileError(f"{path}: unsupported GGUF version {version}; {fix}")
        tensor_count, kv_count = r.u64(), r.u64()
        if tensor_count > MAX_TENSORS or kv_count > MAX_KV:
            raise ModelFileError(
                f"{path}: corrupt GGUF header ({tensor_count} tensors, {kv_count} keys); {fix}"
            )
        metadata: dict[str, MetadataValue] = {}
        for _ in range(kv_count):
            key = r.string()
            value = r.value(r.u32())
            if value is not None:
                metadata[key] = value
        tensors: list[tuple[str, int, int]] = []  # name, offset, bytes
        for _ in range(tensor_count):
            name = r.string()
            n_dims = r.u32()
            if n_dims > 8:
                raise ValueError(f"tensor {name!r} has {n_dims} dimensions")
            elements = 1
            for _ in range(n_dims):
                elements *= r.u64()
            ggml_type = r.u32()
            offset = r.u64()
            if ggml_type not in GGML_TYPE_SIZES:
                raise ValueError(f"tensor {name!r} has unknown type {ggml_type}")
            block, block_bytes = GGML_TYPE_SIZES[ggml_type]
            tensors.append((name, offset, (elements + block - 1) // block * block_bytes))
    except _Truncated:
        raise ModelFileError(f"{path}: GGUF header is cut short (truncated file); {fix}") from None
    except ValueError as exc:
        raise ModelFileError(f"{path}: corrupt GGUF header: {exc}; {fix}") from None
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0:
        alignment = DEFAULT_ALIGNMENT
    data_start = (r.pos + alignment - 1) // alignment * alignment
    data_end = data_start
    for name, offset, nbytes in tensors:
        end = data_start + offset + nbytes
        if end > size:
            raise ModelFileError(
                f"{path}: truncated: tensor {name!r} needs bytes up to {end:,} but the file "
                f"has {size:,}; {fix}"
            )
        data_end = max(data_end, end)
    return GGUFInfo(
        version=version, tensor_count=tensor_count, metadata=metadata, data_end=data_end
    )
