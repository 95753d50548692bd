# syntax=docker/dockerfile:1.7
# The prediction service (serving/service.py) with the champion models baked in.
# The models come from the Bento the `serving/bento` asset builds, passed as a named build context,
# so an image always serves the same model versions (a new champion is a new image, rolled out):
#   docker build -f deploy/docker/serving.Dockerfile \
#     --build-context bento="$(bentoml get fleet_predictions:latest -o path)" \
#     -t REGISTRY/ml-platform-serving:TAG .
# (`bentoml containerize` would do the same but needs its own generated Dockerfile and a Docker
# daemon at build time; this file keeps one install path for all three images: uv.lock.)
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
COPY serving ./serving
COPY resources ./resources
COPY platform_assets ./platform_assets
# The Bento's model store. BentoML writes under BENTOML_HOME (metrics, temp files): `docker run`
# uses the copy below; the Kubernetes pod mounts an empty volume there and an init container copies
# /opt/bento-models into it, so the root filesystem stays read-only.
COPY --from=bento models /opt/bento-models
ENV PATH=/opt/venv/bin:$PATH PYTHONPATH=/app PYTHONUNBUFFERED=1 PLATFORM_ENV=PROD \
    BENTOML_HOME=/var/lib/bentoml BENTOML_DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true
RUN mkdir -p /var/lib/bentoml && cp -r /opt/bento-models /var/lib/bentoml/models \
    && chown -R 10001 /var/lib/bentoml
USER 10001
EXPOSE 3000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:3000/livez', timeout=4)"]
CMD ["bentoml", "serve", "serving.service:FleetPredictions", "--host", "0.0.0.0", "--port", "3000"]
