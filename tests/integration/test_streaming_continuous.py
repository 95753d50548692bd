"""Continuous mode against the real broker, PostgreSQL and a real Dagster daemon and webserver.

The consumer runs as a Dagster run launched by the stream's sensor (through the instance, in the
code server's subprocess), reports each batch as materialisations (read back through GraphQL, as
the UI does), stops cleanly when the run is terminated through GraphQL, and is replaced at the next
sensor tick, after a termination or a SIGKILL, with nothing lost or duplicated by (partition, offset).
A consumer "killed" at each point of a batch (in-process, to hit the point exactly) is resumed by
the next one without a duplicate either.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import dagster as dg
import pytest
import yaml

from platform_assets.settings import PROJECT_ROOT
from platform_assets.sources.config import load_catalogue
from platform_assets.streaming import continuous
from platform_assets.streaming.assets import group_id, stream_keys, topic_key
from platform_assets.streaming.batch import StreamTarget, process_batch
from platform_assets.streaming.config import StreamCatalogue, load_streams
from platform_assets.streaming.topics import ensure_topics
from resources import build_resources
from resources.stream_store import StreamStore
from tests.integration.conftest import _pg_admin, free_port
from tests.integration.streaming_harness import (
    STREAM,
    Harness,
    assert_exactly_once,
    drop_topics,
    renamed,
    send,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
RUN_TAGS = [{"key": "stream", "value": STREAM}]


def continuous_catalogue(max_wait: float = 0.5, max_messages: int = 2000) -> StreamCatalogue:
    """The sensor readings stream alone, in continuous mode, on topics of this test's own."""
    base = renamed(load_streams(load_catalogue(), environ={}), uuid.uuid4().hex[:8], mode="continuous")
    stream = base.streams[STREAM].model_copy(update={"max_wait": max_wait, "max_messages": max_messages})
    return StreamCatalogue(topics={t: base.topics[t] for t in (stream.topic, base.alerts_topic)},
                           alerts_topic=base.alerts_topic, streams={STREAM: stream})


def durable_total(h: Harness) -> int:
    return sum(StreamStore(warehouse=h.resources["warehouse"]).durable_ends(h.topic()).values())


def produced_total(h: Harness) -> int:
    return sum(high for _, high in h.kafka.watermarks(h.topic()).values())


class Live:
    """A daemon and a webserver on a code location of the streaming definitions only."""

    def __init__(self, home: Path, streams: StreamCatalogue, lake: Path):
        self.home, self.port = home, free_port()
        (home / "streams.yaml").write_text(yaml.safe_dump(json.loads(streams.model_dump_json())))
        (home / "dagster.yaml").write_text((PROJECT_ROOT / "deploy" / "local" / "dagster.yaml").read_text())
        (home / "workspace.yaml").write_text(yaml.safe_dump({"load_from": [{"python_module": {
            "module_name": "tests.integration.streaming_location", "working_directory": str(PROJECT_ROOT),
            "location_name": "streaming"}}]}))
        self.env = {**os.environ, "DAGSTER_HOME": str(home), "PLATFORM_STREAMS_FILE": str(home / "streams.yaml"),
                    "LAKE_ROOT": str(lake)}
        bin_dir, workspace = Path(sys.executable).parent, str(home / "workspace.yaml")
        self.commands = {
            "daemon": [str(bin_dir / "dagster-daemon"), "run", "-w", workspace],
            "webserver": [str(bin_dir / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(self.port), "-w", workspace],
        }
        self.logs = {n: open(home / f"{n}.log", "wb") for n in self.commands}  # noqa: SIM115
        self.procs = {n: self._start(n) for n in self.commands}
        self.instance = dg.DagsterInstance.from_config(str(home))

    def _start(self, name: str) -> subprocess.Popen:
        return subprocess.Popen(self.commands[name], cwd=PROJECT_ROOT, env=self.env, stdout=self.logs[name],
                                stderr=subprocess.STDOUT)

    def restart(self, name: str) -> None:
        """Start the process ``name`` (``daemon`` or ``webserver``) again, after it died, as it was started."""
        assert self.procs[name].poll() is not None, f"{name} is still running"
        self.procs[name] = self._start(name)

    def answers(self) -> bool:
        """The webserver answers GraphQL."""
        try:
            self.runs()
            return True
        except OSError:
            return False

    def log_tail(self) -> str:
        return "\n".join(f"--- {n}\n{(self.home / f'{n}.log').read_text()[-2500:]}" for n in self.logs)

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/graphql",
                                     data=json.dumps({"query": query, "variables": variables or {}}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            body = json.load(resp)
        assert "errors" not in body, body["errors"]
        return body["data"]

    def runs(self) -> list[dict]:
        data = self.graphql("query($tags: [ExecutionTag!]) { runsOrError(filter: {tags: $tags}) { "
                            "... on Runs { results { runId status tags { key value } } } } }", {"tags": RUN_TAGS})
        return data["runsOrError"]["results"]

    def started_run(self, other_than=()) -> str | None:
        for procs in self.procs.values():
            assert procs.poll() is None, self.log_tail()
        return next((r["runId"] for r in self.runs() if r["status"] == "STARTED" and r["runId"] not in other_than),
                    None)

    def status(self, run_id: str) -> str:
        return next(r["status"] for r in self.runs() if r["runId"] == run_id)

    def shut_down(self) -> list[str]:
        """As `make demo` does on Ctrl-C: the daemon first (its sensor must start no new consumer),
        then the consumers, through the instance."""
        self.procs["daemon"].terminate()
        self.procs["daemon"].wait(timeout=60)
        return continuous.stop_consumers(self.instance)

    def close(self) -> None:
        if self.procs["daemon"].poll() is None:
            self.shut_down()
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in self.logs.values():
            log.close()
        self.instance.dispose()


@pytest.fixture()
def live(platform, tmp_path, monkeypatch):
    db = f"t_dagster_{uuid.uuid4().hex[:8]}"
    _pg_admin(f'CREATE DATABASE "{db}"')
    monkeypatch.setenv("DAGSTER_PG_DB", db)
    monkeypatch.setenv("LAKE_ROOT", str(tmp_path / "lake"))
    streams = continuous_catalogue()
    h = Harness(streams)
    h.lake_root = tmp_path / "lake"
    ensure_topics(h.kafka.admin(), streams.topics)
    server = Live(tmp_path, streams, h.lake_root)
    try:
        wait_for("webserver", lambda: _answers(server), timeout=120, every=1)
        yield h, server
    finally:
        server.close()
        drop_topics(h.kafka.admin(), streams.topics)
        _pg_admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def _answers(server: Live) -> bool:
    assert all(p.poll() is None for p in server.procs.values()), server.log_tail()
    return server.answers()


def lake_materializations(server: Live) -> list[dict]:
    data = server.graphql("""query($path: [String!]!) { assetOrError(assetKey: {path: $path}) { ... on Asset {
        assetMaterializations(limit: 10000) { runId metadataEntries { label
            ... on IntMetadataEntry { intValue } ... on JsonMetadataEntry { jsonString } } } } } }""",
                          {"path": ["lake", "stream", STREAM]})
    out = []
    for m in data["assetOrError"]["assetMaterializations"]:
        md = {e["label"]: e.get("intValue", e.get("jsonString")) for e in m["metadataEntries"]}
        out.append({"run_id": m["runId"], "messages": md["messages"], "ranges": json.loads(md["offset_ranges"])})
    return out


def produce_in_background(h: Harness, count: int, rate: float, seed: int) -> threading.Thread:
    from platform_assets.streaming.produce import FleetStream, produce

    thread = threading.Thread(target=produce, args=(h.kafka, h.topic(), FleetStream(STREAM, machines=4, seed=seed)),
                              kwargs={"rate": rate, "count": count, "duration": None, "progress": False})
    thread.start()
    return thread


def test_the_consumer_runs_in_dagster_stops_on_termination_and_resumes_exactly_once(live):
    h, server = live
    first = wait_for("the sensor's consumer run", server.started_run, timeout=180, every=1)
    assert send(h, 3000, malformed=0.02)["delivered"] == 3000
    wait_for("3000 messages durable", lambda: durable_total(h) == 3000, timeout=60)
    assert_exactly_once(h)

    # Each durable batch is a materialisation of the lake asset, logged by the consumer's run.
    batches = lake_materializations(server)
    assert {b["run_id"] for b in batches} == {first}
    assert sum(b["messages"] for b in batches) == 3000
    assert sorted((r["partition"], r["start"]) for b in batches for r in b["ranges"]) == sorted(
        (p, s) for p, s in h.resources["warehouse"].query(
            "SELECT partition, start_offset FROM streaming.batches WHERE topic = %s", (h.topic(),)).itertuples(index=False))
    latest = server.instance.get_latest_materialization_event(dg.AssetKey(["lake", "stream", STREAM]))
    assert latest is not None and latest.run_id == first

    # Terminated through GraphQL while messages keep arriving: the run ends canceled, cleanly.
    producer = produce_in_background(h, 3000, rate=600, seed=2)
    time.sleep(2)
    result = server.graphql('mutation($id: String!) { terminateRun(runId: $id) { __typename } }', {"id": first})
    assert result["terminateRun"]["__typename"] == "TerminateRunSuccess"
    wait_for("the run canceled", lambda: server.status(first) == "CANCELED", timeout=60)
    assert StreamStore(warehouse=h.resources["warehouse"]).pending_intents(h.topic(), list(range(6))) == []

    # The sensor's next tick starts a new consumer, which resumes where the durable offsets end.
    second = wait_for("a new consumer run", lambda: server.started_run(other_than={first}), timeout=120, every=1)
    producer.join()
    wait_for("6000 messages durable", lambda: durable_total(h) == produced_total(h) == 6000, timeout=90)
    assert_exactly_once(h)
    runs = set(h.resources["warehouse"].query("SELECT DISTINCT run_id FROM streaming.batches WHERE topic = %s",
                                              (h.topic(),))["run_id"])
    assert runs == {first, second}
    keys = {r["runId"]: {t["key"]: t["value"] for t in r["tags"]}.get("dagster/run_key") for r in server.runs()}
    assert keys[second] == f"{STREAM}/shard-0:continuous:after-{first}"

    # SIGKILL of the run's process mid-stream: the code server marks the run failed, the sensor
    # starts another consumer, and it redoes the unrecorded batch exactly.
    pid = next(e.dagster_event.engine_event_data.metadata["pid"].value
               for e in server.instance.all_logs(second)
               if e.dagster_event and e.dagster_event.event_type_value == "ENGINE_EVENT"
               and "pid" in (e.dagster_event.engine_event_data.metadata or {}))
    producer = produce_in_background(h, 4000, rate=1000, seed=3)
    time.sleep(1.5)
    os.kill(int(pid), signal.SIGKILL)
    wait_for("the killed run failed", lambda: server.status(second) == "FAILURE", timeout=60)
    third = wait_for("a consumer after the kill", lambda: server.started_run(other_than={first, second}),
                     timeout=120, every=1)
    producer.join()
    wait_for("10000 messages durable", lambda: durable_total(h) == produced_total(h) == 10000, timeout=90)
    assert_exactly_once(h)
    assert third not in (first, second)

    # Shutting the platform down stops the consumer too (a code server outlives the daemon while a
    # run it launched still executes).
    assert server.shut_down() == [third]
    assert server.instance.get_run_by_id(third).status == dg.DagsterRunStatus.CANCELED


class Killed(BaseException):
    """Stands for the process dying at that instant (not an Exception: nothing may catch it)."""


def consumer_on(h: Harness):
    """Run the shard-0 consumer of ``h``'s stream in this process until ``stop()``; its events."""
    resources = build_resources(resolved=True)  # the lake of this test (LAKE_ROOT)
    stream = h.streams.streams[STREAM]
    target = StreamTarget(STREAM, stream, h.streams, h.streams.contract(STREAM, load_catalogue()),
                          stream_keys(STREAM, stream))

    def run(stop):
        return list(continuous.consume(dg.build_op_context(), target, 0, 1, kafka=resources["kafka"],
                                       lake=resources["lake"], stream_store=resources["stream_store"],
                                       group=group_id(STREAM), topic_key=topic_key(stream.topic), stop=stop))

    return run


def kill_in_second_batch(h: Harness, point: str, monkeypatch) -> list:
    """2000 messages, a consumer dying at ``point`` of its second batch; the intents it left."""
    send(h, 2000, malformed=0.02)
    real, calls = process_batch, {"n": 0}

    def dies_in_second_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            if point == "after_lake_write":
                kwargs["stream_store"] = _Dying(kwargs["stream_store"])
            else:
                kwargs["commit"] = _raise_killed
        return real(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(continuous, "process_batch", dies_in_second_batch)
        with pytest.raises(Killed):
            consumer_on(h)(stop=lambda: False)
    return StreamStore(warehouse=h.resources["warehouse"]).pending_intents(h.topic(), list(range(6)))


@pytest.fixture()
def killable(platform, tmp_path, monkeypatch):
    monkeypatch.setenv("LAKE_ROOT", str(tmp_path / "lake"))
    h = Harness(continuous_catalogue(max_wait=0.3, max_messages=700))
    h.lake_root = tmp_path / "lake"
    ensure_topics(h.kafka.admin(), h.streams.topics)
    yield h
    drop_topics(h.kafka.admin(), h.streams.topics)


@pytest.mark.parametrize("point", ["after_lake_write", "after_transaction"])
def test_a_consumer_killed_mid_batch_is_resumed_without_loss_or_duplicate(killable, monkeypatch, point):
    h = killable
    pending = kill_in_second_batch(h, point, monkeypatch)
    assert bool(pending) == (point == "after_lake_write")  # files written, range named, not recorded

    send(h, 1000, seed=2)
    events = consumer_on(h)(stop=lambda: durable_total(h) == produced_total(h))
    assert durable_total(h) == 3000
    assert_exactly_once(h)
    assert any(isinstance(e, dg.AssetMaterialization) for e in events)
    assert StreamStore(warehouse=h.resources["warehouse"]).pending_intents(h.topic(), list(range(6))) == []


def test_a_switch_to_micro_batch_redoes_exactly_what_the_consumer_left_half_done(killable, monkeypatch):
    pending = kill_in_second_batch(killable, "after_lake_write", monkeypatch)
    assert pending
    streams = killable.streams
    stream = streams.streams[STREAM]
    micro = Harness(streams.model_copy(update={"streams": {STREAM: stream.model_copy(update={
        "mode": "micro_batch", "trigger": stream.trigger.model_copy(update={"min_messages": 1})})}}))
    micro.lake_root = killable.lake_root
    request = micro.tick().run_requests[0]
    ranges = request.run_config["ops"][micro.asset_names[STREAM]]["config"]["ranges"]
    assert sorted((r["partition"], r["start"], r["end"]) for r in ranges) == sorted(pending)
    assert micro.execute(request).success
    micro.drain()
    assert_exactly_once(micro)


class _Dying:
    """A stream store whose transaction never happens: the process dies right before it."""

    def __init__(self, store):
        self._store = store

    def __getattr__(self, name):
        return getattr(self._store, name)

    def record_batch(self, **kwargs):
        raise Killed()


def _raise_killed(offsets):
    raise Killed()
