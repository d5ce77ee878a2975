"""The chat responder: runs answered by Chat Completions on any OpenAI-compatible server.

OpenAI, Ollama, vLLM, LM Studio and others serve `POST {OPENAI_BASE_URL}/chat/completions`.
Settings read: OPENAI_BASE_URL, OPENAI_API_KEY, OPENAI_TIMEOUT.
"""

from __future__ import annotations

import logging
from typing import Any

from .base import (CancelSignal, Reply, ReplyStream, Responder, RunFailed, RunRequest, ToolCall,
                   Usage)
from .upstream import OpenAIUpstream

log = logging.getLogger(__name__)


def chat_tool_choice(choice: Any) -> Any:
    """An Assistants `tool_choice` for Chat Completions, which only knows function tools.

    Forcing `code_interpreter` or `file_search`, which this engine does not offer the model,
    leaves the choice to the model instead of failing the run upstream.
    """
    if isinstance(choice, dict) and choice.get("type") != "function":
        return None
    return choice


class ChatCompletionsResponder(Responder):
    """Sends the assistant's instructions and the thread to Chat Completions."""

    name = "chat"

    def __init__(self, upstream: OpenAIUpstream):
        self.upstream = upstream

    def respond(self, request: RunRequest, cancel: CancelSignal,
                stream: ReplyStream | None = None) -> Reply:
        messages = []
        if request.instructions:
            messages.append({"role": "system", "content": request.instructions})
        messages += [{"role": turn.role, "content": turn.text} for turn in request.turns]
        messages += request.tool_exchange
        options = {name: value for name, value in (
            ("temperature", request.temperature), ("top_p", request.top_p),
            ("max_completion_tokens", request.max_completion_tokens)) if value is not None}
        if request.tools:
            # Assistants and Chat Completions share the function tool shape.
            options["tools"] = list(request.tools)
            options["parallel_tool_calls"] = request.parallel_tool_calls
            choice = chat_tool_choice(request.tool_choice)
            if choice is not None:
                options["tool_choice"] = choice
        if stream is not None:
            return self._streamed(request.model, messages, options, stream, cancel)
        # Creating a completion is not idempotent (it costs tokens): never retried blindly.
        completion = self.upstream.create(lambda client: client.chat.completions.create(
            model=request.model, messages=messages, **options))
        if not completion.choices:
            raise RunFailed("server_error", "The model returned no answer.")
        choice = completion.choices[0]
        usage = completion.usage
        calls = tuple(ToolCall(id=call.id, name=call.function.name,
                               arguments=call.function.arguments)
                      for call in choice.message.tool_calls or () if call.type == "function")
        return Reply(
            text=choice.message.content or "",
            usage=Usage(prompt_tokens=usage.prompt_tokens if usage else 0,
                        completion_tokens=usage.completion_tokens if usage else 0),
            finish_reason="length" if choice.finish_reason == "length" else "stop",
            tool_calls=calls)

    def _streamed(self, model: str, messages: list, options: dict, stream: ReplyStream,
                  cancel: CancelSignal) -> Reply:
        """The same completion streamed: each piece of text and of each call goes on to
        `stream` as it arrives; the reply is what they add up to."""
        text: list[str] = []
        calls: dict[int, dict[str, str]] = {}
        finish, usage = "stop", None

        def read(client):
            nonlocal finish, usage
            chunks = client.chat.completions.create(
                model=model, messages=messages, stream=True,
                stream_options={"include_usage": True}, **options)
            with chunks:
                for chunk in chunks:
                    if cancel.wait(0):
                        break  # the run was cancelled: stop reading, the executor moved on
                    usage = chunk.usage or usage
                    for choice in chunk.choices:
                        delta = choice.delta
                        if delta.content:
                            text.append(delta.content)
                            stream.text(delta.content)
                        for call in delta.tool_calls or ():
                            known = calls.setdefault(call.index, {"id": "", "name": "",
                                                                  "arguments": ""})
                            function = call.function
                            known["id"] = known["id"] or (call.id or "")
                            known["name"] = known["name"] or (function.name if function else "")
                            piece = (function.arguments if function else None) or ""
                            known["arguments"] += piece
                            stream.tool_call(call.index, call_id=call.id,
                                             name=function.name if function else None,
                                             arguments=piece)
                        if choice.finish_reason:
                            finish = choice.finish_reason

        self.upstream.create(read)
        return Reply(
            text="".join(text),
            usage=Usage(prompt_tokens=usage.prompt_tokens if usage else 0,
                        completion_tokens=usage.completion_tokens if usage else 0),
            finish_reason="length" if finish == "length" else "stop",
            tool_calls=tuple(ToolCall(id=call["id"], name=call["name"],
                                      arguments=call["arguments"])
                             for _, call in sorted(calls.items())))

    def warm_up(self) -> None:
        self.upstream.warm_up()

    def close(self) -> None:
        self.upstream.close()
