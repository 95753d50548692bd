"""The declarative source catalogue: one YAML file, validated by pydantic, one entry per source.

A user adds a source by adding an entry; the asset factory turns each entry into a raw lake asset
(the source's bytes in their original format) and a clean lake asset (typed Parquet) with a
quarantine table beside it. Errors name the file and the offending entry.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ColumnType = Literal["string", "int", "float", "bool", "timestamp", "date", "json"]
DEFAULT_CATALOGUE = Path(__file__).resolve().parent.parent / "sources.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnContract(_Strict):
    type: ColumnType
    required: bool = False
    # Physical limits: values outside are outliers (nulled and counted by the Spark cleaning step).
    min: float | None = None
    max: float | None = None
    # Allowed values for categorical columns; anything else is a contract violation (quarantined).
    allowed: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _range_only_for_numbers(self) -> ColumnContract:
        if (self.min is not None or self.max is not None) and self.type not in ("int", "float"):
            raise ValueError(f"min/max only apply to int and float columns, not {self.type}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class Contract(_Strict):
    columns: dict[str, ColumnContract]
    primary_key: tuple[str, ...] = ()
    # Above this fraction of rows breaking the contract, the source is broken wholesale: fail the run.
    max_bad_fraction: float = Field(default=0.5, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _keys_are_required_columns(self) -> Contract:
        for key in self.primary_key:
            if key not in self.columns:
                raise ValueError(f"primary key column {key!r} is not declared in columns")
        return self


class Partitioning(_Strict):
    """Daily partitions over an event-time column. Absent: the source is a snapshot (unpartitioned)."""

    column: str
    granularity: Literal["daily"] = "daily"


class _SourceBase(_Strict):
    description: str = ""
    contract: Contract
    partitioning: Partitioning | None = None
    # Raw columns renamed before the contract applies: {raw_name: contract_name}.
    rename: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _partition_column_declared(self) -> _SourceBase:
        p = self.partitioning
        if p is not None:
            col = self.contract.columns.get(p.column)
            if col is None:
                raise ValueError(f"partitioning column {p.column!r} is not declared in contract.columns")
            if col.type not in ("timestamp", "date"):
                raise ValueError(f"partitioning column {p.column!r} must be a timestamp or date, not {col.type}")
        return self


class FileSource(_SourceBase):
    """A file, or a folder of files, under the file store named by ``connection``.

    ``path`` is relative to that store and may hold ``{date}`` (YYYY-MM-DD) for partitioned sources;
    a path without ``{date}`` is read whole and its rows are split by the partitioning column.
    JSON means JSON Lines (one document per line), the usual shape of exported events and logs.
    """

    kind: Literal["csv", "json", "parquet"]
    path: str
    connection: str = "source_files"

    @field_validator("path")
    @classmethod
    def _known_placeholders(cls, value: str) -> str:
        try:
            value.format(date="")
        except (KeyError, IndexError) as exc:
            raise ValueError(f"unknown placeholder {exc} in path; only {{date}} is known") from None
        return value


class _DatabaseSource(_SourceBase):
    table: str | None = None
    query: str | None = None
    # The Dagster resource key of the database connection (see resources/sources.py).
    connection: str

    @model_validator(mode="after")
    def _table_or_query(self) -> _DatabaseSource:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of table or query")
        return self


class PostgresSource(_DatabaseSource):
    kind: Literal["postgres"]


class MySQLSource(_DatabaseSource):
    kind: Literal["mysql"]

    @model_validator(mode="after")
    def _table_only(self) -> MySQLSource:
        if self.query is not None:
            raise ValueError("mysql sources read a table; give table, not query")
        return self


class Pagination(_Strict):
    """Page-number pagination: ``?{page_param}=N&{size_param}=M`` until ``next_field`` is empty."""

    page_param: str = "page"
    size_param: str = "page_size"
    page_size: int = Field(default=100, gt=0)
    items_field: str = "items"
    next_field: str = "next_page"
    max_pages: int = Field(default=10_000, gt=0)


class RestSource(_SourceBase):
    """A paginated JSON endpoint under the API named by ``connection`` (a Dagster resource key)."""

    kind: Literal["rest"]
    connection: str
    endpoint: str
    pagination: Pagination = Pagination()

    @model_validator(mode="after")
    def _snapshot_only(self) -> RestSource:
        if self.partitioning is not None:
            raise ValueError("rest sources are read as snapshots; partitioning is not supported for them yet")
        return self


SourceConfig = Annotated[
    FileSource | PostgresSource | MySQLSource | RestSource, Field(discriminator="kind")
]


class PartitionWindow(_Strict):
    start_date: dt.date
    end_date: dt.date | None = None  # exclusive; None: up to today

    @model_validator(mode="after")
    def _ordered(self) -> PartitionWindow:
        if self.end_date is not None and self.end_date <= self.start_date:
            raise ValueError("end_date must be after start_date")
        return self


class Catalogue(_Strict):
    partitions: PartitionWindow
    sources: dict[str, SourceConfig]

    @field_validator("sources")
    @classmethod
    def _names_are_identifiers(cls, value: dict) -> dict:
        for name in value:
            if not name.isidentifier() or name != name.lower():
                raise ValueError(f"source name {name!r} must be a lower-case identifier")
        return value


class CatalogueError(ValueError):
    """A catalogue file is unreadable or invalid; the message names the file and the fields."""


def load_validated(path: Path, model: type[BaseModel], what: str):
    """Read a YAML catalogue and validate it, with errors that name the file and each bad field."""
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise CatalogueError(f"cannot read {what} {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise CatalogueError(f"{what} {path} is not valid YAML: {exc}") from exc
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{what} {path} is invalid:"]
        lines += [f"  - {'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()]
        raise CatalogueError("\n".join(lines)) from None


def load_catalogue(path: str | os.PathLike | None = None) -> Catalogue:
    return load_validated(Path(path or os.environ.get("PLATFORM_SOURCES_FILE") or DEFAULT_CATALOGUE),
                          Catalogue, "source catalogue")
