"""A real Prometheus (Debian's) scrapes the running prediction service and the platform exporter."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import requests
import yaml

from platform_assets.settings import PROJECT_ROOT
from tests.integration.conftest import free_port, wait_http
from tests.integration.test_serving import start_server, stop_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def scraped(first_training, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("monitoring")
    procs = []
    exporter_port = free_port()
    log = tmp / "exporter.log"
    procs.append(subprocess.Popen([sys.executable, "-m", "platform_assets.monitoring.exporter", "--port", str(exporter_port)],
                                  cwd=PROJECT_ROOT, stdout=open(log, "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
                                  start_new_session=True))
    wait_http(f"http://127.0.0.1:{exporter_port}/metrics", procs[-1], log)
    service = start_server(tmp)
    # The repository's configuration, pointed at this test's ports and scraping every second.
    config = yaml.safe_load((PROJECT_ROOT / "deploy" / "monitoring" / "prometheus.yml").read_text())
    prom_port = free_port()
    config["global"]["scrape_interval"] = "1s"
    targets = {"prediction-service": service.url.split("//")[1], "platform": f"127.0.0.1:{exporter_port}",
               "prometheus": f"127.0.0.1:{prom_port}"}
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    shutil.copy(PROJECT_ROOT / "deploy" / "monitoring" / "alerts.yml", tmp / "alerts.yml")
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    plog = tmp / "prometheus.log"
    procs.append(subprocess.Popen(["prometheus", f"--config.file={tmp / 'prometheus.yml'}",
                                   f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
                                  stdout=open(plog, "wb"), stderr=subprocess.STDOUT, start_new_session=True))  # noqa: SIM115
    wait_http(f"http://127.0.0.1:{prom_port}/-/ready", procs[-1], plog)
    requests.post(f"{service.url}/predict", json={"model": "failure_within_24h", "machine_ids": ["M001"]},
                  headers=service.token("predict"), timeout=30)
    try:
        yield {"prometheus": f"http://127.0.0.1:{prom_port}", "service": service}
    finally:
        stop_server(service)
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=30)


def query(prom: str, expr: str, timeout: float = 60) -> list[dict]:
    """Poll until the query returns series (the first samples appear seconds after start)."""
    deadline = time.monotonic() + timeout
    while True:
        result = requests.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10).json()["data"]["result"]
        if result:
            return result
        assert time.monotonic() < deadline, f"no series for {expr} within {timeout:.0f} s"
        time.sleep(1)


def test_prometheus_scrapes_the_prediction_service(scraped):
    up = query(scraped["prometheus"], 'up{job="prediction-service"} == 1')
    assert up[0]["metric"]["job"] == "prediction-service"
    predictions = query(scraped["prometheus"], 'platform_predictions_total{model="failure_within_24h"}')
    assert float(predictions[0]["value"][1]) >= 1
    assert query(scraped["prometheus"], 'bentoml_service_request_total{endpoint="/predict"}')


def test_prometheus_scrapes_the_platform_exporter(scraped, platform):
    quarantined = query(scraped["prometheus"], 'platform_quarantined_rows{source="sensor_readings"}')
    assert float(quarantined[0]["value"][1]) == platform.data.expected_bad_rows["sensor_readings"]
    sources_up = query(scraped["prometheus"], 'platform_exporter_up{source="warehouse"}')
    assert float(sources_up[0]["value"][1]) == 1


def test_alert_rules_are_loaded(scraped):
    groups = requests.get(f"{scraped['prometheus']}/api/v1/rules", timeout=10).json()["data"]["groups"]
    names = {r["name"] for g in groups for r in g["rules"]}
    assert {"PredictionServiceDown", "KafkaConsumerLagHigh", "StreamStale", "DeadLetterRateHigh"} <= names
