# bourse: common developer tasks. `make help` lists them.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CARGO      ?= cargo
IMAGE      ?= bourse:local
COMPOSE    ?= docker compose
COMPOSE_FILE := deploy/compose.yaml
NAMESPACE  ?= bourse
BOURSE_BIN ?= target/debug/bourse

.PHONY: help run build services test lint fmt bench ci deploy-check k8s-render docker-build \
	compose-up compose-down compose-logs minikube-image helm-install helm-uninstall k8s-apply

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

run: ## Run `bourse serve` with the embedded defaults (SQLite, simulated feed) on :8000
	$(CARGO) run --bin bourse -- serve

build: ## Build the bourse binary (debug)
	$(CARGO) build --locked --bin bourse

services: ## Start the tests' services: PostgreSQL, Redis, RabbitMQ, Mosquitto (deploy/dev-services)
	deploy/dev-services

test: ## Run the workspace tests (needs the local PostgreSQL, Redis, RabbitMQ, Mosquitto)
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --locked; \
	else \
		$(CARGO) test --workspace --locked; \
	fi

lint: ## rustfmt check and clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

bench: ## Benchmarks (load, ingest, orders), printing tables
	$(CARGO) bench --workspace --locked

ci: ## What CI runs
	bash .ci/run

deploy-check: ## Validate deploy/ offline; checks the metrics of $(BOURSE_BIN) when it exists
	@if [ -x "$(BOURSE_BIN)" ]; then deploy/check --bourse-bin "$(BOURSE_BIN)"; else deploy/check; fi

k8s-render: ## Re-render deploy/k8s from the Helm chart
	deploy/render-k8s

docker-build: ## Build the image $(IMAGE) (BuildKit)
	DOCKER_BUILDKIT=1 docker build -f deploy/docker/Dockerfile -t $(IMAGE) .

compose-up: ## Start the whole stack (API on :8000, Grafana on :3000)
	BOURSE_IMAGE=$(IMAGE) $(COMPOSE) -f $(COMPOSE_FILE) up -d --build

compose-down: ## Stop the stack and drop its volumes
	$(COMPOSE) -f $(COMPOSE_FILE) down -v

compose-logs: ## Follow the logs of the stack
	$(COMPOSE) -f $(COMPOSE_FILE) logs -f --tail 100

minikube-image: ## Build the image inside minikube as bourse:local
	minikube image build -t bourse:local -f deploy/docker/Dockerfile .

helm-install: ## Install or upgrade the chart in minikube (namespace $(NAMESPACE))
	helm upgrade --install bourse deploy/helm/bourse --namespace $(NAMESPACE) --create-namespace \
		--set image.tag=local --wait --timeout 10m

helm-uninstall: ## Remove the Helm release
	helm uninstall bourse --namespace $(NAMESPACE)

k8s-apply: ## Apply the plain manifests of deploy/k8s (no Helm)
	kubectl apply -k deploy/k8s
