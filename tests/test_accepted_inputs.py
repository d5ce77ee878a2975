"""Whatever a route accepted stays servable: it reads back, is listed, and moves to another engine.

A generator of nasty-but-valid inputs (text from every Unicode plane but the code points the
registry cannot store, keys with dots, quotes and no letters at all, free-form documents nested
to the depth limit, huge and tiny numbers, empty strings, metadata at its limits) drives the
routes of one bridge per engine over HTTP, runs streamed or not. Every answer to a valid input
must be a 200 (a stream: events the SDK's types take, `done` last); every object made must then
read back as it was answered, alone and in its list, through plain HTTP
and the official SDK. At the end the threads move to another engine's home with
`flask migrate-threads`, and every thread, message and run must read back there unchanged.

INVARIANT_EXAMPLES sets the examples per engine (default 12); the examples are derived from a
fixed seed, so a failure in CI repeats locally.
"""

from __future__ import annotations

import json
import os
import time
import typing
from typing import Any

import httpx2 as httpx  # the HTTP client the openai SDK itself uses
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from openai.types.beta import AssistantStreamEvent

from bridge.api.bodies import MAX_JSON_DEPTH
from tests.conftest import ENGINES, Bridge

EXAMPLES = int(os.environ.get("INVARIANT_EXAMPLES", "12"))
TERMINAL = {"completed", "failed", "cancelled", "incomplete", "expired"}
# Where each engine's threads move to, and the engine that serves them there.
MOVES = {"offline": ("responses", "responses"), "chat": ("assistants", "assistants"),
         "responses": ("local", "offline"), "assistants": ("responses", "responses")}
# Every request of an example is checked with a few more: the rate limits are not under test.
UNLIMITED = {"RATE_LIMIT_READS": "", "RATE_LIMIT_WRITES": "", "RATE_LIMIT_RUNS": ""}
# The SDK's type for each stream event, by name.
STREAM_EVENTS = {typing.get_args(cls.model_fields["event"].annotation)[0]: cls
                 for cls in typing.get_args(typing.get_args(AssistantStreamEvent)[0])}
# Fields of a run that move on while it executes; the rest must read back as first answered.
MOVING_RUN_FIELDS = {"status", "started_at", "completed_at", "failed_at", "cancelled_at",
                     "expires_at", "usage", "required_action", "last_error", "incomplete_details"}

# ---- nasty but valid --------------------------------------------------------------------------

NASTY = ["", " ", "\t\r\n", "\u202eevil\u202c", "👍🏽👨‍👩‍👧", "\ufeffbom", "e\u0301", "\u200b",
         "\"'\\`", "<script>alert(1)</script>", "%s%n%x{0}", "null", "\U0010ffff", "\x7f\x1b[31m",
         "ǅ ﷺ ß", "a.b.c", "$ref", "__proto__", "1e400", "-0", "\u2028\u2029"]

characters = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")


def texts(max_size: int, min_size: int = 0) -> st.SearchStrategy[str]:
    fitting = [text for text in NASTY if min_size <= len(text) <= max_size]
    return st.one_of(st.sampled_from(fitting),
                     st.text(characters, min_size=min_size, max_size=min(max_size, 40)),
                     st.just("x" * max_size))


def metadata(max_keys: int, reserved_allowed: bool = True) -> st.SearchStrategy[dict[str, str]]:
    keys = texts(64, min_size=1)
    if not reserved_allowed:
        keys = keys.filter(lambda key: key != "user_id")
    return st.dictionaries(keys, texts(512), max_size=max_keys)


numbers = st.one_of(st.integers(min_value=-(10 ** 30), max_value=10 ** 30),
                    st.floats(allow_nan=False, allow_infinity=False),
                    st.sampled_from([0, -0.0, 1e308, 5e-324, 2 ** 63, -(2 ** 63) - 1]))
leaves = st.one_of(st.none(), st.booleans(), numbers, texts(100))


def documents(levels: int) -> st.SearchStrategy[dict[str, Any]]:
    """Free-form JSON objects of at most `levels` levels, themselves included."""
    def nest(children):
        return st.one_of(st.lists(children, max_size=3),
                         st.dictionaries(texts(20), children, max_size=3))

    random = st.dictionaries(texts(20), st.recursive(leaves, nest, max_leaves=12), max_size=4)
    return st.one_of(random, st.builds(deepest, st.just(levels), leaves))


def deepest(levels: int, leaf: Any) -> dict[str, Any]:
    """An object exactly `levels` levels deep, alternating objects and arrays."""
    value = leaf
    for level in range(levels - 1):
        value = [value] if level % 2 else {"": value}
    return {"properties": value}


# Levels left below each free-form field, the body counting as the first level.
PARAMETERS_LEVELS = MAX_JSON_DEPTH - 4  # body > tools > tool > function > parameters
SCHEMA_LEVELS = MAX_JSON_DEPTH - 3  # body > response_format > json_schema > schema

function_names = st.from_regex(r"\A[a-zA-Z0-9_-]{1,64}\Z")
tools = st.lists(st.one_of(
    st.builds(lambda name, description, parameters, strict: {
        "type": "function", "function": {"name": name, "description": description,
                                         "parameters": parameters, "strict": strict}},
        function_names, texts(1024), documents(PARAMETERS_LEVELS), st.sampled_from([None, False])),
    st.just({"type": "code_interpreter"}),
    st.builds(lambda n, threshold: {"type": "file_search", "file_search": {
        "max_num_results": n, "ranking_options": {"score_threshold": threshold}}},
        st.integers(1, 50), st.floats(0, 1))), max_size=3)
response_formats = st.one_of(
    st.sampled_from(["auto", {"type": "text"}, {"type": "json_object"}]),
    st.builds(lambda name, schema, strict: {"type": "json_schema", "json_schema": {
        "name": name, "schema": schema, "strict": strict}},
        function_names, documents(SCHEMA_LEVELS), st.sampled_from([None, True, False])))
tool_choices = st.one_of(st.sampled_from(["none", "auto", "required", {"type": "file_search"},
                                          {"type": "code_interpreter"}]),
                         st.builds(lambda name: {"type": "function", "function": {"name": name}},
                                   function_names))
# Ids in tool resources must name the caller's own files and stores (tests/test_file_search.py).
tool_resources = st.fixed_dictionaries({}, optional={
    "code_interpreter": st.fixed_dictionaries({"file_ids": st.just([])}),
    "file_search": st.fixed_dictionaries({"vector_store_ids": st.just([])}),
})
contents = st.one_of(texts(2000), st.lists(st.builds(lambda text: {"type": "text", "text": text},
                                                     texts(500)), min_size=1, max_size=4))
messages = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]),
                                  "content": contents},
                                 optional={"metadata": metadata(16)})


def optional(**fields: st.SearchStrategy) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


assistant_bodies = st.builds(lambda fields: {"model": "fake-model", **fields}, optional(
    name=texts(256), description=texts(512), instructions=texts(3000), tools=tools,
    tool_resources=tool_resources, metadata=metadata(16), temperature=st.floats(0, 2),
    top_p=st.floats(0, 1), response_format=response_formats))
thread_bodies = optional(metadata=metadata(15, reserved_allowed=False),
                         tool_resources=tool_resources, messages=st.lists(messages, max_size=4))
run_settings = dict(
    instructions=texts(2000), tools=tools,
    metadata=metadata(16), temperature=st.floats(0, 2), top_p=st.floats(0, 1),
    max_prompt_tokens=st.integers(256, 2 ** 31 - 1),
    max_completion_tokens=st.integers(16, 2 ** 31 - 1), response_format=response_formats,
    tool_choice=tool_choices, parallel_tool_calls=st.booleans(),
    truncation_strategy=st.one_of(st.just({"type": "auto"}), st.builds(
        lambda n: {"type": "last_messages", "last_messages": n}, st.integers(1, 2 ** 31 - 1))))
run_options = optional(**run_settings, additional_instructions=texts(500),
                       additional_messages=st.lists(messages, max_size=2))
thread_and_run_options = optional(**run_settings, thread=thread_bodies)


# ---- a client that checks every answer --------------------------------------------------------

# Fields whose value on the wire is the value sent, when one was sent.
ECHOED = ("metadata", "tool_resources", "name", "description", "temperature", "top_p",
          "response_format", "tool_choice", "truncation_strategy", "parallel_tool_calls",
          "max_prompt_tokens", "max_completion_tokens", "role")


def as_shown(tool: dict[str, Any]) -> dict[str, Any]:
    """A tool as the wire shows it: a function's unset (null) fields are left out."""
    if tool["type"] != "function":
        return tool
    return {**tool, "function": {key: value for key, value in tool["function"].items()
                                 if value is not None}}


def assert_echoes(sent: dict[str, Any], made: dict[str, Any]) -> None:
    """What the client sent is what the object says, field by field."""
    for name in ECHOED:
        if name in sent:
            expected = sent[name]
            if name == "metadata" and made.get("object") == "thread":
                expected = {**expected, "user_id": "alice"}
            assert made[name] == expected, f"{name}: sent {expected!r}, got {made[name]!r}"
    if "tools" in sent:
        assert made["tools"] == [as_shown(tool) for tool in sent["tools"]]
    if "content" in sent:
        parts = [sent["content"]] if isinstance(sent["content"], str) else [
            part["text"] for part in sent["content"]]
        assert [block["text"]["value"] for block in made["content"]] == parts
    if "instructions" in sent and made.get("object") == "assistant":
        assert made["instructions"] == sent["instructions"]


class Checker:
    """Sends valid inputs to one bridge and checks that whatever it made reads back."""

    def __init__(self, bridge: Bridge):
        self.bridge = bridge
        self.http = httpx.Client(base_url=bridge.api, timeout=30,
                                 headers=bridge.headers("alice"))
        self.admin = bridge.headers("admin", admin=True)
        self.sdk = bridge.sdk("alice")
        self.threads: list[str] = []
        self.assistant_id = self.post("/assistants", {"model": "fake-model"}, admin=True)["id"]

    def post(self, path: str, body: dict[str, Any], *, admin: bool = False) -> dict[str, Any]:
        response = self.http.post(path, json=body, headers=self.admin if admin else None)
        assert response.status_code == 200, f"POST {path} refused a valid body: {response.text}"
        return response.json()

    def get(self, path: str, *, admin: bool = False) -> dict[str, Any]:
        response = self.http.get(path, headers=self.admin if admin else None)
        assert response.status_code == 200, f"GET {path}: {response.status_code} {response.text}"
        return response.json()

    def listed(self, path: str, *, admin: bool = False) -> dict[str, dict[str, Any]]:
        """Every item of a list, page by page, by id."""
        items: dict[str, dict[str, Any]] = {}
        after = None
        while True:
            query = "?limit=100&order=asc" + (f"&after={after}" if after else "")
            page = self.get(path + query, admin=admin)
            items.update((item["id"], item) for item in page["data"])
            if not page["has_more"]:
                return items
            after = page["last_id"]

    def reads_back(self, path: str, listing: str, made: dict[str, Any], *,
                   moving: set[str] = frozenset(), admin: bool = False) -> None:
        stable = {key: value for key, value in made.items() if key not in moving}
        alone = self.get(path, admin=admin)
        assert {key: alone[key] for key in stable} == stable, f"{path} reads back changed"
        listed = self.listed(listing, admin=admin)
        assert made["id"] in listed, f"{made['id']} is missing from {listing}"
        assert {key: listed[made["id"]][key] for key in stable} == stable

    # ---- operations ------------------------------------------------------------------------------

    def create_assistant(self, body: dict[str, Any]) -> None:
        made = self.post("/assistants", body, admin=True)
        assert_echoes(body, made)
        self.reads_back(f"/assistants/{made['id']}", "/assistants", made, admin=True)
        self.sdk.beta.assistants.retrieve(made["id"])

    def create_thread(self, body: dict[str, Any]) -> str:
        made = self.post("/threads", body)
        assert_echoes(body, made)
        self.threads.append(made["id"])
        self.reads_back(f"/threads/{made['id']}", "/threads", made)
        self.sdk.beta.threads.retrieve(made["id"])
        self.messages_read_back(made["id"])
        return made["id"]

    def add_message(self, thread_id: str, body: dict[str, Any]) -> None:
        made = self.post(f"/threads/{thread_id}/messages", body)
        assert_echoes(body, made)
        self.reads_back(f"/threads/{thread_id}/messages/{made['id']}",
                        f"/threads/{thread_id}/messages", made)

    def modify_thread(self, thread_id: str, body: dict[str, Any]) -> None:
        made = self.post(f"/threads/{thread_id}", body)
        assert_echoes(body, made)
        self.reads_back(f"/threads/{thread_id}", "/threads", made)

    def run(self, thread_id: str | None, body: dict[str, Any], *, streamed: bool = False) -> None:
        body = {"assistant_id": self.assistant_id, **body}
        path = "/threads/runs" if thread_id is None else f"/threads/{thread_id}/runs"
        made = self.streamed(path, body) if streamed else self.post(path, body)
        if thread_id is None:
            self.threads.append(made["thread_id"])
        assert_echoes(body, made)
        thread_id = made["thread_id"]
        path = f"/threads/{thread_id}/runs/{made['id']}"
        self.reads_back(path, f"/threads/{thread_id}/runs", made, moving=MOVING_RUN_FIELDS)
        final = self.settle(path)
        self.reads_back(path, f"/threads/{thread_id}/runs", final, moving=MOVING_RUN_FIELDS)
        self.sdk.beta.threads.runs.retrieve(made["id"], thread_id=thread_id)
        self.messages_read_back(thread_id)

    def streamed(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Start the run as a stream and read it whole: every event is one the SDK's types
        take, `done` comes last; the run as its first event announced it."""
        response = self.http.post(path, json={**body, "stream": True})
        assert response.status_code == 200, f"POST {path} refused a valid body: {response.text}"
        assert response.headers["content-type"].startswith("text/event-stream")
        events = []
        for frame in response.text.split("\n\n"):
            if not frame or frame.startswith(":"):
                continue
            name, data = (line.split(": ", 1)[1] for line in frame.split("\n"))
            events.append((name, data))
        assert events[-1] == ("done", "[DONE]"), events[-3:]
        for name, data in events[:-1]:
            STREAM_EVENTS[name].model_validate({"event": name, "data": json.loads(data)})
        return next(json.loads(data) for name, data in events if name == "thread.run.created")

    def settle(self, path: str) -> dict[str, Any]:
        """Poll a run to its end; a run waiting for tool outputs is cancelled."""
        for _ in range(500):
            run = self.get(path)
            if run["status"] in TERMINAL:
                return run
            if run["status"] == "requires_action":
                self.post(path + "/cancel", {})
            time.sleep(0.02)
        raise AssertionError(f"{path} did not end")

    def messages_read_back(self, thread_id: str) -> None:
        listed = self.listed(f"/threads/{thread_id}/messages")
        for message in listed.values():
            assert self.get(f"/threads/{thread_id}/messages/{message['id']}") == message
        page = self.sdk.beta.threads.messages.list(thread_id, limit=100)
        assert {message.id for message in page.data} <= set(listed)

    def snapshot(self) -> dict[str, Any]:
        """Everything the user's threads hold, as the API answers it."""
        return {thread_id: (self.get(f"/threads/{thread_id}"),
                            self.listed(f"/threads/{thread_id}/messages"),
                            self.listed(f"/threads/{thread_id}/runs"))
                for thread_id in self.threads}

    def close(self) -> None:
        self.http.close()


thread_operations = st.lists(st.sampled_from(["message", "modify", "run"]), min_size=1, max_size=3)


def exercise(checker: Checker, data: st.DataObject) -> None:
    """One example: maybe an assistant, a thread and a few operations on it, maybe a thread
    made together with its run; every input drawn valid, every answer checked.

    What is drawn never depends on what the bridge answered, so an example replays exactly.
    """
    if data.draw(st.booleans(), label="with an assistant"):
        checker.create_assistant(data.draw(assistant_bodies))
    thread_id = checker.create_thread(data.draw(thread_bodies))
    for operation in data.draw(thread_operations):
        if operation == "message":
            checker.add_message(thread_id, data.draw(messages))
        elif operation == "modify":
            checker.modify_thread(thread_id, data.draw(optional(
                metadata=metadata(15, reserved_allowed=False), tool_resources=tool_resources)))
        else:
            checker.run(thread_id, data.draw(run_options),
                        streamed=data.draw(st.booleans(), label="streamed"))
    if data.draw(st.booleans(), label="with a thread and run"):
        checker.run(None, data.draw(thread_and_run_options),
                    streamed=data.draw(st.booleans(), label="streamed"))


@pytest.mark.parametrize("engine", ENGINES)
def test_accepted_inputs_read_back_are_listed_and_move(start_bridge, engine):
    bridge = start_bridge(engine, **UNLIMITED)
    checker = Checker(bridge)

    # No shrinking: the bridge keeps what earlier examples made, so a replay is not the same test.
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=(Phase.explicit, Phase.generate), suppress_health_check=list(HealthCheck))
    @given(st.data())
    def one_operation(data):
        exercise(checker, data)

    try:
        one_operation()
        before = checker.snapshot()
    finally:
        checker.close()

    home, target_engine = MOVES[engine]
    database = bridge.app.config["BRIDGE_SETTINGS"].DATABASE_URL
    target = start_bridge(target_engine, DATABASE_URL=database, **UNLIMITED)
    result = target.app.test_cli_runner().invoke(args=["migrate-threads", "--to", home])
    assert result.exit_code == 0, result.output
    assert f"{len(before)} thread" in result.output.splitlines()[-1]
    moved = Checker(target)
    moved.threads = list(before)
    try:
        assert moved.snapshot() == before
        for thread_id in before:
            moved.messages_read_back(thread_id)
    finally:
        moved.close()
