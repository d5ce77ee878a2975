"""GET /chat: a small chat page that speaks ChatKit's protocol to POST /chatkit from the browser.

Plain HTML, CSS and JavaScript from this package: no build step, nothing loaded from elsewhere.
The page keeps the user's token in sessionStorage and sends it as a bearer token like any other
client, so the page itself needs none. With the development secret (no JWT key configured) it
also signs in from a `#token=` link, which `flask token USER --url` prints. Files attached in
the composer are uploaded as ChatKit attachments, to the bridge's own upload route.

The route stays cheap: it imports neither `bridge.chatkit.server` nor the `chatkit` package.
"""

from __future__ import annotations

from flask import Blueprint, current_app, render_template

bp = Blueprint("chatpage", __name__, template_folder="templates", static_folder="static",
               static_url_path="/chat/static")

# The page runs only its own files and talks only to its own origin; nothing may frame it.
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; img-src 'self'; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


@bp.get("/chat")
def chat_page():
    """The chat page; it signs in from a `#token=` link only under the development secret."""
    settings = current_app.config["BRIDGE_SETTINGS"]
    page = render_template("chatpage/chat.html", fragment_sign_in=settings.uses_development_secret,
                           user_claim=settings.JWT_USER_CLAIM,
                           attachment_max_bytes=settings.FILE_MAX_BYTES)
    return page, 200, _HEADERS
