"""The `responses` engine: threads are OpenAI Conversations, runs are background Responses.

OpenAI keeps no assistants any more: a run's model, instructions and tools come from the
assistant in our registry, with the run's overrides, on every response. What the Responses API
does differently from the Assistants API, and how it is bridged:

- It has no `requires_action`: a finished response whose output holds `function_call` items is
  reported as `requires_action`; the tool outputs go in as `function_call_output` items of a
  new background response on the same conversation.
- A conversation takes one response at a time (`conversation_locked`): our own
  one-active-run rule answers 409 first, and an upstream lock maps to 409 too.
- Background responses are kept for a limited time: a run's end state, reply, steps and usage
  are written to the registry the first time they are seen.
- There are no run steps upstream: each response makes a `message_creation` step per reply and
  a `tool_calls` step for its function calls, and the last of them carries its usage.

Settings read: OPENAI_API_KEY, OPENAI_BASE_URL, OPENAI_TIMEOUT, OPENAI_MAX_RETRIES, POLL_AFTER_MS.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from ..models import now
from ..schemas import MessageCreate, ToolOutput
from ..streaming.publish import RunPublisher
from .file_search import ranking_options, search_tool
from .mirror import search_round
from .remote import (Announced, Relay, RunSettings, RunSnapshot, UpstreamEngine, UpstreamMessage,
                     UpstreamReply, UpstreamStep, UpstreamStream, best_effort)

# A conversation takes at most this many items per request.
_ITEMS_PER_CALL = 20
_STATUSES = {"queued": "queued", "in_progress": "in_progress", "completed": "completed",
             "failed": "failed", "cancelled": "cancelled", "incomplete": "incomplete"}
# Assistants `last_error.code` has three values; Responses errors have many more.
_ERROR_CODES = {"rate_limit_exceeded": "rate_limit_exceeded", "invalid_prompt": "invalid_prompt"}


def _item(message: MessageCreate) -> dict[str, Any]:
    part = "output_text" if message.role == "assistant" else "input_text"
    return {"type": "message", "role": message.role,
            "content": [{"type": part, "text": text} for text in message.text_parts()]}


def _outputs(outputs: list[ToolOutput]) -> list[dict[str, Any]]:
    """Tool outputs as the function_call_output items of a new response."""
    return [{"type": "function_call_output", "call_id": output.tool_call_id,
             "output": output.output} for output in outputs]


def response_tools(tools: list[dict[str, Any]], search_stores: tuple[str, ...] = (),
                   code_files: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Assistants tools in the Responses shape: function fields move up one level, and
    `file_search` and `code_interpreter` name the provider's copies of the run's stores and
    files."""
    converted = []
    for tool in tools:
        if tool.get("type") == "function":
            function = tool["function"]
            description = function.get("description")
            # Responses requires both fields, and treats a tool without `strict` as strict, which
            # refuses most schemas written for Assistants (where absent meant not strict).
            converted.append({"type": "function", "name": function["name"],
                              **({"description": description} if description is not None else {}),
                              "parameters": function.get("parameters"),
                              "strict": bool(function.get("strict"))})
        elif tool.get("type") == "code_interpreter":
            container: dict[str, Any] = {"type": "auto"}
            if code_files:
                container["file_ids"] = list(code_files)
            converted.append({"type": "code_interpreter", "container": container})
        elif tool.get("type") == "file_search" and search_stores:
            settings = tool.get("file_search") or {}
            ranking = settings.get("ranking_options") or {}
            converted.append({"type": "file_search", "vector_store_ids": list(search_stores),
                              **({"max_num_results": settings["max_num_results"]}
                                 if settings.get("max_num_results") else {}),
                              **({"ranking_options": {"score_threshold":
                                                      ranking["score_threshold"]}}
                                 if "score_threshold" in ranking else {})})
        # file_search without stores to search is left out, as OpenAI's runs searched nothing.
    return converted


def response_tool_choice(choice: Any, searching: bool = False) -> Any:
    """Assistants `tool_choice` in the Responses shape, or None to leave it to the model.

    Forcing `file_search` forces it only when it is sent (see `response_tools`).
    """
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "name": choice["function"]["name"]}
    if isinstance(choice, dict) and choice.get("type") == "file_search":
        return {"type": "file_search"} if searching else None
    return choice


def cited_text(parts: list[dict[str, Any]]) -> tuple[str, tuple[dict[str, Any], ...]]:
    """A message's text with a marker where each file citation goes, and the citations in the
    Assistants shape (the Responses API gives only a position and the provider's file id)."""
    text, annotations = "", []
    for part in parts:
        value = part.get("text") or part.get("refusal") or ""
        cited = sorted((annotation for annotation in part.get("annotations") or ()
                        if annotation.get("type") == "file_citation"),
                       key=lambda annotation: annotation.get("index") or 0)
        written = 0
        for annotation in cited:
            at = min(max(annotation.get("index") or 0, written), len(value))
            text += value[written:at]
            written = at
            marker = f"【0:{len(annotations)}†{annotation.get('filename') or 'source'}】"
            annotations.append({"type": "file_citation", "text": marker,
                                "start_index": len(text), "end_index": len(text) + len(marker),
                                "file_citation": {"file_id": annotation.get("file_id")}})
            text += marker
        text += value[written:]
    return text, tuple(annotations)


def search_call(item: dict[str, Any], ranking_options: dict[str, Any]) -> dict[str, Any]:
    """A Responses `file_search_call` item as an Assistants file_search tool call (the
    provider's file ids, mapped to ours when settled)."""
    return {"id": item["id"], "type": "file_search", "file_search": {
        "ranking_options": ranking_options,
        "results": [{"file_id": result.get("file_id"), "file_name": result.get("filename") or "",
                     "score": result.get("score") or 0.0,
                     "content": [{"type": "text", "text": result.get("text") or ""}]}
                    for result in item.get("results") or ()]}}


def _ranking_options(response: dict[str, Any]) -> dict[str, Any]:
    tool = next((tool for tool in response.get("tools") or ()
                 if tool.get("type") == "file_search"), {})
    threshold = (tool.get("ranking_options") or {}).get("score_threshold")
    return {"ranker": "default_2024_08_21", "score_threshold": float(threshold or 0.0)}


def response_text_format(response_format: Any) -> dict[str, Any] | None:
    """Assistants `response_format` as the Responses `text` parameter."""
    if not isinstance(response_format, dict):
        return None  # "auto" or unset: the model's default
    kind = response_format.get("type")
    if kind == "json_schema":
        schema = response_format.get("json_schema") or {}
        return {"format": {"type": "json_schema", **{key: schema[key] for key in (
            "name", "schema", "description", "strict") if schema.get(key) is not None}}}
    if kind in ("text", "json_object"):
        return {"format": {"type": kind}}
    return None


def snapshot_of(response: dict[str, Any]) -> RunSnapshot:
    """A Responses `response` object as a run snapshot."""
    status = _STATUSES.get(response.get("status"), "failed")
    output = response.get("output") or []
    calls = [item for item in output if item.get("type") == "function_call"]
    # Only finished messages: a partial one seen mid-way would be kept as the reply for good.
    finished = ("completed", "incomplete") if status == "incomplete" else ("completed",)
    replies = [UpstreamReply(upstream_id=item["id"], truncated=status == "incomplete",
                             text=text, annotations=annotations)
               for item in output if item.get("type") == "message"
               and item.get("role") == "assistant" and item.get("status", "completed") in finished
               for text, annotations in [cited_text(item.get("content") or [])]]
    snapshot = RunSnapshot(upstream_id=response["id"], status=status, replies=replies,
                           usage_is_total=False)
    usage = response.get("usage")
    if usage:
        snapshot.usage = {"prompt_tokens": usage.get("input_tokens", 0),
                          "completion_tokens": usage.get("output_tokens", 0),
                          "total_tokens": usage.get("total_tokens", 0)}
    stamp = response.get("completed_at") or now()
    if status == "completed" and calls:
        snapshot.status = "requires_action"
        snapshot.tool_calls = [{"id": call["call_id"], "type": "function", "function": {
            "name": call["name"], "arguments": call["arguments"]}} for call in calls]
    elif status == "completed":
        snapshot.completed_at = stamp
    elif status == "failed":
        error = response.get("error") or {}
        snapshot.failed_at = stamp
        snapshot.last_error = {"code": _ERROR_CODES.get(error.get("code"), "server_error"),
                               "message": error.get("message") or "The model provider failed the run."}
    elif status == "cancelled":
        snapshot.cancelled_at = stamp
    elif status == "incomplete":
        reason = (response.get("incomplete_details") or {}).get("reason")
        if reason in (None, "max_output_tokens"):
            snapshot.incomplete_details = {"reason": "max_completion_tokens"}
        else:
            # The Assistants API has no other reasons (content_filter, ...): a failure it is.
            snapshot.status, snapshot.failed_at, snapshot.replies = "failed", stamp, []
            snapshot.last_error = {"code": "server_error",
                                   "message": f"The model provider stopped the reply ({reason})."}
    snapshot.steps = _steps(response, snapshot, stamp)
    return snapshot


def _steps(response: dict[str, Any], snapshot: RunSnapshot, stamp: int) -> list[UpstreamStep]:
    """The steps a response stands for: its file searches and replies in the order it made
    them, then its function calls."""
    created = response.get("created_at") or stamp
    replies = {reply.upstream_id for reply in snapshot.replies}
    ranking = _ranking_options(response)
    steps = []
    for item in response.get("output") or []:
        if item.get("id") in replies:
            steps.append(UpstreamStep(upstream_id=item["id"], type="message_creation",
                                      status="completed", created_at=created,
                                      completed_at=stamp, message=item["id"]))
        elif item.get("type") == "file_search_call" and item.get("status") == "completed":
            steps.append(UpstreamStep(upstream_id=item["id"], type="tool_calls",
                                      status="completed", created_at=created,
                                      completed_at=stamp,
                                      tool_calls=[search_call(item, ranking)]))
    if snapshot.status == "requires_action":
        # Open until the outputs are submitted; named after the response that asked.
        steps.append(UpstreamStep(upstream_id=response["id"], type="tool_calls",
                                  status="in_progress", created_at=created,
                                  tool_calls=snapshot.tool_calls))
    if steps:
        # One response, one count of tokens: on its last step, so the steps add up to the run.
        steps[-1] = dataclasses.replace(steps[-1], usage=snapshot.usage)
    return steps


class ResponsesEngine(UpstreamEngine):
    """Conversations hold the thread; each run is one or more background responses on it."""

    name = "responses"
    home = "responses"

    # ---- conversations and items --------------------------------------------------------------

    def _create_container(self, metadata, tool_resources) -> str:
        # Tool resources name files and vector stores: kept in the registry only.
        return self.upstream.create(lambda client: client.conversations.create(metadata=metadata)).id

    def _update_container(self, container, metadata, tool_resources) -> None:
        self.upstream.call(lambda client: client.conversations.update(container, metadata=metadata))

    def _delete_container(self, container) -> None:
        self.upstream.call(lambda client: client.conversations.delete(container))

    def _add_messages(self, container, messages) -> list[str]:
        ids: list[str] = []
        try:
            for start in range(0, len(messages), _ITEMS_PER_CALL):
                batch = [_item(message) for message in messages[start:start + _ITEMS_PER_CALL]]
                page = self.upstream.create(lambda client: client.conversations.items.create(
                    container, items=batch))
                ids += [item.id for item in page.data]
        except BaseException:
            for item_id in ids:  # a later batch failed: the earlier ones go too
                self._forget_item(container, item_id)
            raise
        return ids

    def _forget_item(self, container: str, item_id: str) -> None:
        best_effort(f"delete item {item_id}", lambda: self._delete_message(container, item_id))

    def _delete_message(self, container, upstream_id) -> None:
        self.upstream.call(lambda client: client.conversations.items.delete(
            upstream_id, conversation_id=container))

    def _list_messages(self, container) -> list[UpstreamMessage]:
        def every_message(client) -> list[UpstreamMessage]:
            # The SDK's page iterator asks for the next page until the last one.
            items = client.conversations.items.list(container, order="asc", limit=100)
            return [UpstreamMessage(upstream_id=item.id, role=item.role, text="".join(
                        getattr(part, "text", None) or "" for part in item.content or []))
                    for item in items if item.type == "message"]

        return self.upstream.call(every_message)

    # Conversation items carry no metadata: a message's metadata lives in the registry only.

    # ---- responses ----------------------------------------------------------------------------

    def _request(self, run: RunSettings, container: str) -> dict[str, Any]:
        options: dict[str, Any] = {
            "model": run.model, "conversation": container, "background": True, "store": True,
            "instructions": run.instructions or None, "metadata": run.metadata or None,
            "temperature": run.temperature, "top_p": run.top_p,
            "max_output_tokens": run.max_completion_tokens,
            "text": response_text_format(run.response_format),
        }
        tools = response_tools(run.tools, run.search_stores, run.code_files)
        if tools:
            options["tools"] = tools
            options["parallel_tool_calls"] = run.parallel_tool_calls
            searching = any(tool["type"] == "file_search" for tool in tools)
            choice = response_tool_choice(run.tool_choice, searching)
            if choice is not None:
                options["tool_choice"] = choice
            if searching:
                options["include"] = ["file_search_call.results"]  # for the run's steps
        if (run.truncation_strategy or {}).get("type") in ("auto", "disabled"):
            options["truncation"] = run.truncation_strategy["type"]
        return {key: value for key, value in options.items() if value is not None}

    def _start(self, run, container, upstream_assistant) -> RunSnapshot:
        request = self._request(run, container)
        return snapshot_of(self.upstream.create(
            lambda client: client.responses.create(**request)).to_dict())

    def _start_stream(self, run, container, upstream_assistant) -> UpstreamStream:
        request = self._request(run, container)
        return self._opened(lambda client: client.responses.create(**request, stream=True))

    def _continue_stream(self, run, container, upstream_run, outputs) -> UpstreamStream:
        request = self._request(run, container)
        request["input"] = _outputs(outputs)
        return self._opened(lambda client: client.responses.create(**request, stream=True))

    def _opened(self, create) -> UpstreamStream:
        """A response created as a stream, read up to its first event, `response.created`."""
        stream = self.upstream.create(create)
        events = self.upstream.events(stream)
        try:
            first = next(events)
        except BaseException:
            stream.close()
            raise
        return UpstreamStream(snapshot=snapshot_of(first.response.to_dict()), events=events,
                              close=stream.close)

    def _relay(self, run, publisher) -> Relay:
        return ResponseRelay(self, run, publisher)

    def _fetch(self, container, upstream_run) -> RunSnapshot:
        return snapshot_of(self.upstream.call(
            lambda client: client.responses.retrieve(upstream_run)).to_dict())

    def _cancel(self, container, upstream_run) -> RunSnapshot:
        return snapshot_of(self.upstream.call(
            lambda client: client.responses.cancel(upstream_run)).to_dict())

    def _continue(self, run, container, upstream_run, outputs: list[ToolOutput]) -> RunSnapshot:
        request = self._request(run, container)
        request["input"] = _outputs(outputs)
        return snapshot_of(self.upstream.create(
            lambda client: client.responses.create(**request)).to_dict())

    def _abandon_tool_calls(self, container, upstream_run, calls) -> None:
        # A conversation with a function call left unanswered refuses every later response, so
        # each gets an output; when the calls were never seen, the conversation tells them.
        call_ids = [call["id"] for call in calls] or self._unanswered_calls(container)
        if not call_ids:
            return
        items = [{"type": "function_call_output", "call_id": call_id,
                  "output": json.dumps({"error": "The run ended before this call was answered."})}
                 for call_id in call_ids]
        self.upstream.create(lambda client: client.conversations.items.create(container, items=items))

    def _unanswered_calls(self, container: str) -> list[str]:
        """Call ids of the conversation's recent function calls that have no output yet."""
        page = self.upstream.call(lambda client: client.conversations.items.list(
            container, order="desc", limit=100))
        answered, unanswered = set(), []
        for item in page.data:  # newest first: an output comes after its call
            if item.type == "function_call_output":
                answered.add(item.call_id)
            elif item.type == "function_call" and item.call_id not in answered:
                unanswered.append(item.call_id)
        return unanswered[::-1]


class ResponseRelay(Relay):
    """A streamed background response as the run's progress: its text and function calls as
    they come, and its end settled like a poll, keeping the ids the stream gave."""

    def __init__(self, engine: "ResponsesEngine", run, publisher: RunPublisher):
        self.engine, self.run, self.publisher = engine, run, publisher
        self.announced = Announced()
        self.calls: dict[str, int] = {}  # function call item id -> its index in the step

    def feed(self, event: Any) -> bool:
        kind, publisher = event.type, self.publisher
        if kind == "response.in_progress":
            self.engine._settle(self.run, RunSnapshot(upstream_id=event.response.id,
                                                      status="in_progress"))
            publisher.status(self.run)
        elif kind == "response.output_item.added" and event.item.type == "function_call":
            index = self.calls[event.item.id] = len(self.calls)
            publisher.tool_call(index, call_id=event.item.call_id, name=event.item.name)
        elif kind == "response.output_text.delta":
            publisher.text(event.delta)
            self.announced.messages[event.item_id] = publisher.message_id
            self.announced.steps[event.item_id] = publisher.message_step_id
        elif kind == "response.output_item.done" and event.item.type == "file_search_call":
            tool = search_tool(self.run) or {}
            publisher.searched(search_round([search_call(event.item.to_dict(), {})],
                                            ranking_options(tool)))
            self.announced.steps[event.item.id] = publisher.search_steps[-1][2]
        elif kind == "response.function_call_arguments.delta" and event.item_id in self.calls:
            publisher.tool_call(self.calls[event.item_id], arguments=event.delta)
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            response = event.response.to_dict()
            if publisher.tool_step_id is not None:
                self.announced.steps[response["id"]] = publisher.tool_step_id
            self.engine._settle(self.run, snapshot_of(response), self.announced)
            publisher.finished(*self.engine._announced_rows(self.run, self.announced))
            return True
        return False
