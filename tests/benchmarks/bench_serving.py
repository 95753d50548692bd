"""Serving benchmark: the platform's prediction service against bare ASGI apps and the model's own ceiling.

One run, one model (``failure_within_24h:latest`` from the local BentoML store), the same payloads, four servers:

- **bare** (the like-for-like baseline): a bare Starlette app on uvicorn, one process, no auth, no
  access log, written the way a careful engineer would: the same scikit-learn pipeline with
  ``n_jobs=1`` and one BLAS/OpenMP thread on the thread that predicts (as the platform runs it), one vectorised input frame
  per request, ``predict_proba`` in a worker thread so the event loop keeps answering, the
  response in the platform's shape. It is this very script, started with ``--serve-bare PORT``.
- **bare_stored**: the same app with the pipeline exactly as stored (the forest's ``n_jobs=-1``),
  the baseline earlier versions of this benchmark used. Not like for like: kept for comparison.
- **platform**: ``bentoml serve serving.service:FleetPredictions`` as shipped: a bearer JWT on every
  request, the contract's checks, prediction logging, and adaptive batching (serving/batching.py).
- **platform_unbatched**: the same with ``SERVING_BATCHING=false`` (the model in the front end,
  per request).

A pre-flight checks, for each case and each server, that every response is 200 with the expected
number of predictions, that the platform answers 401 without a token, that all servers report the
same BentoML model tag and give the same predictions and probabilities for the same records
(tolerance 1e-12: the stored forest's ``n_jobs=-1`` sums its trees' probabilities from several
threads in no fixed order). Then a closed-loop load generator drives each server with a fixed number
of connections for a fixed time, for single-record, 100-record and 1,000-record payloads, after a
short discarded warm-up: aiohttp in this process (the default), or Debian's ``wrk`` if it is on the
PATH and ``--loadgen wrk`` is given (installed with
``apt-get install -y wrk`` when missing, as deploy/local/services.sh does). The CPU seconds of each
server's process tree are read around each case. The **ceiling** is the model's own batch prediction, measured in this process on one
thread: ``predict_proba`` on a ready frame of ``SERVING_MAX_BATCH_SIZE`` records (and, second,
with the frame built from records too). Every path is reported as a ratio to the like-for-like
baseline and as a share of the ceiling. Last, **overload**: an open-loop generator sends
single-record requests to the platform at 1x and 4x its sustainable rate (the single-record
throughput it reached above) and reports p50/p99 of the served requests, the share answered 503, how
fast the 503s came and whether they carried Retry-After.

    flock /tmp/platform-bench.lock .venv/bin/python tests/benchmarks/bench_serving.py [--seconds 15]
        [--connections 16] [--warmup 3] [--overload-seconds 10] [--loadgen python|wrk] [--no-breakdown]

Progress goes to stderr; the summary to stdout, whose last line is one JSON object. The servers are
stopped (process groups: SIGTERM, then SIGKILL) at the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
for _key, _value in {"BENTOML_DO_NOT_TRACK": "true", "MLFLOW_DISABLE_TELEMETRY": "true",
                     "DAGSTER_DISABLE_TELEMETRY": "1"}.items():
    os.environ.setdefault(_key, _value)
warnings.filterwarnings("ignore")

from platform_assets.settings import load_local_defaults

load_local_defaults()  # BENTOML_HOME (absolute) must be set before bentoml is imported anywhere

MODEL = "failure_within_24h"
CASES = {"single": 1, "batch100": 100, "batch1000": 1000}
DISTINCT_BODIES = {"single": 64, "batch100": 16, "batch1000": 8}   # payload pools cycled by the load generator
PREFLIGHT_REQUESTS = {"single": 20, "batch100": 10, "batch1000": 3}
SERIAL_REQUESTS = 30
BASELINE = "bare"
GOALS = {"batched_over_bare_records_per_s": 2.0, "single_p50_ms": 50.0, "single_p99_ms": 250.0,
         "share_of_ceiling": 0.70}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], q: float) -> float | None:
    """The q-quantile of latencies in seconds, in ms."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)


# ---------------------------------------------------------------- the model, as every side loads it

def load_pipeline(single_thread: bool):
    """The champion pipeline from the BentoML store, its input columns and types (MLflow signature).

    ``single_thread``: the forest at ``n_jobs=1`` and one BLAS/OpenMP thread, as the platform runs it."""
    import bentoml
    import mlflow.sklearn
    from mlflow.models import Model

    ref = bentoml.models.get(f"{MODEL}:latest")
    path = ref.path_of("mlflow_model")
    pipeline = mlflow.sklearn.load_model(path)
    if single_thread:
        from threadpoolctl import threadpool_limits

        estimator = pipeline.steps[-1][1] if hasattr(pipeline, "steps") else pipeline
        if "n_jobs" in estimator.get_params():
            estimator.set_params(n_jobs=1)
        threadpool_limits(limits=1)
    signature = Model.load(path).signature
    types = {c.name: getattr(c.type, "name", str(c.type)) for c in signature.inputs.inputs}
    return pipeline, list(types), types, str(ref.tag), ref.info.metadata.get("mlflow_version")


# ---------------------------------------------------------------- bare servers (subprocess mode)

def bare_app(single_thread: bool):
    import anyio.to_thread
    import numpy as np
    import pandas as pd
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    pipeline, columns, types, tag, version = load_pipeline(single_thread)
    numeric = {c: "float64" for c, kind in types.items() if kind in ("double", "float", "long", "integer")}
    classes = [int(c) if isinstance(c, (np.integer, int)) else str(c) for c in pipeline.classes_]
    labels = [str(c) for c in classes]

    def predict_sync(records: list[dict]) -> dict:
        if single_thread:  # OpenMP's limit is per thread: set it on the worker thread that predicts
            from serving.predictor import one_thread_here

            one_thread_here()
        frame = pd.DataFrame.from_records(records, columns=columns).astype(numeric)
        proba = pipeline.predict_proba(frame)
        return {"model": MODEL, "version": version, "bento_model": tag,
                "predictions": [classes[i] for i in proba.argmax(axis=1)],
                "probabilities": [dict(zip(labels, row)) for row in proba.tolist()]}

    async def predict(request: Request) -> JSONResponse:
        body = await request.json()
        return JSONResponse(await anyio.to_thread.run_sync(predict_sync, body["records"]))

    async def ready(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/readyz", ready)])


def serve_bare(port: int, single_thread: bool) -> None:
    import uvicorn

    uvicorn.run(bare_app(single_thread), host="127.0.0.1", port=port, workers=1, log_level="warning",
                access_log=False)


# ---------------------------------------------------------------- server processes

class Server:
    def __init__(self, name: str, cmd: list[str], port: int, env: dict, logfile: Path, headers: dict):
        self.name, self.port, self.logfile, self.headers = name, port, logfile, headers
        self.url = f"http://127.0.0.1:{port}"
        self.spawned = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(logfile, "wb"),  # noqa: SIM115
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 180) -> float:
        """Seconds from spawn to the first 200 on /readyz."""
        import httpx

        start = self.spawned
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} server exited ({self.proc.returncode}):\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return time.monotonic() - start
            except httpx.HTTPError:
                pass
            if time.monotonic() - start > timeout:
                raise RuntimeError(f"{self.name} server not ready within {timeout:.0f} s:\n{self.tail()}")
            time.sleep(0.3)

    def tail(self, n: int = 4000) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def processes(self):
        import psutil

        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        import psutil

        total = 0.0
        for p in self.processes():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def rss_mb(self) -> float:
        import psutil

        total = 0
        for p in self.processes():
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return round(total / 2**20, 1)

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL after 30 s; then any descendant left over, by pid.

        ``bentoml serve``'s supervisor (circus) starts its worker with setsid, so the worker is NOT in
        the server's process group: it goes down with a graceful SIGTERM of the supervisor, but would
        be orphaned if the supervisor had to be killed. Its pid is taken before signalling."""
        import psutil

        descendants = self.processes()[1:]
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
        alive = [p for p in descendants if p.is_running()]
        for p in alive:
            try:
                p.terminate()
            except psutil.NoSuchProcess:
                pass
        _gone, alive = psutil.wait_procs(alive, timeout=10)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass


# ---------------------------------------------------------------- payloads

def feature_records() -> list[dict]:
    """The demo lake's feature rows as JSON-ready records, as the integration tests build them."""
    import pandas as pd

    frame = pd.read_parquet(Path(os.environ["LAKE_ROOT"]) / "features" / "machine_hourly" / "data.parquet")
    frame = frame.drop(columns=["as_of", "source_cutoff", "failure_within_24h", "hours_to_failure"],
                       errors="ignore")
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def payloads(records: list[dict]) -> dict[str, list[bytes]]:
    """Request bodies per case: random records (seeded), the same for every server."""
    import numpy as np

    rng = np.random.default_rng(0)
    out = {}
    for case, size in CASES.items():
        bodies = []
        for _ in range(DISTINCT_BODIES[case]):
            idx = rng.choice(len(records), size=size, replace=False)
            bodies.append(json.dumps({"model": MODEL, "records": [records[i] for i in idx]},
                                     separators=(",", ":")).encode())
        out[case] = bodies
    return out


# ---------------------------------------------------------------- pre-flight: same answers on every side

def preflight(servers: dict, bodies: dict[str, list[bytes]]) -> dict:
    import httpx

    report: dict = {}
    with httpx.Client(timeout=120) as client:
        unauth = client.post(f"{servers['platform'].url}/predict", content=bodies["single"][0],
                             headers={"Content-Type": "application/json"})
        if unauth.status_code != 401:
            raise AssertionError(f"platform without a token answered {unauth.status_code}, expected 401")
        report["platform_without_token"] = unauth.status_code
        tags: dict[str, set] = {}
        for case, size in CASES.items():
            answers: dict[str, list[dict]] = {}
            for name, server in servers.items():
                answers[name] = []
                for i in range(PREFLIGHT_REQUESTS[case]):
                    resp = client.post(f"{server.url}/predict", content=bodies[case][i % len(bodies[case])],
                                       headers={"Content-Type": "application/json", **server.headers})
                    if resp.status_code != 200:
                        raise AssertionError(f"{name} {case} request {i}: HTTP {resp.status_code} {resp.text[:500]}")
                    body = resp.json()
                    if len(body.get("predictions", [])) != size or len(body.get("probabilities", [])) != size:
                        raise AssertionError(f"{name} {case} request {i}: expected {size} predictions and "
                                             f"probabilities, got {str(body)[:500]}")
                    answers[name].append(body)
                    tags.setdefault(name, set()).add(body.get("bento_model"))
            max_diff, mismatched = 0.0, 0
            for name in servers:
                for a, b in zip(answers[BASELINE], answers[name], strict=True):
                    if a["predictions"] != b["predictions"]:
                        mismatched += 1
                    for pa, pb in zip(a["probabilities"], b["probabilities"], strict=True):
                        if set(pa) != set(pb):
                            raise AssertionError(f"class labels differ: {sorted(pa)} vs {sorted(pb)}")
                        max_diff = max(max_diff, *(abs(pa[k] - pb[k]) for k in pa))
            if mismatched or max_diff > 1e-12:
                raise AssertionError(f"{case}: the servers disagree (max |Δp| = {max_diff:g}, "
                                     f"{mismatched} responses with different predictions)")
            report[case] = {"requests_per_server": PREFLIGHT_REQUESTS[case],
                            "records_compared_per_server": PREFLIGHT_REQUESTS[case] * size,
                            "max_abs_probability_diff": max_diff, "all_200": True}
        if len({frozenset(t) for t in tags.values()}) != 1 or len(next(iter(tags.values()))) != 1:
            raise AssertionError(f"model tags differ: {tags}")
        report["bento_model"] = next(iter(tags[BASELINE]))
        # Unloaded latency: one connection, one request at a time (keep-alive), after the warm-up above.
        serial: dict = {}
        for case in CASES:
            serial[case] = {}
            for name, server in servers.items():
                times = []
                for i in range(SERIAL_REQUESTS if case != "batch1000" else 10):
                    t0 = time.perf_counter()
                    resp = client.post(f"{server.url}/predict", content=bodies[case][i % len(bodies[case])],
                                       headers={"Content-Type": "application/json", **server.headers})
                    times.append(time.perf_counter() - t0)
                    assert resp.status_code == 200, resp.text[:300]
                serial[case][name] = round(statistics.median(times) * 1000, 2)
        report["serial_p50_ms"] = serial
    return report


# ---------------------------------------------------------------- load generators

async def closed_loop(url: str, bodies: list[bytes], headers: dict, connections: int, seconds: float) -> dict:
    """``connections`` clients, each sending its next request when the last is answered (aiohttp)."""
    import aiohttp

    latencies: list[float] = []
    statuses: collections.Counter = collections.Counter()
    errors = 0
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        deadline = time.perf_counter() + seconds

        async def client(k: int) -> None:
            nonlocal errors
            i = k
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    async with session.post(f"{url}/predict", data=bodies[i % len(bodies)], headers=headers) as r:
                        await r.read()
                        statuses[r.status] += 1
                        if r.status == 200:
                            latencies.append(time.perf_counter() - t0)
                except aiohttp.ClientError:
                    errors += 1
                i += connections

        start = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(connections)))
        elapsed = time.perf_counter() - start
    return {"requests_per_s": round(len(latencies) / elapsed, 2), "requests": len(latencies),
            "elapsed_s": round(elapsed, 2),
            "mean_ms": round(statistics.fmean(latencies) * 1000, 2) if latencies else None,
            "max_ms": pct(latencies, 1.0), "p50_ms": pct(latencies, 0.50), "p90_ms": pct(latencies, 0.90),
            "p99_ms": pct(latencies, 0.99), "socket_errors": errors,
            "non_2xx": sum(n for s, n in statuses.items() if not 200 <= s < 300),
            "statuses": {str(s): n for s, n in sorted(statuses.items())}}


async def open_loop(url: str, bodies: list[bytes], headers: dict, rate: float, seconds: float) -> dict:
    """Requests sent at ``rate`` per second whatever the answers (no connection limit); latency is
    counted from when each request was due, so a late send counts against the server too."""
    import aiohttp

    served: list[float] = []
    refused: list[float] = []
    statuses: collections.Counter = collections.Counter()
    retry_after: collections.Counter = collections.Counter()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:

        async def one(i: int, due: float) -> None:
            try:
                async with session.post(f"{url}/predict", data=bodies[i % len(bodies)], headers=headers) as r:
                    await r.read()
                    statuses[r.status] += 1
                    (served if r.status == 200 else refused).append(time.perf_counter() - due)
                    if r.status == 503:
                        retry_after[r.headers.get("Retry-After", "missing")] += 1
            except aiohttp.ClientError as exc:
                statuses[type(exc).__name__] += 1

        total = int(rate * seconds)
        start = time.perf_counter()
        tasks = []
        for i in range(total):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, due)))
        sent_in = time.perf_counter() - start
        await asyncio.gather(*tasks)
    return {"rate_per_s": round(rate, 1), "sent": total, "send_seconds": round(sent_in, 2),
            "served_per_s": round(len(served) / seconds, 1), "served": len(served),
            "p50_ms": pct(served, 0.50), "p99_ms": pct(served, 0.99), "max_ms": pct(served, 1.0),
            "refused_503_share": round(statuses.get(503, 0) / max(1, total), 3),
            "refused_p50_ms": pct(refused, 0.50), "refused_p99_ms": pct(refused, 0.99),
            "retry_after": dict(retry_after), "statuses": {str(s): n for s, n in statuses.items()}}



WRK_LUA = r"""
local reqs = {}
local i = 0
function init(args)
  local headers = {["Content-Type"] = "application/json"}
  if args[2] ~= nil and #args[2] > 0 then headers["Authorization"] = args[2] end
  for line in io.lines(args[1]) do
    if #line > 0 then reqs[#reqs + 1] = wrk.format("POST", "/predict", headers, line) end
  end
  i = math.random(#reqs)
end
function request()
  i = i % #reqs + 1
  return reqs[i]
end
"""

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        raise ValueError(f"cannot parse wrk duration {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> dict:
    res: dict = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    res["requests_per_s"] = float(m.group(1))
    m = re.search(r"(\d+) requests in ([\d.]+\w+),", out)
    res["requests"], res["elapsed_s"] = int(m.group(1)), round(_ms(m.group(2)) / 1000, 2)
    m = re.search(r"Latency\s+([\d.]+\w+)\s+([\d.]+\w+)\s+([\d.]+\w+)", out)
    res["mean_ms"], res["max_ms"] = round(_ms(m.group(1)), 2), round(_ms(m.group(3)), 2)
    for pct, value in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+\w+)\s*$", out, re.MULTILINE):
        res[f"p{pct}_ms"] = round(_ms(value), 2)
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["socket_errors"] = sum(map(int, m.groups())) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non_2xx"] = int(m.group(1)) if m else 0
    # wrk counts every answer in Requests/sec, 503s too: the rate served is the 2xx only (its latency
    # percentiles still include the fast refusals; the errors column says how many there were)
    res["requests_per_s"] = round((res["requests"] - res["non_2xx"]) / res["elapsed_s"], 2) if res["elapsed_s"] else 0.0
    res["requests"] -= res["non_2xx"]
    return res


def install_wrk() -> None:
    """``--loadgen wrk`` on a machine without wrk: Debian's package (wrk 4.1.0), as
    deploy/local/services.sh installs it; a clear stop where apt-get cannot."""
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise SystemExit("--loadgen wrk: wrk is not on the PATH; install it (Debian: apt-get install -y wrk, or "
                         "bash deploy/local/services.sh up) or run with --loadgen python")
    log("--loadgen wrk: wrk is not installed; installing Debian's package: apt-get install -y wrk ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "install", "-y", "-q", "wrk"], ["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "wrk"]):
        if subprocess.run(cmd, env=env, capture_output=True, check=False).returncode == 0 and shutil.which("wrk"):
            return
    if shutil.which("wrk") is None:
        raise SystemExit("--loadgen wrk: apt-get could not install wrk; run with --loadgen python")


def run_wrk(url: str, body_file: Path, auth: str, lua: Path, args, seconds: float) -> dict:
    cmd = ["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{seconds:g}s", "--latency",
           "--timeout", "60s", "-s", str(lua), f"{url}/predict", "--", str(body_file), auth]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr}\n{proc.stdout}")
    return parse_wrk(proc.stdout)


# ---------------------------------------------------------------- the model's own ceiling, and where a request's time goes

def median_ms(fn, n: int) -> float:
    fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1000, 3)


def ceiling(records: list[dict], batch_size: int) -> dict:
    """Records/s of the model alone on one thread: ``predict_proba`` on a ready frame of
    ``batch_size`` records, and the same with the frame built from records (serving.predictor)."""
    from serving.predictor import ModelSlot, predict_rows, rows_of

    slot = ModelSlot(MODEL, reload_seconds=3600)  # n_jobs=1 and one BLAS/OpenMP thread, as served
    batch = json.loads(json.dumps((records * (batch_size // len(records) + 1))[:batch_size]))  # as parsed
    frame = slot.frame(batch)
    model_ms = median_ms(lambda: slot.model.predict_proba(frame), 15)
    served_ms = median_ms(lambda: predict_rows(slot, rows_of(batch, slot.columns, slot.types)), 15)
    single_ms = median_ms(lambda: slot.model.predict_proba(frame.head(1)), 30)
    return {"batch_records": batch_size, "predict_proba_ms": model_ms,
            "records_per_s": round(batch_size / model_ms * 1000, 1),
            "frame_and_predict_ms": served_ms, "frame_and_predict_records_per_s": round(batch_size / served_ms * 1000, 1),
            "predict_proba_one_record_ms": single_ms}


def breakdown(bodies: dict[str, list[bytes]], secret: str, token: str) -> dict:
    """Median costs (ms) of the pieces of one request, measured in this process (1 thread)."""
    import pandas as pd

    os.environ["SERVING_JWT_SECRET"] = secret
    from serving import contract
    from serving.auth import authorise
    from serving.predictor import ModelSlot, answer, key_of, predict_rows, rows_of

    stored, columns, types, _tag, _version = load_pipeline(single_thread=False)
    numeric = {c: "float64" for c, kind in types.items() if kind in ("double", "float", "long", "integer")}
    slot = ModelSlot(MODEL, reload_seconds=3600)
    specs = {MODEL: contract.FeatureSpec.of(slot)}
    n_jobs = stored.steps[-1][1].get_params().get("n_jobs")
    out: dict = {"auth_jwt_verify": median_ms(lambda: authorise("/predict", "Bearer " + token), 300)}
    for case, size in CASES.items():
        raw = bodies[case][0]
        records = json.loads(raw)["records"]
        frame = pd.DataFrame.from_records(records, columns=columns).astype(numeric)
        parsed = contract.parse_predict(raw, "application/json", specs)
        rows = rows_of(parsed.records, slot.columns, slot.types, numbers=parsed.rows)
        scored = predict_rows(slot, rows)
        response = answer(scored, slot.abouts[key_of(scored, MODEL)])
        n = 30 if size > 1 else 60
        out[case] = {
            "json_parse_request": median_ms(lambda raw=raw: json.loads(raw), 100),
            "contract_parse_and_check": median_ms(
                lambda raw=raw: contract.parse_predict(raw, "application/json", specs), 100),
            "frame_bare": median_ms(lambda r=records: pd.DataFrame.from_records(r, columns=columns).astype(numeric), 50),
            "frame_platform_validated": median_ms(lambda r=records: slot.frame(r), 50),
            f"predict_proba_n_jobs_{n_jobs}": median_ms(lambda f=frame: stored.predict_proba(f), n),
            "predict_proba_n_jobs_1": median_ms(lambda f=frame: slot.model.predict_proba(f), n),
            "runner_input_rows_of": median_ms(
                lambda p=parsed: rows_of(p.records, slot.columns, slot.types, numbers=p.rows), 100),
            "runner_predict_rows": median_ms(lambda r=rows: predict_rows(slot, r), n),
            "answer_from_rows": median_ms(lambda o=scored: answer(o, slot.abouts[key_of(o, MODEL)]), 100),
            "json_encode_response": median_ms(lambda r=response: json.dumps(r), 100),
            "json_encode_response_fast": median_ms(lambda r=response: contract.FastJSONResponse(r).body, 100),
            "response_bytes": len(json.dumps(response)),
            "request_bytes": len(raw),
        }
    return out


# ---------------------------------------------------------------- main

def fmt_row(case: str, name: str, r: dict, ratio: float | None, share: float | None) -> str:
    def num(value, width: int, places: int) -> str:
        return f"{value:>{width}.{places}f}" if isinstance(value, (int, float)) else f"{'-':>{width}}"

    return (f"{case:<10} {name:<19} {num(r['requests_per_s'], 8, 1)} {num(r['records_per_s'], 10, 0)} "
            f"{num(r.get('p50_ms'), 8, 1)} {num(r.get('p99_ms'), 8, 1)} {num(r.get('cpu_ms_per_request'), 8, 2)} "
            f"{r['non_2xx'] + r['socket_errors']:>6d} {num(ratio, 7, 2)} {num(share, 8, 3)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--stored-threads", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=15, help="measured duration per case and server")
    parser.add_argument("--warmup", type=float, default=3, help="discarded warm-up per case and server (s)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--loadgen", choices=["python", "wrk"], default="python",
                        help="closed-loop generator: aiohttp in this process, or wrk if installed")
    parser.add_argument("--overload-seconds", type=float, default=10, help="open-loop duration per rate")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the in-process cost breakdown")
    args = parser.parse_args()

    if args.serve_bare:
        serve_bare(args.serve_bare, single_thread=not args.stored_threads)
        return

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally below stops the servers
    from serving.auth import mint
    from serving.batching import MAX_BATCH_SIZE

    if args.loadgen == "wrk" and shutil.which("wrk") is None:
        install_wrk()
    loadgen = "wrk" if args.loadgen == "wrk" else "python (aiohttp, closed loop)"
    workdir = Path(tempfile.mkdtemp(prefix="bench_serving-"))
    records = feature_records()
    bodies = payloads(records)
    body_files = {}
    for case, items in bodies.items():
        body_files[case] = workdir / f"{case}.jsonl"
        body_files[case].write_bytes(b"\n".join(items) + b"\n")
    lua = workdir / "post.lua"
    lua.write_text(WRK_LUA)

    secret = secrets.token_urlsafe(32)
    token = mint("bench_serving", ["predict"], secret, ttl_seconds=6 * 3600)
    bearer = {"Authorization": f"Bearer {token}"}
    me = [sys.executable, str(Path(__file__).resolve())]
    bentoml_cmd = [str(Path(sys.executable).parent / "bentoml"), "serve", "serving.service:FleetPredictions",
                   "--host", "127.0.0.1"]
    specs = {  # name: (command without port, extra env, headers); the first is the ratios' baseline
        BASELINE: (me + ["--serve-bare"], {}, {}, False),
        "bare_stored": (me + ["--stored-threads", "--serve-bare"], {}, {}, False),
        "platform_unbatched": (bentoml_cmd, {"SERVING_JWT_SECRET": secret, "SERVING_BATCHING": "false"}, bearer, True),
        "platform": (bentoml_cmd, {"SERVING_JWT_SECRET": secret}, bearer, True),
    }
    servers: dict[str, Server] = {}
    ok = False
    try:
        for name, (cmd, env, headers, bento) in specs.items():
            port = free_port()
            servers[name] = Server(name, [*cmd, *(["--port", str(port)] if bento else [str(port)])], port,
                                   {**os.environ, **env}, workdir / f"{name}.log", headers=headers)
        startup = {name: round(s.wait_ready(), 1) for name, s in servers.items()}
        log(f"servers ready: {startup} s from spawn to /readyz (all started together); logs in {workdir}")

        log("pre-flight: status, prediction counts, same model tag, same probabilities ...")
        checks = preflight(servers, bodies)
        log(f"pre-flight ok: {json.dumps(checks)}")

        results: dict = {}
        load_before = os.getloadavg()
        for case, size in CASES.items():
            results[case] = {"records_per_request": size}
            for name, server in servers.items():
                auth = server.headers.get("Authorization", "")
                if args.loadgen == "wrk":
                    def drive(seconds: float, server=server, case=case, auth=auth) -> dict:
                        return run_wrk(server.url, body_files[case], auth, lua, args, seconds)
                else:
                    def drive(seconds: float, server=server, case=case) -> dict:
                        return asyncio.run(closed_loop(server.url, bodies[case],
                                                       {"Content-Type": "application/json", **server.headers},
                                                       args.connections, seconds))
                if args.warmup > 0:
                    drive(args.warmup)
                log(f"{case} / {name}: {args.seconds:g} s, {args.connections} connections ...")
                cpu0 = server.cpu_seconds()
                res = drive(args.seconds)
                cpu = server.cpu_seconds() - cpu0
                res["records_per_s"] = round(res["requests_per_s"] * size, 1)
                res["server_cpu_s"] = round(cpu, 2)
                res["server_cpu_cores"] = round(cpu / res["elapsed_s"], 2) if res["elapsed_s"] else None
                res["cpu_ms_per_request"] = round(cpu * 1000 / res["requests"], 2) if res["requests"] else None
                res["rss_mb"] = server.rss_mb()
                results[case][name] = res
                log(f"  {json.dumps(res)}")
            base = results[case][BASELINE]
            results[case]["records_per_s_ratio_to_bare"] = {
                name: round(results[case][name]["records_per_s"] / base["records_per_s"], 3)
                if base["records_per_s"] else None for name in servers}

        sustainable = results["single"]["platform"]["requests_per_s"]
        overload: dict = {"sustainable_rate_per_s": sustainable,
                          "definition": f"the platform's single-record throughput at {args.connections} connections"}
        single_headers = {"Content-Type": "application/json", **servers["platform"].headers}
        for factor in (1, 4):
            log(f"overload: platform, open loop at {factor}x = {factor * sustainable:.0f} single-record requests/s "
                f"for {args.overload_seconds:g} s ...")
            res = asyncio.run(open_loop(servers["platform"].url, bodies["single"], single_headers,
                                        factor * sustainable, args.overload_seconds))
            overload[f"{factor}x"] = res
            log(f"  {json.dumps(res)}")
            time.sleep(2)  # let the last refusals drain before the next rate
        load_after = os.getloadavg()
        ok = True
    finally:
        for server in servers.values():
            server.stop()
        log(f"servers stopped: {[(n, s.proc.returncode) for n, s in servers.items()]}")
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"logs kept in {workdir}")

    log(f"ceiling: the model alone on one thread, {MAX_BATCH_SIZE}-record batches ...")
    top = ceiling(records, MAX_BATCH_SIZE)
    for case in CASES:
        results[case]["share_of_ceiling"] = {name: round(results[case][name]["records_per_s"] / top["records_per_s"], 3)
                                             for name in servers}
    parts = None
    if not args.no_breakdown:
        log("in-process breakdown of one request ...")
        parts = breakdown(bodies, secret, token)

    best_ratio = max(results[c]["records_per_s_ratio_to_bare"]["platform"] for c in CASES)
    best_share = max(results[c]["share_of_ceiling"]["platform"] for c in CASES)
    single = results["single"]["platform"]
    goals = {
        "batched_over_bare_records_per_s": {c: results[c]["records_per_s_ratio_to_bare"]["platform"] for c in CASES},
        "single_p50_ms": single["p50_ms"], "single_p99_ms": single["p99_ms"],
        "share_of_ceiling": {c: results[c]["share_of_ceiling"]["platform"] for c in CASES},
        "met": {"batched_over_bare_records_per_s": all(results[c]["records_per_s_ratio_to_bare"]["platform"]
                                                       >= GOALS["batched_over_bare_records_per_s"] for c in CASES),
                "single_p50_ms": single["p50_ms"] is not None and single["p50_ms"] <= GOALS["single_p50_ms"],
                "single_p99_ms": single["p99_ms"] is not None and single["p99_ms"] <= GOALS["single_p99_ms"],
                "share_of_ceiling": best_share >= GOALS["share_of_ceiling"]},
        "targets": GOALS}

    print(f"Serving benchmark: {checks['bento_model']} | closed loop: {loadgen}, {args.connections} connections, "
          f"{args.seconds:g} s per case (+{args.warmup:g} s warm-up) | {os.cpu_count()} CPUs, load average "
          f"{load_before[0]:.2f} before / {load_after[0]:.2f} after the load runs")
    print("bare = Starlette+uvicorn, 1 process, no auth, n_jobs=1, predict in a thread (the like-for-like baseline); "
          "bare_stored = the same with the stored n_jobs=-1; platform = bentoml serve with a bearer JWT and adaptive "
          "batching; platform_unbatched = SERVING_BATCHING=false")
    print("pre-flight: every server 200 with the right counts and the same answers as bare (max |Δprobability| "
          + ", ".join(f"{c} {checks[c]['max_abs_probability_diff']:g}" for c in CASES)
          + f"); platform without token -> {checks['platform_without_token']}; startup to ready {startup} s")
    print(f"ceiling: predict_proba of {top['batch_records']} records on one thread {top['predict_proba_ms']} ms = "
          f"{top['records_per_s']:.0f} records/s (frame built from records too: "
          f"{top['frame_and_predict_records_per_s']:.0f} records/s; one record: {top['predict_proba_one_record_ms']} ms)")
    print()
    print(f"{'case':<10} {'server':<19} {'req/s':>8} {'records/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/r':>8} "
          f"{'errors':>6} {'x bare':>7} {'ceiling':>8}")
    for case in CASES:
        for name in servers:
            print(fmt_row(case, name, results[case][name], results[case]["records_per_s_ratio_to_bare"][name],
                          results[case]["share_of_ceiling"][name]))
        serial = checks["serial_p50_ms"][case]
        print(f"{'':<10} unloaded p50 (1 connection): " + ", ".join(f"{n} {serial[n]} ms" for n in servers))
    print()
    print(f"overload (platform, open loop, single records; 1x = {sustainable:.0f} requests/s, {overload['definition']}):")
    for factor in ("1x", "4x"):
        o = overload[factor]
        print(f"  {factor}: {o['rate_per_s']:.0f}/s sent, {o['served_per_s']:.0f}/s served, p50 {o['p50_ms']} ms, "
              f"p99 {o['p99_ms']} ms, max {o['max_ms']} ms; 503 share {o['refused_503_share']:.1%} "
              f"(p50 {o['refused_p50_ms']} ms, p99 {o['refused_p99_ms']} ms, Retry-After {o['retry_after']})")
    print("memory (RSS of the process tree, MB): " + ", ".join(f"{n} {results['single'][n]['rss_mb']}" for n in servers))
    if parts:
        print()
        print(f"in-process costs of one request (median ms, 1 thread): JWT verify {parts['auth_jwt_verify']}")
        for case in CASES:
            print(f"  {case}: " + ", ".join(f"{k} {v}" for k, v in parts[case].items()))
    print()
    print("goals: batched >= 2x bare records/s: " + ", ".join(
        f"{c} {v:.2f}x" for c, v in goals["batched_over_bare_records_per_s"].items())
        + f" ({'met' if goals['met']['batched_over_bare_records_per_s'] else 'NOT met'}); single-record p50 "
        f"{single['p50_ms']} ms <= 50 ({'met' if goals['met']['single_p50_ms'] else 'NOT met'}), p99 "
        f"{single['p99_ms']} ms <= 250 ({'met' if goals['met']['single_p99_ms'] else 'NOT met'}); records/s "
        f">= 70% of the ceiling: best {best_share:.1%} ({'met' if goals['met']['share_of_ceiling'] else 'NOT met'}); "
        f"best ratio to bare {best_ratio:.2f}x")
    summary = {"benchmark": "serving", "model": checks["bento_model"], "load_generator": loadgen,
               "connections": args.connections, "seconds": args.seconds, "warmup_seconds": args.warmup,
               "cpus": os.cpu_count(), "loadavg_1m_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
               "startup_s": startup, "preflight": checks, "ceiling": top, "cases": results, "overload": overload,
               "breakdown": parts, "goals": goals}
    print(json.dumps(summary, separators=(",", ":")))


if __name__ == "__main__":
    main()
