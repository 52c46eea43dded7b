# The two commands: `make run` (service on SQLite, no Redis) and `make test` (all checks).
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
TEST_WORKERS ?= 3

.PHONY: run test lint typecheck pytest services bench clean constraints

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,bench]'
	touch $(STAMP)

# After a change of dependencies in pyproject.toml: resolve afresh in a scratch venv, pin it.
constraints:
	rm -rf .venv-pin && python3 -m venv .venv-pin
	.venv-pin/bin/pip install --quiet -e '.[dev,bench]'
	head -3 constraints.txt > constraints.new
	.venv-pin/bin/pip freeze --exclude-editable | grep -v '^switchyard' >> constraints.new
	mv constraints.new constraints.txt && rm -rf .venv-pin

run: $(STAMP)
	$(BIN)/switchyard init
	$(BIN)/switchyard serve --with-worker

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) services
	scripts/ensure-browser  # Debian's chromium for the dashboard's browser test
	scripts/ensure-promtool  # Debian's prometheus: promtool checks and unit-tests the alert rules
	# Most tests wait on servers, not the CPU: TEST_WORKERS processes share them. The drills
	# time a whole deployment, so they run afterwards on a quiet machine. Exit code 5 means
	# PYTEST_ARGS selected none of a half.
	$(BIN)/pytest -q -n $(TEST_WORKERS) -m "not drill" $(PYTEST_ARGS) || [ $$? -eq 5 ]
	$(BIN)/pytest -q -m drill $(PYTEST_ARGS) || [ $$? -eq 5 ]

services:
	scripts/ensure-services

# Issue 12's table in one command: the engines against pgqueuer and plain rq, then the moves
# between the engines against rq's enqueue_many and the runbook's way, each in the same run.
bench: $(STAMP) services
	$(BIN)/python bench/dispatch.py --engine db,rq,peers
	$(BIN)/python bench/migration.py --sizes 100000

clean:
	rm -rf $(VENV) switchyard.db switchyard.db-wal switchyard.db-shm
