"""Tests of FakeChatServer, driven by the real `openai` SDK over HTTP."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from openai.types.chat import ChatCompletionChunk

from .chat_server import FakeChatServer

MODEL = "fake-model"
USER = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def srv() -> Iterator[FakeChatServer]:
    with FakeChatServer() as server:
        yield server


@pytest.fixture
def client(srv: FakeChatServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=srv.base_url, api_key=srv.api_key, max_retries=0, timeout=5) as sdk:
        yield sdk


def ask(client: openai.OpenAI, text: str = "hello there") -> Any:
    """Send one user message and return the SDK's ChatCompletion."""
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}])


def raw_request(srv: FakeChatServer, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
    """Send a request without the SDK and return its status and decoded JSON body."""
    port = int(srv.base_url.rsplit(":", 1)[1].split("/")[0])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        headers = {"Authorization": f"Bearer {srv.api_key}", "Content-Type": "application/json"}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


class CallInThread:
    """Run one SDK call in a thread and keep its outcome."""

    def __init__(self, call: Any):
        self.result: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self.thread.start()

    def _run(self, call: Any) -> None:
        try:
            self.result = call()
        except BaseException as exc:  # handed to the test thread to assert on
            self.error = exc


def test_default_reply_echoes_last_user_message_with_word_usage(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="my-model",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": [{"type": "text", "text": "second"}, {"type": "text", "text": "question"}]},
        ],
    )

    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "my-model"
    assert abs(completion.created - time.time()) < 60
    choice = completion.choices[0]
    assert choice.index == 0
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content == "echo: second question"
    assert choice.message.tool_calls is None
    assert completion.usage is not None
    assert completion.usage.model_dump(include={"prompt_tokens", "completion_tokens", "total_tokens"}) == {
        "prompt_tokens": 8,
        "completion_tokens": 3,
        "total_tokens": 11,
    }


def test_requests_are_recorded_with_lowercase_headers_and_json(srv: FakeChatServer, client: openai.OpenAI) -> None:
    ask(client, "one")
    ask(client, "two")

    assert [r["json"]["messages"][0]["content"] for r in srv.requests] == ["one", "two"]
    first = srv.requests[0]
    assert first["path"] == "/v1/chat/completions"
    assert first["headers"]["authorization"] == f"Bearer {srv.api_key}"
    assert first["json"]["model"] == MODEL


def test_scripted_replies_are_consumed_in_order(srv: FakeChatServer, client: openai.OpenAI) -> None:
    srv.enqueue("first", {"content": "second", "usage": {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}})

    first, second, third = ask(client), ask(client), ask(client, "after the script")

    assert first.choices[0].message.content == "first"
    assert second.choices[0].message.content == "second"
    assert second.usage is not None and (second.usage.prompt_tokens, second.usage.total_tokens) == (7, 12)
    assert third.choices[0].message.content == "echo: after the script"


def test_tool_calls_reply(srv: FakeChatServer, client: openai.OpenAI) -> None:
    tool_call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "x"}'}}
    srv.enqueue({"tool_calls": [tool_call]})

    choice = ask(client).choices[0]

    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    assert [c.model_dump(include={"id", "type", "function"}) for c in choice.message.tool_calls] == [tool_call]


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, openai.BadRequestError),
        (404, openai.NotFoundError),
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
    ],
)
def test_scripted_status_maps_to_sdk_error(
    srv: FakeChatServer, client: openai.OpenAI, status: int, error_class: type[openai.APIStatusError]
) -> None:
    srv.enqueue({"status": status})

    with pytest.raises(error_class) as caught:
        ask(client)

    assert caught.value.status_code == status
    assert isinstance(caught.value.body, dict) and set(caught.value.body) == {"message", "type", "param", "code"}


def test_rate_limit_exposes_retry_after_header(srv: FakeChatServer, client: openai.OpenAI) -> None:
    srv.enqueue({"status": 429, "headers": {"retry-after": "2"}})

    with pytest.raises(openai.RateLimitError) as caught:
        ask(client)

    assert caught.value.response.headers["retry-after"] == "2"
    assert caught.value.code == "rate_limit_exceeded"
    assert ask(client).choices[0].message.content == "echo: hello there"


def test_wrong_api_key_is_an_authentication_error(srv: FakeChatServer, client: openai.OpenAI) -> None:
    srv.enqueue("kept for the next valid request")
    with openai.OpenAI(base_url=srv.base_url, api_key="wrong", max_retries=0, timeout=5) as bad_client:
        with pytest.raises(openai.AuthenticationError) as caught:
            ask(bad_client)

    assert caught.value.code == "invalid_api_key"
    assert caught.value.type == "invalid_request_error"
    assert srv.requests[0]["headers"]["authorization"] == "Bearer wrong"
    assert ask(client).choices[0].message.content == "kept for the next valid request"


def test_invalid_bodies_are_bad_requests_naming_the_param(srv: FakeChatServer, client: openai.OpenAI) -> None:
    srv.enqueue("kept for the next valid request")
    with pytest.raises(openai.BadRequestError) as missing:
        client.chat.completions.create(model=MODEL, messages=[])
    with pytest.raises(openai.BadRequestError) as bad_role:
        client.chat.completions.create(model=MODEL, messages=[{"role": "robot", "content": "hi"}])  # type: ignore[list-item,misc]
    with pytest.raises(openai.BadRequestError) as no_model:
        client.chat.completions.create(model="", messages=[{"role": "user", "content": "hi"}])

    assert missing.value.param == "messages"
    assert bad_role.value.param == "messages[0].role"
    assert no_model.value.param == "model"
    assert ask(client).choices[0].message.content == "kept for the next valid request"


def test_missing_messages_is_a_bad_request(srv: FakeChatServer, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.post("/chat/completions", body={"model": MODEL}, cast_to=object)

    assert caught.value.param == "messages"
    assert srv.requests[0]["json"] == {"model": MODEL}




def test_models_list_and_unknown_paths(srv: FakeChatServer, client: openai.OpenAI) -> None:
    models = client.models.list()

    assert [m.id for m in models.data] == ["fake-model"]
    status, body = raw_request(srv, "GET", "/v1/nowhere")
    assert status == 404
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert srv.requests == []


def test_unparseable_json_is_a_bad_request(srv: FakeChatServer) -> None:
    status, body = raw_request(srv, "POST", "/v1/chat/completions", body=b"{not json")

    assert status == 400
    assert body["error"]["type"] == "invalid_request_error"
    assert srv.requests[0]["json"] is None


def test_hold_blocks_until_release(srv: FakeChatServer, client: openai.OpenAI) -> None:
    srv.hold()
    call = CallInThread(lambda: ask(client, "held"))
    srv.wait_for_requests(1)

    # A bounded wait: with a working hold, the call is still blocked after it.
    call.thread.join(timeout=0.2)
    assert call.thread.is_alive()

    srv.enqueue("scripted while held")
    srv.release()
    call.thread.join(timeout=5)
    assert not call.thread.is_alive()
    assert call.error is None
    assert call.result.choices[0].message.content == "scripted while held"
    assert ask(client).choices[0].message.content == "echo: hello there"


def test_stop_releases_held_requests(srv: FakeChatServer, client: openai.OpenAI) -> None:
    srv.hold()
    call = CallInThread(lambda: ask(client))
    srv.wait_for_requests(1)

    stopping = CallInThread(srv.stop)
    stopping.thread.join(timeout=5)
    call.thread.join(timeout=5)

    assert not stopping.thread.is_alive() and stopping.error is None
    assert not call.thread.is_alive()
    assert isinstance(call.error, openai.APIConnectionError)


def test_stop_closes_idle_keep_alive_connections(srv: FakeChatServer, client: openai.OpenAI) -> None:
    ask(client)

    stopping = CallInThread(srv.stop)
    stopping.thread.join(timeout=5)

    assert not stopping.thread.is_alive() and stopping.error is None
    with pytest.raises(openai.APIConnectionError):
        ask(client)


def test_wait_for_requests_times_out(srv: FakeChatServer, client: openai.OpenAI) -> None:
    ask(client)

    srv.wait_for_requests(1, timeout=0)
    with pytest.raises(TimeoutError):
        srv.wait_for_requests(2, timeout=0.05)


def test_drop_closes_the_connection(srv: FakeChatServer, client: openai.OpenAI) -> None:
    srv.enqueue({"drop": True})

    with pytest.raises(openai.APIConnectionError) as caught:
        ask(client)

    assert not isinstance(caught.value, openai.APITimeoutError)
    assert ask(client).choices[0].message.content == "echo: hello there"


def test_delay_beyond_client_timeout_is_a_timeout(srv: FakeChatServer) -> None:
    srv.enqueue({"delay": 1.0})
    with openai.OpenAI(base_url=srv.base_url, api_key=srv.api_key, max_retries=0, timeout=0.2) as impatient:
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            ask(impatient)

    assert time.monotonic() - started < 0.9


def test_delay_within_client_timeout_answers_late(srv: FakeChatServer, client: openai.OpenAI) -> None:
    srv.enqueue({"delay": 0.3, "content": "late"})

    started = time.monotonic()
    completion = ask(client)

    assert time.monotonic() - started >= 0.3
    assert completion.choices[0].message.content == "late"


def test_reset_forgets_requests_and_script(srv: FakeChatServer, client: openai.OpenAI) -> None:
    srv.enqueue("scripted")
    ask(client)
    srv.enqueue("forgotten")
    srv.hold()

    srv.reset()

    assert srv.requests == []
    assert ask(client).choices[0].message.content == "echo: hello there"


def test_enqueue_rejects_malformed_replies(srv: FakeChatServer) -> None:
    with pytest.raises(ValueError, match="conten"):
        srv.enqueue({"conten": "typo"})
    with pytest.raises(ValueError):
        srv.enqueue({"status": 200})
    with pytest.raises(TypeError):
        srv.enqueue(42)  # type: ignore[arg-type]


def test_context_manager_serves_on_a_random_local_port() -> None:
    with FakeChatServer(api_key="k1") as first, FakeChatServer(api_key="k2") as second:
        assert first.base_url.startswith("http://127.0.0.1:")
        assert first.base_url.endswith("/v1")
        assert first.base_url != second.base_url
        base_url = first.base_url

    with openai.OpenAI(base_url=base_url, api_key="k1", max_retries=0, timeout=1) as sdk:
        with pytest.raises(openai.APIConnectionError):
            ask(sdk)


# ---- streaming ----------------------------------------------------------------------------------

def stream_chunks(client: openai.OpenAI, **options: Any) -> list[ChatCompletionChunk]:
    """Stream a completion with the raw SDK call; every chunk is validated against the SDK's type."""
    with client.chat.completions.create(model=MODEL, messages=USER, stream=True, **options) as stream:
        chunks = list(stream)
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk.to_dict())
    return chunks


def raw_stream(srv: FakeChatServer, body: dict[str, Any]) -> tuple[int, str, list[str]]:
    """POST a streamed request without the SDK: status, content type, and the raw SSE frames."""
    port = int(srv.base_url.rsplit(":", 1)[1].split("/")[0])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        headers = {"Authorization": f"Bearer {srv.api_key}", "Content-Type": "application/json"}
        conn.request("POST", "/v1/chat/completions", body=json.dumps(body), headers=headers)
        response = conn.getresponse()
        frames = response.read().decode().split("\n\n")
        return response.status, response.getheader("Content-Type"), [f for f in frames if f]
    finally:
        conn.close()


def test_streamed_reply_is_chunked_as_openai_does(client: openai.OpenAI) -> None:
    chunks = stream_chunks(client, stream_options={"include_usage": True})

    assert {(c.id, c.created, c.model, c.object) for c in chunks} == {
        (chunks[0].id, chunks[0].created, MODEL, "chat.completion.chunk")}
    first, *pieces, finish, usage = chunks
    assert (first.choices[0].delta.role, first.choices[0].delta.content) == ("assistant", "")
    assert [c.choices[0].delta.content for c in pieces] == ["echo", ": he", "llo ", "there"]
    assert all(c.choices[0].finish_reason is None and c.usage is None for c in [first, *pieces])
    assert (finish.choices[0].delta.content, finish.choices[0].finish_reason) == (None, "stop")
    assert usage.choices == []
    assert usage.usage is not None and (usage.usage.prompt_tokens, usage.usage.completion_tokens) == (2, 3)
    assert "usage" not in stream_chunks(client)[0].to_dict()


def test_stream_chunks_and_scripted_finish_reason(srv: FakeChatServer, client: openai.OpenAI) -> None:
    srv.stream_chunks = 2
    srv.enqueue({"content": "one two three", "finish_reason": "length"})

    chunks = stream_chunks(client)

    assert [c.choices[0].delta.content for c in chunks[1:-1]] == ["one tw", "o three"]
    assert chunks[-1].choices[0].finish_reason == "length"


def test_streamed_tool_calls_come_in_pieces(srv: FakeChatServer, client: openai.OpenAI) -> None:
    calls = [{"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "x"}'}},
             {"id": "call_2", "type": "function", "function": {"name": "fetch", "arguments": '{"n": 12}'}}]
    srv.enqueue({"tool_calls": calls})

    chunks = stream_chunks(client)

    deltas = [c.choices[0].delta for c in chunks]
    assert (deltas[0].role, deltas[0].content) == ("assistant", None)
    assert deltas[0].tool_calls is not None
    assert [(t.index, t.id, t.type, t.function.name, t.function.arguments) for t in deltas[0].tool_calls] == [
        (0, "call_1", "function", "lookup", "")]
    pieces: dict[int, str] = {}
    for delta in deltas[1:-1]:
        assert delta.tool_calls is not None and len(delta.tool_calls) == 1
        call = delta.tool_calls[0]
        if call.id is not None:
            assert (call.index, call.id, call.function.name, call.function.arguments) == (1, "call_2", "fetch", "")
        else:
            pieces[call.index] = pieces.get(call.index, "") + call.function.arguments
    assert pieces == {0: '{"q": "x"}', 1: '{"n": 12}'}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"

    srv.enqueue({"tool_calls": calls})
    with client.chat.completions.stream(model=MODEL, messages=USER) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_completion()
    assert "tool_calls.function.arguments.done" in kinds
    assert final.choices[0].message.tool_calls is not None
    assert [(t.id, t.function.name, t.function.arguments) for t in final.choices[0].message.tool_calls] == [
        ("call_1", "lookup", '{"q": "x"}'), ("call_2", "fetch", '{"n": 12}')]


def test_stream_helper_accumulates_the_content(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(model=MODEL, messages=USER,
                                        stream_options={"include_usage": True}) as stream:
        deltas = [event.delta for event in stream if event.type == "content.delta"]
        final = stream.get_final_completion()

    assert "".join(deltas) == final.choices[0].message.content == "echo: hello there"
    assert final.choices[0].finish_reason == "stop"
    assert final.usage is not None and final.usage.total_tokens == 5


def test_stream_frames_are_data_only_and_end_with_done(srv: FakeChatServer) -> None:
    status, content_type, frames = raw_stream(srv, {"model": MODEL, "messages": USER, "stream": True})

    assert status == 200 and content_type.startswith("text/event-stream")
    assert all(frame.startswith("data: ") and "\n" not in frame for frame in frames)
    assert frames[-1] == "data: [DONE]"
    assert json.loads(frames[0][len("data: "):])["object"] == "chat.completion.chunk"


def test_stream_options_need_stream(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=USER, stream_options={"include_usage": True})

    assert caught.value.param == "stream_options"


def test_scripted_errors_delays_and_drops_apply_before_a_stream(srv: FakeChatServer, client: openai.OpenAI) -> None:
    srv.enqueue({"status": 429, "headers": {"retry-after": "3"}})
    with pytest.raises(openai.RateLimitError) as caught:
        stream_chunks(client)
    assert caught.value.response.headers["retry-after"] == "3"

    srv.enqueue({"drop": True})
    with pytest.raises(openai.APIConnectionError):
        stream_chunks(client)

    srv.enqueue({"delay": 0.2, "content": "late", "headers": {"x-scripted": "yes"}})
    started = time.monotonic()
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=USER, stream=True)
    assert raw.headers["x-scripted"] == "yes"
    assert "".join(c.choices[0].delta.content or "" for c in raw.parse()) == "late"
    assert time.monotonic() - started >= 0.2
    assert "".join(c.choices[0].delta.content or "" for c in stream_chunks(client)) == "echo: hello there"


def test_drop_after_cuts_the_stream_mid_way(srv: FakeChatServer, client: openai.OpenAI) -> None:
    srv.enqueue({"drop_after": 3})
    received = []

    with pytest.raises(openai.APIConnectionError):
        for chunk in client.chat.completions.create(model=MODEL, messages=USER, stream=True):
            received.append(chunk)

    assert len(received) == 3
    assert ask(client).choices[0].message.content == "echo: hello there"


def test_hold_after_deltas_pauses_a_stream_until_release(srv: FakeChatServer, client: openai.OpenAI) -> None:
    srv.hold(after_deltas=2)
    stream = client.chat.completions.create(model=MODEL, messages=USER, stream=True)
    received = [next(stream) for _ in range(3)]
    # A bounded wait: a stream that did not pause would be written to its end and closed meanwhile.
    with pytest.raises(TimeoutError):
        srv.wait_for_open_streams(0, timeout=0.2)

    # Other requests go on while the stream waits: it holds no lock.
    assert [m.id for m in client.models.list()] == ["fake-model"]
    srv.release()
    received += list(stream)

    assert "".join(c.choices[0].delta.content or "" for c in received if c.choices) == "echo: hello there"
    srv.wait_for_open_streams(0)


def test_a_client_that_leaves_mid_stream_ends_it_quietly(srv: FakeChatServer, client: openai.OpenAI) -> None:
    srv.hold(after_deltas=1)
    stream = client.chat.completions.create(model=MODEL, messages=USER, stream=True)
    next(stream), next(stream)
    srv.wait_for_open_streams(1)

    stream.close()

    srv.wait_for_open_streams(0)
    srv.release()
    assert ask(client).choices[0].message.content == "echo: hello there"


def test_stop_ends_a_held_stream(srv: FakeChatServer, client: openai.OpenAI) -> None:
    srv.hold(after_deltas=1)
    stream = client.chat.completions.create(model=MODEL, messages=USER, stream=True)
    next(stream)

    started = time.monotonic()
    srv.stop()

    assert time.monotonic() - started < 2
    with pytest.raises(openai.APIConnectionError):
        list(stream)


def test_stream_interval_paces_the_pieces(srv: FakeChatServer, client: openai.OpenAI) -> None:
    srv.stream_interval = 0.05

    started = time.monotonic()
    stream_chunks(client)

    assert time.monotonic() - started >= 4 * 0.05
