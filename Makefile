# ordermgr — the two commands are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install services run migrate paper test typecheck chaos bench clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the package with its test extras

services:          ## start PostgreSQL and RabbitMQ on localhost if they are down
	@scripts/ensure-services.sh

run: install services  ## migrate and start the daemon with a local configuration (paper venue)
	@scripts/run-local.sh

migrate: install   ## apply the schema alone
	$(PY) -m ordermgr migrate

paper: install     ## run the paper venue alone on port 8600
	$(PY) -m ordermgr.paper --port 8600

test: install services  ## the whole suite against the real PostgreSQL and RabbitMQ
	$(PY) -m pytest

chaos: install services  ## the fault suite at full size (make test runs the short one); prints its table
	ORDERMGR_CHAOS=full $(PY) -m pytest tests/chaos -q -rxX

BENCH_ARGS ?=
bench: install services  ## ordermgr against the floor consumer: throughput, latency, CPU, RSS (bench/README.md)
	$(PY) -m bench.run $(BENCH_ARGS)

typecheck: install  ## mypy --strict over the package
	$(PY) -m mypy

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
