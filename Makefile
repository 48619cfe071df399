# Two commands for a new machine: `make run` (the embedded demo) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv run test test-stress mutate lint soak bench clean node-clients

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

# The suite N times in a row while a busy loop keeps one core at 100%: timing assumptions
# that hold only on an idle machine fail here first. Not in CI (minutes, and it loads the
# machine); run it before landing anything that touches the daemon, scheduling, timing or
# servers (docs/DEVELOPING.md). `make test-stress RUNS=10 PYTEST_ARGS="tests/test_daemon.py"`.
RUNS ?= 5
PYTEST_ARGS ?=
test-stress: venv
	@$(PYTHON) -c 'while True: pass' & hog=$$!; \
	trap 'kill $$hog 2>/dev/null' EXIT INT TERM; \
	for i in $$(seq 1 $(RUNS)); do \
		echo "== test-stress: run $$i of $(RUNS), one core busy (pid $$hog)"; \
		$(BIN)/pytest -n 2 -q -p no:cacheprovider $(PYTEST_ARGS) || { echo "== test-stress: run $$i failed"; exit 1; }; \
	done; \
	echo "== test-stress: $(RUNS) runs passed"

# Mutation testing (mutmut 3) of core modules against their own fast unit tests; prints the
# score per module. Pairs live in pyproject.toml [tool.rotator.mutate]. Not in CI.
# `make mutate MODULES=rotator/policy.py` runs one pair.
MODULES ?=
mutate: venv
	$(BIN)/python -c 'import mutmut' 2>/dev/null || $(BIN)/pip install --quiet -e '.[mutate]'
	$(BIN)/python tools/mutate.py $(MODULES)

soak: venv
	$(BIN)/python -m bench.soak

bench: venv
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) .demo .pytest_cache build dist .cache
