"""Redis down while the platform writes online features (the `ml/online/<feature set>` asset).

The product asset runs for real against this package's own Redis. With Redis stopped the write fails
with an error the retry policies count as transient (not a hang, not a half-write) and the step's
retry policy (IO_RETRY) tries again: Redis back within the policy's window, the same run writes every
entity by itself, and a reader never sees part of a write.
"""

from __future__ import annotations

import concurrent.futures
import time

import dagster as dg
import pandas as pd
import pytest

from platform_assets.ml.assets import build_online, features_key
from platform_assets.ml.config import load_models
from platform_assets.policies import is_transient
from resources import build_resources

pytestmark = [pytest.mark.faults, pytest.mark.slow]
DOWN_FOR_S = 5.0
RECOVERY_BOUND_S = 45.0  # IO_RETRY's retries wait 0-6, 6-12 and 18-24 s


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
    import redis

    with pytest.raises(redis.ConnectionError) as raised:
        store.client().ping()
    assert is_transient(raised.value)  # what IO_RETRY retries
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        run = pool.submit(materialize_online, features_frame(20, 3, version=2), name, fs)
        time.sleep(DOWN_FOR_S)
        private_env.up("redis")
        back = time.monotonic()
        result = run.result(timeout=180)
    recovery = time.monotonic() - back
    assert result.success, [e.event_specific_data for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    retried = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert retried, "the write never met the outage: nothing was retried"
    assert "ConnectionError" in retried[0].event_specific_data.error.to_string()
    after = store.read(name, [f"M{m:03d}" for m in range(20)])
    assert all(row and row["version"] == 2 for row in after.values())  # every entity, the new version only
    assert store.entities(name) == {f"M{m:03d}" for m in range(20)}
    print(f"\nredis down {DOWN_FOR_S:.0f} s: the online write failed, was retried {len(retried)} time(s) and "
          f"completed {recovery:.1f} s after redis was back (the local redis keeps no data across a restart)")
    assert recovery < RECOVERY_BOUND_S
