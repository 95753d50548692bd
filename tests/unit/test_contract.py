"""The contract splits parsed records into typed rows and quarantined rows with reasons."""

import datetime as dt

import pandas as pd
import pytest

from platform_assets.sources.config import Contract
from platform_assets.sources.contract import ContractError, apply_contract
from platform_assets.sources.parse import parse_objects
from resources.sources import RawObject

CONTRACT = Contract.model_validate({
    "max_bad_fraction": 0.8,
    "primary_key": ["machine_id", "ts"],
    "columns": {
        "machine_id": {"type": "string", "required": True},
        "ts": {"type": "timestamp", "required": True},
        "temperature": {"type": "float", "min": -40, "max": 150},
        "level": {"type": "string", "allowed": ["INFO", "ERROR"]},
        "count": {"type": "int"},
    },
})
DAY = dt.date(2026, 11, 1)


def parse_csv(text: str, name="raw/r/date=2026-11-01/r.csv"):
    return parse_objects("csv", [RawObject(name, text.encode())])


def test_good_rows_are_typed_and_bad_rows_carry_reasons():
    parsed = parse_csv(
        "machine_id,ts,temperature,level,count\n"
        "M1,2026-11-01T00:00:00Z,20.5,INFO,3\n"
        "M1,2026-11-01T00:05:00Z,ERR,INFO,3\n"
        ",2026-11-01T00:10:00Z,21,INFO,1\n"
        "M2,yesterday,21,FATAL,1.5\n"
        "M3,2026-11-01T00:15:00Z,900,,\n"
    )
    result = apply_contract("r", parsed.frame, CONTRACT, partition_column="ts", dates=[DAY])
    assert list(result.clean["machine_id"]) == ["M1", "M3"]
    assert str(result.clean["ts"].dtype) == "datetime64[us, UTC]"
    assert result.clean["temperature"].tolist() == [20.5, 900.0]  # outliers are not contract breaks
    assert str(result.clean["count"].dtype) == "Int64"
    reasons = dict(zip(result.quarantine["source_row"], result.quarantine["reason"]))
    assert reasons[3] == "temperature: 'ERR' is not a valid float"
    assert reasons[4] == "machine_id: required value missing"
    assert "ts: 'yesterday' is not a valid timestamp" in reasons[5]
    assert "level: 'FATAL' is not one of INFO, ERROR" in reasons[5]
    assert "count: '1.5' is not a valid int" in reasons[5]
    assert set(result.quarantine["source"]) == {"r"}
    assert '"temperature": "ERR"' in result.quarantine.set_index("source_row").at[3, "record"]


def test_rows_outside_the_partition_are_quarantined_not_dropped():
    parsed = parse_csv("machine_id,ts\nM1,2026-11-01T23:59:59Z\nM1,2026-11-02T00:00:00Z\n")
    result = apply_contract("r", parsed.frame, CONTRACT, partition_column="ts", dates=[DAY])
    assert len(result.clean) == 1 and result.clean["date"].tolist() == [DAY]
    assert "outside the requested partitions 2026-11-01..2026-11-01" in result.quarantine["reason"].iloc[0]


def test_missing_required_column_fails_wholesale_naming_file_and_column():
    parsed = parse_csv("machine_id,temperature\nM1,20\n", name="raw/r/date=2026-11-01/bad.csv")
    with pytest.raises(ContractError) as err:
        apply_contract("readings", parsed.frame, CONTRACT)
    message = str(err.value)
    assert "source readings" in message and "ts" in message and "bad.csv" in message


def test_mostly_broken_source_fails_wholesale():
    parsed = parse_csv("machine_id,ts,temperature\nM1,x,1\nM1,y,1\nM1,2026-11-01T00:00:00Z,1\n")
    strict = CONTRACT.model_copy(update={"max_bad_fraction": 0.5})
    with pytest.raises(ContractError, match=r"2 of 3 records break the contract \(more than 50%\)"):
        apply_contract("r", parsed.frame, strict)


def test_unparseable_lines_are_counted_in_quarantine():
    good = '{"machine_id": "M1", "ts": "2026-11-01T01:00:00Z", "context": {"a": {"b": 1}}}'
    parsed = parse_objects("json", [RawObject("logs.jsonl", f'{good}\n{{"machine_id": "M1", "ts\n[1, 2]\n'.encode())])
    assert [u.source_row for u in parsed.unparseable] == [2, 3]
    result = apply_contract("logs", parsed.frame, CONTRACT, unparseable=parsed.unparseable,
                            file_dates={"logs.jsonl": DAY})
    assert len(result.clean) == 1 and len(result.quarantine) == 2
    assert result.quarantine["reason"].iloc[0].startswith("invalid JSON")
    assert result.quarantine["date"].tolist() == [DAY, DAY]


def test_json_columns_keep_the_nested_document():
    contract = Contract.model_validate({"columns": {"ctx": {"type": "json"}}})
    frame = pd.DataFrame({"ctx": [{"user": {"id": 1}}, "not json", None],
                          "_source_file": "f", "_source_row": [1, 2, 3]})
    result = apply_contract("x", frame, contract, )
    assert result.clean["ctx"].tolist() == ['{"user": {"id": 1}}', None]
    assert "is not a valid json" in result.quarantine["reason"].iloc[0]


def test_csv_line_with_wrong_field_count_is_quarantined():
    parsed = parse_csv("machine_id,ts\nM1,2026-11-01T00:00:00Z\nM1,2026-11-01T00:01:00Z,extra\nM2,2026-11-01T00:02:00Z\n")
    assert parsed.frame["_source_row"].tolist() == [2, 4]
    assert parsed.unparseable[0].source_row == 3 and "3 fields" in parsed.unparseable[0].reason


def test_database_types_pass_through():
    frame = pd.DataFrame({"machine_id": ["M1"], "ts": [pd.Timestamp("2026-11-01 05:00")], "count": [4],
                          "_source_file": "t.parquet", "_source_row": [1]})
    result = apply_contract("db", frame, CONTRACT)
    assert result.clean["ts"].iloc[0] == pd.Timestamp("2026-11-01 05:00", tz="UTC")
    assert result.clean["count"].iloc[0] == 4 and result.quarantine.empty


# -- null markers, date formats, declared columns absent ----------------------------------------
def _frame(**columns):
    n = len(next(iter(columns.values())))
    return pd.DataFrame({**columns, "_source_file": "f.csv", "_source_row": range(2, 2 + n)})


def test_default_null_markers_are_missing_values_not_broken_rows():
    contract = Contract.model_validate({"columns": {"bmi": {"type": "float"}, "smoker": {"type": "string"}}})
    result = apply_contract("d", _frame(bmi=["21.5", "NA", "N/A", "null", "NaN", ""],
                                        smoker=["yes", "NA", "no", "null", "N/A", " "]), contract)
    assert result.quarantine.empty
    assert result.clean["bmi"].isna().tolist() == [False, True, True, True, True, True]
    assert result.clean["smoker"].tolist() == ["yes", None, "no", None, None, None]


def test_null_markers_per_source_and_per_column():
    contract = Contract.model_validate({"null_values": ["-"], "columns": {
        "a": {"type": "float"}, "code": {"type": "string", "null_values": ["?"]}}})
    result = apply_contract("d", _frame(a=["1", "-", "NA"], code=["NA", "?", "-"], other=["-", "-", "x"]), contract)
    # The source's markers replace the defaults ("NA" is a number no more); a column's replace the source's.
    assert result.quarantine["reason"].tolist() == ["a: 'NA' is not a valid float"]
    assert result.clean["a"].tolist()[0] == 1.0 and pd.isna(result.clean["a"].tolist()[1])
    assert result.clean["code"].tolist() == ["NA", None]
    strings = Contract.model_validate({"null_values": ["-"], "columns": {"code": {"type": "string", "null_values": ["?"]}}})
    assert apply_contract("d", _frame(code=["-", "?"]), strings).clean["code"].tolist() == ["-", None]


def test_required_column_with_a_null_marker_is_quarantined_as_missing():
    contract = Contract.model_validate({"max_bad_fraction": 1.0, "columns": {"id": {"type": "int", "required": True}}})
    result = apply_contract("d", _frame(id=["1", "NA"]), contract)
    assert result.quarantine["reason"].tolist() == ["id: required value missing"]


def test_date_format_per_column():
    contract = Contract.model_validate({"max_bad_fraction": 1.0, "columns": {
        "day": {"type": "date", "format": "%d/%m/%Y"}, "at": {"type": "timestamp", "format": "%Y/%m/%d %H.%M"}}})
    result = apply_contract("d", _frame(day=["03/04/2024", "2024-04-03"], at=["2024/04/03 10.30", "2024/04/03 10.31"]),
                            contract)
    assert result.clean["day"].tolist() == [dt.date(2024, 4, 3)]
    assert result.clean["at"].tolist() == [pd.Timestamp("2024-04-03 10:30", tz="UTC")]
    assert result.quarantine["reason"].tolist() == ["day: '2024-04-03' is not a valid date"]


def test_iso_and_common_date_forms_by_default():
    contract = Contract.model_validate({"max_bad_fraction": 1.0, "columns": {"day": {"type": "date"}}})
    slash = apply_contract("d", _frame(day=["2024/01/31", "2024-02-01", "2023/12/05"]), contract)
    assert slash.clean["day"].tolist() == [dt.date(2024, 1, 31), dt.date(2024, 2, 1), dt.date(2023, 12, 5)]
    # Day first, proven by 31/01: the whole column reads day first, never mixed row by row.
    european = apply_contract("d", _frame(day=["31/01/2024", "03/04/2024", "5 Mar 2024", "soon"]), contract)
    assert european.clean["day"].tolist() == [dt.date(2024, 1, 31), dt.date(2024, 4, 3)]
    assert len(european.quarantine) == 2


def test_declared_column_absent_is_reported_not_silent():
    contract = Contract.model_validate({"columns": {"id": {"type": "int"}, "bmi": {"type": "float"}}})
    result = apply_contract("d", _frame(id=["1", "2"]), contract)
    assert result.missing_columns == ("bmi",)
    assert result.clean["bmi"].isna().all() and result.quarantine.empty
    assert apply_contract("d", _frame(id=["1"], bmi=["2"]), contract).missing_columns == ()


def test_format_only_for_dates_and_must_be_strptime():
    with pytest.raises(ValueError, match="format only applies to date and timestamp columns"):
        Contract.model_validate({"columns": {"a": {"type": "float", "format": "%Y"}}})
    with pytest.raises(ValueError, match="not a strptime format"):
        Contract.model_validate({"columns": {"a": {"type": "date", "format": "YYYY/MM/DD"}}})


# -- vectorised reading: the same values and reasons as reading row by row ------------------------
def test_bool_columns_read_words_and_quarantine_the_rest():
    contract = Contract.model_validate({"max_bad_fraction": 1.0, "columns": {"flag": {"type": "bool"}}})
    result = apply_contract("d", _frame(flag=["yes", " No ", "TRUE", "1", "0", "maybe", "NA"]), contract)
    assert result.clean["flag"].tolist() == [True, False, True, True, False, pd.NA]
    assert result.quarantine["reason"].tolist() == ["flag: 'maybe' is not a valid bool"]


def test_whitespace_is_exactly_what_python_strips():
    import sys

    import pyarrow as pa
    import pyarrow.compute as pc

    from platform_assets.sources.contract import _STRIP

    spaces = [chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()]
    assert pc.replace_substring_regex(pa.array(spaces), _STRIP, "").to_pylist() == [""] * len(spaces)
    assert pc.replace_substring_regex(pa.array(["\u200b", "a\u2028"]), _STRIP, "").to_pylist() == ["\u200b", "a"]
    contract = Contract.model_validate({"max_bad_fraction": 1.0, "columns": {"id": {"type": "string", "required": True}}})
    result = apply_contract("d", _frame(id=["\u2028", "\x1c \xa0", "\u200b", " M1\u3000"]), contract)
    assert result.quarantine["reason"].tolist() == ["id: required value missing"] * 2
    assert result.clean["id"].tolist() == ["\u200b", " M1\u3000"]  # text is kept as it came


def test_json_values_of_any_type_are_judged_and_worded_as_they_arrived():
    parsed = parse_objects("json", [RawObject("r.jsonl", (
        b'{"machine_id": "M1", "ts": "2026-11-01T00:00:00Z", "temperature": 20, "count": 3}\n'
        b'{"machine_id": "M1", "ts": "2026-11-01T00:01:00Z", "temperature": "warm", "count": 1.5}\n'
        b'{"machine_id": 7, "ts": "2026-11-01T00:02:00Z", "level": "INFO", "count": "4"}\n'))])
    result = apply_contract("r", parsed.frame, CONTRACT)
    assert result.clean["machine_id"].tolist() == ["M1", "7"]
    assert result.clean["temperature"].tolist()[0] == 20.0 and result.clean["count"].tolist() == [3, 4]
    assert result.quarantine["reason"].tolist() == [
        "temperature: 'warm' is not a valid float; count: 1.5 is not a valid int"]
    assert '"count": 1.5' in result.quarantine["record"].iloc[0]


def test_decimal_text_reads_exactly_as_python_reads_it():
    contract = Contract.model_validate({"columns": {"x": {"type": "float"}}})
    text = ["0.00125730221093393", "-64042.265044328204", "1e-05", " 2.5", "+3", ".5", "5.", "inf"]
    assert apply_contract("d", _frame(x=text), contract).clean["x"].tolist() == [float(t) for t in text]
