"""The clean step's fast paths give what the plain ones gave: JSON lines, CSV files read as one Arrow
table, the contract fed Arrow text, the lake IO manager's per-day split, the collector paused."""

import datetime as dt
import gc
import json

import dagster as dg
import pandas as pd
import pytest

from platform_assets.sources.config import Contract
from platform_assets.sources.contract import _text_array, apply_contract
from platform_assets.sources.factory import collector_paused
from platform_assets.sources.parse import _loads_line, _parse_csv, parse_objects
from resources.lake import LakeResource
from resources.lake_io_manager import LakeParquetIOManager, _day_index
from resources.sources import RawObject

ODD_LINES = ['{"a":1}', ' {"a":1}', '{"a":1} ', '{"a":1}x', '\ufeff{"a":1}', "[1,2]", "NaN", '{"a":NaN}', '"x"',
             "1 2", "{", '{"a":"\\ud800"}', '{"a":1e999}', "12345678901234567890123", '{"a": "b",}', "tru",
             '{"a":[1,{"b":2}]}\t', '{"a":1}\x00', '\u00a0{"a":1}', '{"a" :1 , "a": 2}']


def _outcome(loads, line):
    try:
        return "value", repr(loads(line))
    except json.JSONDecodeError as exc:
        return "error", exc.msg, exc.pos


@pytest.mark.parametrize("line", ODD_LINES)
def test_a_json_line_reads_as_json_loads_reads_it(line):
    assert _outcome(_loads_line, line) == _outcome(json.loads, line)


CONTRACT = Contract.model_validate({"max_bad_fraction": 0.9, "columns": {
    "machine_id": {"type": "string", "required": True}, "ts": {"type": "timestamp", "required": True},
    "temperature": {"type": "float"}, "ok": {"type": "bool"}}})
DAY1 = b"machine_id,ts,temperature,ok\nM1,2026-11-01T00:00:00Z,1.5,yes\n,2026-11-01T01:00:00Z, 2 ,no\n" \
       b"M2,2026-11-01T02:00:00Z,hot,maybe\nM3,2026-11-01T03:00:00Z,NA, true \nM4,broken\n"
DAY2 = b"machine_id,ts,temperature,ok\nM1,2026-11-02T00:00:00Z,0.00125730221093393,n\n   ,2026-11-02T01:00:00Z,,\n"


def test_csv_files_read_as_one_arrow_table_give_the_frame_of_the_files_read_one_by_one():
    objects = [RawObject("d1.csv", DAY1), RawObject("d2.csv", DAY2), RawObject("empty.csv", b"")]
    parsed = parse_objects("csv", objects)
    one_by_one = pd.concat([f for f in (_parse_csv(o).frame for o in objects) if len(f.columns)], ignore_index=True)
    pd.testing.assert_frame_equal(parsed.frame, one_by_one)
    assert [u.reason for u in parsed.unparseable] == ["CSV line has 2 fields, the header has 4"]
    for name, text in parsed.text.items():  # what the contract would have made of the frame's column
        assert text.equals(_text_array(parsed.frame[name])), name


def test_the_contract_fed_arrow_text_splits_and_words_reasons_as_without_it():
    parsed = parse_objects("csv", [RawObject("d1.csv", DAY1), RawObject("d2.csv", DAY2)])
    days = [dt.date(2026, 11, 1)]
    fed = apply_contract("r", parsed.frame, CONTRACT, unparseable=parsed.unparseable, partition_column="ts",
                         dates=days, text_columns=parsed.text)
    plain = apply_contract("r", parsed.frame, CONTRACT, unparseable=parsed.unparseable, partition_column="ts",
                           dates=days)
    pd.testing.assert_frame_equal(fed.clean, plain.clean)
    pd.testing.assert_frame_equal(fed.quarantine.drop(columns="quarantined_at"),
                                  plain.quarantine.drop(columns="quarantined_at"))
    assert list(fed.quarantine["reason"]) == [
        "machine_id: required value missing",
        "temperature: 'hot' is not a valid float; ok: 'maybe' is not a valid bool",
        "ts: 2026-11-02 is outside the requested partitions 2026-11-01..2026-11-01",
        "machine_id: required value missing; ts: 2026-11-02 is outside the requested partitions 2026-11-01..2026-11-01",
        "CSV line has 2 fields, the header has 4",
    ]


def test_csv_files_with_different_headers_still_union_their_columns():
    parsed = parse_objects("csv", [RawObject("a.csv", b"x,y\n1,2\n"), RawObject("b.csv", b"y,z\n3,4\n")])
    assert {"x", "y", "z"} <= set(parsed.frame.columns) and parsed.text is None
    assert parsed.frame["y"].tolist() == ["2", "3"] and parsed.frame["z"].isna().tolist() == [True, False]


DAYS = [dt.date(2026, 11, 1), dt.date(2026, 11, 2)]


def test_day_index_places_each_row_and_names_other_values():
    dates = pd.Series([DAYS[1], None, DAYS[0], dt.date(2026, 12, 1), pd.Timestamp("2026-11-01")], dtype=object)
    index, others = _day_index(dates, DAYS)
    assert index.tolist() == [1, -1, 0, -1, -1]
    assert others == {dt.date(2026, 12, 1), pd.Timestamp("2026-11-01")}


def _handle(tmp_path, frame):
    """Materialise one daily partition (2026-11-02) of a lake asset returning ``frame``."""
    @dg.asset(key=["lake", "clean", "t"], partitions_def=dg.DailyPartitionsDefinition(start_date="2026-11-01"),
              io_manager_key="lake_io_manager")
    def t():
        return frame

    lake = LakeResource(root=str(tmp_path))
    dg.materialize([t], partition_key="2026-11-02", resources={"lake_io_manager": LakeParquetIOManager(lake=lake)})
    return lake


def test_lake_io_manager_writes_the_days_rows_and_refuses_other_days(tmp_path):
    lake = _handle(tmp_path, pd.DataFrame({"v": ["a", "b"], "date": [DAYS[1], DAYS[1]]}))
    day = lake.read_parquet("clean/t/date=2026-11-02/part-0.parquet").to_pandas()
    assert day["v"].tolist() == ["a", "b"] and "date" not in day.columns
    with pytest.raises(ValueError, match="outside the run's partitions: \\['2026-11-01'\\]"):
        _handle(tmp_path, pd.DataFrame({"v": ["a", "b"], "date": [DAYS[1], DAYS[0]]}))
    with pytest.raises(ValueError, match="outside the run's partitions"):
        _handle(tmp_path, pd.DataFrame({"v": ["a"], "date": [None]}))


def test_the_collector_is_paused_inside_and_restored_after_a_failure():
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector_paused():
        assert not gc.isenabled()
        raise RuntimeError("step failed")
    assert gc.isenabled()
