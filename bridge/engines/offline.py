"""The offline responder: a deterministic reply built in-process. No key, no network.

It exists so the bridge runs on a fresh machine and so clients can be developed and tested
without a provider. Its reply quotes the last user message. Settings read: OFFLINE_REPLY_DELAY
(seconds to wait before answering, to exercise polling and cancel).
"""

from __future__ import annotations

from .base import CancelSignal, Reply, Responder, RunFailed, RunRequest, Usage

_QUOTE_LIMIT = 200


def _words(text: str) -> int:
    return len(text.split())


class OfflineResponder(Responder):
    """Answers every run with a fixed-form reply that quotes the last user message."""

    name = "offline"

    def __init__(self, delay_seconds: float = 0.0):
        self.delay_seconds = delay_seconds

    def respond(self, request: RunRequest, cancel: CancelSignal) -> Reply:
        if self.delay_seconds and cancel.wait(self.delay_seconds):
            raise RunFailed("server_error", "The run was abandoned.")  # the executor moved on
        last_user = next((t.text for t in reversed(request.turns) if t.role == "user"), "")
        quoted = last_user if len(last_user) <= _QUOTE_LIMIT else last_user[:_QUOTE_LIMIT] + "…"
        text = (f'You said: "{quoted}". This is the offline responder of assistants-bridge; '
                "configure a model provider to get real answers.") if last_user else (
            "This is the offline responder of assistants-bridge. Post a message to get a reply.")
        prompt = _words(request.instructions) + sum(_words(t.text) for t in request.turns)
        return Reply(text=text, usage=Usage(prompt_tokens=prompt, completion_tokens=_words(text)))
