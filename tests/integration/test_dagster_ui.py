"""The Dagster webserver loads workspace.yaml and serves the whole asset graph (as `make demo` starts it)."""

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from platform_assets.definitions import defs
from platform_assets.settings import PROJECT_ROOT
from tests.integration.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUERY = "{ assetNodes { assetKey { path } groupName } }"


def graphql(port: int, query: str) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)


def test_webserver_serves_every_asset_with_its_group(tmp_path, platform):  # platform: its own Dagster database
    port = free_port()
    (tmp_path / "dagster.yaml").write_text((PROJECT_ROOT / "deploy" / "local" / "dagster.yaml").read_text())
    log = open(tmp_path / "webserver.log", "wb")  # noqa: SIM115 (open while the server runs)
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port),
         "-w", "workspace.yaml"],
        cwd=PROJECT_ROOT, env={**os.environ, "DAGSTER_HOME": str(tmp_path)}, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "webserver.log").read_text()[-3000:]
            try:
                nodes = graphql(port, QUERY)["data"]["assetNodes"]
                break
            except (OSError, KeyError, TypeError):
                assert time.monotonic() < deadline, "webserver did not serve the asset graph within 120 s"
                time.sleep(1)
        groups = {"/".join(n["assetKey"]["path"]): n["groupName"] for n in nodes}
        assert groups["lake/raw/sensor_readings"] == "raw"
        assert groups["warehouse/marts/machine_hourly_stats"] == "warehouse"
        assert groups["warehouse/quarantine/app_logs"] == "quarantine"
        assert set(groups) == {k.to_user_string() for k in defs.get_repository_def().asset_graph.get_all_asset_keys()}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
