# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test test-all bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Fake upstream + gateway on the demo policy, embedded Redis; prints a dev key and examples.
run: $(STAMP)
	$(BIN)/gateway demo --policy policies/demo.yaml

# The whole default suite (slow soaks are behind `-m slow`).
test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ''

# Side by side with LiteLLM's proxy and Portkey's gateway (installed once, pinned, under
# bench/peers/.installed), against an nginx upstream: writes bench/results/peers.md. About 10 minutes.
bench: $(STAMP)
	bash bench/peers/setup.sh
	$(BIN)/python bench/peers.py

clean:
	rm -rf $(VENV) .gateway .pytest_cache
