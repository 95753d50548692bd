"""The continuous consumer's decode equals microbatch.decode frame for frame, dead-letter reasons included."""

import json

import numpy as np
import pandas as pd
import pytest

from platform_assets.sources.config import load_catalogue
from platform_assets.streaming import microbatch as mb
from platform_assets.streaming.config import load_streams
from platform_assets.streaming.decode import decode
from resources.kafka import KafkaMessage

SOURCES = load_catalogue()
STREAMS = load_streams(SOURCES)
CONTRACT = STREAMS.contract("sensor_readings", SOURCES)
T0 = pd.Timestamp("2026-11-27 10:00", tz="UTC")


def reading(i, **values):
    doc = {"machine_id": f"M{i % 5:03d}", "ts": (T0 + pd.Timedelta(seconds=i)).isoformat(), "temperature": 60.0 + i,
           "vibration": 2.0, "pressure": 6.0, "rpm": 1500.0, "power": 120.0}
    doc.update(values)
    return doc


# Every kind of value a producer can send that the fast path must not judge differently.
ODD = [
    None, b"", b" ", b"not json", b'{"machine_id": "M001", "ts": ', b'["a", "list"]', b"42", b"null", b'"text"',
    b"\xff\xfe{\x00}\x00", json.dumps(reading(1)).encode("utf-16"), json.dumps(reading(2)).encode("utf-16-le"),
    json.dumps(reading(3)).encode("utf-32"), b"\xef\xbb\xbf" + json.dumps(reading(4)).encode(),
    b"\xed\xa0\x80",
    b"\x00\x00\x00\x00\x07{}", b"\x00garbage", b"  " + json.dumps(reading(6)).encode() + b"\n",
    b'{"temperature": NaN, "machine_id": "M1", "ts": "2026-11-27T10:00:00+00:00"}', b"{}",
    json.dumps(reading(7, temperature="ERR")).encode(), json.dumps(reading(8, ts=None)).encode(),
    json.dumps(reading(9, extra_field=[1, 2], _source_file="spoof", _source_row=-1)).encode(),
    json.dumps({"ts": "2026-11-27T10:00:00+00:00", "zzz": 1, "machine_id": "M2"}).encode(),
    json.dumps(reading(10, temperature=10 ** 30)).encode(), b'{"a": 1, "a": 2}',
]


def messages(seed, n=300):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        value = json.dumps(reading(i)).encode() if rng.random() < 0.8 else ODD[int(rng.integers(len(ODD)))]
        out.append(KafkaMessage(int(rng.integers(3)), 1000 + i, f"k{i}".encode(), value, 1_764_000_000_000 + i))
    return out


def assert_same(msgs):
    want, got = mb.decode(msgs, CONTRACT, "t"), decode(msgs, CONTRACT, "t")
    pd.testing.assert_frame_equal(got.valid, want.valid, check_exact=True)
    pd.testing.assert_frame_equal(got.dead_letters, want.dead_letters, check_exact=True)
    return got


@pytest.mark.parametrize("seed", range(4))
def test_decode_equals_the_reference_on_mixed_batches(seed):
    got = assert_same(messages(seed))
    assert len(got.valid) and len(got.dead_letters)


@pytest.mark.parametrize("value", ODD, ids=range(len(ODD)))
def test_each_odd_value_is_judged_as_the_reference_judges_it(value):
    assert_same([KafkaMessage(0, 1, b"k", json.dumps(reading(0)).encode(), 1), KafkaMessage(1, 7, None, value, 2)])
    assert_same([KafkaMessage(1, 7, None, value, 2)])


def test_only_valid_only_dead_and_empty_batches():
    assert_same([KafkaMessage(0, i, None, json.dumps(reading(i)).encode(), i) for i in range(5)])
    assert_same([KafkaMessage(0, i, None, b"nope", i) for i in range(5)])
    assert_same([KafkaMessage(0, i, None, b"{}", i) for i in range(3)])
    assert_same([])


@pytest.mark.parametrize("value", [json.dumps(reading(0, machine_id="\ud800")).encode(),
                                   b'{"machine_id": "M\xed\xa0\x80", "ts": "2026-11-27T10:00:00+00:00"}'],
                         ids=["escaped", "raw-bytes"])
def test_a_lone_surrogate_is_a_dead_letter_not_a_failed_batch(value):
    """JSON lets a string hold half a UTF-16 pair (``\\ud800``); no Parquet file or database can.
    It must not fail the batch forever (the consumer would retry the same range): one dead letter."""
    msgs = [KafkaMessage(0, 1, b"k", json.dumps(reading(1)).encode(), 1), KafkaMessage(0, 2, b"k", value, 2)]
    got = assert_same(msgs)
    assert len(got.valid) == 1 and got.dead_letters["offset"].tolist() == [2]
    assert "not valid Unicode" in got.dead_letters["reason"].iloc[0]
