# Handoff developer commands. `make help` lists them.
PYTHON ?= python3
HANDOFF_HOME ?= /var/tmp/handoff
export HANDOFF_HOME
INGEST_TESTS = tests/integration/test_ingest_batch.py tests/integration/test_ingest_unary.py \
	tests/integration/test_store_paths.py tests/integration/test_notify.py

.PHONY: help setup protos protos-check native-check migrate run demo test test-unit test-pure lint bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

setup:  ## install Handoff and its dev tools (idempotent)
	$(PYTHON) tools/setup.py

protos:  ## regenerate gRPC code from protos/ into services/common/gen
	./tools/gen_protos.sh

protos-check:  ## fail when the committed gRPC code differs from a fresh generation
	./tools/check_protos.sh

native-check:  ## the C scanner's tests under AddressSanitizer and UBSan
	./tools/check_native.sh

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
	ruff check . && ruff format --check . && mypy

bench: setup  ## print throughput, latency and memory beside raw baselines
	$(PYTHON) -m tests.bench

clean:  ## remove caches (not the local database)
	rm -rf .mypy_cache .ruff_cache .pytest_cache build *.egg-info
