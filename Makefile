# Entry points. `make demo` runs the whole platform locally; `make test` installs and runs the tests.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY := .venv/bin/python
SERVICES := deploy/local/services.sh
UV_VERSION := 0.13.9
export UV_COMPILE_BYTECODE := 1
export PYTHONDONTWRITEBYTECODE :=

.PHONY: help install services-up services-down services-status demo-data demo test test-unit lint bench serve token dashboard onboard

help:
	@echo "make demo           install, start services, build every asset, serve the Dagster UI"
	@echo "make test           install, start services, run the whole test suite"
	@echo "make services-up    start PostgreSQL, MariaDB, Kafka, the schema registry, Redis, MLflow, FerretDB, the demo API on 127.0.0.1"
	@echo "make services-down  stop them"
	@echo "make serve          the prediction service on 127.0.0.1:23001 (champions from .local/bentoml)"
	@echo "make token          a bearer token (roles predict, train) for the prediction service"
	@echo "make dashboard      the Streamlit dashboard on 127.0.0.1:28501"
	@echo "make bench          the benchmarks: batch, streaming, training, serving"
	@echo "make onboard FILE=data.csv NAME=wine [TARGET=quality] [OUT=dir]   draft a catalogue folder from a file"

# The environment from the lock file (uv itself from PyPI when missing), plus the local services:
# their Debian packages, Apache Kafka's jars and Apicurio Registry from Maven Central (cached in
# .local/kafka and .local/registry, skipped when present), Spark's s3a and Kafka connector jars from
# Maven Central (.local/spark-jars), FerretDB from the Go module proxy.
# Java 17 (Java 21+ for the registry) and Python 3.11 are expected on the machine.
install:
	@command -v java >/dev/null 2>&1 || { echo "Java 17 is required for Spark and Kafka (apt-get install openjdk-17-jre-headless)"; exit 1; }
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 \
		|| python3 -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	@UV=$$(command -v uv || echo "python3 -m uv"); $$UV sync --frozen --quiet --python 3.11
	@bash $(SERVICES) install

services-up:
	@bash $(SERVICES) up

services-down:
	@bash $(SERVICES) down

services-status:
	@bash $(SERVICES) status

demo-data: install
	@bash $(SERVICES) up postgres mariadb >/dev/null
	@$(PY) -m platform_assets.demo_data

demo: install
	@bash deploy/local/with-services.sh $(PY) deploy/local/run_demo.py

test: install
	@bash deploy/local/with-services.sh $(PY) -m pytest

serve: install
	@$(PY) -c "from serving.mint_token import local_secret; local_secret(create=True)"
	@SERVING_JWT_SECRET=$$(cat .local/serving/jwt-secret) BENTOML_HOME=$(CURDIR)/.local/bentoml \
		.venv/bin/bentoml serve serving.service:FleetPredictions --host 127.0.0.1 --port 23001

token:
	@$(PY) -m serving.mint_token --roles predict,train

dashboard: install
	@.venv/bin/streamlit run dashboards/app.py --server.headless true --browser.gatherUsageStats false \
		--server.address 127.0.0.1 --server.port $${DASHBOARD_PORT:-28501}

# A catalogue folder (source, feature set, model) drafted from one file; run it with PLATFORM_CATALOGUE_DIR.
onboard:
	@test -n "$(FILE)" -a -n "$(NAME)" || { echo "usage: make onboard FILE=path NAME=name [TARGET=column] [OUT=dir]"; exit 2; }
	@$(PY) -m platform_assets.onboard "$(FILE)" --name "$(NAME)" $(if $(TARGET),--target "$(TARGET)") $(if $(OUT),--out "$(OUT)")

test-unit: install
	@$(PY) -m pytest tests/unit

lint:
	@$(PY) -m ruff check .

bench: install
	@bash deploy/local/with-services.sh bash -c '$(PY) tests/benchmarks/bench_batch.py && \
		$(PY) tests/benchmarks/bench_streaming.py && $(PY) tests/benchmarks/bench_training.py && \
		$(PY) tests/benchmarks/bench_serving.py' 
