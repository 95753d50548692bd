"""The data lake: a root folder or object-store URI, reached through pyarrow's filesystems.

Zones under the root: ``raw/`` (each source's bytes in their original format), ``clean/`` (typed
Parquet, daily ``date=YYYY-MM-DD`` partition folders), ``processed/`` (Spark output). Locally the
root is ``data/lake``; in production an ``s3://bucket/prefix`` URI, with credentials, region and
endpoint from the standard AWS environment variables that pyarrow reads (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, ``AWS_ENDPOINT_URL`` for an S3-compatible store), or
pyarrow's URI options (``s3://bucket/prefix?endpoint_override=host:port&scheme=http``).
"""

from __future__ import annotations

import io
import os
import posixpath
from collections.abc import Iterable

import dagster as dg
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import PrivateAttr


class LakeResource(dg.ConfigurableResource):
    """Reads and writes lake objects by path relative to the lake root."""

    root: str

    _fs: pafs.FileSystem | None = PrivateAttr(default=None)
    _base: str = PrivateAttr(default="")

    def _filesystem(self) -> tuple[pafs.FileSystem, str]:
        if self._fs is None:
            if "://" in self.root:
                self._fs, self._base = pafs.FileSystem.from_uri(self.root)
            else:
                self._fs, self._base = pafs.LocalFileSystem(), self.root
            self._base = self._base.rstrip("/")
        return self._fs, self._base

    def path(self, *parts: str) -> str:
        """Path of an object inside the lake filesystem (no scheme)."""
        _, base = self._filesystem()
        return posixpath.join(base, *parts)

    @property
    def is_local(self) -> bool:
        """True for a folder on this machine's filesystem (a plain path or ``file://``)."""
        return "://" not in self.root or self.root.startswith("file://")

    def uri(self, *parts: str) -> str:
        """Location of an object as other engines (Spark, people) name it.

        Local paths are absolute: Spark executors on a cluster run in another working directory.
        ``s3://`` becomes ``s3a://`` (Hadoop's S3 connector); URI query options are pyarrow's, not
        part of the location, and are dropped.
        """
        if self.is_local:
            return os.path.abspath(self.path(*parts))
        scheme = self.root.split("://", 1)[0]
        spark_scheme = {"s3": "s3a"}.get(scheme, scheme)
        return f"{spark_scheme}://{self.path(*parts)}"

    # -- bytes -----------------------------------------------------------------------------------
    def write_bytes(self, rel: str, data: bytes) -> str:
        fs, _ = self._filesystem()
        full = self.path(rel)
        fs.create_dir(posixpath.dirname(full), recursive=True)
        tmp = full + ".tmp"
        with fs.open_output_stream(tmp) as out:
            out.write(data)
        fs.move(tmp, full)  # readers never see a half-written object
        return full

    def read_bytes(self, rel: str) -> bytes:
        fs, _ = self._filesystem()
        with fs.open_input_stream(self.path(rel)) as src:
            return src.read()

    def list_files(self, rel_dir: str) -> list[str]:
        """Relative paths of the files directly under ``rel_dir`` (sorted); empty if it is missing."""
        fs, base = self._filesystem()
        infos = fs.get_file_info(pafs.FileSelector(self.path(rel_dir), allow_not_found=True))
        files = [i.path for i in infos if i.type == pafs.FileType.File and not i.path.endswith(".tmp")]
        return sorted(posixpath.relpath(p, base) for p in files)

    def exists(self, rel: str) -> bool:
        fs, _ = self._filesystem()
        return fs.get_file_info(self.path(rel)).type != pafs.FileType.NotFound

    def replace_dir(self, rel_dir: str, files: Iterable[tuple[str, bytes]]) -> list[str]:
        """Replace a folder's content with ``files`` (name, bytes): a rerun never leaves stale files."""
        fs, _ = self._filesystem()
        full = self.path(rel_dir)
        if fs.get_file_info(full).type == pafs.FileType.Directory:
            fs.delete_dir_contents(full)
        return [self.write_bytes(posixpath.join(rel_dir, name), data) for name, data in files]

    def delete_file(self, rel: str) -> None:
        fs, _ = self._filesystem()
        fs.delete_file(self.path(rel))

    def delete_dir(self, rel_dir: str) -> None:
        fs, _ = self._filesystem()
        if fs.get_file_info(self.path(rel_dir)).type == pafs.FileType.Directory:
            fs.delete_dir(self.path(rel_dir))

    # -- Parquet ---------------------------------------------------------------------------------
    def write_parquet(self, rel: str, table: pa.Table) -> str:
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        return self.write_bytes(rel, buf.getvalue())

    def read_parquet(self, rel: str) -> pa.Table:
        fs, _ = self._filesystem()
        return pq.read_table(self.path(rel), filesystem=fs)
