"""The warehouse IO manager's guarantees on the real PostgreSQL: replace, never duplicate, never half-write."""

import datetime as dt

import pandas as pd
import pytest

pytestmark = pytest.mark.integration


def frame(day: dt.date, n: int, value: float = 1.0) -> pd.DataFrame:
    return pd.DataFrame({"date": [day] * n, "machine_id": [f"M{i}" for i in range(n)], "value": [value] * n})


def test_partition_replace_is_idempotent_and_scoped(warehouse):
    d1, d2 = dt.date(2026, 11, 1), dt.date(2026, 11, 2)
    window = lambda d: (d, d + dt.timedelta(days=1))
    warehouse.replace("t_io", "daily", frame(d1, 3), partition_column="date", window=window(d1))
    warehouse.replace("t_io", "daily", frame(d2, 2), partition_column="date", window=window(d2))
    warehouse.replace("t_io", "daily", frame(d1, 3, 9.0), partition_column="date", window=window(d1))
    rows = warehouse.query("SELECT date, count(*) AS n, max(value) AS v FROM t_io.daily GROUP BY date ORDER BY date")
    assert rows["n"].tolist() == [3, 2] and rows["v"].tolist() == [9.0, 1.0]


def test_failed_write_leaves_the_previous_table_intact(warehouse):
    warehouse.replace("t_io", "snap", pd.DataFrame({"id": [1, 2, 3], "value": [1.0, 2.0, 3.0]}))
    bad = pd.DataFrame({"id": [4], "value": ["not a number"]})  # the table's column is double precision
    with pytest.raises(Exception, match="double precision"):
        warehouse.replace("t_io", "snap", bad)
    assert warehouse.query("SELECT count(*) AS n FROM t_io.snap")["n"].iloc[0] == 3


def test_types_nulls_and_new_columns(warehouse):
    ts = pd.Timestamp("2026-11-01 10:00", tz="UTC")
    first = pd.DataFrame({"id": pd.array([1, None], dtype="Int64"), "ts": [ts, pd.NaT], "ok": [True, False],
                          "note": ["a, \"quoted\"\nline", None]})
    warehouse.replace("t_io", "typed", first)
    second = first.assign(extra=[1.5, None])
    warehouse.replace("t_io", "typed", second)
    out = warehouse.query("SELECT * FROM t_io.typed ORDER BY id NULLS LAST")
    assert out["note"].tolist() == ["a, \"quoted\"\nline", None]
    assert out["ts"].iloc[0] == ts and pd.isna(out["ts"].iloc[1])
    assert out["extra"].tolist()[0] == 1.5
    types = warehouse.query("SELECT column_name, data_type FROM information_schema.columns "
                            "WHERE table_schema='t_io' AND table_name='typed'").set_index("column_name")["data_type"]
    assert types.to_dict() == {"id": "bigint", "ts": "timestamp with time zone", "ok": "boolean",
                               "note": "text", "extra": "double precision"}
