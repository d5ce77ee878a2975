"""The offline engine calls tools deterministically, so a client's tool round trip works offline.

When the run offers function tools and the last user message names one (case-insensitive, as a
whole word), the run stops in `requires_action` with one call of it, whose arguments are the
first JSON object of the message (else `{}`); after `submit_tool_outputs` the reply quotes the
outputs. `tool_choice` is honoured.
"""

from __future__ import annotations

import json

import pytest

from bridge.engines.offline import first_json_object

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
CLOCK = {"type": "function", "function": {"name": "get_time"}}


def _run(bridge, text: str, *, tools=(WEATHER, CLOCK), **options):
    client = bridge.sdk("alice")
    assistant_id = bridge.assistant(tools=list(tools))
    thread = client.beta.threads.create(messages=[{"role": "user", "content": text}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant_id,
                                                   poll_interval_ms=20, **options)
    return client, thread, run


def test_a_named_tool_is_called_with_the_messages_json_and_its_output_quoted(offline_bridge):
    client, thread, run = _run(offline_bridge, 'Call GET_WEATHER with {"city": "Oslo"}, please.')

    assert run.status == "requires_action"
    (call,) = run.required_action.submit_tool_outputs.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather",
                                                                         {"city": "Oslo"})
    done = client.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id, thread_id=thread.id, poll_interval_ms=20,
        tool_outputs=[{"tool_call_id": call.id, "output": "rain, 4 C"}])
    assert done.status == "completed"
    reply = client.beta.threads.messages.list(thread_id=thread.id, run_id=run.id).data[0]
    assert 'get_weather returned "rain, 4 C"' in reply.content[0].text.value


@pytest.mark.parametrize("text, options, called", [
    pytest.param("What is get_time now?", {}, "get_time", id="named"),
    pytest.param("no tool named here", {}, None, id="not named"),
    pytest.param("the get_weathering of rocks", {}, None, id="not as a word"),
    pytest.param("get_weather in Rome", {"tool_choice": "none"}, None, id="choice none"),
    pytest.param("no tool named", {"tool_choice": "required"}, "get_weather", id="required"),
    pytest.param("get_weather in Rome",
                 {"tool_choice": {"type": "function", "function": {"name": "get_time"}}},
                 "get_time", id="forced"),
])
def test_the_tool_rule(offline_bridge, text, options, called):
    _, _, run = _run(offline_bridge, text, **options)

    if called is None:
        assert run.status == "completed"
    else:
        assert run.status == "requires_action"
        (call,) = run.required_action.submit_tool_outputs.tool_calls
        assert call.function.name == called and json.loads(call.function.arguments) == {}


def test_without_tools_a_named_tool_is_just_quoted(offline_bridge):
    _, _, run = _run(offline_bridge, "get_weather", tools=())
    assert run.status == "completed"


@pytest.mark.parametrize("text, found", [
    ('{"a": 1} then {"b": 2}', {"a": 1}),
    ('broken {"a": then {"b": [1, 2]}', {"b": [1, 2]}),
    ("[1, 2] {}", {}),
    ("none here", None),
])
def test_first_json_object(text, found):
    assert first_json_object(text) == found
