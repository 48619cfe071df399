# Two commands for a new machine: `make run` (the embedded demo) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv run test lint soak bench clean node-clients

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,aws]'
	touch $(STAMP)

# jsforce (npm) for the real-client tests of the Salesforce emulator, into .cache/node, once
# (stamped); fails loudly when npm cannot install it. See tests/testing/node_clients.py.
node-clients: venv
	$(BIN)/python -m tests.testing.node_clients

run: venv
	$(BIN)/rotator demo --duration $${DURATION:-30}

test: venv node-clients
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/pytest -n 2 -q

soak: venv
	$(BIN)/python -m bench.soak

bench: venv
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) .demo .pytest_cache build dist .cache
