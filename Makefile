# Everything a user or CI runs goes through these targets; `make` alone lists them.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON_BASE ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.install-stamp
CHECKPOINTS ?= checkpoints
REPOSITORY ?= model_repository
FRAMES ?= 10 20 30
PRECISION ?= fp32
GRPC_PORT ?= 8001
HTTP_PORT ?= 8000
METRICS_PORT ?= 8002
WEB_PORT ?= 8080
PYTEST_ARGS ?=
BENCH_FRAMES ?= 20
BENCH_ARGS ?=

.PHONY: help install checkpoints export tensorrt models serve web demo test test-unit lint format docs bench soak fuzz certs health deploy-check gpu-smoke clean
.PHONY: image container-up container-down

# The container's ports: GRPC_PORT / HTTP_PORT / METRICS_PORT when given, else 8101 / 8100 / 8102,
# so that `make serve` (8000-8002) and the container can run side by side.
CONTAINER_HTTP_PORT = $(if $(filter file,$(origin HTTP_PORT)),8100,$(HTTP_PORT))
CONTAINER_GRPC_PORT = $(if $(filter file,$(origin GRPC_PORT)),8101,$(GRPC_PORT))
CONTAINER_METRICS_PORT = $(if $(filter file,$(origin METRICS_PORT)),8102,$(METRICS_PORT))
CONTAINER_WEB_PORT = $(if $(filter file,$(origin WEB_PORT)),8180,$(WEB_PORT))

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: $(STAMP) ## create .venv and install every pinned dependency (quick when nothing changed)

$(STAMP): pyproject.toml tools/pins.py
	@$(MAKE) --no-print-directory apt-packages
	test -x $(PY) || $(PYTHON_BASE) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	{ $(PY) tools/pins.py base; $(PY) tools/pins.py extra server; $(PY) tools/pins.py extra web; $(PY) tools/pins.py extra eval; $(PY) tools/pins.py extra stream; $(PY) tools/pins.py extra dev; $(PY) tools/pins.py extra docs; } > $(VENV)/requirements.txt
	$(PIP) install --quiet -r $(VENV)/requirements.txt
	$(PIP) install --quiet --no-deps $$($(PY) tools/pins.py no-deps) $$($(PY) tools/pins.py test-no-deps)
	$(PIP) install --quiet $$($(PY) tools/pins.py test-build)
	$(PIP) install --quiet --no-deps --no-build-isolation --editable .
	$(PY) -c "import torch, torchvision, facenet_pytorch, av, cv2, dlib, onnx, onnxruntime, tritonclient.grpc, pytriton, fastapi, uvicorn, python_multipart, selenium, sklearn, face_recognition, mkdocs, client.stream_client"
	$(VENV)/bin/deepfake --help >/dev/null && $(VENV)/bin/deepfake-serve --help >/dev/null && $(VENV)/bin/deepfake-export --help >/dev/null && $(VENV)/bin/deepfake-train --help >/dev/null
	touch $(STAMP)

.PHONY: apt-packages
apt-packages: ## install the Debian packages (perf_analyzer's libb64, jemalloc for the server; Docker, compose and debootstrap for the container tests) when root
	@packages="$$($(PYTHON_BASE) tools/pins.py apt) $$($(PYTHON_BASE) tools/pins.py apt-dev)"; missing=""; \
	for p in $$packages; do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else \
		echo "NOTE: install these Debian packages as root for perf_analyzer and the offline validators: sudo apt-get install -y$$missing"; \
	fi

checkpoints: $(STAMP) ## write demo checkpoints (random weights, scores mean nothing) unless CHECKPOINTS has files
	@if ls $(CHECKPOINTS)/model_*_acc_*_frames_*.pt >/dev/null 2>&1; then echo "checkpoints present in $(CHECKPOINTS)"; \
	else $(PY) -m export demo-checkpoints --out $(CHECKPOINTS) --frames $(FRAMES); fi

export: checkpoints ## export + verify ONNX classifiers for FRAMES from CHECKPOINTS into REPOSITORY
	$(PY) -m export onnx --checkpoints $(CHECKPOINTS) --repository $(REPOSITORY) --frames $(FRAMES) --precision $(PRECISION)

tensorrt: $(STAMP) ## build TensorRT plans from the exported ONNX (on a GPU node with TensorRT)
	$(PY) -m export tensorrt --repository $(REPOSITORY)

models: $(STAMP) ## export the ONNX models only when some are missing
	@missing=0; for n in $(FRAMES); do test -f $(REPOSITORY)/resnext_lstm_$$n/1/model.onnx || missing=1; done; \
	if [ $$missing = 1 ]; then $(MAKE) --no-print-directory export; else echo "ONNX models present"; fi

serve: models ## run the embedded tritonserver (CPU) on REPOSITORY in the foreground
	$(PY) -m serve --model-repository $(REPOSITORY) --grpc-port $(GRPC_PORT) --http-port $(HTTP_PORT) --metrics-port $(METRICS_PORT)

web: models ## the embedded server and the web page on http://127.0.0.1:WEB_PORT/, in the foreground until Ctrl-C
	$(PY) tools/web.py --model-repository $(REPOSITORY) --grpc-port $(GRPC_PORT) --http-port $(HTTP_PORT) --metrics-port $(METRICS_PORT) --port $(WEB_PORT)

demo: models ## everything end to end: install, export, start the server, score sample clips, stop
	$(PY) tools/demo.py --model-repository $(REPOSITORY)

test: models ## run the whole test suite (unit and integration, real tritonserver)
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP) ## run the tests that need no server
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

lint: $(STAMP) ## ruff: lint and format check (configured in pyproject.toml)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP) ## ruff: apply the formatter and the safe fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

docs: $(STAMP) ## build the documentation site from docs/ into site/ (offline, strict: a broken link fails)
	$(VENV)/bin/mkdocs build --strict --site-dir site

bench: models ## side-by-side benchmark (original pipeline in process vs Triton over gRPC) -> benchmarks/results/
	$(PY) -m benchmarks --frames $(BENCH_FRAMES) $(BENCH_ARGS)

.PHONY: bench-train
bench-train: models ## training: frames per second per head, 100 videos of 20 frames fine-tuned end to end, peak memory -> benchmarks/results/training.*
	$(PY) -m benchmarks.training $(BENCH_ARGS)

.PHONY: bench-versions
bench-versions: models ## a classifier version 2 goes live and is rolled back while clients score: failures, latency, time to switch -> benchmarks/results/versions.*
	$(PY) -m benchmarks.versions $(BENCH_ARGS)

.PHONY: bench-fingerprints
bench-fingerprints: models ## fingerprints and the bank: copies found per re-upload transformation, false matches, hashing cost, lookup at 1k-1M videos, response-cache hits -> benchmarks/results/fingerprints.*
	$(PY) -m benchmarks.fingerprints $(BENCH_ARGS)

.PHONY: bench-stream
bench-stream: models ## live streams: how many 480p/720p/1080p streams are followed in real time, latency, CPU per frame, perf_analyzer --streaming -> benchmarks/results/stream.*
	$(PY) -m benchmarks.live_streams --model-repository $(REPOSITORY) $(BENCH_ARGS)

soak: models ## ten minutes at concurrency 8 of mixed good and bad uploads: wrong answers, lost requests, RSS growth, p99
	$(PY) -m benchmarks.soak --model-repository $(REPOSITORY) --duration 600 --concurrency 8 --json logs/soak.json

fuzz: $(STAMP) ## fuzz bytes -> FACES with fresh random inputs (FUZZ_EXAMPLES, default 5000); a failure prints its regression case
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-5000} FUZZ_RANDOM=1 $(PY) -m pytest tests/test_fuzz.py -s -k damaged $(PYTEST_ARGS)

certs: $(STAMP) ## throw-away CA, server and client certificates in certs/ for TLS and mutual-TLS trials
	$(PY) tools/certs.py --out certs

health: $(STAMP) ## readiness of the server running on GRPC_PORT and of each of its models
	$(PY) -m client health --url localhost:$(GRPC_PORT)

deploy-check: $(STAMP) ## offline checks of the Dockerfile, compose, Kubernetes and monitoring files
	$(PY) -m pytest tests/test_deploy.py tests/test_deploy_server.py tests/test_web_deploy.py tests/test_drift_rules.py $(PYTEST_ARGS)

image: ## build the image deepfake-triton:local (over a local stand-in of the NGC base where that is absent)
	$(PYTHON_BASE) tools/container.py image

container-up: image ## export CPU models into REPOSITORY and serve them with compose (triton-cpu, and the page web-cpu unless WEB=no) on 127.0.0.1; returns when healthy
	MODEL_REPOSITORY=$(REPOSITORY) CHECKPOINTS=$(CHECKPOINTS) FRAMES="$(FRAMES)" \
		TRITON_HTTP_PORT=$(CONTAINER_HTTP_PORT) TRITON_GRPC_PORT=$(CONTAINER_GRPC_PORT) TRITON_METRICS_PORT=$(CONTAINER_METRICS_PORT) \
		WEB_PORT=$(CONTAINER_WEB_PORT) $(PYTHON_BASE) tools/container.py up

container-down: ## stop the compose deployment and remove its containers and volumes (and an engine container-up started)
	MODEL_REPOSITORY=$(REPOSITORY) CHECKPOINTS=$(CHECKPOINTS) $(PYTHON_BASE) tools/container.py down

gpu-smoke: ## on a GPU node: build the image, export ONNX + TensorRT, serve with compose, score a clip, perf_analyzer, tear down
	bash deploy/gpu_smoke.sh

clean: ## remove built artifacts (ONNX, plans, logs); keeps .venv and checkpoints
	rm -f $(REPOSITORY)/*/1/model.onnx $(REPOSITORY)/*/1/model.plan $(REPOSITORY)/*/1/export.json $(REPOSITORY)/*/1/tensorrt.json
	rm -rf logs .serve .pytest_cache site
