"""A private set of the platform's servers (PostgreSQL, Kafka, Redis, MLflow) on free ports, with a
state folder of its own: deploy/local/services.sh with its environment overrides. The fault tests
and the soak benchmark stop, restart and kill these, never the shared servers on the default ports.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from platform_assets.settings import PROJECT_ROOT
from tests.integration.conftest import free_port

SERVICES = ("postgres", "kafka", "redis", "mlflow")
SCRIPT = PROJECT_ROOT / "deploy" / "local" / "services.sh"


class PrivateServices:
    """The private servers: their settings (``env``, for this process and its children) and stop/start by name."""

    def __init__(self, root: Path):
        self.root = root
        state = root / "state"
        ca = str(state / "postgres" / "tls" / "ca.crt")
        pg, kafka, mtls, controller, redis, mlflow = (free_port() for _ in range(6))
        self.env = {
            "SERVICES_STATE_DIR": str(state),
            "WAREHOUSE_PORT": str(pg), "OPS_POSTGRES_PORT": str(pg),
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka}", "KAFKA_MTLS_PORT": str(mtls),
            "KAFKA_CONTROLLER_PORT": str(controller),
            "REDIS_PORT": str(redis),
            "MLFLOW_PORT": str(mlflow), "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow}",
            "MLFLOW_ARTIFACTS_DIR": str(root / "mlflow-artifacts"),
            "PGSSLROOTCERT": ca, "KAFKA_SSL_CA_LOCATION": ca,
            # The warehouse, stream store and Dagster storage: databases services.sh provisions.
            "WAREHOUSE_DB": "warehouse", "DAGSTER_PG_DB": "dagster", "REDIS_DB": "0",
        }
        self.log = root / "services.log"

    def _run(self, action: str, *names: str) -> float:
        """services.sh ACTION NAMES; the seconds it took."""
        start = time.monotonic()
        with self.log.open("a") as log:
            out = subprocess.run(["bash", str(SCRIPT), action, *names], env={**os.environ, **self.env},
                                 cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=240, check=False)
        if out.returncode != 0:
            logs = sorted(Path(self.env["SERVICES_STATE_DIR"]).glob("*/provision.log"))
            detail = "".join(f"--- {p}\n{p.read_text()[-1500:]}\n" for p in logs)
            raise AssertionError(f"services.sh {action} {names} failed:\n{self.log.read_text()[-1500:]}\n{detail}")
        return time.monotonic() - start

    def up(self, *names: str) -> float:
        """Start (idempotent: a server already up is left as it is). One more try after a failure:
        services.sh is read by bash as it runs, so an edit of the script meanwhile can break one call."""
        try:
            return self._run("up", *(names or SERVICES))
        except AssertionError:
            time.sleep(2)
            return self._run("up", *(names or SERVICES))

    def down(self, *names: str) -> float:
        return self._run("down", *(names or tuple(reversed(SERVICES))))
