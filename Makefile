# trainguard developer entry points. `make help` lists them.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
TG      := $(VENV)/bin/trainguard
PYTEST_ARGS ?=

.PHONY: help install kafka-jars demo eval test test-unit lint bench schemas clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

install: $(VENV)/.installed  ## create .venv and install trainguard with every extra

kafka-jars: install  ## fetch the pinned Kafka broker jars from Maven Central (cached)
	$(TG) kafka fetch

demo: install kafka-jars  ## run the end-to-end demo (local Kafka + chdb + simulated cluster)
	$(TG) demo --nodes 4 --duration 30

eval: install kafka-jars  ## detection scorecard: every scenario x 5 seeds through the pipeline
	$(TG) eval --seeds 5 --speed 1.5

test: install kafka-jars  ## run the whole test suite (real Kafka broker, real chdb)
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: install  ## run only the tests that need no broker
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

lint: install  ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: install kafka-jars  ## run the benchmarks and print their figures
	$(PY) -m bench.skeleton
	$(PY) -m bench.agent
	$(PY) -m bench.reporter
	$(PY) -m bench.detectors
	$(PY) -m bench.pipeline stages
	$(PY) -m bench.pipeline capacity --nodes 10000 --ticks 12
	$(PY) -m bench.pipeline realtime --nodes 500 --seconds 90

schemas: install  ## regenerate the JSON Schema files from schemas/records.py
	$(PY) -m schemas.generate

clean:  ## remove the demo's data directory and caches
	rm -rf trainguard-data .pytest_cache .mypy_cache .ruff_cache
