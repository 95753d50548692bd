"""The dashboard over a materialised platform: AppTest per page, then every page in a real browser.

Uses the session's own databases, lake and MLflow registry prefix (``first_training`` materialises the
batch path and trains the models first), so it never reads the demo's data and passes in CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from platform_assets.settings import PROJECT_ROOT
from tests.integration.conftest import free_port, wait_http

pytestmark = [pytest.mark.integration, pytest.mark.slow]

APP = PROJECT_ROOT / "dashboards" / "app.py"
PAGES = {  # name -> (page script, title); the URL is /<name>, except the default page's (/)
    "data_overview": ("views/data_overview.py", "Data overview"),
    "models": ("views/models.py", "Models"),
    "predictions": ("views/predictions.py", "Predictions"),
    "streaming": ("views/streaming.py", "Streaming"),
}
SCREENSHOTS = PROJECT_ROOT / "test-output" / "screenshots"
MODELS = ("failure_within_24h", "remaining_useful_life")


@pytest.fixture
def dashboard(first_training):
    import streamlit as st

    st.cache_data.clear()  # frames cached for another platform's settings must not leak in
    yield
    st.cache_data.clear()


def run_page(script: str):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=120)
    if script != "views/data_overview.py":
        at.switch_page(script)
    return at.run()


def charts(at) -> list:
    return at.get("vega_lite_chart") + at.get("arrow_vega_lite_chart")


def test_data_overview_lists_marts_and_quarantine(dashboard):
    at = run_page("views/data_overview.py")
    assert not at.exception, [e.value for e in at.exception]
    tables = at.dataframe[0].value
    assert {"machine_hourly_stats", "dim_machines", "site_daily_stats"} <= set(tables["table"])
    assert set(tables["schema"]) == {"marts", "quarantine"}
    assert (tables.loc[tables["schema"] == "marts", "rows"] > 0).all()
    assert tables["dagster_ui"].str.contains("/assets/warehouse/marts/machine_hourly_stats").any()
    quarantine = at.dataframe[1].value
    assert quarantine["rows"].sum() > 0 and quarantine["top_reasons"].str.len().gt(0).any()
    assert len(charts(at)) == 2


def test_models_page_shows_each_champion(dashboard):
    at = run_page("views/models.py")
    assert not at.exception, [e.value for e in at.exception]
    assert [h.value for h in at.header][:len(MODELS)] == list(MODELS)
    assert any(m.label == "Champion version" for m in at.metric)
    assert len(charts(at)) == len(MODELS)  # versions compared, per model
    assert len(at.get("image")) == len(MODELS)  # validation_plot.png of each champion's run


def test_predictions_page_scores_the_feature_set(dashboard):
    at = run_page("views/predictions.py")
    assert not at.exception, [e.value for e in at.exception]
    assert any("lake/features/machine_hourly" in i.value for i in at.info)
    assert any("No predictions served yet" in i.value for i in at.info)  # the service has not been called yet
    assert not any("Nothing materialised" in i.value for i in at.info)
    assert len(charts(at)) == 3
    latest = at.dataframe[0].value
    assert latest["probability"].between(0, 1).all() and len(latest) > 0
    # The site filter narrows the rows scored.
    rows_all = next(m.value for m in at.metric if m.label == "Rows scored")
    at.selectbox(key="filter_site").select_index(1).run()
    assert not at.exception
    assert int(next(m.value for m in at.metric if m.label == "Rows scored").replace(",", "")) < \
        int(rows_all.replace(",", ""))


def test_streaming_page_renders(dashboard):
    at = run_page("views/streaming.py")
    assert not at.exception, [e.value for e in at.exception]
    assert [s.value for s in at.subheader] == ["Live scores", "Events per minute", "Consumer lag", "Dead letters", "Alerts"]
    # The session's warehouse has streaming tables only when streaming tests ran first: data or guidance.
    assert charts(at) or any("No " in i.value or "Nothing" in i.value for i in at.info)


# -- a real browser -------------------------------------------------------------------------------
def _chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not (os.path.exists(binary) and os.path.exists(driver)):
        pytest.fail("headless Chromium is missing: apt-get install -y chromium chromium-driver")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900",
                f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        opts.add_argument(arg)
    return webdriver.Chrome(options=opts, service=Service(driver))


@pytest.fixture
def streamlit_server(first_training, tmp_path):
    port = free_port()
    log = open(tmp_path / "streamlit.log", "wb")  # noqa: SIM115 (open while the server runs)
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless", "true",
         "--browser.gatherUsageStats", "false", "--server.port", str(port), "--server.address", "127.0.0.1"],
        cwd=PROJECT_ROOT, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/_stcore/health", proc, tmp_path / "streamlit.log")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _wait_rendered(driver, title: str, timeout: float = 120) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    # Streamlit re-renders while we look: a status widget found a moment ago may be gone; look again.
    wait = WebDriverWait(driver, timeout, poll_frequency=0.5, ignored_exceptions=(StaleElementReferenceException,))
    wait.until(ec.presence_of_element_located((By.XPATH, f"//h1[contains(normalize-space(.), '{title}')]")))

    def settled(d):  # the script finished: no "Running..." status widget, and it stays so for a moment
        running = d.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]')
        return not any("Running" in e.text for e in running)

    wait.until(settled)
    time.sleep(2)
    wait.until(settled)


def test_every_page_renders_in_a_browser(streamlit_server):
    from selenium.webdriver.common.by import By

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver = _chromium()
    try:
        for path, (_, title) in PAGES.items():
            driver.set_window_size(1280, 900)
            driver.get(f"{streamlit_server}/{'' if path == 'data_overview' else path}")
            _wait_rendered(driver, title)
            body = driver.find_element(By.TAG_NAME, "body").text
            assert "Traceback" not in body and "Page not found" not in body, body[:3000]
            assert not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]'), body[:3000]
            if path != "streaming":  # the session may not have streamed anything
                assert driver.find_elements(By.CSS_SELECTOR, '[data-testid="stVegaLiteChart"], .vega-embed'), path
            # A tall window so the screenshot shows the page's charts, not just its top.
            driver.set_window_size(1280, 2200)
            time.sleep(1.5)
            shot = SCREENSHOTS / f"{path}.png"
            assert driver.save_screenshot(str(shot))
            assert shot.stat().st_size > 20_000, f"{shot} looks blank ({shot.stat().st_size} bytes)"
    finally:
        driver.quit()


