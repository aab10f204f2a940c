# The two commands of the README: `make run` (install, then the live demo) and
# `make test` (install, then lint + tests). Both create .venv when missing and reuse it.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
# Deselect slow tests unless asked: `make test SLOW=1`.
PYTEST_ARGS ?=
ifeq ($(SLOW),1)
PYTEST_ARGS += -m ''
endif

.PHONY: run test install proto clean bench

install: $(STAMP)

# torch==2.13.0 first: its CPU build lies on this machine's disk, and once it is installed
# pyproject's range is satisfied, so nothing pulls a CUDA build. constraints.txt pins the tree.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/interplay info

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

proto: $(STAMP)
	$(BIN)/python proto/generate.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
