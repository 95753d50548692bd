"""Serving benchmark: what does the platform's prediction service cost over a bare ASGI app?

One run, one model (``failure_within_24h:latest`` from the local BentoML store), the same payloads:

- **baseline**: a bare Starlette app on uvicorn (1 worker, no auth, no access log) serving
  ``POST /predict`` with the same scikit-learn pipeline (``bentoml.models.get(...).path_of("mlflow_model")``
  + ``mlflow.sklearn.load_model``); ``predict_proba`` runs in a worker thread
  (``anyio.to_thread.run_sync``) and the response has the platform's shape (predictions + probabilities).
  It is this very script, started as a subprocess with ``--serve-baseline PORT``.
- **platform**: the real ``bentoml serve serving.service:FleetPredictions`` (default config: 1 worker,
  sync API) with a minted ``predict`` bearer token on every request — auth is part of the real path.

A pre-flight checks, for each case and each server, that every response is 200 with the expected
number of predictions, that the platform answers 401 without a token, that both servers report the
same BentoML model tag and give the SAME probabilities for the same records (a benchmark whose two
sides compute different things is worthless; the tolerance is 1e-12, not 0, because the forest's
``n_jobs=-1`` sums the trees' probabilities from several threads in no fixed order, so the same server
can differ by one ulp from call to call). Then ``wrk`` (Debian's, installed with apt if missing;
an asyncio+httpx generator otherwise, announced in the output) drives each server with a fixed
number of connections for a fixed time, single-record payloads and 100-record payloads, after a
short discarded warm-up. The CPU seconds burnt by each server's process tree are read around each
case (CPU ms per request), and a small in-process breakdown times the parts of one request
(model, input framing, JWT check, JSON encoding) to say where the time goes.

    .venv/bin/python tests/benchmarks/bench_serving.py [--seconds 15] [--connections 16] [--threads 2]
        [--warmup 3] [--loadgen auto|wrk|python] [--no-breakdown]

Progress goes to stderr; the summary to stdout, whose last line is one JSON object. Both servers
are stopped (process groups: SIGTERM, then SIGKILL) at the end, also on error or Ctrl-C.
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
CASES = {"single": 1, "batch100": 100}
DISTINCT_BODIES = {"single": 64, "batch100": 16}   # payload pools cycled by the load generator
PREFLIGHT_REQUESTS = 20
SERIAL_REQUESTS = 40


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- the model, as both sides load it

def load_pipeline():
    """The champion pipeline from the BentoML store, its input columns and types (MLflow signature)."""
    import bentoml
    import mlflow.sklearn
    from mlflow.models import Model

    ref = bentoml.models.get(f"{MODEL}:latest")
    path = ref.path_of("mlflow_model")
    pipeline = mlflow.sklearn.load_model(path)
    signature = Model.load(path).signature
    types = {c.name: getattr(c.type, "name", str(c.type)) for c in signature.inputs.inputs}
    return pipeline, list(types), types, str(ref.tag), ref.info.metadata.get("mlflow_version")


# ---------------------------------------------------------------- baseline server (subprocess mode)

def baseline_app():
    import anyio.to_thread
    import numpy as np
    import pandas as pd
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    pipeline, columns, types, tag, version = load_pipeline()
    numeric = {c: "float64" for c, kind in types.items() if kind in ("double", "float", "long", "integer")}
    classes = [int(c) if isinstance(c, (np.integer, int)) else str(c) for c in pipeline.classes_]
    labels = [str(c) for c in classes]

    async def predict(request: Request) -> JSONResponse:
        body = await request.json()
        frame = pd.DataFrame.from_records(body["records"])[columns].astype(numeric)
        proba = await anyio.to_thread.run_sync(pipeline.predict_proba, frame)
        return JSONResponse({"model": MODEL, "version": version, "bento_model": tag,
                             "predictions": [classes[i] for i in proba.argmax(axis=1)],
                             "probabilities": [dict(zip(labels, map(float, row))) for row in proba]})

    async def ready(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/readyz", ready)])


def serve_baseline(port: int) -> None:
    import uvicorn

    uvicorn.run(baseline_app(), host="127.0.0.1", port=port, workers=1, log_level="warning", access_log=False)


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

def payloads() -> dict[str, list[bytes]]:
    """Request bodies per case, built from the demo lake's feature table as the integration tests do."""
    import numpy as np
    import pandas as pd

    frame = pd.read_parquet(Path(os.environ["LAKE_ROOT"]) / "features" / "machine_hourly" / "data.parquet")
    frame = frame.drop(columns=["as_of", "source_cutoff", "failure_within_24h", "hours_to_failure"],
                       errors="ignore")
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
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


# ---------------------------------------------------------------- pre-flight: same answers on both sides

def preflight(servers: dict[str, Server], bodies: dict[str, list[bytes]]) -> dict:
    import httpx

    report: dict = {}
    with httpx.Client(timeout=60) as client:
        unauth = client.post(f"{servers['platform'].url}/predict", content=bodies["single"][0],
                             headers={"Content-Type": "application/json"})
        if unauth.status_code != 401:
            raise AssertionError(f"platform without a token answered {unauth.status_code}, expected 401")
        report["platform_without_token"] = unauth.status_code
        tags = {}
        for case, size in CASES.items():
            answers: dict[str, list[dict]] = {}
            for name, server in servers.items():
                answers[name] = []
                for i in range(PREFLIGHT_REQUESTS):
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
            for a, b in zip(answers["baseline"], answers["platform"], strict=True):
                if a["predictions"] != b["predictions"]:
                    mismatched += 1
                for pa, pb in zip(a["probabilities"], b["probabilities"], strict=True):
                    if set(pa) != set(pb):
                        raise AssertionError(f"class labels differ: {sorted(pa)} vs {sorted(pb)}")
                    max_diff = max(max_diff, *(abs(pa[k] - pb[k]) for k in pa))
            if mismatched or max_diff > 1e-12:
                raise AssertionError(f"{case}: the two servers disagree (max |Δp| = {max_diff:g}, "
                                     f"{mismatched} responses with different predictions)")
            report[case] = {"requests_per_server": PREFLIGHT_REQUESTS, "records_compared": PREFLIGHT_REQUESTS * size,
                            "max_abs_probability_diff": max_diff, "all_200": True}
        if len(tags["baseline"]) != 1 or tags["baseline"] != tags["platform"]:
            raise AssertionError(f"model tags differ: baseline {tags['baseline']}, platform {tags['platform']}")
        report["bento_model"] = next(iter(tags["baseline"]))
        # Unloaded latency: one connection, one request at a time (keep-alive), after the warm-up above.
        serial = {}
        for case in CASES:
            serial[case] = {}
            for name, server in servers.items():
                times = []
                for i in range(SERIAL_REQUESTS):
                    t0 = time.perf_counter()
                    resp = client.post(f"{server.url}/predict", content=bodies[case][i % len(bodies[case])],
                                       headers={"Content-Type": "application/json", **server.headers})
                    times.append(time.perf_counter() - t0)
                    assert resp.status_code == 200, resp.text[:300]
                serial[case][name] = round(statistics.median(times) * 1000, 2)
        report["serial_p50_ms"] = serial
    return report


# ---------------------------------------------------------------- load generators

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
    return res


def run_wrk(url: str, body_file: Path, auth: str, lua: Path, args, seconds: float) -> dict:
    cmd = ["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{seconds:g}s", "--latency",
           "--timeout", "60s", "-s", str(lua), f"{url}/predict", "--", str(body_file), auth]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr}\n{proc.stdout}")
    return parse_wrk(proc.stdout)


async def _python_load(url: str, bodies: list[bytes], headers: dict, connections: int, seconds: float) -> dict:
    import httpx

    latencies: list[float] = []
    statuses: collections.Counter = collections.Counter()
    errors = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        deadline = time.perf_counter() + seconds

        async def worker(k: int) -> None:
            nonlocal errors
            i = k
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    resp = await client.post("/predict", content=bodies[i % len(bodies)], headers=headers)
                except httpx.HTTPError:
                    errors += 1
                    continue
                finally:
                    i += 1
                latencies.append(time.perf_counter() - t0)
                statuses[resp.status_code] += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(connections)))
        elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 2) if latencies else 0.0

    return {"requests_per_s": round(len(latencies) / elapsed, 2), "requests": len(latencies),
            "elapsed_s": round(elapsed, 2),
            "mean_ms": round(statistics.fmean(latencies) * 1000, 2) if latencies else 0.0,
            "max_ms": round(latencies[-1] * 1000, 2) if latencies else 0.0,
            "p50_ms": pct(0.50), "p75_ms": pct(0.75), "p90_ms": pct(0.90), "p99_ms": pct(0.99),
            "socket_errors": errors, "non_2xx": sum(n for s, n in statuses.items() if not 200 <= s < 400)}


def ensure_wrk(choice: str) -> tuple[str, str]:
    """('wrk', version) or ('python', reason); installs Debian's wrk with apt when missing and allowed."""
    if choice == "python":
        return "python", "asked for with --loadgen python"
    note = ""
    if shutil.which("wrk") is None and os.geteuid() == 0 and shutil.which("apt-get"):
        log("wrk not found: apt-get install -y wrk")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for attempt in (["apt-get", "install", "-y", "-q", "wrk"], ["apt-get", "update", "-q"],
                        ["apt-get", "install", "-y", "-q", "wrk"]):
            if attempt[1] == "update" and shutil.which("wrk"):
                break
            try:
                subprocess.run(attempt, env=env, capture_output=True, timeout=600, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                note = f"apt-get failed: {exc}"
        if shutil.which("wrk"):
            note = "installed with apt-get"
    path = shutil.which("wrk")
    if path is None:
        if choice == "wrk":
            raise SystemExit("wrk is not available and could not be installed")
        return "python", "wrk unavailable (" + (note or "not installed, apt-get not usable") + ")"
    proc = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    version = (proc.stdout + proc.stderr).splitlines()[0].split(" Copyright")[0].strip()
    return "wrk", version + (f", {note}" if note else "")


# ---------------------------------------------------------------- in-process breakdown of one request

def breakdown(bodies: dict[str, list[bytes]], secret: str, token: str) -> dict:
    """Median costs (ms) of the pieces of one request, measured in this process (1 thread)."""
    import copy

    import pandas as pd

    os.environ["SERVING_JWT_SECRET"] = secret
    from serving.auth import authorise
    from serving.predictor import ModelSlot

    pipeline, columns, types, _tag, _version = load_pipeline()
    numeric = {c: "float64" for c, kind in types.items() if kind in ("double", "float", "long", "integer")}
    slot = ModelSlot(MODEL, reload_seconds=3600)

    def median_ms(fn, n: int) -> float:
        fn()
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return round(statistics.median(times) * 1000, 3)

    single_thread = copy.deepcopy(pipeline)
    single_thread.set_params(**{f"{single_thread.steps[-1][0]}__n_jobs": 1})
    n_jobs = pipeline.steps[-1][1].get_params().get("n_jobs")
    out: dict = {"auth_jwt_verify": median_ms(lambda: authorise("/predict", "Bearer " + token), 300)}
    try:  # the pydantic model BentoML parses /predict's JSON body into
        from serving.service import FleetPredictions

        input_spec = FleetPredictions.apis["predict"].input_spec
    except Exception as exc:  # noqa: BLE001 - the breakdown is informative only
        log(f"breakdown: no BentoML input model ({exc})")
        input_spec = None
    for case, size in CASES.items():
        raw = bodies[case][0]
        records = json.loads(raw)["records"]
        platform_frame = slot.frame(records)
        baseline_frame = pd.DataFrame.from_records(records)[columns].astype(numeric)
        response = slot.predict(platform_frame)
        n = 30 if size > 1 else 60
        out[case] = {
            "json_parse_request": median_ms(lambda raw=raw: json.loads(raw), 200),
            "bentoml_pydantic_parse_request": median_ms(lambda raw=raw: input_spec.model_validate_json(raw), 200)
            if input_spec is not None else None,
            "frame_baseline": median_ms(lambda r=records: pd.DataFrame.from_records(r)[columns].astype(numeric), 100),
            "frame_platform_validated": median_ms(lambda r=records: slot.frame(r), 100),
            f"predict_proba_n_jobs_{n_jobs}": median_ms(lambda f=baseline_frame: pipeline.predict_proba(f), n),
            "predict_proba_n_jobs_1": median_ms(lambda f=baseline_frame: single_thread.predict_proba(f), n),
            "json_encode_response": median_ms(lambda r=response: json.dumps(r), 200),
            "response_bytes": len(json.dumps(response)),
            "request_bytes": len(raw),
        }
    return out


# ---------------------------------------------------------------- main

def fmt_row(case: str, name: str, r: dict, records: int) -> str:
    return (f"{case:<9} {name:<9} {r['requests_per_s']:>9.1f} {r['requests_per_s'] * records:>10.1f} "
            f"{r.get('p50_ms', float('nan')):>8.1f} {r.get('p99_ms', float('nan')):>9.1f} "
            f"{r.get('cpu_ms_per_request', float('nan')):>10.2f} {r['non_2xx'] + r['socket_errors']:>7d}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve-baseline", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=15, help="measured duration per case and server")
    parser.add_argument("--warmup", type=float, default=3, help="discarded warm-up per case and server (s)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the in-process cost breakdown")
    args = parser.parse_args()

    if args.serve_baseline:
        serve_baseline(args.serve_baseline)
        return

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally below stops the servers
    from serving.auth import mint

    loadgen, loadgen_info = ensure_wrk(args.loadgen)
    log(f"load generator: {loadgen} ({loadgen_info})")
    workdir = Path(tempfile.mkdtemp(prefix="bench_serving-"))
    bodies = payloads()
    body_files = {}
    for case, items in bodies.items():
        body_files[case] = workdir / f"{case}.jsonl"
        body_files[case].write_bytes(b"\n".join(items) + b"\n")
    lua = workdir / "post.lua"
    lua.write_text(WRK_LUA)

    secret = secrets.token_urlsafe(32)
    token = mint("bench_serving", ["predict"], secret, ttl_seconds=6 * 3600)
    servers: dict[str, Server] = {}
    ok = False
    try:
        port = free_port()
        servers["baseline"] = Server(
            "baseline", [sys.executable, str(Path(__file__).resolve()), "--serve-baseline", str(port)], port,
            dict(os.environ), workdir / "baseline.log", headers={})
        port = free_port()
        servers["platform"] = Server(
            "platform", [str(Path(sys.executable).parent / "bentoml"), "serve", "serving.service:FleetPredictions",
                         "--host", "127.0.0.1", "--port", str(port)], port,
            {**os.environ, "SERVING_JWT_SECRET": secret}, workdir / "platform.log",
            headers={"Authorization": f"Bearer {token}"})
        startup = {name: round(s.wait_ready(), 1) for name, s in servers.items()}
        log(f"servers ready: {startup} s from spawn to /readyz (both started together); logs in {workdir}")

        log("pre-flight: status, prediction counts, same model tag, same probabilities ...")
        checks = preflight(servers, bodies)
        log(f"pre-flight ok: {json.dumps(checks)}")

        results: dict = {}
        load_before = os.getloadavg()
        for case, size in CASES.items():
            results[case] = {"records_per_request": size}
            for name, server in servers.items():
                auth = server.headers.get("Authorization", "")
                if loadgen == "wrk":
                    def drive(seconds: float, server=server, case=case, auth=auth) -> dict:
                        return run_wrk(server.url, body_files[case], auth, lua, args, seconds)
                else:
                    def drive(seconds: float, server=server, case=case) -> dict:
                        return asyncio.run(_python_load(server.url, bodies[case],
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
            b, p = results[case]["baseline"], results[case]["platform"]
            results[case]["throughput_ratio_platform_over_baseline"] = round(p["requests_per_s"] / b["requests_per_s"], 3)
            results[case]["p50_ratio_platform_over_baseline"] = round(p["p50_ms"] / b["p50_ms"], 3)
            if b["cpu_ms_per_request"] and p["cpu_ms_per_request"]:
                results[case]["extra_cpu_ms_per_request"] = round(p["cpu_ms_per_request"] - b["cpu_ms_per_request"], 2)
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

    parts = None
    if not args.no_breakdown:
        log("in-process breakdown of one request ...")
        parts = breakdown(bodies, secret, token)

    print(f"Serving benchmark: {checks['bento_model']} | load generator: {loadgen} ({loadgen_info}) | "
          f"{args.connections} connections, {args.threads} threads, {args.seconds:g} s per case "
          f"(+{args.warmup:g} s warm-up) | {os.cpu_count()} CPUs, load average "
          f"{load_before[0]:.2f} before / {load_after[0]:.2f} after the load runs")
    print("baseline = bare Starlette+uvicorn, 1 worker, no auth, predict_proba in a thread; "
          "platform = bentoml serve serving.service:FleetPredictions with a bearer JWT")
    print(f"pre-flight: {PREFLIGHT_REQUESTS} requests/case/server all 200 with the right counts; "
          f"platform without token -> {checks['platform_without_token']}; max |Δprobability| "
          + ", ".join(f"{c} {checks[c]['max_abs_probability_diff']:g}" for c in CASES)
          + f"; startup to ready {startup} s")
    print()
    print(f"{'case':<9} {'server':<9} {'req/s':>9} {'records/s':>10} {'p50 ms':>8} {'p99 ms':>9} "
          f"{'CPU ms/req':>10} {'errors':>7}")
    for case, size in CASES.items():
        for name in servers:
            print(fmt_row(case, name, results[case][name], size))
        r = results[case]
        print(f"{'':<9} platform/baseline: throughput {r['throughput_ratio_platform_over_baseline']:.2f}x, "
              f"p50 {r['p50_ratio_platform_over_baseline']:.2f}x, extra CPU "
              f"{r.get('extra_cpu_ms_per_request', float('nan')):+.2f} ms/request; unloaded p50 (1 connection) "
              f"baseline {checks['serial_p50_ms'][case]['baseline']} ms, platform {checks['serial_p50_ms'][case]['platform']} ms")
    print(f"memory (RSS of the process tree, MB): baseline {results['single']['baseline']['rss_mb']}, "
          f"platform {results['single']['platform']['rss_mb']}")
    if parts:
        print()
        print(f"in-process costs of one request (median ms, 1 thread): JWT verify {parts['auth_jwt_verify']}")
        for case in CASES:
            print(f"  {case}: " + ", ".join(f"{k} {v}" for k, v in parts[case].items()))
    summary = {"benchmark": "serving", "model": checks["bento_model"], "load_generator": loadgen,
               "load_generator_info": loadgen_info, "connections": args.connections, "threads": args.threads,
               "seconds": args.seconds, "warmup_seconds": args.warmup, "cpus": os.cpu_count(),
               "loadavg_1m_before_after": [round(load_before[0], 2), round(load_after[0], 2)], "startup_s": startup, "preflight": checks, "cases": results, "breakdown": parts}
    print(json.dumps(summary, separators=(",", ":")))


if __name__ == "__main__":
    main()
