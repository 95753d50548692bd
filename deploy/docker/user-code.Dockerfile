# syntax=docker/dockerfile:1.7
# The Dagster code location (gRPC code server) and the image of every run pod the K8sRunLauncher
# starts: the locked environment, the platform's code and a Java 17 runtime for Spark.
#   docker build -f deploy/docker/user-code.Dockerfile -t REGISTRY/ml-platform-user-code:TAG .
FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

FROM python:3.11.13-slim-bookworm AS build
COPY --from=uv /uv /usr/local/bin/uv
# Bytecode compiled at build time: imports take ~4 s instead of ~10 s (../shared/STACK.md).
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /app
COPY pyproject.toml uv.lock ./
# Runtime dependencies only: no dev tools, no local stand-in services (the default groups).
RUN uv sync --frozen --no-default-groups --no-install-project

FROM python:3.11.13-slim-bookworm
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --create-home --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# The code runs from source: platform_assets finds its catalogues next to itself (PROJECT_ROOT).
COPY platform_assets ./platform_assets
COPY resources ./resources
COPY jobs ./jobs
COPY sensors ./sensors
COPY serving ./serving
COPY workspace.yaml ./
ENV PATH=/opt/venv/bin:$PATH PYTHONPATH=/app PYTHONUNBUFFERED=1 \
    PLATFORM_ENV=PROD DAGSTER_HOME=/opt/dagster/dagster_home \
    BENTOML_DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true
USER 10001
EXPOSE 3030
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s \
    CMD ["dagster", "api", "grpc-health-check", "--port", "3030"]
CMD ["dagster", "code-server", "start", "--host", "0.0.0.0", "--port", "3030", "-m", "platform_assets.definitions"]
