"""The declarative source catalogue: one YAML file, validated by pydantic, one entry per source.

A user adds a source by adding an entry; the asset factory turns each entry into a raw lake asset
(the source's bytes in their original format) and a clean lake asset (typed Parquet) with a
quarantine table beside it. Errors name the file and the offending entry.
"""

from __future__ import annotations

import codecs
import datetime as dt
import os
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ColumnType = Literal["string", "int", "float", "bool", "timestamp", "date", "json"]
CATALOGUE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_CATALOGUE = CATALOGUE_DIR / "sources.yaml"
# Text that means "no value" in files, as pandas and Arrow read it by default.
DEFAULT_NULL_VALUES = ("", "NA", "N/A", "null", "NaN")


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
    # strptime format of a date or timestamp column ("%Y/%m/%d"); ISO 8601 and common forms otherwise.
    format: str | None = None
    # Text meaning "no value" in this column; replaces the contract's null_values for it.
    null_values: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _range_only_for_numbers(self) -> ColumnContract:
        if (self.min is not None or self.max is not None) and self.type not in ("int", "float"):
            raise ValueError(f"min/max only apply to int and float columns, not {self.type}")
        if self.format is not None and self.type not in ("date", "timestamp"):
            raise ValueError(f"format only applies to date and timestamp columns, not {self.type}")
        if self.format is not None and "%" not in self.format:
            raise ValueError(f"format {self.format!r} is not a strptime format (e.g. \"%Y/%m/%d\")")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class Contract(_Strict):
    columns: dict[str, ColumnContract]
    primary_key: tuple[str, ...] = ()
    # Above this fraction of rows breaking the contract, the source is broken wholesale: fail the run.
    max_bad_fraction: float = Field(default=0.5, ge=0.0, le=1.0)
    # Text that means "no value" in every column (a column's own null_values replace it).
    null_values: tuple[str, ...] = DEFAULT_NULL_VALUES

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
    # JSON sources only: also keep every record whole, as a document in this collection of the
    # document store (asset documents/<source>), for queries on nested fields the table flattens.
    documents: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")

    @model_validator(mode="after")
    def _documents_from_json(self) -> _SourceBase:
        if self.documents is not None and getattr(self, "kind", None) not in ("json", "rest"):
            raise ValueError("documents: only json and rest sources are kept as documents")
        return self

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

    ``path`` is relative to that store (or absolute) and may hold ``{date}`` (YYYY-MM-DD) for
    partitioned sources; a path without ``{date}`` is read whole and its rows are split by the
    partitioning column. JSON is read as JSON Lines (one document per line), a JSON array of
    records, or the array found at ``records`` (a dotted path, e.g. ``data.items``) inside one
    document; ``format: auto`` tells lines from an array by the first character. CSV reading
    follows ``delimiter``, ``quote``, ``encoding`` and ``header`` (without a header, the columns are
    the contract's, in declared order).
    """

    kind: Literal["csv", "json", "parquet"]
    path: str
    connection: str = "source_files"
    format: Literal["auto", "lines", "array"] = "auto"
    records: str | None = None
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    quote: str = Field(default='"', min_length=1, max_length=1)
    encoding: str = "utf-8"
    header: bool = True

    @field_validator("path")
    @classmethod
    def _known_placeholders(cls, value: str) -> str:
        try:
            value.format(date="")
        except (KeyError, IndexError) as exc:
            raise ValueError(f"unknown placeholder {exc} in path; only {{date}} is known") from None
        return value

    @model_validator(mode="after")
    def _options_fit_the_kind(self) -> FileSource:
        applies = {"format": ("json",), "records": ("json",), "delimiter": ("csv",), "quote": ("csv",),
                   "header": ("csv",), "encoding": ("csv", "json")}
        wrong = sorted(f for f in self.model_fields_set & set(applies) if self.kind not in applies[f])
        if wrong:
            raise ValueError(f"{', '.join(wrong)}: not an option of {self.kind} sources")
        if self.records is not None and self.format == "lines":
            raise ValueError("records is a path inside one JSON document; it does not apply to format: lines")
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise ValueError(f"unknown encoding {self.encoding!r}") from None
        return self


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


class MongoSource(_SourceBase):
    """A collection of a MongoDB-compatible document store (FerretDB locally, MongoDB or Atlas).

    ``filter`` and ``projection`` are MongoDB's own (``{"status": {"$ne": "draft"}}``, ``{"secret": 0}``);
    with ``partitioning`` each daily partition reads the documents whose field (a BSON date or an
    ISO 8601 string) falls on that day, so a partitioned source loads incrementally. Documents land
    in the raw zone as JSON Lines, nested fields intact; the contract's ``json`` type keeps them.
    """

    kind: Literal["mongodb"]
    connection: str = "documents"
    collection: str = Field(min_length=1)
    filter: dict = Field(default_factory=dict)
    projection: dict | None = None


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
    FileSource | PostgresSource | MySQLSource | RestSource | MongoSource, Field(discriminator="kind")
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
    # The daily calendar of partitioned sources; a catalogue of snapshots only needs none.
    partitions: PartitionWindow | None = None
    sources: dict[str, SourceConfig] = Field(default_factory=dict)

    @field_validator("sources")
    @classmethod
    def _names_are_identifiers(cls, value: dict) -> dict:
        for name in value:
            if not name.isidentifier() or name != name.lower():
                raise ValueError(f"source name {name!r} must be a lower-case identifier")
        return value

    @model_validator(mode="after")
    def _partitioned_sources_need_a_calendar(self) -> Catalogue:
        partitioned = [n for n, s in self.sources.items() if s.partitioning is not None]
        if partitioned and self.partitions is None:
            raise ValueError(f"source(s) {', '.join(partitioned)} are partitioned: declare "
                             f"partitions: {{start_date: YYYY-MM-DD}}")
        return self


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


# Catalogue kind → (its own setting, file name). The demo's files sit beside this package.
CATALOGUE_FILES = {"sources": ("PLATFORM_SOURCES_FILE", "sources.yaml"),
                   "streams": ("PLATFORM_STREAMS_FILE", "streams.yaml"),
                   "models": ("PLATFORM_MODELS_FILE", "models.yaml")}


def catalogue_path(kind: str, environ=os.environ) -> Path | None:
    """Where the ``kind`` catalogue is read from, or None when this environment has none.

    ``PLATFORM_<KIND>_FILE`` names a file; otherwise ``PLATFORM_CATALOGUE_DIR`` names a folder of
    one's own catalogues (each file optional, the demo's never loaded); otherwise the demo's.
    """
    setting, filename = CATALOGUE_FILES[kind]
    if environ.get(setting):
        return Path(environ[setting])
    folder = environ.get("PLATFORM_CATALOGUE_DIR")
    if folder:
        path = Path(folder) / filename
        if not Path(folder).is_dir():
            raise CatalogueError(f"PLATFORM_CATALOGUE_DIR={folder} is not a folder")
        return path if path.exists() else None
    return CATALOGUE_DIR / filename


def load_catalogue(path: str | os.PathLike | None = None, environ=os.environ) -> Catalogue:
    path = Path(path) if path else catalogue_path("sources", environ)
    if path is None:
        return Catalogue()
    return load_validated(path, Catalogue, "source catalogue")
