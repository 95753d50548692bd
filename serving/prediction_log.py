"""Every prediction served, written to the warehouse (``serving.predictions``) off the request path.

Requests put rows on a bounded queue; a daemon thread writes what has gathered every couple of
seconds in one COPY. A slow or unreachable warehouse therefore never slows a prediction: rows wait
(up to ``max_rows``) and are written once it answers; past that bound the oldest are dropped and
counted (``platform_prediction_log_dropped_total``), since predictions matter more than their log.
"""

from __future__ import annotations

import collections
import logging
import threading
import time

import pandas as pd
from prometheus_client import Counter

SCHEMA, TABLE = "serving", "predictions"  # the schema in this process's namespace (platform_assets/namespace.py)
DROPPED = Counter("platform_prediction_log_dropped", "Logged predictions dropped (log queue full)")
log = logging.getLogger(__name__)


def logged_prediction(pred, proba: dict[str, float] | None) -> dict:
    """The logged columns of one prediction: ``label`` always (the class or value as text),
    ``prediction`` when it is a number (regression, numeric classes), and ``probability``: that of
    the positive class ``1`` for a binary 0/1 model (what the dashboard charts), else that of the
    predicted class."""
    numeric = isinstance(pred, int | float) and not isinstance(pred, bool)
    probability = None
    if proba:
        probability = proba.get("1", proba.get(str(pred)))
    return {"prediction": float(pred) if numeric else None, "label": str(pred), "probability": probability}


class PredictionLog:
    def __init__(self, warehouse_factory, interval_seconds: float = 2.0, max_rows: int = 200_000):
        self._factory, self._warehouse = warehouse_factory, None
        self._rows: collections.deque = collections.deque()
        self._lock = threading.Lock()
        self.interval, self.max_rows = interval_seconds, max_rows
        threading.Thread(target=self._run, name="prediction-log", daemon=True).start()

    def add(self, model: str, version: str | None, predictions: list, probabilities: list[dict] | None,
            machine_ids: list[str] | None) -> None:
        now = pd.Timestamp.now(tz="UTC")
        with self._lock:
            for i, pred in enumerate(predictions):
                if len(self._rows) >= self.max_rows:
                    self._rows.popleft()
                    DROPPED.inc()
                self._rows.append({"predicted_at": now, "model": model, "version": version,
                                   "machine_id": machine_ids[i] if machine_ids else None,
                                   **logged_prediction(pred, probabilities[i] if probabilities else None)})

    def flush(self) -> int:
        with self._lock:
            rows = list(self._rows)
            self._rows.clear()
        if not rows:
            return 0
        try:
            from platform_assets import namespace

            if self._warehouse is None:
                self._warehouse = self._factory()
            self._warehouse.append(namespace.schema(SCHEMA), TABLE, pd.DataFrame(rows))
            return len(rows)
        except Exception as exc:  # noqa: BLE001 - keep the rows and try again next time
            log.warning("prediction log: warehouse write failed (%s); %d rows kept", exc, len(rows))
            with self._lock:
                self._rows.extendleft(reversed(rows))
            return 0

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            self.flush()
