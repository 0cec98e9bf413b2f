# Two entry points for a newcomer: `make demo` and `make test`. Both create .venv from pinned deps.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test screenshots bench bench-stale reliability bench-ablation train-checkpoint validate-setting clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m demo.run

test: $(STAMP)
	$(BIN)/python -m pytest -q

# the README's screenshots of the web UI, taken by its browser test (tests/test_ui.py) in Debian's Chromium
screenshots: $(STAMP)
	HAPVR_WRITE_SCREENSHOTS=1 $(BIN)/python -m pytest -q tests/test_ui.py -k compare

# every benchmark; each rewrites its own section of docs/BENCHMARKS.md (the copy benchmark needs the clip
# collection: HAPVR_SHARED_VIDEOS)
bench: $(STAMP)
	$(BIN)/pip install -q -e '.[bench]' || $(BIN)/pip install -q imagehash==4.3.2 matplotlib==3.11.2
	$(BIN)/python -m bench.encoder_speed
	$(BIN)/python -m bench.decode_strategies
	$(BIN)/python -m bench.engine_speed
	$(BIN)/python -m bench.frame_size
	$(BIN)/python -m bench.copies.run
	$(BIN)/python -m bench.copies.segments  # VCSL's aligners beside ours when HAPVR_VCSL names a checkout of alipay/VCSL
	$(BIN)/python -m bench.copies.calibrate
	$(BIN)/python -m bench.duplicates
	$(BIN)/python -m bench.load_test
	$(BIN)/python -m bench.search_scale
	$(BIN)/python -m bench.search_scale --milvus
	$(BIN)/python -m bench.query_profile
	$(BIN)/python -m bench.coarse_recall
	$(BIN)/python -m bench.train_step
	$(BIN)/python -m bench.keyframes_cost

# only the sections measured with an engine other than today's default (bench/stale.py)
bench-stale: $(STAMP)
	$(BIN)/pip install -q -e '.[bench]' || $(BIN)/pip install -q imagehash==4.3.2 matplotlib==3.11.2
	$(BIN)/python -m bench.stale --rerun

# the long reliability runs whose figures are in docs/RELIABILITY.md (~15 min on 2 cores)
reliability: $(STAMP)
	$(BIN)/python -m bench.fuzz_decode --inputs 10000 --write
	$(BIN)/python -m bench.fuzz_api --examples 1000 --write
	$(BIN)/python -m bench.soak --minutes 5

# the training ablation (docs/TRAINING.md, "Ablation"): four trainings, then exhaustive scores
# on fp32 features, which training uses (~15 min on 2 cores)
ABL_TRAIN := $(BIN)/hapvr train $$($(BIN)/python -m bench.copies.split train) --work hapvr-train
bench-ablation: $(STAMP)
	$(ABL_TRAIN) --out hapvr-train/abl-a.pt --frame-ap 0 --video-ap 0
	$(ABL_TRAIN) --out hapvr-train/abl-b.pt --frame-ap 0
	$(ABL_TRAIN) --out hapvr-train/abl-c.pt
	$(ABL_TRAIN) --out hapvr-train/abl-d.pt --video-surrogate sigmoid
	HAPVR_ENCODER_PRECISION=fp32 $(BIN)/python -m bench.copies.floor \
	  --ablation "(a) InfoNCE + SSHN (S2VS)=hapvr-train/abl-a.pt" --ablation "(b) + video QuadLinear-AP=hapvr-train/abl-b.pt" \
	  --ablation "(c) + frame QuadLinear-AP (HAP-VR)=hapvr-train/abl-c.pt" \
	  --ablation "(d) as (c), sigmoid video AP=hapvr-train/abl-d.pt"

# the shipped checkpoint from scratch (docs/TRAINING.md): one training on every train clip; the
# checkpoint scores with the recipe's fixed inference setting (comparator, Chamfer share 0.5), which
# `make validate-setting` studies
CKPT ?= model/assets/hapvr_sim.pt
CONFIDENCE ?= model/assets/confidence.json
TRAIN_WORK ?= hapvr-train
RECIPE := --pooled-ap 16 --batch 16
SHIPPED_SETTING := --head comparator --chamfer-mix 0.5
SPLIT := $(BIN)/python -m bench.copies.split
train-checkpoint: $(STAMP)
	$(BIN)/hapvr train $$($(SPLIT) train) --out $(CKPT) --work $(TRAIN_WORK) $(RECIPE) $(SHIPPED_SETTING)
	# a new checkpoint moves every score: its confidence map is refitted (docs/MODEL.md, section 6)
	$(BIN)/pip install -q -e '.[bench]' || $(BIN)/pip install -q matplotlib==3.11.2 scikit-learn==1.9.1
	HAPVR_CHECKPOINT=$(CKPT) $(BIN)/python -m bench.copies.calibrate --out $(CONFIDENCE)

# the validation study behind that setting (docs/TRAINING.md, "Choosing the head and the share"): the
# recipe on each validation fold's clips, one network per seed in FOLD_SEEDS, then every head and share
# scored on the clips each fold did not see (MIX_WRITE=--write stores the study's choice in CKPT); with
# three seeds 0.5-3 hours on 2 cores
FOLD_SEEDS ?= 0 1 2
MIX_WRITE ?=
FOLD_NETS := $(foreach s,$(FOLD_SEEDS),$(foreach f,0 1,$(f):$(TRAIN_WORK)/fold$(f)-seed$(s).pt))
validate-setting: $(STAMP)
	for s in $(FOLD_SEEDS); do for f in 0 1; do \
	  $(BIN)/hapvr train $$($(SPLIT) fold-train $$f) --out $(TRAIN_WORK)/fold$$f-seed$$s.pt --work $(TRAIN_WORK)/fold$$f \
	    $(RECIPE) --seed $$s || exit 1; \
	done; done
	HAPVR_ENCODER_PRECISION=fp32 $(BIN)/python -m bench.copies.mix $(CKPT) $(addprefix --fold ,$(FOLD_NETS)) $(MIX_WRITE) --no-test

clean:
	rm -rf $(VENV) hapvr-data .pytest_cache
