# Handoff developer commands. `make help` lists them.
# The interpreter: .venv's once `make venv` made one, else python3; PYTHON=... overrides.
# Recursive (=), so that a .venv made by this very command is seen by the next recipe.
ifeq ($(origin PYTHON),undefined)
PYTHON = $(shell test -x .venv/bin/python && echo .venv/bin/python || echo python3)
endif
HANDOFF_HOME ?= /var/tmp/handoff
export HANDOFF_HOME
INGEST_TESTS = tests/integration/test_ingest_batch.py tests/integration/test_ingest_unary.py \
	tests/integration/test_store_paths.py tests/integration/test_notify.py

.PHONY: help venv setup protos protos-check native-check migrate run demo test test-unit test-pure lint bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

venv:  ## make .venv and install there instead (then every target uses it)
	$(PYTHON) tools/setup.py --venv .venv

setup:  ## check the Python version, install Handoff and its dev tools (idempotent)
	$(PYTHON) tools/setup.py

protos:  ## regenerate gRPC code from protos/ into services/common/gen
	PYTHON=$(PYTHON) ./tools/gen_protos.sh

protos-check:  ## fail when the committed gRPC code differs from a fresh generation
	PYTHON=$(PYTHON) ./tools/check_protos.sh

native-check:  ## the C scanner's tests under AddressSanitizer and UBSan
	PYTHON=$(PYTHON) ./tools/check_native.sh

migrate: setup  ## apply database migrations to DATABASE_URL (or the local database)
	$(PYTHON) -m services.run --migrate-only

run: setup  ## migrate and run all four services (local PostgreSQL when DATABASE_URL is unset)
	$(PYTHON) -m services.run

demo: setup  ## like run, plus a demo account, campaign and a few thousand referrals
	$(PYTHON) -m services.run --demo

test: setup  ## run the whole test suite against real PostgreSQL and protocol servers
	$(PYTHON) -m pytest -q

test-pure:  ## the unit and ingest tests with HANDOFF_PURE_PYTHON=1 (extension not used)
	HANDOFF_PURE_PYTHON=1 $(PYTHON) -m pytest -q tests/unit $(INGEST_TESTS)

test-unit:  ## run only the fast unit tests
	$(PYTHON) -m pytest -q tests/unit

lint:  ## ruff and mypy --strict
	$(PYTHON) -m ruff check . && $(PYTHON) -m ruff format --check . && $(PYTHON) -m mypy

bench: setup  ## print throughput, latency and memory beside raw baselines
	$(PYTHON) -m tests.bench

clean:  ## remove caches (not the local database)
	rm -rf .mypy_cache .ruff_cache .pytest_cache build *.egg-info
