"""The running local services answer as the platform expects (deploy/local/services.sh up).

MLflow: runs and metrics through the tracking server, artifacts proxied by the server itself
(``mlflow-artifacts:`` URIs, files under MLFLOW_ARTIFACTS_DIR). Redis: a plain set/get/delete.
Every test uses names of its own and removes what it wrote.
"""

from __future__ import annotations

import os
import socket
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from platform_assets.settings import load_local_defaults

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def _settings() -> None:
    load_local_defaults()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def _require(what: str, host: str, port: str | int) -> None:
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError:
        pytest.fail(f"{what} is not reachable at {host}:{port}: start the services with `make services-up`")


def test_mlflow_run_metric_and_artifact_through_the_server(tmp_path):
    from mlflow import MlflowClient

    _require("MLflow", os.environ["MLFLOW_HOST"], os.environ["MLFLOW_PORT"])
    uri = os.environ["MLFLOW_TRACKING_URI"]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment_id = client.create_experiment(f"it-services-{uuid.uuid4().hex[:12]}")
    try:
        run = client.create_run(experiment_id, run_name="services-check")
        run_id = run.info.run_id
        assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri
        client.log_metric(run_id, "rmse", 0.25)
        source = tmp_path / "upload" / "note.txt"
        source.parent.mkdir()
        source.write_text("written through the tracking server\n")
        client.log_artifact(run_id, str(source))
        client.set_terminated(run_id)

        stored = client.get_run(run_id)
        assert stored.data.metrics == {"rmse": 0.25}
        assert stored.info.status == "FINISHED"
        assert [f.path for f in client.list_artifacts(run_id)] == ["note.txt"]
        copy = client.download_artifacts(run_id, "note.txt", dst_path=str(tmp_path))
        assert Path(copy).read_text() == "written through the tracking server\n"
    finally:
        client.delete_experiment(experiment_id)
        # The experiment is only marked deleted; its artifacts are removed through the server.
        _delete_artifacts(uri, experiment_id)
    assert client.get_experiment(experiment_id).lifecycle_stage == "deleted"


def _delete_artifacts(tracking_uri: str, experiment_id: str) -> None:
    path = urllib.parse.quote(str(experiment_id))
    request = urllib.request.Request(f"{tracking_uri.rstrip('/')}/api/2.0/mlflow-artifacts/artifacts/{path}",
                                     method="DELETE")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def test_redis_set_get_delete():
    import redis

    host, port = os.environ["REDIS_HOST"], int(os.environ["REDIS_PORT"])
    _require("Redis", host, port)
    client = redis.Redis(host=host, port=port, socket_connect_timeout=5, decode_responses=True)
    key = f"it-services:{uuid.uuid4().hex}"
    try:
        assert client.set(key, "42", ex=60)
        assert client.get(key) == "42"
        assert client.delete(key) == 1
        assert client.get(key) is None
    finally:
        client.delete(key)
