"""Write a layer-trimmed copy of a llama-architecture GGUF, for the GPU check.

Keeps every metadata key (tokenizer, chat template, ...), the token embeddings,
the output norm (and `output.weight` when the model has one) and the first N
transformer blocks, and sets `<arch>.block_count` to N. The weights that stay
are the original bytes, unchanged, except that `--embd-type Q4_0` re-quantizes
the token embeddings (SmolLM2's are Q8_0, a third of its file) to make room for
more blocks. The result is a real-weights-derived model for determinism and
speed checks of the engine, not for answers: with a fraction of its blocks it
writes poor text.

Needs llama.cpp's gguf-py (the `gguf` package). Usage:
    python scripts/gguf_trim.py IN.gguf OUT.gguf --blocks N [--embd-type Q4_0]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import gguf  # llama.cpp's gguf-py

BLOCK = re.compile(r"^blk\.(\d+)\.")


def kept(name: str, blocks: int) -> bool:
    m = BLOCK.match(name)
    return m is None or int(m.group(1)) < blocks


def requantized(tensor: gguf.ReaderTensor, qtype: gguf.GGMLQuantizationType) -> object:
    """A tensor's data dequantized to float32 and quantized again as qtype."""
    values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    return gguf.quants.quantize(values.astype("float32"), qtype)


def trim(
    src: Path, dst: Path, blocks: int, name: str | None = None, embd_type: str | None = None
) -> dict[str, object]:
    reader = gguf.GGUFReader(str(src))
    arch_field = reader.get_field(gguf.Keys.General.ARCHITECTURE)
    if arch_field is None:
        raise SystemExit(f"{src}: no general.architecture")
    arch = str(arch_field.contents())
    count_key = f"{arch}.block_count"
    count_field = reader.get_field(count_key)
    if count_field is None:
        raise SystemExit(f"{src}: no {count_key}")
    total = int(count_field.contents())
    if not 1 <= blocks <= total:
        raise SystemExit(f"--blocks must be 1..{total} for {src}")
    writer = gguf.GGUFWriter(str(dst), arch=arch, endianess=reader.endianess)
    for field in reader.fields.values():
        # general.architecture and the GGUF.* virtual fields are the writer's own
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        val_type = field.types[0]
        sub_type = field.types[-1] if val_type == gguf.GGUFValueType.ARRAY else None
        value = field.contents()
        if field.name == count_key:
            value = blocks
        elif field.name == gguf.Keys.General.NAME and name is not None:
            value = name
        writer.add_key_value(field.name, value, val_type, sub_type=sub_type)
    tensors = [t for t in reader.tensors if kept(t.name, blocks)]
    data = {t.name: (t.data, t.tensor_type) for t in tensors}
    if embd_type is not None:
        qtype = gguf.GGMLQuantizationType[embd_type]
        embd = next(t for t in tensors if t.name == "token_embd.weight")
        data[embd.name] = (requantized(embd, qtype), qtype)
    for t in tensors:
        array, qtype = data[t.name]
        writer.add_tensor_info(t.name, array.shape, array.dtype, array.nbytes, qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in tensors:
        writer.write_tensor_data(data[t.name][0], tensor_endianess=reader.endianess)
    writer.close()
    return {
        "architecture": arch,
        "blocks": blocks,
        "blocks_in_source": total,
        "tensors": len(tensors),
        "tensors_in_source": len(reader.tensors),
        "token_embd": embd_type or "unchanged",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument("--blocks", type=int, required=True, help="transformer blocks to keep")
    parser.add_argument("--name", help="general.name of the result")
    parser.add_argument("--embd-type", choices=["Q4_0", "Q4_1", "Q5_0", "Q8_0"],
                        help="re-quantize the token embeddings")  # fmt: skip
    args = parser.parse_args(argv)
    info = trim(args.src, args.dst, args.blocks, args.name, args.embd_type)
    print(" ".join(f"{k}={v}" for k, v in info.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
