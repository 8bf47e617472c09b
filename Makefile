# localsched — the two commands a newcomer needs: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STATE_DIR ?= $(HOME)/.local/state/localsched/devcluster
PYTEST_ARGS ?=

.PHONY: all venv binaries lint unit integration test demo down status clean bench chaos proto

all: test

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

# kube-apiserver, kube-controller-manager, kube-scheduler v1.20.2 (built once, cached outside the repo) and etcd.
binaries: venv
	$(PY) -m devcluster.binaries

# The protobuf and gRPC code generated from localsched/generated/*.proto (committed; rerun after editing a .proto).
proto: venv
	$(PY) -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. \
		localsched/generated/stat.proto localsched/generated/externalscaler.proto
	rm -f localsched/generated/stat_pb2_grpc.py

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy localsched activator endpointsctl devcluster loadtest
	$(BIN)/lint-imports

unit: venv
	$(BIN)/pytest tests/unit -q $(PYTEST_ARGS)

# Integration tests start one devcluster for the session (their own state dir and ports, apart from `make demo`).
integration: binaries
	$(BIN)/pytest tests/integration -q $(PYTEST_ARGS)

test: lint binaries
	$(BIN)/pytest tests -q $(PYTEST_ARGS)

# A short run of every benchmark: each brings up its own devcluster (never the demo's) and rewrites its results in
# loadtest/results/ (JSON, Markdown, plots); the cold-start one also rewrites the README's results section.
# `python -m loadtest <name> --help` gives each one's full-size options.
$(VENV)/.bench: pyproject.toml $(VENV)/.installed
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $@

bench: binaries $(VENV)/.bench
	@export DEBIAN_FRONTEND=noninteractive RUNLEVEL=1; missing=""; command -v wrk >/dev/null || missing="wrk"; \
	command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$$missing nginx-light"; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ]; then \
		echo "installing $$missing (Debian packages) for the warm-path benchmark"; \
		{ apt-get install -y -q $$missing || { apt-get update -q && apt-get install -y -q $$missing; }; } >/dev/null; \
	elif [ -n "$$missing" ]; then \
		echo "$$missing missing and not root: the warm-path benchmark needs nginx (and uses a slower generator without wrk)"; \
	fi
	$(PY) -m loadtest coldstart --singles 6 --bursts 1
	$(PY) -m loadtest kubelet --pods 60 --profile
	$(PY) -m loadtest warm --rounds 2 --seconds 3
	$(PY) -m loadtest subsetting

# Faults under steady load on a fresh devcluster of its own (ports 37000+, 10.247.x; it waits for a test session's
# devcluster to go first), one scenario after another, about 5 minutes; results in loadtest/results/chaos.{md,json},
# docs/chaos.md explains them. Exits 1 when the system missed an expectation, 2 when the harness itself failed.
chaos: binaries
	$(PY) -m loadtest chaos

demo: binaries
	$(BIN)/devcluster --state-dir $(STATE_DIR) up
	$(BIN)/devcluster --state-dir $(STATE_DIR) demo

down: venv
	$(BIN)/devcluster --state-dir $(STATE_DIR) down

status: venv
	$(BIN)/devcluster --state-dir $(STATE_DIR) status

clean: down
	rm -rf $(VENV) *.egg-info .mypy_cache .ruff_cache .pytest_cache
