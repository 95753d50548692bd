"""The prediction service keeps its published contract, checked by schemathesis against a real server.

`bentoml serve` runs with two small models of the catalogue's names (a classifier with text labels
and a regressor, saved in MLflow's format with signatures and imported into a BentoML store of the
test's own), Redis, the local MLflow server and a real Dagster webserver whose queued runs never
start (no daemon), so /train is exercised without training. The expensive ML path is not needed:
the contract is the same for any model's signature.
"""

import json
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from platform_assets.settings import PROJECT_ROOT, load_local_defaults
from serving.auth import mint
from tests.integration.conftest import _pg_admin, free_port, wait_http

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BIN = Path(sys.executable).parent
CLS, REG = "failure_within_24h", "remaining_useful_life"

MAKE_MODELS = textwrap.dedent("""
    import bentoml, mlflow.sklearn, numpy as np, pandas as pd, sys
    from mlflow.models import infer_signature
    from platform_assets.ml.training import build_pipeline

    rng = np.random.default_rng(0)
    n = 200
    X = pd.DataFrame({"temperature_mean_6h": rng.normal(60, 5, n), "vibration_mean_6h": rng.normal(3, 1, n),
                      "hours_since_maintenance": rng.uniform(0, 500, n).round(), "machine_model": rng.choice(["A", "B"], n)})
    X.loc[::17, "vibration_mean_6h"] = np.nan
    targets = {"failure_within_24h": ("classification", "gradient_boosting",
                                      np.where(X["temperature_mean_6h"] > 62, "fail", "ok")),
               "remaining_useful_life": ("regression", "linear_regression", 500 - X["hours_since_maintenance"])}
    for name, (task, algorithm, y) in targets.items():
        pipe = build_pipeline(task, algorithm, {}, ["temperature_mean_6h", "vibration_mean_6h",
                                                    "hours_since_maintenance"], ["machine_model"]).fit(X, y)
        path = f"{sys.argv[1]}/{name}"
        mlflow.sklearn.save_model(pipe, path, signature=infer_signature(X, pipe.predict(X)),
                                  serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE)
        bentoml.mlflow.import_model(name, model_uri=path, metadata={"mlflow_version": "1"})
""")


def _stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    load_local_defaults()
    tmp = tmp_path_factory.mktemp("contract")
    db = f"t_contract_{uuid.uuid4().hex[:8]}"
    _pg_admin(f'CREATE DATABASE "{db}"')
    env = {**os.environ, "BENTOML_HOME": str(tmp / "bentoml"), "BENTOML_DO_NOT_TRACK": "true",
           "WAREHOUSE_DB": db, "REDIS_DB": "13", "MLFLOW_REGISTRY_PREFIX": f"t{uuid.uuid4().hex[:6]}_",
           "DAGSTER_HOME": str(tmp / "dagster"), "MODEL_RELOAD_SECONDS": "3600"}
    subprocess.run([sys.executable, "-c", MAKE_MODELS, str(tmp / "mlflow")], cwd=PROJECT_ROOT, env=env, check=True,
                   capture_output=True, timeout=300)
    (tmp / "dagster").mkdir()
    (tmp / "dagster" / "dagster.yaml").write_text(  # queued runs and no daemon: /train never trains
        "telemetry:\n  enabled: false\nrun_coordinator:\n  module: dagster.core.run_coordinator\n"
        "  class: QueuedRunCoordinator\n")
    procs = []
    try:
        dagster_port, port, secret = free_port(), free_port(), secrets.token_urlsafe(32)
        procs.append(subprocess.Popen(
            [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(dagster_port), "-w", "workspace.yaml"],
            cwd=PROJECT_ROOT, env=env, stdout=open(tmp / "dagster.log", "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
            start_new_session=True))
        env |= {"SERVING_JWT_SECRET": secret, "DAGSTER_GRAPHQL_URL": f"http://127.0.0.1:{dagster_port}/graphql"}
        procs.append(subprocess.Popen(
            [str(BIN / "bentoml"), "serve", "serving.service:FleetPredictions", "--host", "127.0.0.1",
             "--port", str(port)], cwd=PROJECT_ROOT, env=env, stdout=open(tmp / "bentoml.log", "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT, start_new_session=True))
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/readyz", procs[1], tmp / "bentoml.log", timeout=120)
        wait_http(f"http://127.0.0.1:{dagster_port}/server_info", procs[0], tmp / "dagster.log", timeout=180)
        yield {"url": url, "token": mint("contract", ["admin"], secret), "log": tmp / "bentoml.log", "tmp": tmp,
               "predict_token": mint("contract", ["predict"], secret)}
    finally:
        for proc in reversed(procs):
            _stop(proc)
        _pg_admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def _post(service, body, token=None, **kw) -> requests.Response:
    return requests.post(f"{service['url']}/predict", json=body, timeout=30,
                         headers={"Authorization": f"Bearer {token or service['token']}"}, **kw)


def _why(service, resp) -> str:
    return f"{resp.status_code} {resp.text[:500]}\n" + service["log"].read_text(errors="replace")[-3000:]


RECORD = {"temperature_mean_6h": 61.0, "vibration_mean_6h": None, "hours_since_maintenance": 12,
          "machine_model": "A"}


def test_the_document_declares_inputs_from_the_model_signature(service):
    doc = requests.get(f"{service['url']}/docs.json", timeout=10).json()
    record = doc["components"]["schemas"]["Record"]
    assert set(record["required"]) == set(RECORD)
    assert record["properties"]["temperature_mean_6h"]["type"] == ["number", "null"]
    assert record["properties"]["machine_model"]["type"] == ["string", "null"]
    request = doc["components"]["schemas"]["PredictRequest"]
    assert request["oneOf"] == [{"required": ["records"]}, {"required": ["machine_ids"]}]
    assert request["properties"]["records"]["maxItems"] == 1000
    responses = doc["paths"]["/predict"]["post"]["responses"]
    assert {s for s, r in responses.items() if s != "200"} <= {
        s for s, r in responses.items() if r["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"}}


def test_predictions_carry_labels_as_trained(service):
    resp = _post(service, {"model": CLS, "records": [RECORD, {**RECORD, "temperature_mean_6h": 70.0}]})
    assert resp.status_code == 200, _why(service, resp)
    body = resp.json()
    assert set(body["predictions"]) <= {"ok", "fail"} and set(body["classes"]) == {"ok", "fail"}
    assert all(abs(sum(p.values()) - 1) < 1e-9 for p in body["probabilities"])
    assert isinstance(_post(service, {"model": REG, "records": [RECORD]}).json()["predictions"][0], float)


@pytest.mark.parametrize(("body", "status", "code", "message"), [
    ({}, 400, "invalid_request", "exactly one of records or machine_ids"),
    ({"records": [RECORD], "machine_ids": ["M1"]}, 400, "invalid_request", "exactly one"),
    ({"records": []}, 400, "invalid_request", "records is empty"),
    ({"records": [RECORD] * 1001}, 400, "too_large", "more than the limit of 1000"),
    ({"records": [{**RECORD, "temperature_mean_6h": "hot"}]}, 400, "invalid_request", "'temperature_mean_6h' must be a number"),
    ({"records": [{**RECORD, "temperature_mean_6h": True}]}, 400, "invalid_request", "must be a number"),
    ({"records": [{**RECORD, "temperature_mean_6h": 1e12}]}, 400, "invalid_request", "within"),
    ({"records": [{k: v for k, v in RECORD.items() if k != "machine_model"}]}, 400, "invalid_request",
     "missing field(s) machine_model"),
    ({"model": "nope", "records": [RECORD]}, 400, "unknown_model", "unknown model 'nope'"),
    ({"records": [RECORD], "extra": 1}, 400, "invalid_request", "unknown field(s) 'extra'"),
    ({"machine_ids": ["NOPE"]}, 404, "unknown_machine", "NOPE"),
])
def test_bad_requests_get_one_error_body_that_says_what_is_wrong(service, body, status, code, message):
    resp = _post(service, body)
    assert resp.status_code == status, resp.text
    assert resp.json()["code"] == code and message in resp.json()["error"], resp.text


def test_auth_and_routing_errors_have_the_same_body(service):
    for resp, status in [(requests.post(f"{service['url']}/predict", json={}, timeout=10), 401),
                         (requests.post(f"{service['url']}/train", timeout=10,
                                        headers={"Authorization": f"Bearer {service['predict_token']}"}), 403),
                         (requests.get(f"{service['url']}/predict", timeout=10,
                                       headers={"Authorization": f"Bearer {service['token']}"}), 405),
                         (requests.post(f"{service['url']}/predict", data=b"x=1", timeout=10,
                                        headers={"Authorization": f"Bearer {service['token']}"}), 415)]:
        assert resp.status_code == status and set(resp.json()) == {"error", "code"}, resp.text
    assert "POST" in requests.get(f"{service['url']}/predict", timeout=10,
                                  headers={"Authorization": f"Bearer {service['token']}"}).headers["allow"]


def test_schemathesis_with_all_checks_finds_no_failure(service):
    """`schemathesis run --checks all` on the service's own document, with a valid token."""
    report = service["tmp"] / "schemathesis"
    proc = subprocess.run(
        [str(BIN / "schemathesis"), "run", f"{service['url']}/docs.json", "--checks", "all",
         "-H", f"Authorization: Bearer {service['token']}", "--max-examples", "15", "--seed", "1",
         "--generation-deterministic", "--request-timeout", "30", "--report", "junit", "--report-dir", str(report),
         "--warnings", "off"],
        cwd=service["tmp"], capture_output=True, text=True, timeout=900, check=False)  # its cache stays there
    summary = proc.stdout[-6000:]
    assert proc.returncode == 0, summary
    assert "No issues found" in summary or "passed" in summary, summary


def test_concurrent_requests_each_get_what_the_model_alone_gives(service):
    """Requests in flight together are batched by the runner: each still gets, in its records' order,
    exactly the labels and probabilities of the stored model predicting its records alone."""
    import random
    from concurrent.futures import ThreadPoolExecutor

    import mlflow.sklearn
    import pandas as pd

    from serving.predictor import predict_with

    pipeline = mlflow.sklearn.load_model(str(service["tmp"] / "mlflow" / CLS))
    rng = random.Random(0)
    bodies = [[{**RECORD, "temperature_mean_6h": rng.uniform(50, 70), "hours_since_maintenance": rng.randint(0, 500),
                "vibration_mean_6h": rng.choice([None, rng.uniform(1, 5)]), "machine_model": rng.choice("AB")}
               for _ in range(rng.randint(1, 30))] for _ in range(32)]
    # BentoML's dispatcher calibrates on a model's first requests, one at a time, and may refuse a
    # burst meanwhile (503): calibrate it first, as any traffic would.
    warm_up = [_post(service, {"model": CLS, "records": records}) for records in bodies[:12]]
    with ThreadPoolExecutor(16) as pool:
        burst = list(pool.map(lambda records: _post(service, {"model": CLS, "records": records}), bodies))
    for records, resp in zip(bodies[:12] + bodies, warm_up + burst, strict=True):
        assert resp.status_code == 200, _why(service, resp)
        alone = predict_with(pipeline, pd.DataFrame(records)[list(RECORD)])
        body = resp.json()
        assert body["predictions"] == alone["predictions"] and body["classes"] == alone["classes"]
        assert set(body["predictions"]) <= {"ok", "fail"}
        for served, own in zip(body["probabilities"], alone["probabilities"], strict=True):
            assert served.keys() == own.keys() and all(abs(served[k] - own[k]) <= 1e-12 for k in own)


def test_overload_is_answered_503_with_retry_after_at_once(service):
    """Far more concurrent requests than the service admits (4 running + 32 waiting): the excess is
    refused at once with 503 and Retry-After, and the admitted ones still answer."""
    body = json.dumps({"model": CLS, "records": [RECORD] * 1000}).encode()
    headers = {"Authorization": f"Bearer {service['token']}", "Content-Type": "application/json"}
    results: list[tuple[int, float, str | None]] = []
    lock = threading.Lock()

    def call():
        started = time.monotonic()
        resp = requests.post(f"{service['url']}/predict", data=body, headers=headers, timeout=120)
        with lock:
            results.append((resp.status_code, time.monotonic() - started, resp.headers.get("retry-after")))

    threads = [threading.Thread(target=call) for _ in range(120)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    refused = [r for r in results if r[0] == 503]
    served = [r for r in results if r[0] == 200]
    assert refused and served, sorted({r[0] for r in results})
    assert {r[0] for r in results} == {200, 503}
    assert all(r[2] == "1" for r in refused)
    assert max(r[1] for r in refused) < min(5.0, max(r[1] for r in served)), (refused[:3], served[:3])
