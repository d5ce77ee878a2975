"""ChatKit attachments as the owner's /v1 files, uploaded in ChatKit's two phases.

`attachments.create` declares a file (name, size, MIME type) and gets an attachment whose
`upload_descriptor` names POST /chatkit/attachments/<id>/upload; the front end posts the bytes
there (multipart/form-data with a `file` part, as ChatKit's front end does, or the raw body),
with the same bearer token, and they become a file of the owner's (purpose `assistants`, under
FILE_MAX_BYTES and FILE_QUOTA_BYTES like any upload). A message that carries the attachment
attaches that file for `file_search`. Deleting the attachment deletes its file, and deleting
the file deletes the attachment.

Every attachment is a ChatKit `FileAttachment`, images too: an `ImageAttachment` needs a
`preview_url` that ChatKit loads as a plain image, without the bearer token this bridge asks
for, so an image is shown as the file it is.

This module does not import the `chatkit` package: the upload route does not need it.
"""

from __future__ import annotations

import mimetypes
from typing import Any, BinaryIO

from flask import current_app, request, url_for
from sqlalchemy import delete, func, select, update
from werkzeug.exceptions import RequestEntityTooLarge

from .. import files
from ..engines import current_engine
from ..errors import Conflict, InvalidRequest, PayloadTooLarge
from ..extensions import db
from ..models import ChatKitAttachment, FileUsage, Thread, now
from ..registry import attachment_for_user, new_id

MIME_TYPE_LIMIT = 255  # the column's size
DEFAULT_MIME_TYPE = "application/octet-stream"
# A declaration waits this long for its bytes; one older is an upload that never came (a
# closed tab), removed when its owner next declares one. A user has at most PENDING_LIMIT
# declarations waiting, so abandoned ones cannot pile up in the registry.
PENDING_SECONDS = 3600
PENDING_LIMIT = 50


def declare_attachment(user_id: str, name: str, size: int, mime_type: str) -> ChatKitAttachment:
    """A new attachment of `user_id`'s, waiting for its bytes; a declaration no upload could
    satisfy (too large, empty, over the quota, no usable name) is refused before anything."""
    settings = current_app.config["BRIDGE_SETTINGS"]
    if size > settings.FILE_MAX_BYTES:
        raise PayloadTooLarge(
            f"File too large: files may be at most {settings.FILE_MAX_BYTES} bytes, and this "
            f"one is {size}.", param="size", code="file_too_large")
    if size < 1:
        raise InvalidRequest("The file is empty: attach a file of at least one byte.",
                             param="size", code="empty_file")
    used = db.session.get(FileUsage, user_id)
    if (used.bytes if used is not None else 0) + size > settings.FILE_QUOTA_BYTES:
        raise InvalidRequest(
            f"Storing this file ({size} bytes) would exceed your storage quota of "
            f"{settings.FILE_QUOTA_BYTES} bytes: delete files to make room.", param="size",
            code="storage_quota_exceeded")
    try:
        name = files.clean_filename(name)
    except InvalidRequest as exc:
        raise InvalidRequest(exc.message, param="name", code=exc.code) from None
    mime_type = mime_type.strip() or mimetypes.guess_type(name)[0] or DEFAULT_MIME_TYPE
    if len(mime_type) > MIME_TYPE_LIMIT:
        raise InvalidRequest(f"A MIME type has at most {MIME_TYPE_LIMIT} characters.",
                             param="mime_type", code="invalid_chatkit_request")
    _limit_pending(user_id)
    attachment = ChatKitAttachment(id=new_id("atc"), user_id=user_id, name=name,
                                   mime_type=mime_type, size=size)
    db.session.add(attachment)
    db.session.commit()
    return attachment


def _limit_pending(user_id: str) -> None:
    """Remove the user's declarations whose upload never came; refuse one more past the limit."""
    pending = (ChatKitAttachment.user_id == user_id, ChatKitAttachment.file_pk.is_(None))
    db.session.execute(delete(ChatKitAttachment).where(
        *pending, ChatKitAttachment.created_at < now() - PENDING_SECONDS))
    waiting = db.session.scalar(select(func.count()).select_from(ChatKitAttachment)
                                .where(*pending))
    if waiting >= PENDING_LIMIT:
        db.session.commit()
        raise InvalidRequest(
            f"{waiting} attachments are waiting for their bytes: upload or delete them before "
            "attaching more.", code="too_many_pending_attachments")


def attachment_fields(attachment: ChatKitAttachment) -> dict[str, Any]:
    """The attachment as ChatKit's `FileAttachment`; its upload descriptor until it is
    uploaded."""
    fields: dict[str, Any] = {"type": "file", "id": attachment.id, "name": attachment.name,
                              "mime_type": attachment.mime_type}
    if attachment.thread is not None:
        fields["thread_id"] = attachment.thread.id
    if attachment.file_pk is None:
        fields["upload_descriptor"] = {"url": upload_url(attachment), "method": "POST"}
    return fields


def upload_url(attachment: ChatKitAttachment) -> str:
    """Where the attachment's bytes go: this bridge's own route, as an absolute URL."""
    path = url_for("chatkit.upload_attachment", attachment_id=attachment.id)
    base = current_app.config["BRIDGE_SETTINGS"].PUBLIC_BASE_URL or request.host_url
    return base.rstrip("/") + path


def file_ids(attachments: list[ChatKitAttachment]) -> list[str]:
    return [attachment.file.id for attachment in attachments]


def attachment_to_send(attachment_id: str, user_id: str) -> ChatKitAttachment:
    """The caller's attachment that a new message may carry: uploaded, and carried by no other
    message yet (404 for another user's, as for a missing one)."""
    attachment = attachment_for_user(attachment_id, user_id, param="input.attachments")
    if attachment.file_pk is None:
        raise InvalidRequest(f"Attachment {attachment_id} has no file yet: upload its bytes to "
                             "its upload_descriptor first.", param="input.attachments",
                             code="attachment_not_uploaded")
    if attachment.thread_pk is not None:
        raise InvalidRequest(f"Attachment {attachment_id} was sent with a message already; "
                             "attach the file again.", param="input.attachments",
                             code="attachment_already_sent")
    return attachment


def place_in_thread(attachment: ChatKitAttachment, thread: Thread) -> bool:
    """Record that a message of `thread` carries the attachment; False when another one does
    already (a concurrent message took it)."""
    placed = db.session.execute(update(ChatKitAttachment).where(
        ChatKitAttachment.pk == attachment.pk,
        (ChatKitAttachment.thread_pk.is_(None)) | (ChatKitAttachment.thread_pk == thread.pk))
        .values(thread_pk=thread.pk)).rowcount == 1
    db.session.commit()
    return placed


def receive_upload(attachment_id: str, user_id: str) -> dict[str, Any]:
    """POST /chatkit/attachments/<id>/upload: the bytes of the caller's attachment become its
    file. The body is multipart/form-data with a `file` part, or the bytes themselves."""
    attachment = attachment_for_user(attachment_id, user_id)
    if attachment.file_pk is not None:
        raise _uploaded_already(attachment_id)
    file = files.create_file(user_id, attachment.name, "assistants", _upload_stream())
    taken = db.session.execute(update(ChatKitAttachment).where(
        ChatKitAttachment.pk == attachment.pk, ChatKitAttachment.file_pk.is_(None))
        .values(file_pk=file.pk)).rowcount == 1
    db.session.commit()
    if not taken:  # a concurrent upload of the same attachment came first
        files.delete_file(file)
        raise _uploaded_already(attachment_id)
    db.session.refresh(attachment)
    return attachment_fields(attachment)


def _uploaded_already(attachment_id: str) -> Conflict:
    return Conflict(f"Attachment {attachment_id} is uploaded already.", param="attachment_id",
                    code="attachment_already_uploaded")


def _upload_stream() -> BinaryIO:
    """The uploaded bytes, from the `file` part of a form or from the whole body."""
    settings = current_app.config["BRIDGE_SETTINGS"]
    # This request alone may be as large as an upload; create_file bounds the file itself.
    request.max_content_length = current_app.config["UPLOAD_CONTENT_LENGTH"]
    try:
        if request.mimetype != "multipart/form-data":
            return request.stream
        part = request.files.get("file")
    except RequestEntityTooLarge:
        raise files.too_large(settings.FILE_MAX_BYTES) from None
    if part is None:
        raise InvalidRequest("The form has no 'file' part: send the bytes in a part named "
                             "'file', or as the whole body.", param="file")
    return part.stream


def remove_attachment(attachment: ChatKitAttachment) -> None:
    """Delete the attachment and its file, here and at the provider."""
    file = attachment.file
    db.session.execute(delete(ChatKitAttachment).where(ChatKitAttachment.pk == attachment.pk))
    if file is None:
        db.session.commit()
        return
    copy = file.upstream_id
    files.delete_file(file)  # commits the attachment's delete with the file's
    current_engine().copies_deleted(files=[copy])
