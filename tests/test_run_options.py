"""A run's options reach each engine's upstream in the shape that upstream documents.

`tool_choice` forcing a tool the engine does not offer the model (`code_interpreter` on
`chat`, `file_search` where the bridge keeps no vector stores) is left to the model instead of
failing the run upstream; a function choice, `none`, `auto` and `required` go as they are.
"""

from __future__ import annotations

import pytest

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
FUNCTION_CHOICE = {"type": "function", "function": {"name": "get_weather"}}


def _run(bridge, **options):
    client = bridge.sdk("alice")
    assistant_id = bridge.assistant(tools=[WEATHER])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Weather?"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant_id,
                                                   poll_interval_ms=20, **options)
    if run.status == "requires_action":
        client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    return run


def _chat_request(bridge) -> dict:
    return [r for r in bridge.fake.requests if r["path"].endswith("/chat/completions")][-1]["json"]


def _responses_request(bridge) -> dict:
    return [r for r in bridge.fake.requests if r["route"] == "POST /v1/responses"][-1]["json"]


@pytest.mark.parametrize("choice, sent", [
    ("required", "required"),
    ("none", "none"),
    (FUNCTION_CHOICE, FUNCTION_CHOICE),
    ({"type": "code_interpreter"}, None),
    ({"type": "file_search"}, None),
])
def test_chat_sends_the_tool_choices_chat_completions_knows(chat_bridge, choice, sent):
    run = _run(chat_bridge, tool_choice=choice)

    assert run.status in ("completed", "requires_action"), run.last_error
    assert _chat_request(chat_bridge).get("tool_choice") == sent


@pytest.mark.parametrize("choice, sent", [
    ("required", "required"),
    (FUNCTION_CHOICE, {"type": "function", "name": "get_weather"}),
    ({"type": "file_search"}, None),
])
def test_responses_sends_the_tool_choices_it_can_honour(responses_bridge, choice, sent):
    run = _run(responses_bridge, tool_choice=choice)

    assert run.status in ("completed", "requires_action"), run.last_error
    assert _responses_request(responses_bridge).get("tool_choice") == sent


def test_the_run_keeps_the_tool_choice_the_client_asked_for(chat_bridge):
    run = _run(chat_bridge, tool_choice={"type": "file_search"})

    fetched = chat_bridge.sdk("alice").beta.threads.runs.retrieve(run.id, thread_id=run.thread_id)
    assert fetched.tool_choice.type == "file_search"
