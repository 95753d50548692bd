"""Every prediction served, written to the warehouse (``serving.predictions``) off the request path.

Requests put their predictions on a bounded queue (one chunk per request); a daemon thread writes what has gathered every couple of
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
    """Requests add their predictions as one chunk each (a few object references, whatever the
    number of records); the writer thread turns chunks into rows. The bound counts rows."""

    def __init__(self, warehouse_factory, interval_seconds: float = 2.0, max_rows: int = 200_000):
        self._factory, self._warehouse = warehouse_factory, None
        self._chunks: collections.deque = collections.deque()  # (time, model, version, predictions, probabilities, ids)
        self._queued = 0  # rows in _chunks
        self._lock = threading.Lock()
        self.interval, self.max_rows = interval_seconds, max_rows
        threading.Thread(target=self._run, name="prediction-log", daemon=True).start()

    def add(self, model: str, version: str | None, predictions: list, probabilities: list[dict] | None,
            machine_ids: list[str] | None) -> None:
        chunk = (time.time(), model, version, predictions, probabilities, machine_ids)
        with self._lock:
            self._chunks.append(chunk)
            self._queued += len(predictions)
            self._shed()

    def _shed(self) -> None:
        """Past ``max_rows``, drop the oldest rows (whole chunks, or the head of the oldest)."""
        while self._queued > self.max_rows:
            when, model, version, predictions, probabilities, ids = self._chunks[0]
            excess = self._queued - self.max_rows
            if excess >= len(predictions):
                self._chunks.popleft()
                dropped = len(predictions)
            else:
                self._chunks[0] = (when, model, version, predictions[excess:],
                                   probabilities[excess:] if probabilities else probabilities,
                                   ids[excess:] if ids else ids)
                dropped = excess
            self._queued -= dropped
            DROPPED.inc(dropped)

    @property
    def pending(self) -> int:
        return self._queued

    def rows(self, chunks) -> list[dict]:
        out = []
        for when, model, version, predictions, probabilities, ids in chunks:
            stamp = pd.Timestamp(when, unit="s", tz="UTC")
            for i, pred in enumerate(predictions):
                out.append({"predicted_at": stamp, "model": model, "version": version,
                            "machine_id": ids[i] if ids else None,
                            **logged_prediction(pred, probabilities[i] if probabilities else None)})
        return out

    def flush(self) -> int:
        with self._lock:
            chunks = list(self._chunks)
            self._chunks.clear()
            self._queued = 0
        if not chunks:
            return 0
        rows = self.rows(chunks)
        try:
            from platform_assets import namespace

            if self._warehouse is None:
                self._warehouse = self._factory()
            self._warehouse.append(namespace.schema(SCHEMA), TABLE, pd.DataFrame(rows))
            return len(rows)
        except Exception as exc:  # noqa: BLE001 - keep the rows and try again next time
            log.warning("prediction log: warehouse write failed (%s); %d rows kept", exc, len(rows))
            with self._lock:
                self._chunks.extendleft(reversed(chunks))
                self._queued += len(rows)
                self._shed()
            return 0

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            self.flush()
