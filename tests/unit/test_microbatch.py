"""Micro-batch transforms: validation into dead letters, file layout, window partials, anomalies."""

import json

import pandas as pd

from platform_assets.sources.config import load_catalogue
from platform_assets.streaming import microbatch as mb
from platform_assets.streaming.config import load_streams
from resources.kafka import KafkaMessage, OffsetRange

SOURCES = load_catalogue()
STREAMS = load_streams(SOURCES)
STREAM = STREAMS.streams["sensor_readings"]
CONTRACT = STREAMS.contract("sensor_readings", SOURCES)
T0 = pd.Timestamp("2026-11-27 10:00", tz="UTC")


def reading(machine="M001", ts=T0, **values):
    doc = {"machine_id": machine, "ts": ts.isoformat(), "temperature": 60.0, "vibration": 2.0,
           "pressure": 6.0, "rpm": 1500.0, "power": 120.0}
    doc.update(values)
    return json.dumps(doc).encode()


def msg(partition, offset, value):
    return KafkaMessage(partition, offset, b"k", value, int(T0.timestamp() * 1000))


def test_decode_splits_valid_from_dead_letters_with_reasons_and_bytes():
    messages = [msg(0, 0, reading()), msg(0, 1, b"not json"), msg(1, 5, reading(temperature="ERR")),
                msg(1, 6, b'["list"]'), msg(1, 7, reading().replace(b'"ts"', b'"tz"')), msg(2, 9, reading("M002"))]
    decoded = mb.decode(messages, CONTRACT, "t")
    assert list(zip(decoded.valid[mb.PARTITION], decoded.valid[mb.OFFSET])) == [(0, 0), (2, 9)]
    assert str(decoded.valid["ts"].dtype) == "datetime64[us, UTC]"
    dead = decoded.dead_letters.set_index(["partition", "offset"])
    assert dead.loc[(0, 1), "reason"].startswith("invalid JSON")
    assert dead.loc[(1, 5), "reason"] == "temperature: 'ERR' is not a valid float"
    assert dead.loc[(1, 6), "reason"] == "value is not a JSON object"
    assert dead.loc[(1, 7), "reason"] == "ts: required value missing"
    assert dead.loc[(0, 1), "raw"] == b"not json"


def test_lake_files_are_named_by_range_and_split_by_event_hour():
    messages = [msg(3, 100, reading(ts=T0)), msg(3, 101, reading(ts=T0 + pd.Timedelta("70min")))]
    decoded = mb.decode(messages, CONTRACT, "t")
    files = mb.lake_files(decoded.valid, "stream/x", "ts", [OffsetRange(3, 100, 102)])
    assert sorted(files) == ["stream/x/date=2026-11-27/hour=10/p003-000000000100-000000000102.parquet",
                             "stream/x/date=2026-11-27/hour=11/p003-000000000100-000000000102.parquet"]


def test_minute_partials_carry_sums_for_exact_windows():
    messages = [msg(0, i, reading(ts=T0 + pd.Timedelta(seconds=20 * i), temperature=60.0 + i)) for i in range(6)]
    decoded = mb.decode(messages, CONTRACT, "t")
    partials = mb.minute_partials(decoded.valid, STREAM, [OffsetRange(0, 0, 6)])
    assert partials["events"].tolist() == [3, 3]
    assert partials["temperature_sum"].tolist() == [183.0, 192.0]
    assert partials["temperature_sumsq"].iloc[0] == 60.0 ** 2 + 61.0 ** 2 + 62.0 ** 2
    assert partials["start_offset"].tolist() == [0, 0]


def test_anomaly_is_flagged_against_the_preceding_history_only():
    history_msgs = [msg(0, i, reading(ts=T0 + pd.Timedelta(minutes=i), temperature=59.0 + 2 * (i % 2)))
                    for i in range(25)]
    spike = msg(0, 25, reading(ts=T0 + pd.Timedelta(minutes=25), temperature=95.0))
    normal = msg(0, 26, reading(ts=T0 + pd.Timedelta(minutes=26), temperature=60.5))
    decoded = mb.decode([*history_msgs, spike, normal], CONTRACT, "t")
    partials = mb.minute_partials(decoded.valid, STREAM, [OffsetRange(0, 0, 27)])
    alerts = mb.detect_anomalies(decoded.valid, partials, STREAM, "t")
    assert alerts["offset"].tolist() == [25]
    assert alerts["signal"].tolist() == ["temperature"] and alerts["zscore"].iloc[0] > 4
    assert alerts["alert_id"].iloc[0] == mb.alert_id("t", 0, 25, "temperature")


def test_no_alert_without_enough_history():
    decoded = mb.decode([msg(0, 0, reading(temperature=60.0)), msg(0, 1, reading(ts=T0 + pd.Timedelta("1min"),
                                                                                  temperature=150.0))], CONTRACT, "t")
    partials = mb.minute_partials(decoded.valid, STREAM, [OffsetRange(0, 0, 2)])
    assert mb.detect_anomalies(decoded.valid, partials, STREAM, "t").empty
