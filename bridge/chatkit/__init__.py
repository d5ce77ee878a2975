"""ChatKit front ends (`@openai/chatkit-react`, `<openai-chatkit>`) talk to the bridge at
POST /chatkit, with the same tokens as /v1 and on the same threads.

The protocol is the `openai-chatkit` package's; it is imported on the first ChatKit request,
since it loads the Agents SDK, which no other route needs.
"""

from __future__ import annotations

from flask import Blueprint

from ..api import request_body
from ..auth import current_user_id, require_user

bp = Blueprint("chatkit", __name__)
bp.before_request(require_user)


@bp.post("/chatkit")
def chatkit():
    from .server import serve

    return serve(request_body(), current_user_id())
