"""The pieces every stream is made of: event frames, the order rules, run logs, following a log.

The end-to-end streams, through the official SDKs on every engine, are in test_streaming.py.
"""

from __future__ import annotations

import json
import os
import threading
import time
import typing
import uuid

import pytest

from bridge.streaming import events as ev
from bridge.streaming.follow import follow
from bridge.streaming.log import LocalRunLog, RedisRunLog
from bridge.streaming.order import OutOfOrder, StreamOrder

RUN = {"id": "run_1", "object": "thread.run", "status": "queued"}
MESSAGE = {"id": "msg_1", "object": "thread.message", "status": "in_progress", "content": []}
STEP = {"id": "step_1", "object": "thread.run.step", "status": "in_progress"}


def reply_events(run_status: str = "completed") -> list[ev.Event]:
    """A run that replies with one message, as a stream carries it."""
    return [
        ev.run_created(RUN), ev.run_status(RUN),
        ev.run_status({**RUN, "status": "in_progress"}),
        ev.step_event(STEP, "created"), ev.step_event(STEP, "in_progress"),
        ev.message_event(MESSAGE, "created"), ev.message_event(MESSAGE, "in_progress"),
        ev.text_delta("msg_1", "Hel", first=True), ev.text_delta("msg_1", "lo"),
        ev.message_event({**MESSAGE, "status": "completed"}, "completed"),
        ev.step_event({**STEP, "status": "completed"}, "completed"),
        ev.run_status({**RUN, "status": run_status}), ev.DONE,
    ]


# ---- frames ---------------------------------------------------------------------------------------

def test_a_frame_is_event_and_data_lines():
    frame = ev.text_delta("msg_1", "Hi", first=True).frame().decode()
    head, data, blank = frame.split("\n", 2)
    assert head == "event: thread.message.delta" and blank == "\n"
    assert json.loads(data.removeprefix("data: ")) == {
        "id": "msg_1", "object": "thread.message.delta",
        "delta": {"content": [{"index": 0, "type": "text",
                               "text": {"value": "Hi", "annotations": []}}]}}
    assert ev.DONE.frame() == b"event: done\ndata: [DONE]\n\n"


def test_a_tool_call_names_itself_in_its_first_delta_only():
    first = ev.tool_call_delta("step_1", 0, call_id="call_1", name="f", arguments='{"a"')
    later = ev.tool_call_delta("step_1", 0, arguments=": 1}")
    (call,) = first.data["delta"]["step_details"]["tool_calls"]
    assert call == {"index": 0, "type": "function", "id": "call_1",
                    "function": {"arguments": '{"a"', "name": "f", "output": None}}
    (more,) = later.data["delta"]["step_details"]["tool_calls"]
    assert more == {"index": 0, "type": "function", "function": {"arguments": ": 1}"}}


def test_the_event_names_are_the_sdks():
    # The names the spec documents are the ones the SDK knows, and `done` after them.
    from openai.types.beta import assistant_stream_event as sdk

    known = set()
    for event_type in typing.get_args(typing.get_args(sdk.AssistantStreamEvent)[0]):
        known |= set(typing.get_args(event_type.model_fields["event"].annotation))
    assert set(ev.EVENT_NAMES) == known | {"done"}


def test_events_travel_as_json():
    event = ev.text_delta("msg_1", "é ✓")
    assert ev.Event.from_json(event.as_json()) == event


# ---- order ------------------------------------------------------------------------------------------

def test_a_reply_stream_is_in_order():
    order = StreamOrder()
    for event in reply_events():
        order.check(event)
    assert order.done and order.terminal == "thread.run.completed"


def _broken(events: list[ev.Event]) -> str:
    order = StreamOrder()
    with pytest.raises(OutOfOrder) as caught:
        for event in events:
            order.check(event)
    return str(caught.value)


def test_out_of_order_streams_are_refused():
    events = reply_events()
    assert "opens with" in _broken(events[1:])
    assert "not the open message" in _broken(events[:5] + [events[7]])  # delta before created
    assert "is open" in _broken(events[:7] + [ev.message_event({**MESSAGE, "id": "msg_2"},
                                                               "created")])
    assert "is open" in _broken(events[:9] + [ev.run_status({**RUN, "status": "completed"})])
    assert "done before" in _broken(events[:3] + [ev.DONE])
    assert "after done" in _broken(events + [ev.text_delta("msg_1", "x")])
    assert "again after it ended" in _broken(events[:10] + [events[5]])


def test_admits_leaves_out_what_would_break_the_order():
    order = StreamOrder()
    events = reply_events()
    kept = [event for event in events[:10] + events[5:10] + events[10:]
            if order.admits(event) and (order.check(event) or True)]
    assert kept == events  # the replayed message was left out


# ---- logs -------------------------------------------------------------------------------------------

def _redis_log():
    import redis

    url = os.environ.get("TEST_REDIS_URL") or "redis://127.0.0.1:6379/15"
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        if os.environ.get("TEST_REDIS_URL"):
            pytest.fail(f"TEST_REDIS_URL={url} does not answer: {exc}")
        pytest.skip(f"no Redis at {url}; set TEST_REDIS_URL to run")
    return RedisRunLog(client, keep_seconds=30, prefix=f"test-{uuid.uuid4().hex[:8]}:")


@pytest.fixture(params=["local", "redis"])
def run_log(request):
    return LocalRunLog() if request.param == "local" else _redis_log()


def test_a_log_is_open_once_a_stream_opened_it_and_reads_from_the_start(run_log):
    assert not run_log.is_open("run_b")
    run_log.open("run_b")
    assert run_log.is_open("run_b")
    for event in reply_events()[:3]:
        run_log.append("run_b", event)
    first = run_log.read("run_b", None, timeout=1)
    assert [event for _, event in first] == reply_events()[:3]
    run_log.append("run_b", reply_events()[3])
    assert [event for _, event in run_log.read("run_b", first[-1][0], timeout=1)] == \
        [reply_events()[3]]


def test_a_reader_waits_for_the_next_event(run_log):
    run_log.open("run_c")
    threading.Timer(0.1, lambda: run_log.append("run_c", ev.DONE)).start()
    started = time.monotonic()
    assert [event for _, event in run_log.read("run_c", None, timeout=5)] == [ev.DONE]
    assert time.monotonic() - started < 4


# ---- following a log ----------------------------------------------------------------------------------

def test_follow_yields_the_logged_stream(run_log):
    run_log.open("run_d")
    events = reply_events()[:-1]
    for event in events:
        run_log.append("run_d", event)

    frames = list(follow(run_log, "run_d", StreamOrder(), lambda order: None,
                         ping_seconds=5))

    assert frames == [event.frame() for event in reply_events()]


def test_a_quiet_log_pings_then_the_registry_ends_the_stream(run_log):
    run_log.open("run_e")
    for event in reply_events()[:8]:  # the text is streaming when the executor dies
        run_log.append("run_e", event)
    checks = []

    def settle(order):
        checks.append(order.message)
        if len(checks) < 3:
            return None
        return [ev.message_event({**MESSAGE, "status": "incomplete"}, "incomplete"),
                ev.step_event({**STEP, "status": "failed"}, "failed"),
                ev.run_status({**RUN, "status": "failed"})]

    frames = list(follow(run_log, "run_e", StreamOrder(), settle, ping_seconds=0.05,
                         check_seconds=0.1))

    assert ev.PING in frames
    names = [frame.split(b"\n")[0].decode() for frame in frames if frame != ev.PING]
    assert names[-4:] == ["event: thread.message.incomplete", "event: thread.run.step.failed",
                          "event: thread.run.failed", "event: done"]
    assert checks[0] == "msg_1"
