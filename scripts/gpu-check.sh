#!/usr/bin/env bash
# Check localtable on a GPU machine in one go (issue #16): build llama-cpp-python
# 0.3.36 with CUDA for Hopper from gpu-bundle/ (scripts/gpu-prepare.sh), install
# localtable from this tree, then scripts/gpu_check.py runs the debates,
# determinism, replay, prefix-reuse and speed checks with every model on the GPU
# (gpu_layers = -1) and on the same build's CPU path.
#
#   bash scripts/gpu-check.sh --out DIR              on the GPU machine (nothing is
#                                                    fetched: no network there)
#   bash scripts/gpu-check.sh --out DIR --cpu-only \  anywhere: no CUDA build, no GPU
#       --python .venv/bin/python --deps installed --llama installed
#
# Options:
#   --out DIR          gpu-check.log (everything), gpu-check.json (every figure),
#                      gpu-check-table.txt, records.tar.gz (every run record)
#   --cpu-only         build without CUDA and run every check on the CPU
#   --python PY        interpreter (default python3: 3.12 on the device)
#   --deps bundle|installed    install gpu-bundle/wheels (default) or use what PY has
#   --llama build|installed    build from the bundled source (default) or use PY's
#   --work DIR         scratch folder (default /tmp/localtable-gpu-check)
#   --bundle DIR       default gpu-bundle
#   --jobs N           build jobs (default: all cores)
#   --cuda-arch A      CMAKE_CUDA_ARCHITECTURES (default 90: Hopper)
#   --rounds N, --seed N   the debates' (default 3, 42: from round 3 on a prompt
#                      repeats most of the panelist's previous one, which reuse skips)
#   --time-limit S     stop starting new steps after S seconds in all (default 570
#                      on a GPU, to end inside the device tool's 600 s; 3600 --cpu-only)
#   --models-toml-panel auto|skip   run models.toml's tiny panel (SmolLM2 135M and
#                      Gemma 3 270M, untrimmed) when its packages are installed
#   --build-only       stop after building and installing (no model is run)
#
# Timing (GPU): the CUDA build is most of it. Flash attention kernels are not
# compiled (-DGGML_CUDA_FA=OFF: localtable never turns flash attention on), nor
# the multimodal library (-DLLAVA_BUILD=OFF: localtable does not use it), for
# one architecture with every core; the debates of the tiny panel take seconds.
set -uo pipefail

OUT= ; CPU_ONLY=0 ; PY=python3 ; DEPS=bundle ; LLAMA=build
WORK=/tmp/localtable-gpu-check ; BUNDLE=gpu-bundle ; JOBS=$(nproc) ; ARCH=90
ROUNDS=3 ; SEED=42 ; LIMIT= ; TOML_PANEL=auto ; BUILD_ONLY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --cpu-only) CPU_ONLY=1; shift ;;
    --python) PY=$2; shift 2 ;;
    --deps) DEPS=$2; shift 2 ;;
    --llama) LLAMA=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --bundle) BUNDLE=$2; shift 2 ;;
    --jobs) JOBS=$2; shift 2 ;;
    --cuda-arch) ARCH=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    --time-limit) LIMIT=$2; shift 2 ;;
    --models-toml-panel) TOML_PANEL=$2; shift 2 ;;
    --build-only) BUILD_ONLY=1; shift ;;
    -h|--help) sed -n "2,/^set -uo/p" "$0" | sed "\$d"; exit 0 ;;
    *) echo "gpu-check: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$OUT" ] || { echo "gpu-check: --out DIR is required" >&2; exit 2; }

[ -n "$LIMIT" ] || { [ "$CPU_ONLY" = 1 ] && LIMIT=3600 || LIMIT=570; }
cd "$(dirname "$0")/.."
ROOT=$PWD
START=$(date +%s)
DEADLINE=$((START + LIMIT))
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
BUNDLE=$(cd "$BUNDLE" 2>/dev/null && pwd) || { echo "gpu-check: no $BUNDLE: run scripts/gpu-prepare.sh" >&2; exit 2; }
LOG=$OUT/gpu-check.log
: > "$LOG"
# Everything goes to the log; progress lines and the table also to the console (fd 3).
exec 3>&1 >>"$LOG" 2>&1
say() { local line; line="[$(date +%H:%M:%S) +$(( $(date +%s) - START ))s] $*"; echo "$line"; echo "$line" >&3; }
die() { say "FAILED: $*"; tail -n 25 "$LOG" | grep -v '^\[' >&3; exit 1; }

MODE=gpu; [ "$CPU_ONLY" = 1 ] && MODE=cpu-only
say "localtable gpu-check, mode $MODE, tree $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), log $LOG"
{
  echo "--- machine"; uname -a; nproc; free -g | head -2
  command -v nvidia-smi >/dev/null && nvidia-smi
  command -v nvcc >/dev/null && nvcc --version
  cmake --version | head -1; "$PY" --version; command -v ninja && ninja --version
} || true
if [ "$MODE" = gpu ]; then
  command -v nvcc >/dev/null || die "no nvcc: a CUDA build needs the CUDA compiler (or use --cpu-only)"
  nvidia-smi -L >/dev/null 2>&1 || die "nvidia-smi sees no GPU (or use --cpu-only)"
fi

rm -rf "$WORK" && mkdir -p "$WORK/site"
SITE=$WORK/site
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
PIP=("$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE")

# Python packages: the bundle's wheels (the device image has numpy, not the rest).
if [ "$DEPS" = bundle ]; then
  say "installing $(ls "$BUNDLE"/wheels/*.whl | wc -l) wheels from the bundle"
  "${PIP[@]}" "$BUNDLE"/wheels/*.whl || die "installing the bundled wheels"
fi
# Build back-ends (scikit-build-core, hatchling: pure Python) when PY brings the rest.
BUILD_PATH=$PYTHONPATH
if [ "$DEPS" = installed ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$WORK/buildtools" $(ls "$BUNDLE"/wheels/*.whl \
    | grep -E '/(hatchling|pluggy|pathspec|packaging|trove_classifiers|tomlkit|scikit_build_core)-') \
    || die "installing the build back-ends"
  BUILD_PATH=$WORK/buildtools:$PYTHONPATH
fi
"$PY" -c 'import numpy, pydantic, click, jinja2, huggingface_hub, diskcache; print("numpy", numpy.__version__, "pydantic", pydantic.__version__, "huggingface_hub", huggingface_hub.__version__)' \
  || die "a Python package localtable needs is missing"

# llama-cpp-python, built from the bundled source.
BUILD_JSON=$WORK/build.json
# The Makefile's portable x86-64 CPU flags (AVX2/FMA, no AVX-512/AMX), for both modes.
CPU_FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
if [ "$LLAMA" = build ]; then
  SRC_TAR=$(ls "$BUNDLE"/llama_cpp_python-*-cuda-src.tar.xz) || die "no source package in $BUNDLE"
  mkdir -p "$WORK/src" && tar xJf "$SRC_TAR" -C "$WORK/src" || die "unpacking $SRC_TAR"
  SRC_DIR=$(ls -d "$WORK"/src/llama_cpp_python-*)
  if [ "$MODE" = gpu ]; then
    CMAKE_ARGS="$CPU_FLAGS -DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=$ARCH -DGGML_CUDA_FA=OFF -DGGML_CUDA_FA_ALL_QUANTS=OFF -DGGML_CUDA_NCCL=OFF -DLLAVA_BUILD=OFF"
  else
    CMAKE_ARGS="$CPU_FLAGS -DLLAVA_BUILD=OFF"
  fi
  export CMAKE_ARGS CMAKE_BUILD_PARALLEL_LEVEL=$JOBS
  say "building llama-cpp-python with $JOBS jobs: CMAKE_ARGS=$CMAKE_ARGS (build log in $WORK/build.log)"
  T0=$(date +%s)
  PYTHONPATH=$BUILD_PATH "$PY" -m pip wheel -v --no-deps --no-index --no-build-isolation --no-cache-dir -w "$WORK/wheel" "$SRC_DIR" \
    > "$WORK/build.log" 2>&1
  RC=$?
  SECONDS_BUILD=$(( $(date +%s) - T0 ))
  cat "$WORK/build.log"
  WHEEL=$(ls "$WORK"/wheel/llama_cpp_python-*.whl 2>/dev/null | head -1)
  "$PY" - "$BUILD_JSON" "$RC" "$SECONDS_BUILD" "$CMAKE_ARGS" "$JOBS" "${WHEEL:-}" <<'EOF'
import hashlib, json, sys
path, rc, seconds, args, jobs, wheel = sys.argv[1:7]
info = {"how": "built here from the bundled source", "rc": int(rc), "seconds": int(seconds),
        "cmake_args": args, "jobs": int(jobs), "wheel": wheel.rsplit("/", 1)[-1] or None}
if wheel:
    info["wheel_sha256"] = hashlib.sha256(open(wheel, "rb").read()).hexdigest()
json.dump(info, open(path, "w"), indent=2)
EOF
  [ "$RC" = 0 ] && [ -n "$WHEEL" ] || { tail -n 40 "$WORK/build.log" >&3; die "the llama-cpp-python build (exit $RC, ${SECONDS_BUILD}s)"; }
  say "built $(basename "$WHEEL") in ${SECONDS_BUILD}s"
  "${PIP[@]}" "$WHEEL" || die "installing $WHEEL"
else
  echo '{"how": "already installed in the interpreter"}' > "$BUILD_JSON"
fi

# The CUDA runtime libraries the build links (cudart, cuBLAS), wherever the toolkit is.
if [ "$MODE" = gpu ]; then
  NVCC_DIR=$(dirname "$(command -v nvcc)")
  for d in "${CUDA_HOME:-/nonexistent}/lib64" "$NVCC_DIR/../lib64" "$NVCC_DIR/../targets/x86_64-linux/lib" \
           /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [ -d "$d" ] && LD_LIBRARY_PATH=$(cd "$d" && pwd)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  done
  export LD_LIBRARY_PATH
fi
"$PY" -c 'import llama_cpp; print("llama_cpp", llama_cpp.__version__, "GPU offload:", llama_cpp.llama_supports_gpu_offload()); print(llama_cpp.llama_print_system_info().decode())' \
  || die "llama_cpp does not import (LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-})"

# localtable from this tree (hatchling from the bundle, or PY's own in --deps installed).
say "installing localtable from $ROOT"
PYTHONPATH=$BUILD_PATH "${PIP[@]}" --no-build-isolation "$ROOT" || die "installing localtable from the tree"

if [ "$BUILD_ONLY" = 1 ]; then
  cp "$BUILD_JSON" "$OUT/build.json"
  say "build only: done in $(( $(date +%s) - START ))s; $OUT/build.json"
  exit 0
fi
say "running the checks ($(( DEADLINE - $(date +%s) ))s left of ${LIMIT}s)"
ARGS=(run --mode "$MODE" --out "$OUT" --work "$WORK" --bundle "$BUNDLE" --build-json "$BUILD_JSON"
      --rounds "$ROUNDS" --seed "$SEED" --deadline "$DEADLINE" --models-toml-panel "$TOML_PANEL"
      --console /dev/fd/3)
(cd "$WORK" && "$PY" "$ROOT/scripts/gpu_check.py" "${ARGS[@]}")
RC=$?
say "done in $(( $(date +%s) - START ))s (exit $RC): $OUT/gpu-check.json, gpu-check-table.txt, records.tar.gz"
exit $RC
