"""The prediction service as users meet it: a real `bentoml serve` with the session's champions.

The champions come from the ML path (first_training packages them into this session's BentoML
store); the server runs on a free port with a signing secret of the test's own.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import requests

from platform_assets.settings import PROJECT_ROOT
from serving.auth import mint
from tests.integration.conftest import free_port, wait_http

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CLS, REG = "failure_within_24h", "remaining_useful_life"


@dataclass
class Running:
    url: str
    secret: str
    proc: subprocess.Popen
    log: Path

    def token(self, *roles: str) -> dict:
        return {"Authorization": "Bearer " + mint("tester", list(roles), self.secret)}


def start_server(tmp: Path, extra_args=(), env_extra=None, scheme="http", ca: str | None = None) -> Running:
    port, secret = free_port(), secrets.token_urlsafe(32)
    log = tmp / f"bentoml-{port}.log"
    env = {**os.environ, "SERVING_JWT_SECRET": secret, "MODEL_RELOAD_SECONDS": "1", **(env_extra or {})}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "bentoml"), "serve", "serving.service:FleetPredictions",
         "--host", "127.0.0.1", "--port", str(port), *extra_args],
        cwd=PROJECT_ROOT, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
        start_new_session=True)
    url = f"{scheme}://127.0.0.1:{port}"
    wait_http(f"{url}/readyz", proc, log, timeout=120, verify=ca or True)
    return Running(url, secret, proc, log)


def stop_server(server: Running) -> None:
    os.killpg(server.proc.pid, signal.SIGTERM)
    try:
        server.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def dagster_web(first_training, ml_env, tmp_path_factory):
    """A Dagster webserver on this workspace; runs it launches register under a prefix of their own."""
    home = tmp_path_factory.mktemp("dagster-home")
    (home / "dagster.yaml").write_text(  # no queue (and so no daemon needed): runs launch at once
        "telemetry:\n  enabled: false\nrun_coordinator:\n  module: dagster.core.run_coordinator\n"
        "  class: DefaultRunCoordinator\n")
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "MLFLOW_REGISTRY_PREFIX": ml_env["prefix"] + "train_",
           "REDIS_DB": "14", "BENTOML_HOME": str(home / "bentoml")}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port),
                             "-w", "workspace.yaml"], cwd=PROJECT_ROOT, env=env, start_new_session=True,
                            stdout=open(home / "webserver.log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/server_info", proc, home / "webserver.log", timeout=120)
    yield {"url": url, "prefix": ml_env["prefix"] + "train_"}
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(first_training, dagster_web, tmp_path_factory):
    running = start_server(tmp_path_factory.mktemp("serving"),
                           env_extra={"DAGSTER_GRAPHQL_URL": dagster_web["url"] + "/graphql"})
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def records():
    frame = pd.read_parquet(Path(os.environ["LAKE_ROOT"]) / "features" / "machine_hourly" / "data.parquet").tail(5)
    return frame.drop(columns=["as_of", "source_cutoff"]).astype(object).where(frame.notna(), None) \
        .to_dict("records")


def test_health_is_open_and_everything_else_needs_a_token(server):
    assert requests.get(f"{server.url}/livez", timeout=5).status_code == 200
    missing = requests.post(f"{server.url}/predict", json={}, timeout=5)
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    bad = requests.post(f"{server.url}/predict", json={}, timeout=5, headers={"Authorization": "Bearer nonsense"})
    assert bad.status_code == 401
    forbidden = requests.post(f"{server.url}/train", json={}, timeout=5, headers=server.token("predict"))
    assert forbidden.status_code == 403 and "role 'train' required" in forbidden.json()["error"]


def test_predicts_classes_probabilities_and_versions(server, records, ml_env):
    resp = requests.post(f"{server.url}/predict", json={"model": CLS, "records": records},
                         headers=server.token("predict"), timeout=30)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert len(body["predictions"]) == len(records) and set(body["predictions"]) <= {0, 1}
    assert all(abs(sum(p.values()) - 1) < 1e-6 for p in body["probabilities"])
    champion = ml_env["mlflow"].champion(f"{ml_env['prefix']}{CLS}")
    assert body["version"] == str(champion.version) and body["model"] == CLS
    reg = requests.post(f"{server.url}/predict", json={"model": REG, "records": records},
                        headers=server.token("predict"), timeout=30).json()
    assert all(isinstance(v, float) for v in reg["predictions"]) and "probabilities" not in reg


def test_predicts_from_the_online_store_by_machine_id(server, ml_env):
    machine = min(ml_env["online"].entities("machine_hourly"))
    resp = requests.post(f"{server.url}/predict", json={"model": CLS, "machine_ids": [machine]},
                         headers=server.token("predict"), timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.json()["machine_ids"] == [machine] and len(resp.json()["predictions"]) == 1
    fresh = resp.json()["features"][machine]  # how old the served row is: the batch pipeline's, hours old
    assert fresh["writer"] == "batch" and fresh["age_seconds"] is not None and fresh["as_of"]
    unknown = requests.post(f"{server.url}/predict", json={"model": CLS, "machine_ids": ["NOPE"]},
                            headers=server.token("predict"), timeout=30)
    assert unknown.status_code == 404 and "NOPE" in unknown.text


@pytest.mark.parametrize("body, message", [
    ({"model": CLS, "records": [{"avg_temperature": "hot"}]}, "missing field"),
    ({"model": CLS, "records": []}, "records is empty"),
    ({"model": "nope", "records": [{}]}, "unknown model"),
    ({"model": CLS}, "exactly one of records or machine_ids"),
    ({"model": CLS, "records": [{}] * 1001}, "more than the limit"),
])
def test_bad_input_is_a_4xx_that_says_what_is_wrong(server, body, message):
    resp = requests.post(f"{server.url}/predict", json=body, headers=server.token("predict"), timeout=30)
    assert 400 <= resp.status_code < 500 and message in resp.text, resp.text


def test_wrong_type_names_the_field(server, records):
    broken = [{**records[0], "avg_temperature": "very hot"}]
    resp = requests.post(f"{server.url}/predict", json={"model": CLS, "records": broken},
                         headers=server.token("predict"), timeout=30)
    assert resp.status_code == 400 and "'avg_temperature' must be a number" in resp.text
    empty = requests.post(f"{server.url}/predict", data=b"", headers=server.token("predict"), timeout=30)
    assert 400 <= empty.status_code < 500


def test_models_lists_versions_aliases_and_metrics(server, ml_env):
    resp = requests.get(f"{server.url}/models", headers=server.token("predict"), timeout=30)
    assert resp.status_code == 200, resp.text
    models = {m["model"]: m for m in resp.json()["models"]}
    assert set(models) == {CLS, REG}
    assert models[CLS]["aliases"]["champion"] == str(ml_env["mlflow"].champion(f"{ml_env['prefix']}{CLS}").version)
    assert len(models[CLS]["versions"]) >= 3 and models[CLS]["versions"][0]["val_pr_auc"] is not None


def test_every_prediction_is_logged_to_the_warehouse(server, records, warehouse):
    before = _logged(warehouse)
    requests.post(f"{server.url}/predict", json={"model": REG, "records": records[:3]},
                  headers=server.token("predict"), timeout=30)
    deadline = time.monotonic() + 20
    while _logged(warehouse) < before + 3:
        assert time.monotonic() < deadline, "predictions not in serving.predictions within 20 s"
        time.sleep(0.5)
    rows = warehouse.query("SELECT model, prediction, probability FROM serving.predictions WHERE model = %s", (REG,))
    assert len(rows) >= 3 and rows["probability"].isna().all()  # a regressor has no class probabilities


def _logged(warehouse) -> int:
    exists = warehouse.query("SELECT to_regclass('serving.predictions') IS NOT NULL AS ok")["ok"].iloc[0]
    return int(warehouse.query("SELECT count(*) AS n FROM serving.predictions")["n"].iloc[0]) if exists else 0


def test_metrics_count_predictions(server, records):
    requests.post(f"{server.url}/predict", json={"model": CLS, "records": records[:2]},
                  headers=server.token("predict"), timeout=30)
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    assert "platform_predictions_total" in text and 'model="failure_within_24h"' in text
    assert "bentoml_service_request" in text


def test_a_new_champion_is_served_without_restart(server, records, ml_env):
    import dagster as dg

    from platform_assets.ml.packaging import build_bento_model
    from resources import build_resources

    mlflow, name = ml_env["mlflow"], f"{ml_env['prefix']}{CLS}"
    versions = mlflow.client().search_model_versions(f"name = '{name}'")
    current = mlflow.champion(name).version
    other = next(v.version for v in versions if v.version != current)
    mlflow.promote(name, other)
    result = dg.materialize([build_bento_model(CLS)], resources=build_resources(), raise_on_error=False,
                            selection=[dg.AssetKey(["serving", "models", CLS])])
    assert result.success
    deadline = time.monotonic() + 30
    while True:
        body = requests.post(f"{server.url}/predict", json={"model": CLS, "records": records[:1]},
                             headers=server.token("predict"), timeout=30).json()
        if body["version"] == str(other):
            break
        assert time.monotonic() < deadline, f"still serving version {body['version']}, expected {other}"
        time.sleep(1)
    mlflow.promote(name, current)


def test_tls_when_a_certificate_is_configured(first_training, tmp_path):
    from tests.certificates import self_signed_tls

    pem = self_signed_tls(tmp_path / "tls")
    tls = start_server(tmp_path, ["--ssl-certfile", pem["cert"], "--ssl-keyfile", pem["key"]],
                       scheme="https", ca=pem["ca"])
    try:
        resp = requests.get(f"{tls.url}/livez", verify=pem["ca"], timeout=10)
        assert resp.status_code == 200
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(tls.url.replace("https", "http") + "/livez", timeout=5)
    finally:
        stop_server(tls)


# The published contract (schemathesis with all its checks, overload) is tests/integration/test_serving_contract.py.


def test_train_launches_ml_pipeline_in_dagster_and_reports_its_status(server, dagster_web, ml_env):
    resp = requests.post(f"{server.url}/train", json={}, headers=server.token("train"), timeout=60)
    assert resp.status_code == 200, resp.text
    run_id = resp.json()["run_id"]
    deadline, status = time.monotonic() + 480, None  # the whole ml_pipeline: ~60 s alone, minutes on a busy CI host
    while time.monotonic() < deadline:
        status = requests.get(f"{server.url}/train/{run_id}", headers=server.token("train"), timeout=30).json()["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(3)
    assert status == "SUCCESS", status
    client = ml_env["mlflow"].client()
    trained = client.search_registered_models(filter_string=f"name LIKE '{dagster_web['prefix']}%'")
    assert {m.name for m in trained} == {f"{dagster_web['prefix']}{CLS}", f"{dagster_web['prefix']}{REG}"}
    for m in trained:
        client.delete_registered_model(m.name)
    unknown = requests.get(f"{server.url}/train/not-a-run", headers=server.token("train"), timeout=30)
    assert unknown.status_code == 404


def _curl(*args: str) -> tuple[int, dict, dict]:
    """curl as a user runs it: status, headers (lower-case names) and the JSON body."""
    curl = shutil.which("curl")
    assert curl, "curl is not installed: `bash deploy/local/services.sh install` installs it"
    done = subprocess.run([curl, "-sS", "-D", "-", "--max-time", "30", *args], check=False, capture_output=True,
                          text=True, timeout=40)
    assert done.returncode == 0, done.stderr
    head, _, body = done.stdout.replace("\r\n", "\n").partition("\n\n")
    lines = head.splitlines()
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, json.loads(body or "null")


def test_curl_sees_what_the_published_contract_says(server, records):
    """Through curl, not our client: a prediction, a malformed body and a missing token, each answered
    as the OpenAPI document declares (JSON bodies, the one error schema, a Bearer challenge)."""
    token = server.token("predict")["Authorization"]
    body = json.dumps({"model": CLS, "records": records[:3]})
    status, headers, answer = _curl("-H", f"Authorization: {token}", "-H", "Content-Type: application/json",
                                    "--data-binary", body, f"{server.url}/predict")
    assert status == 200 and headers["content-type"].startswith("application/json"), answer
    assert len(answer["predictions"]) == 3 and answer["model"] == CLS

    status, _, error = _curl("-H", f"Authorization: {token}", "-H", "Content-Type: application/json",
                             "--data-binary", '{"model": "' + CLS + '", "records": [', f"{server.url}/predict")
    assert status == 400 and isinstance(error["error"], str) and error["error"], error

    status, headers, error = _curl("-H", "Content-Type: application/json", "--data-binary", body,
                                   f"{server.url}/predict")
    assert status == 401 and headers["www-authenticate"].startswith("Bearer") and error["error"]
