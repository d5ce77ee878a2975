"""Blob storage: bytes under keys, and nothing else.

The registry keeps what a blob is (its file's owner, name and size); a store only keeps bytes.
Keys are made by the caller from random ids, never from client input, and a store may refuse
any other shape. Two stores, chosen by FILE_STORAGE:

- `directory` (the default), `LocalDirectoryStore`: one file per key under FILE_STORAGE_DIR,
  written to a temporary file in the same directory and renamed into place, so a reader never
  sees a partial blob and a failed write leaves nothing behind. Several hosts can share it only
  through a shared mount.
- `database`, `DatabaseStore`: the bytes in the registry's own database, in 1 MiB rows of
  `file_blobs`, written in one transaction of their own. Every host already shares the registry
  (PostgreSQL in production), so every host reads what any host stored, with nothing more to run.
"""

from __future__ import annotations

import io
import itertools
import os
import re
import tempfile
from pathlib import Path
from typing import BinaryIO, Protocol

from flask import Flask, current_app
from sqlalchemy import delete, func, insert, select

from ..models import FileBlob

_KEY_SHAPE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CHUNK = 1024 * 1024
_EXTENSION_KEY = "bridge.blobs"


class BlobStore(Protocol):
    """Where file contents live."""

    def put(self, key: str, stream: BinaryIO) -> int:
        """Store everything `stream` yields under `key`; returns the number of bytes stored.
        A failure (the stream's own errors included) leaves no blob."""

    def open(self, key: str) -> BinaryIO:
        """The stored bytes, for reading; FileNotFoundError when there are none."""

    def delete(self, key: str) -> None:
        """Remove the blob; a missing one is not an error."""


class LocalDirectoryStore:
    """Blobs as files in one directory."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        if not _KEY_SHAPE.fullmatch(key):
            raise ValueError(f"not a blob key: {key!r}")
        return self.root / key

    def put(self, key: str, stream: BinaryIO) -> int:
        path = self._path(key)
        fd, temporary = tempfile.mkstemp(dir=self.root, prefix=".upload-")
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(_CHUNK):
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return size

    def open(self, key: str) -> BinaryIO:
        return self._path(key).open("rb")

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class DatabaseStore:
    """Blobs as rows of the registry's database, a chunk per row."""

    def __init__(self, engine):
        self.engine = engine

    @staticmethod
    def _checked(key: str) -> str:
        if not _KEY_SHAPE.fullmatch(key):
            raise ValueError(f"not a blob key: {key!r}")
        return key

    def put(self, key: str, stream: BinaryIO) -> int:
        self._checked(key)
        size = 0
        # Its own transaction: the blob is whole before the file's row names it, or not there.
        with self.engine.begin() as connection:
            for position in itertools.count():
                chunk = stream.read(_CHUNK)
                if not chunk:
                    break
                connection.execute(insert(FileBlob).values(key=key, position=position,
                                                           data=chunk))
                size += len(chunk)
        return size

    def open(self, key: str) -> BinaryIO:
        self._checked(key)
        with self.engine.connect() as connection:
            count = connection.scalar(select(func.count()).select_from(FileBlob)
                                      .where(FileBlob.key == key))
        if not count:
            raise FileNotFoundError(key)
        return io.BufferedReader(_RowReader(self.engine, key, count), buffer_size=_CHUNK)

    def delete(self, key: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(delete(FileBlob).where(FileBlob.key == self._checked(key)))


class _RowReader(io.RawIOBase):
    """A blob's rows read one at a time, so a large file never sits in memory whole."""

    def __init__(self, engine, key: str, count: int):
        self.engine, self.key, self.count = engine, key, count
        self.position, self.pending = 0, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if not self.pending and self.position < self.count:
            with self.engine.connect() as connection:
                self.pending = connection.scalar(select(FileBlob.data).where(
                    FileBlob.key == self.key, FileBlob.position == self.position)) or b""
            self.position += 1
        size = min(len(buffer), len(self.pending))
        buffer[:size] = self.pending[:size]
        self.pending = self.pending[size:]
        return size


def init_app(app: Flask, kind: str, storage_dir: str | None) -> None:
    """The app's store: FILE_STORAGE_DIR (`files` in the instance folder when it is unset), or
    the registry's database."""
    if kind == "database":
        from ..extensions import db

        with app.app_context():
            app.extensions[_EXTENSION_KEY] = DatabaseStore(db.engine)
        return
    app.extensions[_EXTENSION_KEY] = LocalDirectoryStore(
        storage_dir or Path(app.instance_path) / "files")


def blob_store() -> BlobStore:
    """The current app's blob store."""
    return current_app.extensions[_EXTENSION_KEY]
