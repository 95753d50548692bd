"""The dashboard against an EMPTY platform: every page shows guidance, never a stack trace.

The settings point at a database that does not exist and at ports nobody listens on, so every data
source fails the way a fresh laptop's would (in seconds: the dashboard checks reachability first).
"""

from __future__ import annotations

import pytest
import streamlit.testing.v1 as streamlit_testing

from platform_assets.settings import PROJECT_ROOT

APP = str(PROJECT_ROOT / "dashboards" / "app.py")
PAGES = {  # page script (relative to the app) -> its title
    "views/data_overview.py": "Data overview",
    "views/models.py": "Models",
    "views/predictions.py": "Predictions",
    "views/streaming.py": "Streaming",
}
HINT = "Nothing materialised yet"


@pytest.fixture
def empty_platform(monkeypatch, tmp_path):
    import streamlit as st

    monkeypatch.setenv("WAREHOUSE_DB", "does_not_exist")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("LAKE_ROOT", str(tmp_path / "lake"))
    st.cache_data.clear()
    yield
    st.cache_data.clear()


def run_page(page: str):
    at = streamlit_testing.AppTest.from_file(APP, default_timeout=30)
    if page != "views/data_overview.py":
        at.switch_page(page)
    return at.run()


@pytest.mark.parametrize("page", list(PAGES))
def test_page_on_an_empty_platform_shows_guidance(empty_platform, page):
    at = run_page(page)
    assert not at.exception, [e.value for e in at.exception]
    assert [t.value for t in at.title] == [PAGES[page]]
    infos = [i.value for i in at.info]
    assert any(HINT in i for i in infos), infos
    assert not at.dataframe


def test_streaming_page_says_kafka_is_down(empty_platform):
    at = run_page("views/streaming.py")
    assert any("Consumer lag not available" in i.value and "127.0.0.1:1" in i.value for i in at.info)


def test_predictions_page_says_where_its_data_come_from(empty_platform):
    at = run_page("views/predictions.py")
    assert any("lake/features/machine_hourly" in i.value for i in at.info)


def test_data_functions_return_empty_frames_with_a_reason(empty_platform):
    from dashboards import data

    for loaded in (data.warehouse_tables(), data.quarantine_summary(), data.machines(), data.models_overview(),
                   data.model_versions("failure_within_24h"), data.champion_predictions(), data.events_per_minute(),
                   data.batches_per_minute(), data.dead_letters(), data.alerts(), data.consumer_lag()):
        assert loaded.empty and loaded.reason, loaded
    assert data.validation_plot("no-such-run") is None
    assert data.streaming_latest() is None


def test_asset_url_uses_the_dagster_ui_setting(monkeypatch):
    from dashboards import data

    monkeypatch.delenv("DAGSTER_UI_URL", raising=False)
    assert data.asset_url("warehouse", "marts", "dim_machines") == \
        "http://127.0.0.1:23000/assets/warehouse/marts/dim_machines"
    monkeypatch.setenv("DAGSTER_UI_URL", "https://dagster.example.com/")
    assert data.asset_url("warehouse", "quarantine", "sites") == \
        "https://dagster.example.com/assets/warehouse/quarantine/sites"
