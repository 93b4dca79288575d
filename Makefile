# The front door. `make demo` runs the whole offline demo; `make test` sets up and runs the tests
# (`make test-fast`: all but the `slow` ones); `make docs` builds the documentation site strictly.
# `make demo TEXT_EMBEDDINGS=1` also embeds the texts with CLIP's text tower, which gives UCMFH its rows.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
DATASET ?= synth
DATA ?= data/$(DATASET)
CACHE ?= cache
RUNS ?= runs
MODEL ?= ViT-B-32
PRETRAINED ?= openai
DEMO_PRETRAINED ?= none
BATCH ?= 256
WORKERS ?= 2
DEVICE ?= auto
PROTOCOL ?= djsrh
SEED ?= 0
BITS ?= 16 32 64 128
SEEDS ?= 0 1 2
SKIP_TORCH ?= 0
TEXT_EMBEDDINGS ?= 0
TEXT_FLAG := $(if $(filter 1,$(TEXT_EMBEDDINGS)),--text-encoder,)

.PHONY: setup features train table tune demo bench bench-gpu test test-cuda test-fast docs clean-demo

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements-torch.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	if [ "$(SKIP_TORCH)" != 1 ]; then $(PY) -m pip install -q -r requirements-torch.txt; fi
	$(PY) -m pip install -q -e '.[test,docs]'
	touch $@

# make features DATASET=nuswide DATA=/data/nus   (DATA: the folder with the dataset's files)
#               [TEXT_EMBEDDINGS=1]  (also the model's CLIP text embeddings of raw texts: UCMFH's input)
features: setup
	$(VENV)/bin/cfrh-cache features $(DATASET) --root $(DATA) --cache-dir $(CACHE) --model $(MODEL) \
	  --pretrained $(PRETRAINED) --batch-size $(BATCH) --workers $(WORKERS) --device $(DEVICE) \
	  --protocol $(PROTOCOL) --seed $(SEED) $(TEXT_FLAG)

# make train DATASET=mirflickr BITS="16 32" SEEDS="0 1" METHOD=cfrh
METHOD ?= cfrh
train: setup
	for b in $(BITS); do for s in $(SEEDS); do \
	  $(VENV)/bin/cfrh-train --dataset $(DATASET) --method $(METHOD) --bits $$b --seed $$s --device $(DEVICE) \
	    --cache-dir $(CACHE) --runs-dir $(RUNS) || exit 1; done; done

# make table [DATASETS="mirflickr nuswide"] [BITS="16 32 64 128"] [SEEDS="0 1 2"] [METHODS="cfrh jdsh …"]
#            (METHODS: every method but the random floor unless named)
#            [ENCODERS="ViT-B-32__openai ViT-L-14__openai"]  (backbones cached side by side)
#            [RERANK=500]  (also what re-ranking the Hamming top-500 adds to mAP@50, and its cost)
#            [EXAMPLES=3]  (also a figure of 3 seeded test queries and every method's top hits)
#            [TUNED=30]  (also rows tuned on validation with the same 30-trial budget per method)
# trains what is missing (finished runs with the same config are reused), writes runs/table.md, .tex, figures/
DATASETS ?=
METHODS ?=
ENCODERS ?=
RERANK ?= 0
EXAMPLES ?= 0
TUNED ?= 0
table: setup
	$(VENV)/bin/cfrh-table --datasets "$(DATASETS)" --bits "$(BITS)" --seeds "$(SEEDS)" --methods "$(METHODS)" \
	  --encoders "$(ENCODERS)" --rerank $(RERANK) --examples $(EXAMPLES) --tuned $(TUNED) \
	  --device $(DEVICE) --cache-dir $(CACHE) --runs-dir $(RUNS)

demo: setup
	test -f data/synth/synth.json || $(VENV)/bin/cfrh-cache synth --out data/synth
	$(VENV)/bin/cfrh-cache features synth --root data/synth --cache-dir $(CACHE) --model $(MODEL) \
	  --pretrained $(DEMO_PRETRAINED) --batch-size 64 --workers $(WORKERS) --device $(DEVICE) $(TEXT_FLAG)
	$(VENV)/bin/cfrh-cache verify $(CACHE)/synth
	$(VENV)/bin/cfrh-cache info $(CACHE)/synth
	$(VENV)/bin/cfrh-train --dataset synth --bits 32 --device $(DEVICE) --cache-dir $(CACHE) --runs-dir $(RUNS) --export
	$(VENV)/bin/cfrh-search $(RUNS)/synth/cfrh/32bit/seed0 --text "red circle" -k 5
	$(VENV)/bin/cfrh-table --datasets synth --bits "16 32" --seeds "0 1" --methods "cfrh jdsh djsrh dgcpn ucch ccah ucmfh cvh imh cmfh lssh lsh random" \
	  --device $(DEVICE) --cache-dir $(CACHE) --runs-dir $(RUNS)

# make tune DATASET=mirflickr METHOD=cfrh BITS=32 TRIALS=30 [JOBS=2]: runs/tune/… (best.json, summary.json)
TRIALS ?= 30
JOBS ?= 1
tune: setup
	for b in $(BITS); do $(VENV)/bin/cfrh-tune --dataset $(DATASET) --method $(METHOD) --bits $$b --trials $(TRIALS) \
	  --jobs $(JOBS) --device $(DEVICE) --cache-dir $(CACHE) --runs-dir $(RUNS) || exit 1; done

# make bench [BENCH_ARGS=--quick]: bench/results.json (ratios against baselines measured in the same run)
BENCH_ARGS ?=
bench: setup
	$(PY) -m pip install -q faiss-cpu || echo "faiss-cpu did not install: the search benchmark runs without it"
	$(PY) bench/run.py --out bench/results.json $(BENCH_ARGS)

# make bench-gpu [BENCH_ARGS=--dry-run]: bench/results-gpu.json, every GPU path (needs CUDA; --dry-run: toy sizes, any device)
bench-gpu: setup
	$(PY) bench/run.py --set gpu --out bench/results-gpu.json $(BENCH_ARGS)

test: setup
	$(PY) -m pytest -q

# make test-cuda: the tests marked cuda on the GPU; where there is none, their logic on the CPU
test-cuda: setup
	$(PY) -m pytest -q -m cuda $$($(PY) -c "import torch; print('' if torch.cuda.is_available() else '--cuda-device cpu')")

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

clean-demo:
	rm -rf data/synth $(CACHE)/synth $(RUNS)/synth
