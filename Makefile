# Agent Bridge: `make run` and `make test` are the whole set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= config.yaml
HOST ?= 127.0.0.1
PORT ?= 8000
EMULATOR_PORT ?= 8100

.PHONY: run test check lint types emulator bench bench-cpu profile clients clean

# One installer at a time: `make run` and `make test` started together on a fresh clone share the
# lock, and the second one finds the stamp fresh and installs nothing.
$(STAMP): pyproject.toml
	@flock $(VENV).lock sh -c '\
	  if [ -f $(STAMP) ] && [ $(STAMP) -nt pyproject.toml ]; then exit 0; fi; \
	  set -e; \
	  test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); \
	  $(BIN)/python -m pip install --quiet --upgrade pip; \
	  $(BIN)/python -m pip install --quiet -e ".[dev]"; \
	  touch $(STAMP)'

run: $(STAMP)
	AZURE_EMULATOR_URL=$${AZURE_EMULATOR_URL:-http://127.0.0.1:$(EMULATOR_PORT)} \
	  $(BIN)/agent-bridge dev --config $(CONFIG) --host $(HOST) --port $(PORT) --emulator-port $(EMULATOR_PORT)

emulator: $(STAMP)
	$(BIN)/agent-bridge emulator --host $(HOST) --port $(EMULATOR_PORT)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check app tests bench scripts
	$(BIN)/ruff format --check app tests bench scripts

types: $(STAMP)
	$(BIN)/mypy

check: lint types test

bench: $(STAMP)
	$(BIN)/python -c "import matplotlib" 2>/dev/null || $(BIN)/python -m pip install --quiet matplotlib
	$(BIN)/python -m bench

# Bridge CPU per chat follow-up, the working tree against a reference commit (default 2a03fea, where issue 12
# measured 1.28 ms) in alternating rounds of one run, so the day's machine speed cancels (~90 s).
# REFERENCE=<commit> compares with another.
bench-cpu: $(STAMP)
	$(BIN)/python -m bench.cpu $(if $(REFERENCE),--reference $(REFERENCE))

# Python calls per chat follow-up, by package (cProfile; steady where CPU time is not): compare commits.
profile: $(STAMP)
	$(BIN)/python -m bench.profile

# Eight real clients (openai Python and Node, LangChain, LlamaIndex, the Vercel AI SDK, pydantic-ai,
# the Agents SDK, curl) through every scenario on both backends; installs them outside the project's venv.
clients: $(STAMP)
	$(BIN)/python -m bench.clients

clean:
	rm -rf $(VENV) $(VENV).lock .pytest_cache .mypy_cache .ruff_cache
