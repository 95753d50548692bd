# syntax=docker/dockerfile:1.7
# The Streamlit dashboard (dashboards/app.py). It reads through the platform's resources, so it
# needs the same locked environment (no Java: it never starts Spark).
#   docker build -f deploy/docker/dashboard.Dockerfile -t REGISTRY/ml-platform-dashboard:TAG .
FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

FROM python:3.11.13-slim-bookworm AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /app
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-default-groups --no-install-project

FROM python:3.11.13-slim-bookworm
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY dashboards ./dashboards
COPY platform_assets ./platform_assets
COPY resources ./resources
# Behind the proxy the app lives under /dashboard (STREAMLIT_SERVER_BASE_URL_PATH, set by the pod).
ENV PATH=/opt/venv/bin:$PATH PYTHONPATH=/app PYTHONUNBUFFERED=1 PLATFORM_ENV=PROD \
    MLFLOW_DISABLE_TELEMETRY=true
USER 10001
EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
    CMD python -c "import os, urllib.request as u; u.urlopen('http://127.0.0.1:8501' + os.environ.get('STREAMLIT_SERVER_BASE_URL_PATH', '').rstrip('/') + '/_stcore/health', timeout=4)"
CMD ["streamlit", "run", "dashboards/app.py", "--server.address", "0.0.0.0", "--server.port", "8501", \
     "--server.headless", "true", "--browser.gatherUsageStats", "false"]
