"""Micro-batch transforms: validation into dead letters, file layout, window partials, anomalies."""

import json

import pandas as pd
import pytest

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


def _valid(rows):
    return mb.decode([msg(p, o, reading(m, ts, temperature=t, power=w)) for p, o, m, ts, t, w in rows],
                     CONTRACT, "t").valid


def test_hourly_sums_of_batches_merge_into_the_sums_of_all_readings():
    from platform_assets.streaming import online

    rows = [(0, i, f"M00{i % 2 + 1}", T0 + pd.Timedelta(minutes=7 * i), 50.0 + i, 100.0 + 3 * i) for i in range(20)]
    first, second = _valid(rows[:9]), _valid(rows[9:])
    merged = online.merge_sums(
        online.hour_sums(mb.minute_partials(first, STREAM, [OffsetRange(0, 0, 9)]), "machine_id"),
        online.hour_sums(mb.minute_partials(second, STREAM, [OffsetRange(0, 9, 20)]), "machine_id"), "machine_id")
    stats = online.hourly_stats(merged, "machine_id").set_index(["machine_id", "hour"]).sort_index()
    everything = _valid(rows).assign(hour=lambda f: f["ts"].dt.floor("h"))
    expected = everything.groupby(["machine_id", "hour"]).agg(avg_temperature=("temperature", "mean"),
                                                               max_temperature=("temperature", "max"),
                                                               avg_power_kw=("power", "mean")).sort_index()
    assert len(stats) == len(expected) == 6  # two machines, three hours
    for col in expected.columns:
        assert stats[col].to_numpy() == pytest.approx(expected[col].to_numpy())


def test_hourly_state_keeps_the_last_24_hours_and_forgets_everything_on_reset():
    from platform_assets.streaming import online

    rows = [(0, i, "M001", T0 + pd.Timedelta(hours=i), 50.0, 100.0) for i in range(30)]
    sums = online.hour_sums(mb.minute_partials(_valid(rows), STREAM, [OffsetRange(0, 0, 30)]), "machine_id")
    state = online.HourlyState("machine_id")
    assert state.missing(["M001"]) == ["M001"]
    state.load(["M001", "M002"], sums)
    assert state.missing(["M001", "M002", "M003"]) == ["M003"]
    assert len(state.sums) == 24 and state.sums["hour"].max() == T0 + pd.Timedelta(hours=29)
    extra = online.hour_sums(mb.minute_partials(_valid([(0, 30, "M001", T0 + pd.Timedelta(hours=29, minutes=5),
                                                         70.0, 90.0)]), STREAM, [OffsetRange(0, 30, 31)]), "machine_id")
    preview = state.with_batch(extra, ["M001"])
    assert preview["temperature_n"].iloc[-1] == 2 and state.sums["temperature_n"].iloc[-1] == 1  # state unchanged
    state.commit(extra)
    assert state.sums["temperature_n"].iloc[-1] == 2
    state.reset()
    assert state.sums.empty and state.missing(["M001"]) == ["M001"]


def test_a_stream_with_predictions_needs_the_feature_signals_and_a_predictions_topic():
    from platform_assets.streaming.config import StreamCatalogue

    data = STREAMS.model_dump()
    broken = {**data, "predictions_topic": None}
    with pytest.raises(ValueError, match="predictions_topic"):
        StreamCatalogue.model_validate(broken)
    narrow = json.loads(json.dumps(data, default=str))
    narrow["streams"]["sensor_readings"]["windows"]["signals"] = ["temperature", "vibration"]
    with pytest.raises(ValueError, match="add \\['power', 'pressure', 'rpm'\\] to windows.signals"):
        StreamCatalogue.model_validate(narrow)
