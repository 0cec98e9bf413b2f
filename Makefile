# Two entry points for a newcomer: `make demo` and `make test`. Both create .venv from pinned deps.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench clean

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

# every benchmark; each rewrites its own section of docs/BENCHMARKS.md (needs ../shared/videos)
bench: $(STAMP)
	$(BIN)/pip install -q -e '.[bench]' || $(BIN)/pip install -q imagehash==4.3.2 matplotlib==3.11.2
	$(BIN)/python -m bench.encoder_speed
	$(BIN)/python -m bench.decode_strategies
	$(BIN)/python -m bench.engine_speed
	$(BIN)/python -m bench.copies.run --checkpoint "trained HAP-VR (200 steps, --pooled-ap 16)=model/assets/hapvr_sim_cpu.pt"
	$(BIN)/python -m bench.load_test
	$(BIN)/python -m bench.search_scale

clean:
	rm -rf $(VENV) hapvr-data .pytest_cache
