"""The stream catalogue (platform_assets/streams.yaml), validated against the source catalogue.

A stream reuses a batch source's contract (``contract_of``), so a reading is valid or not by the
same rules whether it arrived in a CSV file or on a topic.

Scale settings differ per environment (a laptop, a 3-broker cluster), so each has one environment
variable that overrides the catalogue without editing it (see ``ENV_OVERRIDES``); the catalogue
holds the defaults.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from platform_assets import namespace
from platform_assets.sources.config import Catalogue, CatalogueError, Contract, load_validated

DEFAULT_STREAMS = Path(__file__).resolve().parent.parent / "streams.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TopicSpec(_Strict):
    partitions: int = Field(gt=0)
    replication_factor: int = Field(default=1, gt=0)


class Trigger(_Strict):
    """A run starts when the backlog reaches ``min_messages`` or has waited ``max_wait_seconds``."""

    min_messages: int = Field(default=1000, gt=0)
    max_wait_seconds: float = Field(default=5.0, gt=0)
    max_batch_messages: int = Field(default=200_000, gt=0)


class Windows(_Strict):
    minutes: int = Field(default=1, gt=0)
    signals: tuple[str, ...]


class Anomalies(_Strict):
    signals: tuple[str, ...]
    history_minutes: int = Field(default=30, gt=0)
    min_history: int = Field(default=20, gt=1)
    zscore: float = Field(default=4.0, gt=0)


class Predictions(_Strict):
    """Score each batch's readings with a model's champion (online features from the stream)."""

    model: str = Field(description="a classification model of the model catalogue (models.yaml)")
    threshold: float = Field(default=0.5, ge=0, le=1, description="a score above this raises an alert")
    reload_seconds: float = Field(default=30.0, gt=0, description="how often the champion alias is checked")
    context_refresh_seconds: float = Field(default=300.0, gt=0,
                                           description="how often the register, maintenance and failures are re-read")


class Compaction(_Strict):
    """Hourly compaction of the stream's lake files (platform_assets/streaming/compaction.py)."""

    start: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}-\d{2}:\d{2}$",
                       description="first hour partition, YYYY-MM-DD-HH:MM (UTC)")
    grace_minutes: int = Field(default=10, ge=0, description="an hour is closed this long after it ends")
    cron: str = Field(default="15 * * * *", description="when the latest closed hour is compacted")


class StreamConfig(_Strict):
    topic: str
    contract_of: str
    event_time: str
    key: str
    trigger: Trigger = Trigger()
    windows: Windows | None = None
    anomalies: Anomalies | None = None
    # Where a new consumer starts when nothing has been written yet. Partitions added to the topic
    # later always start at their low watermark, whatever this says.
    start_from: str = Field(default="earliest", pattern="^(earliest|latest)$")
    # Concurrent micro-batch runs: the partitions are split into this many disjoint shards
    # (partition % parallelism), each making one batch durable at a time (a standby run may be warming up behind it).
    parallelism: int = Field(default=1, gt=0)
    # micro_batch: one Dagster run per batch, launched by the sensor (cheap when idle, seconds of
    # latency). continuous: one long-running run per shard, launched and restarted by the sensor,
    # making a batch every ``max_wait`` seconds or ``max_messages`` messages, whichever comes first.
    mode: str = Field(default="micro_batch", pattern="^(micro_batch|continuous)$")
    max_wait: float = Field(default=1.0, gt=0, description="continuous: a batch is due this many seconds after its first message was produced")
    max_messages: int = Field(default=20_000, gt=0, description="continuous: messages per batch at most")
    # continuous: what reads the topic. python: the confluent-kafka consumer; spark: Spark Structured
    # Streaming (platform_assets/streaming/spark_engine.py). Both run the same process_batch.
    engine: str = Field(default="python", pattern="^(python|spark)$")
    predictions: Predictions | None = None
    compaction: Compaction | None = None

    @model_validator(mode="after")
    def _anomalies_need_windows(self) -> StreamConfig:
        if self.anomalies and not self.windows:
            raise ValueError("anomalies are computed from the windowed statistics: declare windows too")
        if self.predictions:
            from platform_assets.ml.features import HOURLY_FROM_READINGS

            needed = {col for col, _ in HOURLY_FROM_READINGS.values()}
            missing = needed - set(self.windows.signals if self.windows else ())
            if missing:
                raise ValueError(f"predictions read the online features, made from the windows of {sorted(needed)}: "
                                 f"add {sorted(missing)} to windows.signals")
        if self.anomalies and self.windows:
            missing = set(self.anomalies.signals) - set(self.windows.signals)
            if missing:
                raise ValueError(f"anomaly signals {sorted(missing)} are not among the window signals")
        return self


class StreamCatalogue(_Strict):
    topics: dict[str, TopicSpec]
    alerts_topic: str
    # Where streams with ``predictions`` send their scores (keyed by prediction id).
    predictions_topic: str | None = None
    streams: dict[str, StreamConfig]

    @model_validator(mode="after")
    def _topics_declared(self) -> StreamCatalogue:
        for name, stream in self.streams.items():
            if stream.topic not in self.topics:
                raise ValueError(f"stream {name}: topic {stream.topic!r} is not declared under topics")
        if self.alerts_topic not in self.topics:
            raise ValueError(f"alerts_topic {self.alerts_topic!r} is not declared under topics")
        scored = sorted(n for n, s in self.streams.items() if s.predictions)
        if scored and self.predictions_topic is None:
            raise ValueError(f"streams {scored} declare predictions: name their topic in predictions_topic")
        if self.predictions_topic is not None and self.predictions_topic not in self.topics:
            raise ValueError(f"predictions_topic {self.predictions_topic!r} is not declared under topics")
        return self

    def contract(self, stream: str, sources: Catalogue) -> Contract:
        return sources.sources[self.streams[stream].contract_of].contract


# Setting → (where it applies, field): "N" applies to every topic or stream, "name=N,name=N" to those named.
ENV_OVERRIDES = {
    "STREAM_TOPIC_PARTITIONS": ("topics", "partitions"),
    "STREAM_TOPIC_REPLICATION_FACTOR": ("topics", "replication_factor"),
    "STREAM_PARALLELISM": ("streams", "parallelism"),
}


def _parse_override(var: str, value: str, names) -> dict[str, int]:
    """``"12"`` → every name; ``"a=12,b=3"`` → those names. Unknown names fail: a typo must not pass silently."""
    value = value.strip()
    try:
        if "=" not in value:
            return dict.fromkeys(names, int(value))
        pairs = [item.split("=", 1) for item in value.split(",") if item.strip()]
        parsed = {k.strip(): int(v) for k, v in pairs}
    except ValueError:
        raise CatalogueError(f"{var}={value!r}: expected N or name=N,name=N") from None
    unknown = sorted(set(parsed) - set(names))
    if unknown:
        raise CatalogueError(f"{var}: {unknown} not in the stream catalogue (known: {sorted(names)})")
    return parsed


def apply_env_overrides(catalogue: StreamCatalogue, environ=os.environ) -> StreamCatalogue:
    """The catalogue with the scale settings of this environment applied (validated like the file)."""
    data = catalogue.model_dump()
    for var, (section, field) in ENV_OVERRIDES.items():
        if environ.get(var, "").strip():
            for name, n in _parse_override(var, environ[var], data[section]).items():
                data[section][name][field] = n
    try:
        return StreamCatalogue.model_validate(data)
    except ValueError as exc:
        raise CatalogueError(f"stream catalogue after {', '.join(ENV_OVERRIDES)}: {exc}") from None


def apply_namespace(catalogue: StreamCatalogue, ns: str) -> StreamCatalogue:
    """Topic names under ``PLATFORM_NAMESPACE`` (``<topic>.<ns>``, platform_assets/namespace.py): two
    namespaces on one broker never read or write each other's topics. Unchanged without one."""
    if not ns:
        return catalogue
    data = catalogue.model_dump()
    data["topics"] = {namespace.topic(name, ns): spec for name, spec in data["topics"].items()}
    for field in [k for k, v in data.items() if k.endswith("_topic") and v]:  # alerts_topic, predictions_topic
        data[field] = namespace.topic(data[field], ns)
    for stream in data["streams"].values():
        stream["topic"] = namespace.topic(stream["topic"], ns)
    return StreamCatalogue.model_validate(data)


def load_streams(sources: Catalogue, path: str | os.PathLike | None = None, environ=os.environ) -> StreamCatalogue:
    path = Path(path or environ.get("PLATFORM_STREAMS_FILE") or DEFAULT_STREAMS)
    catalogue = apply_env_overrides(load_validated(path, StreamCatalogue, "stream catalogue"), environ)
    catalogue = apply_namespace(catalogue, namespace.current(None if environ is os.environ else environ))
    for name, stream in catalogue.streams.items():
        source = sources.sources.get(stream.contract_of)
        if source is None:
            known = ", ".join(sources.sources) or "none"
            raise CatalogueError(
                f"stream catalogue {path}: stream {name}: contract_of {stream.contract_of!r} is not a source in "
                f"the source catalogue (its sources: {known}). Fix: declare source {stream.contract_of!r}, "
                f"name one of the sources in contract_of, or remove the stream; with a catalogue of your own, "
                f"point PLATFORM_STREAMS_FILE at your streams, or use PLATFORM_CATALOGUE_DIR (streams.yaml "
                f"there is optional)")
        columns = source.contract.columns
        for col in [stream.event_time, stream.key, *(stream.windows.signals if stream.windows else ())]:
            if col not in columns:
                raise CatalogueError(f"stream catalogue {path}: stream {name}: column {col!r} is not in "
                                     f"the {stream.contract_of} contract")
    return catalogue
