"""ChatKit front ends (`@openai/chatkit-react`, `<openai-chatkit>`) talk to the bridge at
POST /chatkit, with the same tokens as /v1 and on the same threads; an attachment's bytes go to
POST /chatkit/attachments/<id>/upload, the URL its upload descriptor names.

The protocol is the `openai-chatkit` package's; it is imported on the first ChatKit request,
since it loads the Agents SDK, which no other route needs (the upload route does not).
"""

from __future__ import annotations

from flask import Blueprint, jsonify

from ..api import request_body
from ..auth import current_user_id, require_user

bp = Blueprint("chatkit", __name__)
bp.before_request(require_user)


@bp.post("/chatkit")
def chatkit():
    from .server import serve

    return serve(request_body(), current_user_id())


@bp.post("/chatkit/attachments/<attachment_id>/upload")
def upload_attachment(attachment_id: str):
    """The bytes of one of the caller's attachments; answers with the attachment, uploaded."""
    from .attachments import receive_upload

    return jsonify(receive_upload(attachment_id, current_user_id()))
