"""Adaptive batching gives each request exactly what the model gives it alone; overload is a 503.

The batches are formed by BentoML's own dispatcher (``CorkDispatcher``, merged and split by its
``AutoContainer``, as ``_bentoml_impl.server.app.ServiceAppFactory.batch_infer`` does), around the
runner's ``predict_batch``, so what is tested is the merge, the one model call and the split.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import time

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from serving.predictor import InputError, ModelSlot, StaleBatch, merge_batch, predict_batch, predict_with

COLUMNS = ["temperature", "vibration", "hours"]


def _slot(pipeline, name: str) -> ModelSlot:
    """A ModelSlot around a fitted pipeline, without the BentoML store."""
    slot = ModelSlot.__new__(ModelSlot)
    slot.name, slot.load_model, slot.reload_seconds = name, True, 1e9
    slot._lock, slot._checked = threading.Lock(), time.monotonic()
    slot.model, slot.tag, slot.columns = pipeline, f"{name}:v1", list(COLUMNS)
    slot.types = dict.fromkeys(COLUMNS, "double")
    slot.info = {"mlflow_version": "3"}
    return slot


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(300, 3)), columns=COLUMNS)
    labels = np.where(x["temperature"] + rng.normal(scale=0.5, size=300) > 0.3, "fail",
                      np.where(x["vibration"] > 0, "watch", "ok"))
    classifier = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=30, random_state=0, n_jobs=1))
    regressor = make_pipeline(StandardScaler(), RandomForestRegressor(n_estimators=20, random_state=0, n_jobs=1))
    records = json.loads(x.to_json(orient="records"))
    return {"classifier": _slot(classifier.fit(x, labels), "cls"),
            "regressor": _slot(regressor.fit(x, x["hours"] * 3 + 1), "reg"), "records": records}


def _dispatched(slot: ModelSlot, requests: list[list[dict]], max_batch_size: int) -> tuple[list, list[int]]:
    """Every request through one BentoML dispatcher at once; the answers and the batch sizes formed."""
    from bentoml._internal.marshal.dispatcher import CorkDispatcher
    from bentoml._internal.runner.container import AutoContainer

    batch_sizes: list[int] = []

    async def run() -> list:
        dispatcher = CorkDispatcher(max_latency_in_ms=10_000, max_batch_size=max_batch_size,
                                    fallback=lambda: (_ for _ in ()).throw(RuntimeError("shed")),
                                    get_batch_size=functools.partial(AutoContainer.get_batch_size, batch_dim=0))

        async def infer(batches):
            batch, indices = AutoContainer.batches_to_batch(batches, 0)
            batch_sizes.append(len(batch))
            result = await asyncio.to_thread(predict_batch, slot, batch)
            return AutoContainer.batch_to_batches(result, indices, 0)

        call = dispatcher(infer)
        try:
            return await asyncio.gather(*(call(r) for r in requests))
        finally:
            dispatcher.shutdown()

    return asyncio.run(run()), batch_sizes


@pytest.mark.parametrize("model", ["classifier", "regressor"])
def test_batched_answers_equal_the_model_alone_in_order(data, model):
    slot, records = data[model], data["records"]
    sizes = [1, 5, 2, 1, 17, 3, 1, 40, 1, 9] * 3
    requests, start = [], 0
    for size in sizes:
        requests.append(records[start:start + size])
        start += size
    answers, batch_sizes = _dispatched(slot, requests, max_batch_size=64)
    assert max(batch_sizes) > max(sizes), f"no batch merged several requests: {batch_sizes}"
    assert sum(batch_sizes) == sum(sizes)  # every record predicted once
    for request, items in zip(requests, answers, strict=True):
        alone = predict_with(slot.model, pd.DataFrame(request)[COLUMNS], model=slot.name, version="3",
                             bento_model=slot.tag)
        assert merge_batch(items) == alone  # same labels, probabilities, order, version and tag
    if model == "classifier":
        assert {p for items in answers for _, p, _ in items} <= {"fail", "watch", "ok"}  # labels as trained


def test_a_request_split_over_two_batches_is_joined_in_order(data):
    slot, records = data["classifier"], data["records"]
    requests = [records[:30], records[30:90], records[90:95]]  # 95 records, batches of at most 40
    answers, batch_sizes = _dispatched(slot, requests, max_batch_size=40)
    assert max(batch_sizes) <= 40 and sum(batch_sizes) == 95
    for request, items in zip(requests, answers, strict=True):
        assert merge_batch(items)["predictions"] == \
            predict_with(slot.model, pd.DataFrame(request)[COLUMNS])["predictions"]


def test_a_refused_record_fails_only_its_own_request(data):
    slot, records = data["classifier"], data["records"]
    broken = {**records[0], "temperature": "hot"}  # past the contract only if it were broken: still isolated
    items = predict_batch(slot, [records[1], broken, records[2]])
    assert items[0][0] is not None and items[2][0] is not None
    with pytest.raises(InputError, match="record 0: field 'temperature' must be a number"):
        merge_batch(items[1:2])
    assert merge_batch([items[0], items[2]])["predictions"] == \
        predict_with(slot.model, pd.DataFrame([records[1], records[2]])[COLUMNS])["predictions"]


def test_records_predicted_by_two_model_versions_are_not_merged(data):
    slot, records = data["classifier"], data["records"]
    first = predict_batch(slot, records[:2])
    slot.tag = "cls:v2"
    try:
        second = predict_batch(slot, records[2:3])
    finally:
        slot.tag = "cls:v1"
    with pytest.raises(StaleBatch):
        merge_batch(first + second)


# -- overload -----------------------------------------------------------------------------------------
async def _call(app, path: str = "/predict") -> tuple[int, dict, dict, float]:
    messages: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        messages.append(message)

    started = time.monotonic()
    await app({"type": "http", "path": path, "method": "POST", "headers": []}, receive, send)
    start = next(m for m in messages if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, json.loads(body or b"{}"), time.monotonic() - started


def test_beyond_its_queue_the_service_answers_503_with_retry_after_at_once():
    from starlette.responses import JSONResponse

    from serving.service import Admission

    async def slow(scope, receive, send):
        await asyncio.sleep(0.5)
        await JSONResponse({"ok": True})(scope, receive, send)

    async def run():
        gate = Admission(slow, limit=2, queue=3)
        results = await asyncio.gather(*(_call(gate) for _ in range(9)), _call(gate, "/livez"))
        return results, gate._admitted

    results, left = asyncio.run(run())
    answered, health = results[:-1], results[-1]
    refused = [r for r in answered if r[0] == 503]
    assert len(refused) == 4 and sum(r[0] == 200 for r in answered) == 5
    assert all(r[1]["retry-after"] == "1" and r[2]["code"] == "overloaded" for r in refused)
    assert max(r[3] for r in refused) < 0.1 < min(r[3] for r in answered if r[0] == 200)
    assert health[0] == 200 and left == 0  # health is never held back; every slot given back


def test_the_runner_refusing_for_latency_is_a_503_with_retry_after():
    from bentoml.exceptions import ServiceUnavailable

    from serving.contract import RequestError
    from serving.service import _FleetPredictions

    class Runner:
        class to_async:  # the shape of BentoML's RemoteProxy
            @staticmethod
            async def call(name, records):
                raise ServiceUnavailable("process is overloaded")

    service = _FleetPredictions.__new__(_FleetPredictions)
    service.runner = Runner()
    with pytest.raises(RequestError) as err:
        asyncio.run(service._run("failure_within_24h", [{}]))
    assert err.value.status == 503 and err.value.code == "overloaded" and err.value.headers["Retry-After"] == "1"


def test_feature_freshness_says_how_old_a_served_row_is():
    from serving.service import feature_freshness

    now = 1_780_000_000.0
    stream = {"row": {}, "as_of": "2026-05-28T20:00:00+00:00", "writer": "stream", "source": "iot.sensor-readings:3:18",
              "updated_at": "2026-05-28T20:26:38.500000+00:00"}
    seen = feature_freshness(stream, now=now)
    assert seen["writer"] == "stream" and seen["source"] == "iot.sensor-readings:3:18"
    assert abs(seen["age_seconds"] - (now - 1_779_999_998.5)) < 1e-6  # seconds old: from when it was written
    batch = feature_freshness({"row": {}, "as_of": "2026-05-28T18:00:00+00:00", "writer": "batch"}, now=now)
    assert batch["writer"] == "batch" and batch["updated_at"] is None
    assert batch["age_seconds"] > 3600  # hours old: only the hour it describes is known
    assert feature_freshness({"row": {}, "as_of": None}, now=now)["age_seconds"] is None
