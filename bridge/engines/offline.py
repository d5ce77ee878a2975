"""The offline responder: a deterministic reply built in-process. No key, no network.

It exists so the bridge runs on a fresh machine and so clients can be developed and tested
without a provider, tool round trips included. Settings read: OFFLINE_REPLY_DELAY (seconds to
wait before answering, to exercise polling and cancel).

- A reply quotes the last user message; streamed, it comes in STREAM_PIECES deltas.
- Tools: when the run offers function tools and the last user message names one of them
  (case-insensitive, as a whole word), the run asks for one call of that tool, with the first
  JSON object in the message as its arguments (else `{}`). `tool_choice` is honoured: `none`
  never calls, a named function is always called, `required` calls the first tool when none is
  named. Once the outputs are submitted, the reply quotes them.
- File search: when the run offers `file_search` over vector stores and no function is called,
  the last user message is searched (unless `tool_choice` is `none` or names a function), and
  the reply quotes the best passage with a citation of its file.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from typing import Any

from .base import (CancelSignal, FileSearchCall, Reply, ReplyStream, Responder, RunFailed,
                   RunRequest, SearchRound, ToolCall, Usage)
from .file_search import citations, marker

_QUOTE_LIMIT = 200
# A streamed reply comes in this many deltas, so clients meet several.
STREAM_PIECES = 6
_ALPHABET = string.ascii_letters + string.digits


def _words(text: str) -> int:
    return len(text.split())


def _quote(text: str) -> str:
    return text if len(text) <= _QUOTE_LIMIT else text[:_QUOTE_LIMIT] + "…"


def pieces(text: str, count: int) -> list[str]:
    """`text` cut at word boundaries into about `count` pieces that join back to it."""
    words = re.findall(r"\S+\s*|\s+", text)
    size = max(1, -(-len(words) // count))
    return ["".join(words[start:start + size]) for start in range(0, len(words), size)]


def first_json_object(text: str) -> dict[str, Any] | None:
    """The first `{...}` in `text` that parses as a JSON object, if any."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _names(request: RunRequest) -> list[str]:
    return [tool["function"]["name"] for tool in request.tools]


def _mentioned(name: str, text: str) -> bool:
    return re.search(rf"(?<![A-Za-z0-9_-]){re.escape(name)}(?![A-Za-z0-9_-])", text,
                     re.IGNORECASE) is not None


def chosen_tool(request: RunRequest, last_user: str) -> str | None:
    """The function the offline responder calls for this request, or None to reply."""
    names = _names(request)
    choice = request.tool_choice
    if not names or choice == "none":
        return None
    if isinstance(choice, dict) and choice.get("type") == "function":
        forced = choice["function"]["name"]
        return forced if forced in names else None
    named = next((name for name in names if _mentioned(name, last_user)), None)
    if named is None and choice == "required":
        return names[0]
    return named


def _new_call_id() -> str:
    return "call_" + "".join(secrets.choice(_ALPHABET) for _ in range(24))


def searches_files(request: RunRequest) -> bool:
    """Whether the offline responder searches the run's files before it replies."""
    choice = request.tool_choice
    if request.file_search is None or choice == "none":
        return False
    return not (isinstance(choice, dict) and choice.get("type") == "function")


def _outputs(request: RunRequest) -> list[tuple[str, str]]:
    """(tool name, output) of the calls this run made and the client answered."""
    names = {call["id"]: call["function"]["name"] for entry in request.tool_exchange
             for call in entry.get("tool_calls") or ()}
    return [(names.get(entry["tool_call_id"], "tool"), entry["content"])
            for entry in request.tool_exchange if entry.get("role") == "tool"]


class OfflineResponder(Responder):
    """Answers every run with a fixed-form reply, or asks for the tool the user named."""

    name = "offline"

    def __init__(self, delay_seconds: float = 0.0):
        self.delay_seconds = delay_seconds

    def respond(self, request: RunRequest, cancel: CancelSignal,
                stream: ReplyStream | None = None) -> Reply:
        if self.delay_seconds and cancel.wait(self.delay_seconds):
            raise RunFailed("server_error", "The run was abandoned.")  # the executor moved on
        last_user = next((t.text for t in reversed(request.turns) if t.role == "user"), "")
        prompt = _words(request.instructions) + sum(_words(t.text) for t in request.turns)
        outputs = _outputs(request)
        tool = None if outputs else chosen_tool(request, last_user)
        if tool is not None:
            arguments = json.dumps(first_json_object(last_user) or {})
            call = ToolCall(id=_new_call_id(), name=tool, arguments=arguments)
            if stream is not None:
                stream.tool_call(0, call_id=call.id, name=call.name, arguments=arguments)
            return Reply(text="", tool_calls=(call,),
                         usage=Usage(prompt_tokens=prompt, completion_tokens=_words(arguments)))
        if not outputs and last_user and searches_files(request):
            return self._answer_from_files(request, last_user, prompt, stream)
        if outputs:
            quoted = "; ".join(f'{name} returned "{_quote(output)}"' for name, output in outputs)
            text = (f"{quoted}. This is the offline responder of assistants-bridge; configure a "
                    "model provider to get real answers.")
        elif last_user:
            text = (f'You said: "{_quote(last_user)}". This is the offline responder of '
                    "assistants-bridge; configure a model provider to get real answers.")
        else:
            text = "This is the offline responder of assistants-bridge. Post a message to get a reply."
        if stream is not None:
            for piece in pieces(text, STREAM_PIECES):
                stream.text(piece)
        return Reply(text=text, usage=Usage(prompt_tokens=prompt, completion_tokens=_words(text)))

    def _answer_from_files(self, request: RunRequest, question: str, prompt: int,
                           stream: ReplyStream | None) -> Reply:
        """Search the run's files for the question; quote the best passage and cite it."""
        passages = request.file_search([question])
        search = SearchRound(calls=(FileSearchCall(id=_new_call_id(), queries=(question,),
                                                   passages=passages),),
                             ranking_options=request.file_search.ranking_options)
        if stream is not None:
            stream.searched(search)
        if passages:
            best = passages[0]
            text = (f'From {best.filename}: "{_quote(" ".join(best.text.split()))}" '
                    f"{marker(0, 0, best.filename)}")
        else:
            text = (f'Nothing in the files matches "{_quote(question)}". This is the offline '
                    "responder of assistants-bridge; configure a model provider to get real "
                    "answers.")
        if stream is not None:
            for piece in pieces(text, STREAM_PIECES):
                stream.text(piece)
        return Reply(text=text, usage=Usage(prompt_tokens=prompt, completion_tokens=_words(text)),
                     searches=(search,), citations=citations(text, [passages]))
