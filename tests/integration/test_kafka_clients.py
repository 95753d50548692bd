"""The stream as a user feeds it: kcat (librdkafka's command-line client, not our producer) writes
hand-written readings, odd and broken ones among them, over the broker's mutual-TLS listener; the
real sensor and job land them; kcat reads the topic back as the referee of what was produced.

Why mutual TLS and not SCRAM: Debian 12's kcat links librdkafka 2.0.2, whose SCRAM client-final
message repeats the client nonce; Kafka 4.x checks the nonce strictly (RFC 5802) and refuses it as
"invalid credentials" (fixed in librdkafka 2.6.1, confluentinc/librdkafka#4895). The platform's own
clients (confluent-kafka 2.16) use SCRAM; a user with an old librdkafka tool uses the certificate.

Every message kcat sees must be in the lake or among the dead letters, once; each broken one is a
dead letter with its reason; each good one lands with its values (a timestamp with an offset is
stored in UTC).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pytest

from platform_assets.sources.config import load_catalogue
from platform_assets.streaming.config import load_streams
from platform_assets.streaming.topics import ensure_topics
from tests.integration.streaming_harness import Harness, drop_topics, lake_offsets, renamed

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KCAT = shutil.which("kcat")

GOOD = {  # key -> reading; none of them is shaped like the demo's fleet
    "PUMP-Ω-7": {"machine_id": "PUMP-Ω-7", "ts": "2026-12-04T12:00:00+02:00", "temperature": 71.5,
                 "vibration": 3.25, "pressure": 5.1, "rpm": 1500, "power": 42.0},
    "press 12": {"machine_id": "press 12", "ts": "2026-12-04T10:00:30Z", "temperature": -12,
                 "rpm": 0, "firmware": "v2.1"},  # optional signals absent, an undeclared field
    "M-EDGE": {"machine_id": "M-EDGE", "ts": "2026-12-04T10:01:00.250Z", "temperature": 150,
               "vibration": 0, "pressure": 20, "rpm": 6000, "power": 500},  # every bound, inclusive
    # Beyond the physical range: kept as read (the range is a warning check on the lake, not a
    # reason to drop a reading), never clipped.
    "M-HOT": {"machine_id": "M-HOT", "ts": "2026-12-04T10:02:00Z", "temperature": 451.0},
}
BROKEN = {  # key -> raw line, each refused for a reason the dead letter must give
    "B-not-json": "temperature=70 machine=M1",
    "B-array": "[1, 2, 3]",
    "B-truncated": '{"machine_id": "M-Y", "ts": "2026-12-04T10:0',
    "B-no-machine": json.dumps({"ts": "2026-12-04T10:00:00Z", "temperature": 50}),
    "B-null-machine": json.dumps({"machine_id": None, "ts": "2026-12-04T10:00:00Z"}),
    "B-text-number": json.dumps({"machine_id": "M-X", "ts": "2026-12-04T10:00:00Z", "temperature": "hot"}),
    "B-bad-time": json.dumps({"machine_id": "M-X", "ts": "yesterday", "temperature": 20}),
}


def kcat_settings() -> list[str]:
    """The broker's mutual-TLS listener with the platform user's certificate (made by services.sh,
    services.env says where), as kcat's -b and -X."""
    env, root = os.environ, Path(__file__).resolve().parents[2]
    absolute = lambda p: p if p.is_absolute() else root / p
    tls = Path(env.get("SERVICES_STATE_DIR") or root / ".local" / "services") / "kafka" / "tls"
    host = env["KAFKA_BOOTSTRAP_SERVERS"].split(",")[0].rsplit(":", 1)[0]
    return ["-b", f"{host}:{env['KAFKA_MTLS_PORT']}", "-X", "security.protocol=SSL",
            "-X", f"ssl.ca.location={absolute(Path(env['KAFKA_SSL_CA_LOCATION']))}",
            "-X", f"ssl.certificate.location={absolute(tls) / 'platform.crt'}",
            "-X", f"ssl.key.location={absolute(tls) / 'platform.key'}"]


def kcat(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run([KCAT, *kcat_settings(), *args], check=False, input=stdin, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, f"kcat {' '.join(args)} failed: {done.stderr[-2000:]}"
    return done.stdout


@pytest.fixture()
def harness(platform, tmp_path, monkeypatch):
    if KCAT is None:
        pytest.fail("kcat is not installed: `bash deploy/local/services.sh install` installs it")
    monkeypatch.setenv("LAKE_ROOT", str(tmp_path / "lake"))
    streams = renamed(load_streams(load_catalogue()), "kcat" + uuid.uuid4().hex[:8])
    h = Harness(streams)
    h.lake_root = tmp_path / "lake"
    ensure_topics(h.kafka.admin(), streams.topics)
    yield h
    drop_topics(h.kafka.admin(), streams.topics)


def test_kcat_produced_readings_land_once_or_as_dead_letters_with_reasons(harness):
    topic = harness.topic()
    bulk = [(f"K{i % 7}", json.dumps({"machine_id": f"K{i % 7}", "ts": f"2026-12-04T09:{i // 10 % 60:02d}:{i % 10 * 6:02d}Z",
                                      "temperature": 20 + i % 13, "rpm": 900 + i}))
            for i in range(400)]
    lines = [*((k, json.dumps(v, ensure_ascii=False)) for k, v in GOOD.items()), *BROKEN.items(), *bulk]
    kcat("-P", "-t", topic, "-K", "\t", "-z", "lz4", stdin="".join(f"{k}\t{v}\n" for k, v in lines))

    # kcat, reading the topic from the start to its end, is the referee of what was produced.
    seen = kcat("-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%p\t%o\t%k\n")
    produced = {(int(p), int(o)): k for p, o, k in (row.split("\t") for row in seen.splitlines())}
    assert len(produced) == len(lines)

    harness.drain()

    offsets = lake_offsets(harness)
    landed = {(int(p), int(o)) for p, o in zip(offsets["_partition"], offsets["_offset"])}
    assert len(landed) == len(offsets)  # no row twice
    dead = harness.resources["warehouse"].query(
        'SELECT partition, "offset", reason, convert_from(key, \'UTF8\') AS key FROM streaming.dead_letters '
        "WHERE topic = %s", (topic,))
    dead_at = {(int(p), int(o)): (k, r) for p, o, k, r in zip(dead["partition"], dead["offset"], dead["key"],
                                                              dead["reason"])}
    assert not landed & dead_at.keys()
    assert landed | dead_at.keys() == produced.keys()  # nothing lost, nothing invented

    assert sorted(k for k, _ in dead_at.values()) == sorted(BROKEN)  # exactly the broken ones refused...
    for key, reason in dead_at.values():
        assert reason and reason.strip(), f"{key}: a dead letter without its reason"
    reasons = {k: r for k, r in dead_at.values()}
    assert "machine_id" in reasons["B-no-machine"] and "machine_id" in reasons["B-null-machine"]
    assert "temperature" in reasons["B-text-number"]
    assert "ts" in reasons["B-bad-time"]

    rows = ds.dataset(harness.lake_root / "stream" / "sensor_readings", format="parquet",
                      partitioning="hive").to_table().to_pandas()
    assert len(rows) == len(GOOD) + len(bulk)
    by_machine = rows.set_index("machine_id")
    pump = by_machine.loc["PUMP-Ω-7"]  # ...and the odd good ones kept, with their values
    assert pd.Timestamp(pump["ts"]).tz_convert("UTC") == pd.Timestamp("2026-12-04T10:00:00Z")
    assert (pump["temperature"], pump["vibration"], pump["rpm"]) == (71.5, 3.25, 1500)
    press = by_machine.loc["press 12"]
    assert press["temperature"] == -12 and pd.isna(press["vibration"]) and pd.isna(press["power"])
    edge = by_machine.loc["M-EDGE"]
    assert (edge["temperature"], edge["pressure"], edge["rpm"], edge["power"]) == (150, 20, 6000, 500)
    assert pd.Timestamp(edge["ts"]).tz_convert("UTC") == pd.Timestamp("2026-12-04T10:01:00.250Z")
    assert by_machine.loc["M-HOT", "temperature"] == 451.0
