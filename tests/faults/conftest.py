"""Fault-injection fixtures: a PRIVATE set of servers that the tests may stop, restart and kill.

The rest of the suite (and a developer's demo) uses the servers on the default ports; stopping
those would fail other tests. So this package starts its own PostgreSQL, Kafka, Redis and MLflow
with deploy/local/services.sh (the same script and settings, other ports and a state folder under
a temporary directory, through the script's environment overrides), points every test of the
package at them, and stops them after the package's last test.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from platform_assets.settings import load_local_defaults
from tests.faults.services import PrivateServices


def pytest_configure(config):
    # Also to be listed in pyproject's [tool.pytest.ini_options] markers (strict markers).
    config.addinivalue_line("markers", "faults: fault injection on a private set of real servers (tests/faults)")


@pytest.fixture(scope="package")
def private_services():
    root = Path(tempfile.mkdtemp(prefix="faults-services-"))
    root.chmod(0o711)  # PostgreSQL runs as user postgres when the tests run as root (CI)
    services = PrivateServices(root)
    try:
        services.up()
        yield services
    finally:
        try:
            services.down()
        finally:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture()
def private_env(private_services, monkeypatch, tmp_path):
    """This test's process points at the private servers and at a lake of its own."""
    for key, value in private_services.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LAKE_ROOT", str(tmp_path / "lake"))
    load_local_defaults()  # every other setting from services.env, as the platform reads them
    return private_services
