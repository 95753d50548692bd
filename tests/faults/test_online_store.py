"""Redis down while the platform writes online features (the `ml/online/<feature set>` asset).

The product asset runs for real against this package's own Redis. With Redis stopped it must fail
fast with an error the retry policies count as transient (not hang, not half-write); once Redis is
back the next materialisation writes every entity, and a reader never sees part of a write.
"""

from __future__ import annotations

import time

import dagster as dg
import pandas as pd
import pytest

from platform_assets.ml.assets import build_online, features_key
from platform_assets.ml.config import load_models
from platform_assets.policies import is_transient
from resources import build_resources

pytestmark = [pytest.mark.faults, pytest.mark.slow]
FAIL_FAST_BOUND_S = 15.0  # the client's connect timeout is 5 s
RECOVERY_BOUND_S = 10.0


def features_frame(machines: int, hours: int, version: int) -> pd.DataFrame:
    stamps = pd.date_range("2026-11-01", periods=hours, freq="h", tz="UTC")
    return pd.DataFrame([{"machine_id": f"M{m:03d}", "as_of": t, "temperature_mean": 60.0 + m, "version": version}
                         for m in range(machines) for t in stamps])


def materialize_online(frame: pd.DataFrame, name: str, fs) -> dg.ExecuteInProcessResult:
    @dg.asset(key=features_key(name))
    def features() -> pd.DataFrame:
        return frame

    resources = {"online_store": build_resources()["online_store"], "io_manager": dg.InMemoryIOManager()}
    return dg.materialize([features, build_online(name, fs)], resources=resources, raise_on_error=False)


def test_redis_down_while_writing_online_features(private_env):
    name = "machine_hourly"
    fs = load_models().feature_sets[name]
    store = build_resources(resolved=True)["online_store"]
    store.client().flushdb()
    assert materialize_online(features_frame(20, 3, version=1), name, fs).success
    before = store.read(name, [f"M{m:03d}" for m in range(20)])
    assert all(row and row["version"] == 1 for row in before.values())

    private_env.down("redis")
    started = time.monotonic()
    result = materialize_online(features_frame(20, 3, version=2), name, fs)
    failed_after = time.monotonic() - started
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    error = failure.event_specific_data.error
    assert "ConnectionError" in error.cls_name or "ConnectionError" in error.to_string()
    assert failed_after < FAIL_FAST_BOUND_S
    import redis

    with pytest.raises(redis.ConnectionError) as raised:
        store.client().ping()
    assert is_transient(raised.value)  # what IO_RETRY would retry, were the asset to carry it

    private_env.up("redis")
    back = time.monotonic()
    assert materialize_online(features_frame(20, 3, version=2), name, fs).success
    recovery = time.monotonic() - back
    after = store.read(name, [f"M{m:03d}" for m in range(20)])
    assert all(row and row["version"] == 2 for row in after.values())  # every entity, the new version only
    assert store.entities(name) == {f"M{m:03d}" for m in range(20)}
    print(f"\nredis down: the online write failed in {failed_after:.1f} s; rewritten {recovery:.1f} s after "
          "redis was back (the local redis keeps no data across a restart: the store was empty meanwhile)")
    assert recovery < RECOVERY_BOUND_S
