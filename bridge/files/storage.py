"""Blob storage: bytes under keys, and nothing else.

The registry keeps what a blob is (its file's owner, name and size); a store only keeps bytes.
Keys are made by the caller from random ids, never from client input, and a store may refuse
any other shape. `LocalDirectoryStore` is the default: one file per key under FILE_STORAGE_DIR,
written to a temporary file in the same directory and renamed into place, so a reader never
sees a partial blob and a failed write leaves nothing behind.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import BinaryIO, Protocol

from flask import Flask, current_app

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


def init_app(app: Flask, storage_dir: str | None) -> None:
    """The app's store: FILE_STORAGE_DIR, or `files` in the instance folder when it is unset."""
    app.extensions[_EXTENSION_KEY] = LocalDirectoryStore(
        storage_dir or Path(app.instance_path) / "files")


def blob_store() -> BlobStore:
    """The current app's blob store."""
    return current_app.extensions[_EXTENSION_KEY]
