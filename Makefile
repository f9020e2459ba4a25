# trainguard developer entry points. `make help` lists them.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
TG      := $(VENV)/bin/trainguard
PYTEST_ARGS ?=
# Prometheus Alertmanager comes from Debian (package prometheus-alertmanager, 0.25), not pip.
AM_BIN  := /usr/bin/prometheus-alertmanager
AM_PKG  := prometheus-alertmanager
# promtool (checks and unit-tests infra/prometheus/) comes from Debian's prometheus package.
PROMTOOL := /usr/bin/promtool
PROM_PKG := prometheus
# Helm (v4, built from the Go module proxy) and kubecheck (infra/helm/kubecheck: strict
# decoding of rendered manifests into the Kubernetes API types) check the chart offline.
TOOLS   := .tools/bin
HELM_VERSION := v4.3.2
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help install install-torch kafka-jars alertmanager prometheus k8s-tools demo eval test test-unit lint bench schemas clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

install: $(VENV)/.installed  ## create .venv and install trainguard with its agent, pipeline and dev extras

$(VENV)/.installed-torch: $(VENV)/.installed pyproject.toml constraints.txt
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,torch-test]'
	touch $@

install-torch: $(VENV)/.installed-torch  ## add torch, transformers and lightning (trainer tests; ~5 GB)

kafka-jars: install  ## fetch the pinned Kafka broker jars from Maven Central (cached)
	$(TG) kafka fetch

# The package's postinst would start a system-wide daemon on :9093/:9094 (sysvinit or
# systemd); tests and the demo start their own on free ports. A policy-rc.d answering 101
# ("forbidden") keeps invoke-rc.d/deb-systemd-invoke from starting it; it is added only if
# the host has none and removed on exit. Should a daemon start anyway, it is stopped and
# disabled. `apt-get update` runs only when the first install fails (stale/empty lists).
alertmanager:  ## install Prometheus Alertmanager + amtool (Debian package) if missing
	@if [ -x $(AM_BIN) ]; then echo "alertmanager: $(AM_BIN) already installed"; exit 0; fi; \
	set -e; \
	apt_install() { $(SUDO) env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -q --no-install-recommends $(AM_PKG); }; \
	if [ ! -e /usr/sbin/policy-rc.d ]; then \
		trap '$(SUDO) rm -f /usr/sbin/policy-rc.d' EXIT; \
		printf '#!/bin/sh\nexit 101\n' | $(SUDO) tee /usr/sbin/policy-rc.d >/dev/null; \
		$(SUDO) chmod 755 /usr/sbin/policy-rc.d; \
	fi; \
	apt_install || { $(SUDO) apt-get update -q && apt_install; }; \
	if [ -d /run/systemd/system ]; then \
		$(SUDO) systemctl disable --now $(AM_PKG).service >/dev/null 2>&1 || true; \
	else \
		$(SUDO) update-rc.d $(AM_PKG) disable >/dev/null 2>&1 || true; \
		$(SUDO) systemctl disable $(AM_PKG).service >/dev/null 2>&1 || true; \
		$(SUDO) /etc/init.d/$(AM_PKG) stop >/dev/null 2>&1 || true; \
	fi; \
	for bin in $(AM_BIN) /usr/bin/amtool; do \
		[ -x $$bin ] || { echo "alertmanager: $$bin missing after install" >&2; exit 1; }; \
	done; \
	echo "alertmanager: installed $$($(AM_BIN) --version 2>&1 | head -n 1)"

# Same dance as `alertmanager`: the package's postinst would start Prometheus on :9090;
# only promtool is wanted, so the service is kept from starting (or stopped) and disabled.
prometheus:  ## install promtool (Debian package prometheus) if missing
	@if [ -x $(PROMTOOL) ]; then echo "prometheus: $(PROMTOOL) already installed"; exit 0; fi; \
	set -e; \
	apt_install() { $(SUDO) env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -q --no-install-recommends $(PROM_PKG); }; \
	if [ ! -e /usr/sbin/policy-rc.d ]; then \
		trap '$(SUDO) rm -f /usr/sbin/policy-rc.d' EXIT; \
		printf '#!/bin/sh\nexit 101\n' | $(SUDO) tee /usr/sbin/policy-rc.d >/dev/null; \
		$(SUDO) chmod 755 /usr/sbin/policy-rc.d; \
	fi; \
	apt_install || { $(SUDO) apt-get update -q && apt_install; }; \
	if [ -d /run/systemd/system ]; then \
		$(SUDO) systemctl disable --now $(PROM_PKG).service >/dev/null 2>&1 || true; \
	else \
		$(SUDO) update-rc.d $(PROM_PKG) disable >/dev/null 2>&1 || true; \
		$(SUDO) systemctl disable $(PROM_PKG).service >/dev/null 2>&1 || true; \
		$(SUDO) /etc/init.d/$(PROM_PKG) stop >/dev/null 2>&1 || true; \
	fi; \
	[ -x $(PROMTOOL) ] || { echo "prometheus: $(PROMTOOL) missing after install" >&2; exit 1; }; \
	echo "prometheus: installed $$($(PROMTOOL) --version 2>&1 | head -n 1)"

demo: install kafka-jars  ## run the end-to-end demo (local Kafka + chdb + simulated cluster)
	$(TG) demo --nodes 4 --duration 30

eval: install kafka-jars  ## detection scorecard (every scenario x 5 seeds), then the size sweeps, through the pipeline
	$(TG) eval --seeds 5 --speed 1.5
	$(TG) eval --sweep all --seeds 5 --speed 3

k8s-tools: $(TOOLS)/helm $(TOOLS)/kubecheck  ## build helm and kubecheck into .tools/bin (Go; no cluster needed)

$(TOOLS)/helm:
	GOBIN=$(abspath $(TOOLS)) GOFLAGS=-mod=mod go install helm.sh/helm/v4/cmd/helm@$(HELM_VERSION)

$(TOOLS)/kubecheck: infra/helm/kubecheck/main.go infra/helm/kubecheck/go.mod infra/helm/kubecheck/go.sum
	cd infra/helm/kubecheck && GOBIN=$(abspath $(TOOLS)) go install .

test: install install-torch kafka-jars alertmanager prometheus k8s-tools  ## run the whole test suite (real Kafka broker, real chdb, real Alertmanager, promtool, real torchrun jobs)
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: install install-torch  ## run only the tests that need no broker
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

lint: install  ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: install install-torch kafka-jars  ## run the benchmarks and print their figures
	$(PY) -m bench.skeleton
	$(PY) -m bench.agent
	$(PY) -m bench.kafka_tls
	$(PY) -m bench.reporter
	$(PY) -m bench.witness --budget 200
	$(PY) -m bench.detectors
	$(PY) -m bench.auth
	$(PY) -m bench.pipeline stages
	$(PY) -m bench.pipeline capacity --nodes 10000 --ticks 12
	$(PY) -m bench.pipeline realtime --nodes 500 --seconds 90

schemas: install  ## regenerate the JSON Schema files from schemas/records.py
	$(PY) -m trainguard.schemas.generate

clean:  ## remove the demo's data directory and caches
	rm -rf trainguard-data .pytest_cache .mypy_cache .ruff_cache
