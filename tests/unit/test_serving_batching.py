"""Adaptive batching gives each request exactly what the model gives it alone; overload is a 503.

The batches are formed by BentoML's own dispatcher (``CorkDispatcher``, merged and split by its
``AutoContainer``, as ``_bentoml_impl.server.app.ServiceAppFactory.batch_infer`` does), around the
runner's ``predict_rows``, so what is tested is the merge of the requests' matrices, the one model
call, the split, and the front end's ``answer`` from a request's rows.
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

from serving.predictor import (
    REFUSED,
    InputError,
    ModelSlot,
    RefusedRecord,
    StaleBatch,
    answer,
    key_of,
    plain,
    predict_rows,
    predict_with,
    refusals,
    rows_of,
    version_key,
)

COLUMNS = ["temperature", "vibration", "hours"]
TYPES = dict.fromkeys(COLUMNS, "double")


def _slot(pipeline, name: str) -> ModelSlot:
    """A ModelSlot around a fitted pipeline, without the BentoML store."""
    slot = ModelSlot.__new__(ModelSlot)
    slot.name, slot.load_model, slot.reload_seconds = name, True, 1e9
    slot._lock, slot._checked = threading.Lock(), time.monotonic()
    slot.model, slot.tag, slot.columns = pipeline, f"{name}:v1", list(COLUMNS)
    slot.types = dict(TYPES)
    slot.info = {"mlflow_version": "3"}
    slot.key = version_key(slot.tag)
    classes = [plain(c) for c in pipeline.classes_] if hasattr(pipeline, "predict_proba") else None
    slot.abouts = {slot.key: {"model": name, "version": "3", "bento_model": slot.tag, "classes": classes}}
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
    records[7]["vibration"] = None  # a missing value, imputed... or NaN for the forest: the same either way
    return {"classifier": _slot(classifier.fit(x, labels), "cls"),
            "regressor": _slot(regressor.fit(x, x["hours"] * 3 + 1), "reg"), "records": records}


def _dispatched(slot: ModelSlot, requests: list[list[dict]], max_batch_size: int) -> tuple[list, list[int]]:
    """Every request's matrix through one BentoML dispatcher at once; the rows each request got back
    and the batch sizes formed."""
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
            result = await asyncio.to_thread(predict_rows, slot, batch)
            return AutoContainer.batch_to_batches(result, indices, 0)

        call = dispatcher(infer)
        try:
            return await asyncio.gather(*(call(rows_of(r, COLUMNS, TYPES)) for r in requests))
        finally:
            dispatcher.shutdown()

    return asyncio.run(run()), batch_sizes


def _served(slot: ModelSlot, rows: np.ndarray) -> dict:
    return answer(rows, slot.abouts[key_of(rows, slot.name)])


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
    for request, rows in zip(requests, answers, strict=True):
        alone = predict_with(slot.model, pd.DataFrame(request)[COLUMNS].astype("float64"), model=slot.name,
                             version="3", bento_model=slot.tag)
        assert _served(slot, rows) == alone  # same labels, probabilities, order, version and tag
    if model == "classifier":
        assert {p for rows in answers for p in _served(slot, rows)["predictions"]} <= {"fail", "watch", "ok"}


def test_a_request_split_over_two_batches_is_joined_in_order(data):
    slot, records = data["classifier"], data["records"]
    requests = [records[:30], records[30:90], records[90:95]]  # 95 records, batches of at most 40
    answers, batch_sizes = _dispatched(slot, requests, max_batch_size=40)
    assert max(batch_sizes) <= 40 and sum(batch_sizes) == 95
    for request, rows in zip(requests, answers, strict=True):
        assert _served(slot, rows)["predictions"] == \
            predict_with(slot.model, pd.DataFrame(request)[COLUMNS].astype("float64"))["predictions"]


def test_numbers_travel_as_one_float_matrix_and_text_as_fields_of_one_dtype(data):
    records = data["records"][:3]
    rows = rows_of(records, COLUMNS, TYPES)
    assert rows.dtype == np.float64 and rows.shape == (3, 3)
    with pytest.raises(InputError, match="field 'vibration' must be a number; got True in record 0"):
        rows_of([{**records[0], "vibration": True}], COLUMNS, TYPES)  # never cast to 1.0
    types = {**TYPES, "site": "string"}
    mixed = [rows_of([{**r, "site": s}], [*COLUMNS, "site"], types) for r, s in zip(records, ["a", None, "c"])]
    assert len({m.dtype for m in mixed}) == 1 and mixed[0].dtype["temperature"] == np.float64  # one batch dtype
    batch = np.concatenate(mixed)  # as BentoML's AutoContainer merges them
    slot = _slot(data["classifier"].model, "mixed")
    slot.columns, slot.types = [*COLUMNS, "site"], types
    frame = slot.frame_of(batch)
    assert list(frame.columns) == [*COLUMNS, "site"] and frame["site"].tolist() == ["a", None, "c"]
    assert frame[COLUMNS].to_numpy().tolist() == pd.DataFrame(records)[COLUMNS].to_numpy().tolist()


def test_a_refused_record_fails_only_its_own_request(data):
    slot, records = data["classifier"], data["records"]
    broken = {**records[0], "temperature": "hot"}  # past the contract only if it were broken: still isolated
    rows = np.array([[r[c] for c in COLUMNS] for r in (records[1], broken, records[2])], dtype=object)
    out = predict_rows(slot, rows)
    assert out[1, 0] == REFUSED and out[0, 0] == out[2, 0] == slot.key
    with pytest.raises(RefusedRecord) as err:
        key_of(out[1:2], slot.name)
    assert err.value.index == 0
    assert refusals(slot, rows[1:2]) == ["field 'temperature' must be a number; got 'hot'"]
    assert _served(slot, out[[0, 2]])["predictions"] == \
        predict_with(slot.model, pd.DataFrame([records[1], records[2]])[COLUMNS])["predictions"]


def test_records_predicted_by_two_model_versions_are_not_merged(data):
    slot, records = data["classifier"], data["records"]
    first = predict_rows(slot, rows_of(records[:2], COLUMNS, TYPES))
    slot.key = version_key("cls:v2")
    try:
        second = predict_rows(slot, rows_of(records[2:3], COLUMNS, TYPES))
    finally:
        slot.key = version_key("cls:v1")
    with pytest.raises(StaleBatch):
        key_of(np.vstack([first, second]), slot.name)


def test_version_keys_are_exact_in_a_float_matrix():
    key = version_key("failure_within_24h:aklig7xp26eumax4")
    assert key == float(int(key)) and key < 2**53 and key != version_key("failure_within_24h:other")


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
        asyncio.run(service._run("failure_within_24h", np.zeros((1, 3))))
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


# -- the dispatcher -----------------------------------------------------------------------------------
def test_a_batch_starts_when_the_model_is_free_with_everything_that_gathered():
    """GreedyDispatcher: no learnt wait. A lone request after a slow period is predicted at once, and
    requests arriving while a batch runs form the next batch together."""
    from bentoml._internal.marshal.dispatcher import CorkDispatcher
    from bentoml._internal.runner.container import AutoContainer

    from serving.dispatch import GreedyDispatcher

    batches: list[int] = []

    async def run() -> tuple[float, list, float]:
        dispatcher = GreedyDispatcher(max_latency_in_ms=10_000, max_batch_size=100,
                                      fallback=lambda: (_ for _ in ()).throw(RuntimeError("shed")),
                                      get_batch_size=functools.partial(AutoContainer.get_batch_size, batch_dim=0))
        dispatcher.optimizer.wait = 5.0  # what CorkDispatcher would have learnt after an overload

        async def infer(parts):
            batch, indices = AutoContainer.batches_to_batch(parts, 0)
            batches.append(len(batch))
            await asyncio.sleep(0.05)  # the model
            return AutoContainer.batch_to_batches(batch * 2, indices, 0)

        call = dispatcher(infer)
        try:
            started = time.monotonic()
            alone = await call(np.array([[1.0]]))
            lone = time.monotonic() - started
            first = asyncio.ensure_future(call(np.array([[2.0]])))
            await asyncio.sleep(0.01)  # the first batch is running: these gather
            rest = [call(np.array([[float(i)]])) for i in range(3, 9)]
            answers = [await first, *await asyncio.gather(*rest)]
            return lone, [alone, *answers], started
        finally:
            dispatcher.shutdown()

    assert issubclass(GreedyDispatcher, CorkDispatcher)
    lone, answers, _ = asyncio.run(run())
    assert lone < 1.0  # CorkDispatcher would hold it back ~0.95 x its learnt wait (5 s here)
    assert [a[0, 0] for a in answers] == [2.0 * i for i in range(1, 9)]  # each request its own rows back
    assert batches == [1, 1, 6], batches  # the six that arrived during a batch went together


def test_requests_that_would_wait_beyond_the_latency_bound_are_refused():
    from bentoml._internal.runner.container import AutoContainer

    from serving.dispatch import GreedyDispatcher

    async def run() -> list:
        dispatcher = GreedyDispatcher(max_latency_in_ms=100, max_batch_size=1,
                                      fallback=lambda: "refused",
                                      get_batch_size=functools.partial(AutoContainer.get_batch_size, batch_dim=0))

        async def infer(parts):
            await asyncio.sleep(0.08)
            return list(parts)

        call = dispatcher(infer)
        try:
            return await asyncio.gather(*(call(np.array([[float(i)]])) for i in range(6)))
        finally:
            dispatcher.shutdown()

    answers = asyncio.run(run())
    refused = [a for a in answers if isinstance(a, str)]
    assert refused and len(refused) < 6  # some served, the ones that would have waited > 100 ms refused
    assert not isinstance(answers[0], str)  # the oldest is served first
