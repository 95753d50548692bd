"""The prediction service (a real ``bentoml serve`` of serving/service.py) while Redis or MLflow is down.

The service runs on this package's own servers, with models of its own: a small classifier and
regressor per catalogue model, registered in the private MLflow and packaged into a private BentoML
store by the product's packaging asset (``serving/models/<model>``), as ml_pipeline does.

What must hold:
- Redis down: ``machine_ids`` requests (features from the online store) answer 503 with the one
  error body and ``Retry-After`` at once, not a 500 or a hang; ``records`` requests, which do not
  need Redis, keep answering 200; once Redis is back the same requests succeed without a restart.
- MLflow down while a new champion is being packaged: the packaging step fails with an error the
  retry policy counts as transient, the service keeps serving the version it has and says which
  (``version`` in every answer; ``/models`` answers 503 "registry unavailable"); when MLflow is back
  the step succeeds and the service serves the new version without a restart.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest
import requests
from sklearn.linear_model import LinearRegression, LogisticRegression

from platform_assets.ml.config import load_models
from platform_assets.settings import PROJECT_ROOT
from resources import build_resources
from serving.auth import mint
from tests.integration.conftest import free_port, wait_http

pytestmark = [pytest.mark.faults, pytest.mark.slow]
CLS, REG = "failure_within_24h", "remaining_useful_life"
ANSWER_BOUND_S = 10.0  # an outage is answered at once (the Redis client's connect timeout is 5 s)
RECOVERY_BOUND_S = 15.0  # from the server back to the first 200
RELOAD_BOUND_S = 30.0  # from the packaging step's success to the new version served (reload every 1 s)
MACHINES = [f"M{m:03d}" for m in range(5)]

PACKAGE = """
import sys, dagster as dg
from platform_assets.ml.packaging import build_bento_model
from resources import build_resources
result = dg.materialize([build_bento_model(n) for n in sys.argv[1:]], resources=build_resources(), raise_on_error=False)
for e in result.all_events:
    if e.event_type_value in ("STEP_FAILURE", "STEP_UP_FOR_RETRY"):
        print("FAILED:", e.event_specific_data.error.to_string(), flush=True)
sys.exit(0 if result.success else 3)
"""


def frame(seed: int) -> pd.DataFrame:
    rows = [{"x1": float(i % 7) + seed, "x2": float(i % 5)} for i in range(40)]
    return pd.DataFrame(rows)


def register(mlflow, model: str, seed: int) -> str:
    """A small fitted model of ``model``'s task, registered as a new version."""
    x = frame(seed)
    fitted = (LogisticRegression().fit(x, (x["x1"] > 3 + seed).astype(int)) if model == CLS
              else LinearRegression().fit(x, x["x1"] * 2 + x["x2"]))
    with mlflow._mlflow().start_run():
        return mlflow.log_sklearn(fitted, mlflow.registered_name(model), x.head(3), tags={"algorithm": "faults"})


def package(env: dict, *models: str) -> subprocess.CompletedProcess:
    """The product's packaging asset in a process of its own (the BentoML store is chosen at import)."""
    return subprocess.run([sys.executable, "-c", PACKAGE, *models], check=False, env=env, cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=240)


@pytest.fixture(scope="module")
def service(private_services, tmp_path_factory):
    root = tmp_path_factory.mktemp("faults-serving")
    saved = dict(os.environ)
    os.environ.update(private_services.env)
    os.environ.update({"LAKE_ROOT": str(root / "lake"), "MLFLOW_REGISTRY_PREFIX": f"f{uuid.uuid4().hex[:6]}_",
                       "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"})
    from platform_assets.settings import load_local_defaults

    load_local_defaults()
    try:
        res = build_resources(resolved=True)
        mlflow = res["mlflow"]
        mlflow._mlflow().set_experiment(mlflow.experiment_name("faults_serving"))
        for model in (CLS, REG):
            mlflow.promote(mlflow.registered_name(model), register(mlflow, model, 0))
        env = {**os.environ, "BENTOML_HOME": str(root / "bentoml")}
        packaged = package(env, CLS, REG)
        assert packaged.returncode == 0, packaged.stdout[-3000:] + packaged.stderr[-3000:]
        feature_set = load_models().models[CLS].feature_set
        online = res["online_store"]
        write_features(online, feature_set)

        port, secret = free_port(), secrets.token_urlsafe(32)
        log = root / "bentoml.log"
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "bentoml"), "serve", "serving.service:FleetPredictions",
             "--host", "127.0.0.1", "--port", str(port)],
            cwd=PROJECT_ROOT, env={**env, "SERVING_JWT_SECRET": secret, "MODEL_RELOAD_SECONDS": "1"},
            stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)  # noqa: SIM115
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http(f"{url}/readyz", proc, log, timeout=180)
            yield {"url": url, "headers": {"Authorization": "Bearer " + mint("faults", ["predict"], secret)},
                   "env": env, "mlflow": mlflow, "online": online, "feature_set": feature_set, "log": log}
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def write_features(online, feature_set: str) -> None:
    rows = pd.DataFrame([{"machine_id": m, "as_of": "2026-11-01T00:00:00+00:00", "x1": float(i), "x2": 1.0}
                         for i, m in enumerate(MACHINES)])
    online.write_latest(feature_set, "machine_id", rows, "as_of")


def predict(service, body: dict, timeout: float = 30) -> requests.Response:
    return requests.post(f"{service['url']}/predict", json=body, headers=service["headers"], timeout=timeout)


RECORDS = [{"x1": 1.0, "x2": 2.0}, {"x1": 6.0, "x2": 0.0}]


def test_redis_down_while_serving_machine_ids(service, private_services):
    by_id = {"model": CLS, "machine_ids": MACHINES[:3]}
    assert predict(service, by_id).status_code == 200
    private_services.down("redis")
    try:
        started = time.monotonic()
        refused = predict(service, by_id)
        answered_in = time.monotonic() - started
        assert refused.status_code == 503, refused.text
        assert refused.headers.get("retry-after") == "1"
        body = refused.json()
        assert set(body) == {"error", "code"} and body["code"] == "unavailable", body  # the one error body
        assert "online feature store unavailable" in body["error"]
        assert answered_in < ANSWER_BOUND_S
        by_records = predict(service, {"model": CLS, "records": RECORDS})  # no Redis needed
        assert by_records.status_code == 200, by_records.text
        assert len(by_records.json()["predictions"]) == 2
    finally:
        private_services.up("redis")
    back = time.monotonic()
    # The service reconnects by itself: the next request reaches Redis, which kept nothing across its
    # restart (no persistence locally), so the machines are unknown (404) until features are written again.
    while (resp := predict(service, by_id)).status_code == 503:
        assert time.monotonic() - back < RECOVERY_BOUND_S, resp.text
        time.sleep(0.2)
    recovery = time.monotonic() - back
    assert resp.status_code == 404 and resp.json()["code"] == "unknown_machine", resp.text
    write_features(service["online"], service["feature_set"])  # what ml/online/* (or the stream) does
    resp = predict(service, by_id)
    assert resp.status_code == 200, resp.text
    assert resp.json()["machine_ids"] == MACHINES[:3] and len(resp.json()["predictions"]) == 3
    print(f"\nredis down while serving: machine_ids answered 503 (unavailable, Retry-After: 1) in "
          f"{answered_in:.2f} s, records kept answering 200; the service reached redis again {recovery:.2f} s after it "
          f"was back (404 unknown machine: redis restarted empty), 200 once the features were written again")


def test_mlflow_down_while_the_service_reloads_a_model(service, private_services):
    mlflow = service["mlflow"]
    registered = mlflow.registered_name(CLS)
    first = predict(service, {"model": CLS, "records": RECORDS}).json()["version"]
    newer = register(mlflow, CLS, 1)
    mlflow.promote(registered, newer)  # the alias moved; then the registry goes away
    private_services.down("mlflow")
    try:
        started = time.monotonic()
        failed = package(service["env"], CLS)
        failed_in = time.monotonic() - started
        assert failed.returncode == 3, failed.stdout[-2000:] + failed.stderr[-2000:]
        assert "ConnectionError" in failed.stdout or "MlflowException" in failed.stdout, failed.stdout[-2000:]
        for _ in range(3):  # still serving what it has, and saying which version
            served = predict(service, {"model": CLS, "records": RECORDS})
            assert served.status_code == 200 and served.json()["version"] == first, served.text
            time.sleep(1)
        models = requests.get(f"{service['url']}/models", headers=service["headers"], timeout=60)
        assert models.status_code == 503 and models.json()["code"] == "unavailable", models.text
        assert "MLflow registry unavailable" in models.json()["error"]
    finally:
        private_services.up("mlflow")
    back = time.monotonic()
    done = package(service["env"], CLS)  # the next run of serving/models/<model> (eager automation)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    packaged = time.monotonic()
    while (version := predict(service, {"model": CLS, "records": RECORDS}).json()["version"]) != newer:
        assert time.monotonic() - packaged < RELOAD_BOUND_S, f"still serving {version}, expected {newer}"
        time.sleep(0.5)
    reloaded = time.monotonic()
    listed = {m["model"]: m for m in requests.get(f"{service['url']}/models", headers=service["headers"],
                                                  timeout=60).json()["models"]}
    assert listed[CLS]["aliases"]["champion"] == newer and listed[CLS]["serving"]["mlflow_version"] == newer
    print(f"\nmlflow down while packaging version {newer}: the step failed in {failed_in:.1f} s, the service kept "
          f"serving version {first}; after mlflow was back the step took {packaged - back:.1f} s and version "
          f"{newer} was served {reloaded - packaged:.1f} s later ({json.dumps(listed[CLS]['aliases'])})")
