"""The demo data: deterministic, shaped like the contracts, and with exactly the bad rows it claims.

The bad-row checks parse the written files independently (plain csv/json/pyarrow), so they catch a
writer that silently drops, fixes or adds a defect, not just a generator that miscounts.
"""

from __future__ import annotations

import csv
import json
import warnings
from datetime import date, datetime
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from platform_assets.demo_data import generate_fleet, write
from platform_assets.demo_data.rest_api import build_app
from platform_assets.sources.config import load_catalogue

with warnings.catch_warnings():  # "install httpx2": a dependency choice for pyproject, not this test
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

SMALL = {"days": 2, "machines": 4, "sites": 2, "reading_interval_minutes": 15}
FLOATS = ("temperature", "vibration", "pressure", "rpm", "power")


@pytest.fixture(scope="module")
def data():
    return generate_fleet(**SMALL)


@pytest.fixture(scope="module")
def contracts():
    return {name: src.contract for name, src in load_catalogue().sources.items()}


@pytest.fixture(scope="module")
def files(data, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("files")
    write.write_files(data, root)
    return root


def _ts_ok(value) -> bool:
    if not isinstance(value, str) or not value:
        return False
    try:
        return datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False


def _float_ok(value: str) -> bool:
    try:
        float(value)
        return True
    except ValueError:
        return False


def test_same_seed_gives_identical_data(data):
    again = generate_fleet(**SMALL)
    for name, frame in data.frames().items():
        pd.testing.assert_frame_equal(frame, again.frames()[name], obj=name)
    pd.testing.assert_frame_equal(data.invalid_log_lines, again.invalid_log_lines)
    assert data.expected_bad_rows == again.expected_bad_rows
    assert data.expected_bad_by_partition == again.expected_bad_by_partition
    assert (data.expected_duplicates, data.expected_outliers) == (
        again.expected_duplicates,
        again.expected_outliers,
    )


def test_other_seed_gives_other_data(data):
    other = generate_fleet(**SMALL, seed=8)
    assert not data.sensor_readings.equals(other.sensor_readings)
    assert not data.app_logs["message"].equals(other.app_logs["message"])


def test_frames_have_exactly_the_contract_columns(data, contracts):
    frames = data.frames()
    assert set(frames) == set(contracts)
    for name, frame in frames.items():
        assert list(frame.columns) == list(contracts[name].columns), name


def test_scale_multiplies_machines():
    scaled = generate_fleet(**{**SMALL, "days": 1}, scale=2.5)
    good = scaled.machines["machine_id"].dropna()
    assert good.str.fullmatch(r"M\d{3}").all()
    assert scaled.sensor_readings["machine_id"].dropna().nunique() == 10


def test_sensor_csv_bad_rows_duplicates_and_outliers(data, files, contracts):
    cols = contracts["sensor_readings"].columns
    bad_by_day, dupes, outliers = {}, 0, 0
    for path in sorted((files / "sensor_readings").glob("*.csv")):
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert list(rows[0]) == list(cols)
        bad = 0
        for prev, row in zip([None, *rows], rows):
            broken = (
                not row["machine_id"]
                or not _ts_ok(row["ts"].replace("Z", "+00:00"))
                or any(row[c] and not _float_ok(row[c]) for c in FLOATS)
            )
            bad += broken
            dupes += row == prev
            if not broken:
                outliers += any(row[c] and not cols[c].min <= float(row[c]) <= cols[c].max for c in FLOATS)
        bad_by_day[path.stem] = bad
        assert bad >= 3
    assert bad_by_day == data.expected_bad_by_partition["sensor_readings"]
    assert sum(bad_by_day.values()) == data.expected_bad_rows["sensor_readings"]
    assert dupes == data.expected_duplicates > 0
    assert outliers == data.expected_outliers


def test_app_logs_jsonl_bad_rows(data, files, contracts):
    allowed = set(contracts["app_logs"].columns["level"].allowed)
    bad_by_day, good = {}, 0
    for path in sorted((files / "app_logs").glob("*.jsonl")):
        bad = 0
        for line in path.read_text().splitlines():
            try:
                doc = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            ts = doc.get("ts")
            if (
                not _ts_ok(ts.replace("Z", "+00:00") if isinstance(ts, str) else ts)
                or not doc.get("service")
                or (doc.get("level") not in allowed)
            ):
                bad += 1
                continue
            good += 1
            assert isinstance(doc["context"]["user"], dict) and isinstance(doc["context"]["tags"], list)
        bad_by_day[path.stem] = bad
        assert bad >= 3
    assert bad_by_day == data.expected_bad_by_partition["app_logs"]
    assert sum(bad_by_day.values()) == data.expected_bad_rows["app_logs"]
    assert good + data.expected_bad_rows["app_logs"] == len(data.app_logs) + len(data.invalid_log_lines)


def test_failures_parquet_is_typed_and_bad_rows_are_missing_required(data, files, contracts):
    table = pq.read_table(files / "failures.parquet")
    assert str(table.schema.field("failure_time").type) == "timestamp[us, tz=UTC]"
    assert str(table.schema.field("downtime_hours").type) == "double"
    frame = table.to_pandas()
    required = [c for c, spec in contracts["failures"].columns.items() if spec.required]
    assert frame[required].isna().any(axis=1).sum() == data.expected_bad_rows["failures"] >= 2
    assert frame["failure_id"].is_unique


def test_database_rows_are_storable_and_bad_rows_counted(data, contracts):
    machines = write.machine_rows(data.machines)
    assert (
        sum(r[0] is None or r[1] is None or r[2] is None for r in machines)
        == data.expected_bad_rows["machines"]
    )
    assert all(r[4] is None or isinstance(r[4], float) for r in machines)
    assert all(r[3] is None or isinstance(r[3], date) for r in machines)

    allowed = set(contracts["maintenance"].columns["kind"].allowed)
    maint = write.maintenance_rows(data.maintenance)
    assert (
        sum(r[1] is None or r[3] not in allowed for r in maint) == data.expected_bad_rows["maintenance"] >= 2
    )
    assert all(isinstance(r[2], datetime) and r[2].tzinfo is None for r in maint)  # naive UTC for DATETIME
    assert len({r[0] for r in maint}) == len(maint)
    assert (
        sum(data.expected_bad_by_partition["maintenance"].values()) == data.expected_bad_rows["maintenance"]
    )


def test_failures_are_preceded_by_rising_temperature_and_vibration():
    demo = generate_fleet(days=4, machines=12, reading_interval_minutes=30)
    readings = demo.sensor_readings.reset_index(drop=True)
    readings = readings[readings["ts"].map(lambda v: isinstance(v, pd.Timestamp))]
    for col in ("temperature", "vibration"):
        readings[col] = pd.to_numeric(readings[col], errors="coerce")
    failures = demo.failures.dropna()
    assert len(failures) > 0
    rises = []
    for f in failures.itertuples():
        own = readings[readings["machine_id"] == f.machine_id]
        ts = pd.to_datetime(own["ts"], utc=True)
        before = own[(ts < f.failure_time) & (ts >= f.failure_time - pd.Timedelta(hours=6))]
        if len(before):
            rises += [before[c].median() > own[c].median() for c in ("temperature", "vibration")]
    assert rises and sum(rises) >= 0.8 * len(rises)


def test_rewriting_fewer_days_removes_stale_daily_files(tmp_path):
    write.write_files(generate_fleet(**{**SMALL, "days": 3}), tmp_path)
    write.write_files(generate_fleet(**{**SMALL, "days": 1}), tmp_path)
    assert [p.name for p in (tmp_path / "sensor_readings").iterdir()] == ["2026-11-01.csv"]
    assert [p.name for p in (tmp_path / "app_logs").iterdir()] == ["2026-11-01.jsonl"]


@pytest.fixture()
def api(data, tmp_path):
    write.write_api_data(data, tmp_path)
    return TestClient(build_app(tmp_path)), tmp_path


def test_api_pagination_walks_every_site(api, data):
    client, _ = api
    assert client.get("/health").json() == {"status": "ok"}
    items, page = [], 1
    while page is not None:
        body = client.get("/api/v1/sites", params={"page": page, "page_size": 2}).json()
        assert body["page"] == page and body["page_size"] == 2 and body["total"] == len(data.sites)
        items.extend(body["items"])
        page = body["next_page"]
    assert len(items) == len(data.sites)
    assert sum("site_id" not in s or "name" not in s for s in items) == data.expected_bad_rows["sites"]


@pytest.mark.parametrize(
    "params", [{"page": "0"}, {"page": "x"}, {"page_size": "0"}, {"page_size": "1001"}, {"page_size": "2.5"}]
)
def test_api_rejects_bad_paging(api, params):
    response = api[0].get("/api/v1/sites", params=params)
    assert response.status_code == 400 and "error" in response.json()


def test_api_unknown_path_missing_data_and_fresh_reads(api):
    client, folder = api
    response = client.get("/api/v2/nothing")
    assert response.status_code == 404 and "error" in response.json()
    (folder / "sites.json").write_text(json.dumps([{"site_id": "S99", "name": "New"}]))
    assert client.get("/api/v1/sites").json()["items"] == [{"site_id": "S99", "name": "New"}]
    (folder / "sites.json").unlink()
    response = client.get("/api/v1/sites")
    assert response.status_code == 503 and response.json() == {"error": "no data: run make demo-data"}
