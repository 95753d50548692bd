"""Monitoring configuration: Prometheus accepts it, and every dashboard queries metrics that exist."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from platform_assets.settings import PROJECT_ROOT

MONITORING = PROJECT_ROOT / "deploy" / "monitoring"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: `make install` installs Debian's prometheus package")
    return path


def test_promtool_accepts_the_config_and_the_rules():
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", "alerts.yml"]):
        out = subprocess.run([promtool(), *args], check=False, cwd=MONITORING, capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_rejects_a_broken_rule(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n  - name: x\n    rules:\n      - alert: Broken\n        expr: rate(foo[5m]\n")
    assert subprocess.run([promtool(), "check", "rules", str(bad)], check=False, capture_output=True).returncode != 0


def emitted_metrics() -> set[str]:
    """Metric names the platform exports: the exporter's families, the service's counters, BentoML's own."""
    names = set()
    exporter = (PROJECT_ROOT / "platform_assets" / "monitoring" / "exporter.py").read_text()
    for kind, name in re.findall(r'(Counter|Gauge)MetricFamily\("(\w+)"', exporter):
        names.add(f"{name}_total" if kind == "Counter" else name)
    service = (PROJECT_ROOT / "serving" / "service.py").read_text()
    names |= {f"{n}_total" for n in re.findall(r'Counter\("(\w+)"', service)}
    names |= {"bentoml_service_request_total", "bentoml_service_request_duration_seconds_bucket",
              "bentoml_service_request_in_progress", "up"}
    return names


def test_dashboards_and_alerts_query_only_emitted_metrics():
    known = emitted_metrics()
    exprs = [t["expr"] for board in (MONITORING / "grafana" / "dashboards").glob("*.json")
             for panel in json.loads(board.read_text())["panels"] for t in panel["targets"]]
    exprs += [r["expr"] for g in yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"] for r in g["rules"]]
    assert len(exprs) > 10
    used = {m for e in exprs for m in re.findall(r"\b((?:platform|bentoml)_\w+|up)\b", e)}
    assert used and used <= known, sorted(used - known)


def test_grafana_provisioning_points_at_the_dashboards_and_prometheus():
    ds = yaml.safe_load((MONITORING / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uid = ds["datasources"][0]["uid"]
    for board in (MONITORING / "grafana" / "dashboards").glob("*.json"):
        spec = json.loads(board.read_text())
        assert spec["uid"] and all(p["datasource"]["uid"] == uid for p in spec["panels"])
    assert Path(MONITORING / "grafana" / "provisioning" / "dashboards" / "platform.yml").exists()
