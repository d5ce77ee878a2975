"""Files: uploads kept for their owner. The metadata is in the registry (`files`), the bytes in
the blob store (`bridge.files.storage`), under a random key of ours.

What a stored file is, and the rules that hold at every upload:

- The size is what was received, at most FILE_MAX_BYTES (413 `file_too_large`), at least one
  byte (400 `empty_file`).
- A user's files together take at most FILE_QUOTA_BYTES (400 `storage_quota_exceeded`): the
  quota is claimed by one conditional update in the transaction that inserts the file's row.
- The name is the base name of the one the client sent: everything up to the last `/` or `\\` is
  dropped, control characters, lone surrogates and bidirectional overrides are removed, spaces
  at either end are trimmed, and a name longer than 255 characters is shortened, keeping its
  extension. A name with nothing left (or `.`, `..`) is a 400 `invalid_filename`.
- The blob is written before the row is committed and deleted again when anything fails, so a
  failed upload leaves neither; a delete commits first and removes the blob after.
"""

from __future__ import annotations

import logging
import re
import secrets
import unicodedata
from typing import BinaryIO

from flask import current_app

from ..errors import InvalidRequest, PayloadTooLarge
from ..extensions import db
from ..models import File
from ..registry import claim_file_bytes, new_id, remove_file
from .storage import blob_store

log = logging.getLogger(__name__)

MAX_FILENAME_LENGTH = 255
_MAX_KEPT_EXTENSION = 16
_SEPARATORS = re.compile(r"[/\\]")
# Bidirectional embeddings, overrides and isolates: they make `exe.pdf` read as `fdp.exe`.
_BIDI_CONTROLS = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def clean_filename(name: str | None) -> str:
    """The name kept for an upload (see the module docstring), or a 400."""
    base = _SEPARATORS.split(name or "")[-1]
    base = "".join(char for char in base if char not in _BIDI_CONTROLS
                   and unicodedata.category(char) not in ("Cc", "Cs")).strip()
    if base in ("", ".", ".."):
        raise InvalidRequest("The uploaded file has no usable filename: send the file with a "
                             "name such as 'notes.txt'.", param="file", code="invalid_filename")
    if len(base) > MAX_FILENAME_LENGTH:
        stem, dot, extension = base.rpartition(".")
        if dot and stem and len(extension) <= _MAX_KEPT_EXTENSION:
            base = stem[:MAX_FILENAME_LENGTH - len(extension) - 1].rstrip() + "." + extension
        else:
            base = base[:MAX_FILENAME_LENGTH]
    return base


def too_large(limit: int) -> PayloadTooLarge:
    """The answer for an upload over FILE_MAX_BYTES."""
    return PayloadTooLarge(f"File too large: files may be at most {limit} bytes.", param="file",
                           code="file_too_large")


class _Bounded:
    """A reader that refuses to yield more than `limit` bytes of `stream`."""

    def __init__(self, stream: BinaryIO, limit: int):
        self.stream, self.limit, self.read_so_far = stream, limit, 0

    def read(self, size: int = -1) -> bytes:
        # One byte past the limit tells a file that is too large from one that is exactly it.
        allowed = self.limit + 1 - self.read_so_far
        chunk = self.stream.read(allowed if size < 0 else min(size, allowed))
        self.read_so_far += len(chunk)
        if self.read_so_far > self.limit:
            raise too_large(self.limit)
        return chunk


def create_file(user_id: str, filename: str | None, purpose: str, stream: BinaryIO) -> File:
    """Store an upload for `user_id` and return its committed row."""
    settings = current_app.config["BRIDGE_SETTINGS"]
    name = clean_filename(filename)
    store = blob_store()
    key = secrets.token_hex(16)
    size = store.put(key, _Bounded(stream, settings.FILE_MAX_BYTES))
    try:
        if size == 0:
            raise InvalidRequest("The uploaded file is empty.", param="file", code="empty_file")
        if not claim_file_bytes(user_id, size, settings.FILE_QUOTA_BYTES):
            raise InvalidRequest(
                f"Storing this file ({size} bytes) would exceed your storage quota of "
                f"{settings.FILE_QUOTA_BYTES} bytes: delete files to make room.", param="file",
                code="storage_quota_exceeded")
        file = File(id=new_id("file"), user_id=user_id, filename=name, purpose=purpose,
                    bytes=size, blob_key=key)
        db.session.add(file)
        db.session.commit()
    except BaseException:
        db.session.rollback()
        store.delete(key)
        raise
    return file


def open_content(file: File) -> BinaryIO:
    """The file's bytes, for reading."""
    return blob_store().open(file.blob_key)


def delete_file(file: File) -> None:
    """Delete the file's row, then its blob. A concurrent delete of the same file counts once."""
    key = file.blob_key
    removed = remove_file(file)
    db.session.commit()
    if not removed:
        return  # the other delete removes the blob
    try:
        blob_store().delete(key)
    except OSError:
        # The row is gone, so nothing refers to the blob any more: it is only disk space.
        log.exception("could not delete the blob of file %s", file.id)
