"""The stream catalogue (platform_assets/streams.yaml), validated against the source catalogue.

A stream reuses a batch source's contract (``contract_of``), so a reading is valid or not by the
same rules whether it arrived in a CSV file or on a topic.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

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


class StreamConfig(_Strict):
    topic: str
    contract_of: str
    event_time: str
    key: str
    trigger: Trigger = Trigger()
    windows: Windows | None = None
    anomalies: Anomalies | None = None
    # Where a new consumer starts when nothing has been written yet.
    start_from: str = Field(default="earliest", pattern="^(earliest|latest)$")

    @model_validator(mode="after")
    def _anomalies_need_windows(self) -> StreamConfig:
        if self.anomalies and not self.windows:
            raise ValueError("anomalies are computed from the windowed statistics: declare windows too")
        if self.anomalies and self.windows:
            missing = set(self.anomalies.signals) - set(self.windows.signals)
            if missing:
                raise ValueError(f"anomaly signals {sorted(missing)} are not among the window signals")
        return self


class StreamCatalogue(_Strict):
    topics: dict[str, TopicSpec]
    alerts_topic: str
    streams: dict[str, StreamConfig]

    @model_validator(mode="after")
    def _topics_declared(self) -> StreamCatalogue:
        for name, stream in self.streams.items():
            if stream.topic not in self.topics:
                raise ValueError(f"stream {name}: topic {stream.topic!r} is not declared under topics")
        if self.alerts_topic not in self.topics:
            raise ValueError(f"alerts_topic {self.alerts_topic!r} is not declared under topics")
        return self

    def contract(self, stream: str, sources: Catalogue) -> Contract:
        return sources.sources[self.streams[stream].contract_of].contract


def load_streams(sources: Catalogue, path: str | os.PathLike | None = None) -> StreamCatalogue:
    path = Path(path or os.environ.get("PLATFORM_STREAMS_FILE") or DEFAULT_STREAMS)
    catalogue = load_validated(path, StreamCatalogue, "stream catalogue")
    for name, stream in catalogue.streams.items():
        source = sources.sources.get(stream.contract_of)
        if source is None:
            raise CatalogueError(f"stream catalogue {path}: stream {name}: contract_of {stream.contract_of!r} "
                                 f"is not a source in the source catalogue")
        columns = source.contract.columns
        for col in [stream.event_time, stream.key, *(stream.windows.signals if stream.windows else ())]:
            if col not in columns:
                raise CatalogueError(f"stream catalogue {path}: stream {name}: column {col!r} is not in "
                                     f"the {stream.contract_of} contract")
    return catalogue
