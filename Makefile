# Two commands for a fresh Debian machine (run as root, or with the packages below present):
#   make demo   run the gateway, a small fleet and the dashboard on embedded defaults
#   make test   install everything needed and run every test tier
#   make bench  run the benchmarks; one JSON line each, also in var/bench/results.jsonl
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# Debian packages the tiers need, as command=package pairs.
DEBIAN_TOOLS := node=nodejs npm=npm mosquitto=mosquitto mosquitto_sub=mosquitto-clients iverilog=iverilog chromium=chromium

.PHONY: test demo bench deps system-deps lint typecheck mpy-check clean

test: deps lint typecheck mpy-check
	$(PY) -m pytest

demo: deps
	$(VENV)/bin/citisense demo

bench: deps
	$(PY) -m citisense_tools.bench

deps: system-deps $(VENV)/.installed node_modules/.installed

system-deps:
	@missing=""; for pair in $(DEBIAN_TOOLS); do \
	  command -v $${pair%%=*} >/dev/null 2>&1 || missing="$$missing $${pair#*=}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "run as root or install:$$missing" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

lint: deps
	$(VENV)/bin/ruff check .

typecheck: deps
	$(VENV)/bin/mypy -p citisense_protocols -p citisense_boards -p citisense_gateway -p citisense_tools

mpy-check: deps
	$(PY) -m citisense_tools.mpy_check

clean:
	rm -rf $(VENV) node_modules .mypy_cache .ruff_cache .pytest_cache
