"""Connections to the systems the platform ingests from, one resource per kind of system.

Each returns a source's data as raw objects (a name and bytes) in the source's own format, so the
raw lake zone keeps exactly what arrived: files byte for byte, database rows as Parquet with the
database's own column types, API pages as the JSON bodies received. Connection failures raise
``SourceUnavailable`` naming the source and the endpoint; the asset's retry policy then applies.
"""

from __future__ import annotations

import datetime as dt
import io
import posixpath
from collections.abc import Sequence
from typing import NamedTuple

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from platform_assets.sources.config import FileSource, MySQLSource, PostgresSource, RestSource


class RawObject(NamedTuple):
    name: str
    data: bytes


# Raw objects per partition date; the key is None for snapshot (unpartitioned) sources.
RawBatch = dict[dt.date | None, list[RawObject]]


class SourceUnavailable(RuntimeError):
    """A source could not be reached or read; the message names the source and where it looked."""


def _dates_or_snapshot(dates: Sequence[dt.date] | None) -> list[dt.date | None]:
    return list(dates) if dates else [None]


class FileStoreResource(dg.ConfigurableResource):
    """A folder (or object-store prefix) where upstream systems drop files."""

    root: str

    def _resolve(self, rel: str) -> str:
        return rel if rel.startswith("/") or "://" in rel else posixpath.join(self.root, rel)

    def fetch(self, name: str, cfg: FileSource, dates: Sequence[dt.date] | None) -> RawBatch:
        import pyarrow.fs as pafs

        batch: RawBatch = {}
        for day in _dates_or_snapshot(dates):
            path = self._resolve(cfg.path.format(date=day.isoformat() if day else ""))
            fs, fpath = pafs.FileSystem.from_uri(path) if "://" in path else (pafs.LocalFileSystem(), path)
            info = fs.get_file_info(fpath)
            if info.type == pafs.FileType.NotFound:
                raise SourceUnavailable(f"source {name}: file {path} does not exist")
            if info.type == pafs.FileType.Directory:
                infos = fs.get_file_info(pafs.FileSelector(fpath, recursive=False))
                paths = sorted(i.path for i in infos if i.type == pafs.FileType.File)
            else:
                paths = [fpath]
            objects = []
            for p in paths:
                try:
                    with fs.open_input_stream(p) as src:
                        objects.append(RawObject(posixpath.basename(p), src.read()))
                except OSError as exc:
                    raise SourceUnavailable(f"source {name}: cannot read file {p}: {exc}") from exc
            batch[day] = objects
        return batch


def _frame_to_parquet(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buf)
    return buf.getvalue()


def _window_query(cfg: PostgresSource | MySQLSource, quote: str, day: dt.date | None) -> tuple[str, tuple]:
    base = cfg.query if cfg.query else f"SELECT * FROM {cfg.table}"
    if day is None or cfg.partitioning is None:
        return base, ()
    col = f"{quote}{cfg.partitioning.column}{quote}"
    start = dt.datetime.combine(day, dt.time())
    return (
        f"SELECT * FROM ({base}) AS src WHERE {col} >= %s AND {col} < %s",
        (start, start + dt.timedelta(days=1)),
    )


class _DatabaseResource(dg.ConfigurableResource):
    host: str
    port: int
    user: str
    password: str
    database: str

    def _label(self) -> str:
        return f"{self.host}:{self.port}/{self.database}"

    def _connect(self):  # pragma: no cover - implemented by subclasses
        raise NotImplementedError

    _quote = '"'

    def read_frame(self, sql: str, params: tuple = ()) -> pd.DataFrame:
        conn = self._connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                columns = [d[0] for d in cur.description]
                rows = cur.fetchall()
        finally:
            conn.close()
        return pd.DataFrame.from_records(rows, columns=columns)

    def fetch(self, name: str, cfg: PostgresSource | MySQLSource, dates: Sequence[dt.date] | None) -> RawBatch:
        batch: RawBatch = {}
        label = (cfg.table or "query").replace(".", "_")
        for day in _dates_or_snapshot(dates):
            sql, params = _window_query(cfg, self._quote, day)
            try:
                frame = self.read_frame(sql, params)
            except SourceUnavailable as exc:
                raise SourceUnavailable(f"source {name}: {exc}") from exc
            except Exception as exc:  # driver errors: bad table name, permissions, ...
                raise SourceUnavailable(
                    f"source {name}: query on {cfg.kind} {self._label()} failed: {exc}"
                ) from exc
            batch[day] = [RawObject(f"{label}.parquet", _frame_to_parquet(frame))]
        return batch


class PostgresSourceResource(_DatabaseResource):
    """An operational PostgreSQL database read as a source."""

    def _connect(self):
        import psycopg2

        try:
            return psycopg2.connect(
                host=self.host, port=self.port, user=self.user, password=self.password,
                dbname=self.database, connect_timeout=5,
            )
        except psycopg2.OperationalError as exc:
            raise SourceUnavailable(f"cannot connect to PostgreSQL at {self._label()}: {exc}".strip()) from exc


class MySQLSourceResource(_DatabaseResource):
    """A MySQL or MariaDB database read as a source."""

    _quote = "`"

    def _connect(self):
        import pymysql

        try:
            return pymysql.connect(
                host=self.host, port=self.port, user=self.user, password=self.password,
                database=self.database, connect_timeout=5,
            )
        except pymysql.err.OperationalError as exc:
            raise SourceUnavailable(f"cannot connect to MySQL at {self._label()}: {exc}") from exc


class RestApiResource(dg.ConfigurableResource):
    """A JSON HTTP API, read page by page."""

    base_url: str
    timeout_seconds: float = 10.0

    def fetch(self, name: str, cfg: RestSource, dates: Sequence[dt.date] | None) -> RawBatch:
        import requests

        pg = cfg.pagination
        url = self.base_url.rstrip("/") + cfg.endpoint
        pages: list[RawObject] = []
        page = 1
        while page is not None:
            if len(pages) >= pg.max_pages:
                raise SourceUnavailable(f"source {name}: {url} returned more than {pg.max_pages} pages")
            params = {pg.page_param: page, pg.size_param: pg.page_size}
            try:
                resp = requests.get(url, params=params, timeout=self.timeout_seconds)
            except requests.RequestException as exc:
                raise SourceUnavailable(f"source {name}: cannot reach {url}: {exc}") from exc
            if resp.status_code != 200:
                raise SourceUnavailable(
                    f"source {name}: {url} page {page} answered HTTP {resp.status_code}: {resp.text[:200]}"
                )
            try:
                body = resp.json()
                items = body[pg.items_field]
                if not isinstance(items, list):
                    raise TypeError(f"{pg.items_field!r} is not a list")
            except (ValueError, KeyError, TypeError) as exc:
                raise SourceUnavailable(
                    f"source {name}: {url} page {page} is not a page of items ({exc!r})"
                ) from exc
            pages.append(RawObject(f"page-{page:05d}.json", resp.content))
            page = body.get(pg.next_field)
        return {None: pages}

