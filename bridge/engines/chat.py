"""The chat responder: runs answered by Chat Completions on any OpenAI-compatible server.

OpenAI, Ollama, vLLM, LM Studio and others serve `POST {OPENAI_BASE_URL}/chat/completions`.
Settings read: OPENAI_BASE_URL, OPENAI_API_KEY, OPENAI_TIMEOUT.

Chat Completions knows only function tools, so a run's `file_search` becomes a function of the
same name that the bridge answers itself: the model calls it, the responder searches the run's
vector stores, hands the passages back with their citation markers and calls the model again.
Only the other functions reach the client as `requires_action`.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from .base import (CancelSignal, FileSearchCall, Passage, Reply, ReplyStream, Responder,
                   RunFailed, RunRequest, SearchRound, ToolCall, Usage)
from .file_search import citations, marker
from .upstream import OpenAIUpstream

log = logging.getLogger(__name__)

SEARCH_FUNCTION = "file_search"
# Past this many rounds of searches in one answer the model is asked to answer with what it has.
MAX_SEARCH_ROUNDS = 3
_SEARCH_TOOL = {"type": "function", "function": {
    "name": SEARCH_FUNCTION,
    "description": "Search the files shared with you for passages that answer the user. Cite "
                   "each passage you use by writing its marker, exactly as given, such as "
                   "【0:0†notes.md】.",
    "parameters": {"type": "object", "properties": {"queries": {
        "type": "array", "items": {"type": "string"},
        "description": "One or more search queries, each a question or key words."}},
        "required": ["queries"]}}}


def search_queries(arguments: str) -> list[str]:
    """The queries of a `file_search` call, however the model spelled them."""
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return [arguments] if arguments.strip() else []
    if isinstance(value, dict):
        queries = value.get("queries", value.get("query"))
        if isinstance(queries, str):
            return [queries]
        if isinstance(queries, list):
            return [str(query) for query in queries if str(query).strip()]
    return []


def search_results(round_index: int, passages: tuple[Passage, ...], first: int = 0) -> str:
    """Passages as the model reads them, each under the marker that cites it (numbered from
    `first` within the round)."""
    if not passages:
        return "No passage in the files matches these queries."
    return "\n\n".join(f"{marker(round_index, first + position, passage.filename)}\n"
                        f"{passage.text}" for position, passage in enumerate(passages))


def chat_tool_choice(choice: Any, searching: bool = False) -> Any:
    """An Assistants `tool_choice` for Chat Completions, which only knows function tools.

    Forcing `file_search` forces its function when the bridge offers it; forcing
    `code_interpreter`, which this engine does not run, leaves the choice to the model instead
    of failing the run upstream.
    """
    if isinstance(choice, dict) and choice.get("type") == "file_search" and searching:
        return {"type": "function", "function": {"name": SEARCH_FUNCTION}}
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
        # A function of the client's by the same name wins: its calls are the client's to answer.
        searching = request.file_search is not None and SEARCH_FUNCTION not in {
            tool["function"]["name"] for tool in request.tools}
        choice = chat_tool_choice(request.tool_choice, searching)
        rounds: list[SearchRound] = []
        found: list[tuple[Passage, ...]] = []  # each round's passages, as its markers number them
        exchange: list[dict[str, Any]] = []  # the searches' calls and results, for the model
        prompt = completion = 0
        while True:
            # Assistants and Chat Completions share the function tool shape.
            tools = [*request.tools, *([_SEARCH_TOOL] if searching
                                       and len(rounds) < MAX_SEARCH_ROUNDS else [])]
            round_options = dict(options)
            if tools:
                round_options.update(tools=tools, parallel_tool_calls=request.parallel_tool_calls)
                # A forced choice applies to the first model call; after a search, the model
                # chooses.
                if choice is not None and not rounds:
                    round_options["tool_choice"] = choice
            # Calls are told once a round is over, so that the searches' step comes first.
            answer = (self._streamed(request.model, messages + exchange, round_options, stream,
                                     cancel, hold_calls=searching) if stream is not None
                      else self._completed(request.model, messages + exchange, round_options))
            prompt += answer.usage.prompt_tokens
            completion += answer.usage.completion_tokens
            every_call = answer.tool_calls
            searches = [call for call in every_call if searching and call.name == SEARCH_FUNCTION]
            calls = tuple(call for call in every_call if call not in searches)
            answer = Reply(text=answer.text, usage=answer.usage,
                           finish_reason=answer.finish_reason, tool_calls=calls)
            if not searches or cancel.wait(0):
                break
            round = self._search(request, searches, answer.text)
            rounds.append(round)
            found.append(tuple(passage for call in round.calls for passage in call.passages))
            if stream is not None:
                stream.searched(round)
            exchange.append({"role": "assistant", "content": answer.text or None,
                             "tool_calls": [call.as_required_action() for call in every_call]})
            offset = 0
            for call in round.calls:
                exchange.append({"role": "tool", "tool_call_id": call.id,
                                 "content": search_results(len(rounds) - 1, call.passages,
                                                           offset)})
                offset += len(call.passages)
            if calls:
                # The client's calls came with the searches: the run waits for them, and the
                # model reads the searches' results with their outputs.
                return self._reply(Reply(text="", usage=answer.usage, tool_calls=calls),
                                   rounds, found, tuple(exchange), prompt, completion,
                                   stream if searching else None)
        if calls and rounds:
            exchange.append({"role": "assistant", "content": answer.text or None,
                             "tool_calls": [call.as_required_action() for call in calls]})
        return self._reply(answer, rounds, found, tuple(exchange) if calls and rounds else None,
                           prompt, completion, stream if searching else None)

    @staticmethod
    def _reply(answer: Reply, rounds: list[SearchRound], found: list[tuple[Passage, ...]],
               exchange: tuple[dict[str, Any], ...] | None, prompt: int, completion: int,
               held: ReplyStream | None) -> Reply:
        """The run's reply from its last model call and the searches before it; calls held
        back from the stream are told now."""
        if held is not None:
            for index, call in enumerate(answer.tool_calls):
                held.tool_call(index, call_id=call.id, name=call.name, arguments=call.arguments)
        return Reply(text=answer.text,
                     usage=Usage(prompt_tokens=prompt, completion_tokens=completion),
                     finish_reason=answer.finish_reason, tool_calls=answer.tool_calls,
                     searches=tuple(rounds),
                     citations=() if answer.tool_calls else citations(answer.text, found),
                     exchange=exchange)

    @staticmethod
    def _search(request: RunRequest, searches: list[ToolCall], text_before: str) -> SearchRound:
        """Run the model's file_search calls of one round."""
        calls = []
        for call in searches:
            queries = search_queries(call.arguments)
            calls.append(FileSearchCall(id=call.id, queries=tuple(queries),
                                        passages=request.file_search(queries) if queries else ()))
        return SearchRound(calls=tuple(calls), ranking_options=request.file_search.ranking_options,
                           text_before=text_before)

    def _completed(self, model: str, messages: list, options: dict) -> Reply:
        """One completion, not streamed."""
        # Creating a completion is not idempotent (it costs tokens): never retried blindly.
        completion = self.upstream.create(lambda client: client.chat.completions.create(
            model=model, messages=messages, **options))
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
                  cancel: CancelSignal, *, hold_calls: bool = False) -> Reply:
        """One completion streamed: each piece of text and of each call goes on to `stream` as
        it arrives (calls not, with `hold_calls`); the reply is what they add up to."""
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
                            if not hold_calls:
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
