"""Application log events with a nested ``context`` document, as the platform's services emit them.

Background chatter scales with the fleet (about 125 events per machine per day); around each
failure the SCADA bridge logs vibration alarms, a trip and a restart, so logs and sensors agree.
"""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pandas as pd

from platform_assets.demo_data.fleet import window

COLUMNS = ("ts", "service", "level", "message", "machine_id", "context")
EVENTS_PER_MACHINE_DAY = 125
SERVICES = ("ingest-gateway", "scada-bridge", "model-api", "auth-service")
SERVICE_WEIGHTS = (0.4, 0.3, 0.2, 0.1)
MACHINE_SHARE = {"ingest-gateway": 0.9, "scada-bridge": 1.0, "model-api": 0.6, "auth-service": 0.0}
LATENCY_MS = {"ingest-gateway": 40.0, "scada-bridge": 15.0, "model-api": 80.0, "auth-service": 25.0}
LEVELS = ("DEBUG", "INFO", "WARN", "ERROR")
LEVEL_WEIGHTS = (0.15, 0.70, 0.10, 0.05)
ROLES = ("operator", "engineer", "analyst", "admin")
EXTRA_TAGS = ("edge", "batch", "retry", "canary", "shadow")
# (template, low, high): {n} is drawn uniformly from [low, high).
MESSAGES = {
    "ingest-gateway": {
        "DEBUG": ("batch checksum ok ({n} bytes)", 2_000, 64_000),
        "INFO": ("accepted batch of {n} readings", 10, 500),
        "WARN": ("late batch: {n} s behind schedule", 30, 900),
        "ERROR": ("rejected batch: schema mismatch in field {n}", 1, 12),
    },
    "scada-bridge": {
        "DEBUG": ("opc-ua session keepalive ({n} ms)", 1, 40),
        "INFO": ("tag poll completed: {n} tags", 20, 400),
        "WARN": ("tag read timeout, retry {n}", 1, 4),
        "ERROR": ("connection to PLC lost after {n} retries", 3, 6),
    },
    "model-api": {
        "DEBUG": ("feature cache hit ratio {n}%", 60, 100),
        "INFO": ("prediction served ({n} features)", 24, 49),
        "WARN": ("feature staleness above threshold: {n} min", 15, 120),
        "ERROR": ("model inference failed: timeout after {n} ms", 1_000, 5_000),
    },
    "auth-service": {
        "DEBUG": ("jwks refreshed ({n} keys)", 1, 4),
        "INFO": ("token issued, ttl {n} s", 300, 3_600),
        "WARN": ("login failed: bad password (attempt {n})", 1, 5),
        "ERROR": ("directory unreachable after {n} ms", 500, 5_000),
    },
}


def event_json(record: dict) -> str:
    """One JSON Lines document; the writer and the truncated-line defects share this format."""
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False)


def iso_ms(ts: pd.Timestamp) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _message(template: tuple[str, int, int], u: float) -> str:
    text, low, high = template
    return text.format(n=low + int(u * (high - low)))


def make_app_logs(
    rng: np.random.Generator, machines: pd.DataFrame, failures: pd.DataFrame, start: date, days: int
) -> pd.DataFrame:
    """Clean events ordered by ts, indexed by ``file_date``; ts holds tz-aware Timestamps (object)."""
    begin, end = window(start, days)
    n = int(rng.poisson(EVENTS_PER_MACHINE_DAY * len(machines) * days))
    offsets_ms = rng.integers(0, days * 86_400_000, size=n)
    services = rng.choice(SERVICES, size=n, p=SERVICE_WEIGHTS)
    levels = rng.choice(LEVELS, size=n, p=LEVEL_WEIGHTS)
    has_machine = rng.random(n) < np.array([MACHINE_SHARE[s] for s in services])
    machine_ids = np.where(
        has_machine, rng.choice(machines["machine_id"].to_numpy(dtype=object), size=n), None
    )
    fraction = rng.random(n)
    events = {
        "offset_ms": offsets_ms,
        "service": services.astype(object),
        "level": levels.astype(object),
        "message": [_message(MESSAGES[s][lv], u) for s, lv, u in zip(services, levels, fraction)],
        "machine_id": machine_ids,
    }
    frame = pd.concat([pd.DataFrame(events), _failure_events(rng, failures, begin, end)], ignore_index=True)
    frame = frame.sort_values("offset_ms", kind="stable").reset_index(drop=True)
    ts = begin + pd.to_timedelta(frame.pop("offset_ms").to_numpy(), unit="ms")
    frame.insert(0, "ts", pd.Series(ts, dtype=object))
    frame["context"] = _contexts(rng, frame, machines)
    frame.index = pd.Index(ts.floor("D").date, name="file_date")
    return frame


def _failure_events(rng: np.random.Generator, failures: pd.DataFrame, begin, end) -> pd.DataFrame:
    """Vibration alarms in the 12 h before a failure, the trip itself, and the restart after repair."""
    rows = []
    for f in failures.itertuples():
        t_fail = int((f.failure_time - begin).total_seconds() * 1000)
        for off in np.sort(rng.integers(-12 * 3_600_000, 0, size=int(rng.integers(3, 9)))):
            alarm = f"vibration above alarm limit ({rng.uniform(8, 20):.1f} mm/s)"
            rows.append((t_fail + int(off), "WARN", alarm, f.machine_id))
        rows.append((t_fail, "ERROR", f"machine tripped: {f.component} {f.failure_mode}", f.machine_id))
        rows.append(
            (t_fail + int(f.downtime_hours * 3_600_000), "INFO", "machine back in service", f.machine_id)
        )
    span = int((end - begin).total_seconds() * 1000)
    frame = pd.DataFrame(
        [r for r in rows if 0 <= r[0] < span], columns=["offset_ms", "level", "message", "machine_id"]
    )
    frame.insert(1, "service", "scada-bridge")
    return frame


def _contexts(rng: np.random.Generator, frame: pd.DataFrame, machines: pd.DataFrame) -> list[dict]:
    """The nested context: request id, latency, the calling user, tags (site and model when known)."""
    n = len(frame)
    request_ids = rng.integers(0, 2**63, size=n)
    latency = rng.lognormal(0.0, 0.6, size=n)
    user_ids = rng.integers(1, 60, size=n)
    roles = rng.choice(ROLES, size=n, p=(0.5, 0.3, 0.15, 0.05))
    extra = np.where(rng.random(n) < 0.3, rng.choice(EXTRA_TAGS, size=n), None)
    site_of = dict(zip(machines["machine_id"], machines["site_id"]))
    model_of = dict(zip(machines["machine_id"], machines["model"]))
    out = []
    for i, (service, level, machine_id) in enumerate(
        zip(frame["service"], frame["level"], frame["machine_id"])
    ):
        human = service in ("model-api", "auth-service")
        user = (
            {"id": f"u{user_ids[i]:04d}", "role": str(roles[i])}
            if human
            else {"id": f"svc-{service.split('-')[0]}", "role": "service"}
        )
        tags = [f"site:{site_of[machine_id]}", f"model:{model_of[machine_id]}"] if machine_id else []
        if extra[i] is not None:
            tags.append(str(extra[i]))
        slow = 5.0 if level == "ERROR" else 1.0
        out.append(
            {
                "request_id": f"{request_ids[i]:016x}",
                "latency_ms": round(float(LATENCY_MS[service] * latency[i] * slow), 2),
                "user": user,
                "tags": tags,
            }
        )
    return out
