"""The documented client paths work: examples/quickstart.py, scripts/setup_assistant.py, .env.example.

The example and the script run as subprocesses, the way a reader runs them; the example talks to a
bridge served over real HTTP by the fixtures.
"""

from __future__ import annotations

import json
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path
from urllib.request import Request, urlopen

import openai
import pytest

from bridge import create_app
from bridge.config import Settings
from tests.conftest import JWT_SECRET, make_token

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "examples" / "quickstart.py"
TOOLS_EXAMPLE = ROOT / "examples" / "tools.py"
SETUP_SCRIPT = ROOT / "scripts" / "setup_assistant.py"
ENV_EXAMPLE = ROOT / ".env.example"
GUNICORN_SETTINGS = ("BIND", "WEB_CONCURRENCY", "GUNICORN_THREADS", "GUNICORN_TIMEOUT",
                     "STREAMS_PER_PROCESS")
ASSISTANT_ID = re.compile(r"^asst_[A-Za-z0-9]{24}$")
SETTING_LINE = r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$"  # NAME=value, or commented out


def _clean_env(**values: str) -> dict[str, str]:
    """The test process's environment without any bridge setting, plus `values`."""
    drop = set(Settings.model_fields) | {"BRIDGE_URL", "BRIDGE_TOKEN", *GUNICORN_SETTINGS}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(values)
    return env


# ---- examples/quickstart.py ----------------------------------------------------------------

def run_example(script: Path, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    # An empty .env in cwd stops the example's .env lookup from finding one further up.
    (cwd / ".env").touch()
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, env=_clean_env(**env),
                          capture_output=True, text=True, timeout=60)


def run_quickstart(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return run_example(QUICKSTART, cwd, *args, **env)


def test_quickstart_on_offline_engine(offline_bridge, tmp_path):
    bridge = offline_bridge
    result = run_quickstart(tmp_path, "Where is my parcel?", BRIDGE_URL=bridge.api,
                            BRIDGE_TOKEN=bridge.token("alice"), ASSISTANT_ID=bridge.assistant())

    assert result.returncode == 0, result.stderr
    assert 'You said: "Where is my parcel?"' in result.stdout
    assert "DeprecationWarning" not in result.stderr
    # The thread is alice's: hers to list, with her message and the reply.
    with urlopen(Request(bridge.api + "/threads", headers=bridge.headers("alice")),
                 timeout=10) as listed:
        [thread] = json.load(listed)["data"]
    assert thread["metadata"]["user_id"] == "alice"
    assert thread["id"] in result.stderr
    messages = bridge.sdk("alice").beta.threads.messages.list(thread_id=thread["id"],
                                                               order="asc").data
    assert [m.role for m in messages] == ["user", "assistant"]
    assert messages[0].content[0].text.value == "Where is my parcel?"


def test_quickstart_on_chat_engine_prints_the_model_reply(chat_bridge, tmp_path):
    bridge = chat_bridge
    assistant_id = bridge.assistant(instructions="Answer in one sentence.")
    bridge.fake.enqueue("Your parcel is in Lyon.")

    result = run_quickstart(tmp_path, "Where", "is", "my", "parcel?", BRIDGE_URL=bridge.api,
                            BRIDGE_TOKEN=bridge.token("alice"), ASSISTANT_ID=assistant_id)

    assert result.returncode == 0, result.stderr
    assert result.stdout == "Your parcel is in Lyon.\n"
    sent = bridge.fake.requests[-1]["json"]
    assert sent["model"] == "fake-model"
    assert sent["messages"] == [{"role": "system", "content": "Answer in one sentence."},
                                {"role": "user", "content": "Where is my parcel?"}]


def test_quickstart_on_responses_engine_prints_the_model_reply(responses_bridge, tmp_path):
    bridge = responses_bridge
    assistant_id = bridge.assistant(instructions="Answer in one sentence.")
    bridge.fake.enqueue("Your parcel is in Lyon.")

    result = run_quickstart(tmp_path, "Where is my parcel?", BRIDGE_URL=bridge.api,
                            BRIDGE_TOKEN=bridge.token("alice"), ASSISTANT_ID=assistant_id)

    assert result.returncode == 0, result.stderr
    assert result.stdout == "Your parcel is in Lyon.\n"
    assert "DeprecationWarning" not in result.stderr
    # The thread is a conversation upstream, the message an item of it, the run a background
    # response on it.
    posts = [r for r in bridge.fake.requests if r["method"] == "POST"]
    assert [r["route"] for r in posts] == ["POST /v1/conversations",
                                           "POST /v1/conversations/{id}/items",
                                           "POST /v1/responses"]
    _, items, response = posts
    conversation_id = items["path"].split("/")[3]
    assert items["json"]["items"] == [{"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "Where is my parcel?"}]}]
    response = response["json"]
    assert response["conversation"] == conversation_id
    assert response["background"] is True
    assert response["model"] == "fake-model"
    assert response["instructions"] == "Answer in one sentence."


def test_quickstart_exits_non_zero_when_the_run_fails(chat_bridge, tmp_path):
    bridge = chat_bridge
    bridge.fake.enqueue({"status": 500})

    result = run_quickstart(tmp_path, BRIDGE_URL=bridge.api, BRIDGE_TOKEN=bridge.token("alice"),
                            ASSISTANT_ID=bridge.assistant())

    assert result.returncode == 1
    assert result.stdout == ""
    assert "failed" in result.stderr and "server_error" in result.stderr
    # Without arguments the example sends its default message.
    assert bridge.fake.requests[-1]["json"]["messages"][-1]["role"] == "user"
    assert bridge.fake.requests[-1]["json"]["messages"][-1]["content"]


def test_quickstart_reports_a_refused_token(offline_bridge, tmp_path):
    result = run_quickstart(tmp_path, BRIDGE_URL=offline_bridge.api, BRIDGE_TOKEN="not-a-jwt",
                            ASSISTANT_ID=offline_bridge.assistant())

    assert result.returncode != 0
    assert "401" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("script", [QUICKSTART, TOOLS_EXAMPLE], ids=lambda path: path.name)
@pytest.mark.parametrize("missing", ["BRIDGE_TOKEN", "ASSISTANT_ID"])
def test_examples_name_a_missing_setting(tmp_path, missing, script):
    env = {"BRIDGE_URL": "http://127.0.0.1:9/v1", "BRIDGE_TOKEN": "t",
           "ASSISTANT_ID": "asst_" + "a" * 24}
    del env[missing]

    result = run_example(script, tmp_path, **env)

    assert result.returncode != 0
    assert f"{missing} is not set" in result.stderr
    assert "Traceback" not in result.stderr


# ---- examples/tools.py -----------------------------------------------------------------------

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
# What the example's local get_weather returns for these cities, as the output it submits.
PARIS = '{"city": "Paris", "sky": "sunny", "temperature_c": 24}'
OSLO = '{"city": "Oslo", "sky": "rain", "temperature_c": 9}'


def run_tools(bridge, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """examples/tools.py as alice, with an assistant that has the get_weather tool."""
    return run_example(TOOLS_EXAMPLE, cwd, *args, BRIDGE_URL=bridge.api,
                       BRIDGE_TOKEN=bridge.token("alice"),
                       ASSISTANT_ID=bridge.assistant(tools=[WEATHER_TOOL]))


def _chat_call(call_id: str, name: str, arguments: str) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def test_tools_round_trip_on_responses_engine(responses_bridge, tmp_path):
    bridge = responses_bridge
    bridge.fake.enqueue({"function_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]},
                        "Sunny and 24 degrees in Paris.")

    result = run_tools(bridge, tmp_path, "Weather in Paris?")

    assert result.returncode == 0, result.stderr
    assert result.stdout == "Sunny and 24 degrees in Paris.\n"
    assert "DeprecationWarning" not in result.stderr and "Traceback" not in result.stderr
    assert f'get_weather({{"city": "Paris"}}) = {PARIS}' in result.stderr
    first, second = [r["json"] for r in bridge.fake.requests if r["route"] == "POST /v1/responses"]
    assert first["tools"][0]["name"] == "get_weather" and "input" not in first
    # The tool output went back as a new background response on the same conversation.
    assert second["conversation"] == first["conversation"] and second["background"] is True
    [output] = second["input"]
    assert output["type"] == "function_call_output" and output["output"] == PARIS
    # ... answering the call the model made: the conversation holds both, then the reply.
    upstream = openai.OpenAI(base_url=bridge.fake.base_url, api_key=bridge.fake.api_key)
    with upstream:
        items = upstream.conversations.items.list(first["conversation"], order="asc").data
    assert [item.type for item in items] == ["message", "function_call", "function_call_output",
                                             "message"]
    assert items[1].call_id == items[2].call_id == output["call_id"]


def test_tools_round_trip_on_chat_engine_answers_every_call(chat_bridge, tmp_path):
    bridge = chat_bridge
    bridge.fake.enqueue({"tool_calls": [_chat_call("call_1", "get_weather", '{"city": "Oslo"}'),
                                        _chat_call("call_2", "get_time", "{}"),
                                        _chat_call("call_3", "get_weather", '{"town": "Oslo"}')]},
                        "Rain in Oslo: take an umbrella.")

    result = run_tools(bridge, tmp_path, "Umbrella", "in", "Oslo?")

    assert result.returncode == 0, result.stderr
    assert result.stdout == "Rain in Oslo: take an umbrella.\n"
    first, second = [r["json"] for r in bridge.fake.requests]
    assert first["tools"] == [WEATHER_TOOL]
    assert first["messages"][-1] == {"role": "user", "content": "Umbrella in Oslo?"}
    tool_messages = second["messages"][-3:]
    assert [(m["role"], m["tool_call_id"]) for m in tool_messages] == [
        ("tool", "call_1"), ("tool", "call_2"), ("tool", "call_3")]
    assert tool_messages[0]["content"] == OSLO
    # A call the script cannot run is answered with an error for the model, not a crash.
    assert json.loads(tool_messages[1]["content"]) == {"error": "unknown function 'get_time'"}
    assert "bad arguments" in json.loads(tool_messages[2]["content"])["error"]


def test_tools_round_trip_on_offline_engine(offline_bridge, tmp_path):
    """The offline engine calls the tool the message names, with the message's JSON."""
    result = run_tools(offline_bridge, tmp_path, 'Use get_weather for {"city": "Oslo"}')

    assert result.returncode == 0, result.stderr
    assert f'get_weather({{"city": "Oslo"}}) = {OSLO}' in result.stderr
    assert result.stdout.startswith(f'get_weather returned "{OSLO}"')


def test_tools_round_trip_on_assistants_engine(assistants_bridge, tmp_path):
    bridge = assistants_bridge
    bridge.fake.enqueue({"function_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]},
                        "Sunny in Paris.")

    result = run_tools(bridge, tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout == "Sunny in Paris.\n"
    [submitted] = [r["json"] for r in bridge.fake.requests
                   if r["route"] == "POST /v1/threads/{id}/runs/{run_id}/submit_tool_outputs"]
    [output] = submitted["tool_outputs"]
    assert output["output"] == PARIS


def test_tools_exits_non_zero_when_the_run_fails_after_a_tool_call(chat_bridge, tmp_path):
    bridge = chat_bridge
    bridge.fake.enqueue({"tool_calls": [_chat_call("call_1", "get_weather", '{"city": "Paris"}')]},
                        {"status": 500})

    result = run_tools(bridge, tmp_path)

    assert result.returncode == 1
    assert result.stdout == ""
    assert "ended failed: server_error" in result.stderr and "Traceback" not in result.stderr
    # The tool output was sent before the model failed.
    assert bridge.fake.requests[1]["json"]["messages"][-1]["content"] == PARIS


def test_tools_gives_up_on_a_model_that_keeps_calling_tools(chat_bridge, tmp_path):
    bridge = chat_bridge
    bridge.fake.enqueue(*[{"tool_calls": [_chat_call(f"call_{n}", "get_weather",
                                                     '{"city": "Lyon"}')]} for n in range(10)])

    result = run_tools(bridge, tmp_path)

    assert result.returncode == 1
    assert "cancelled" in result.stderr and "Traceback" not in result.stderr
    assert len(bridge.fake.requests) == 6  # the first call and five rounds of tool outputs
    with urlopen(Request(bridge.api + "/threads", headers=bridge.headers("alice")),
                 timeout=10) as listed:
        [thread] = json.load(listed)["data"]
    [run] = bridge.sdk("alice").beta.threads.runs.list(thread_id=thread["id"]).data
    assert run.status in ("cancelling", "cancelled")


# ---- scripts/setup_assistant.py --------------------------------------------------------------

@pytest.fixture
def registry_file(tmp_path) -> Path:
    return tmp_path / "registry.db"


@pytest.fixture
def setup_assistant(tmp_path, registry_file):
    """Run the script in a temporary directory against a temporary SQLite registry."""
    workdir = tmp_path / "work"
    workdir.mkdir()

    def run(*args: str) -> subprocess.CompletedProcess:
        env = _clean_env(DATABASE_URL=f"sqlite:///{registry_file}", JWT_SECRET_KEY=JWT_SECRET,
                         JWT_ALGORITHM="HS256", BRIDGE_ENGINE="offline", AUTO_MIGRATE="true")
        result = subprocess.run([sys.executable, str(SETUP_SCRIPT), *args], cwd=workdir, env=env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result

    run.workdir = workdir
    return run


class Registry:
    """Reads assistants back through the API of an app on the script's registry.

    The app is built on first use, so the script is the first to open (and migrate) the file.
    """

    def __init__(self, path: Path):
        self.path = path
        self.app = None

    def _get(self, url: str) -> dict:
        if self.app is None:
            self.app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{self.path}",
                                   "JWT_SECRET_KEY": JWT_SECRET, "BRIDGE_ENGINE": "offline"})
        headers = {"Authorization": f"Bearer {make_token(self.app, 'alice')}"}
        response = self.app.test_client().get(url, headers=headers)
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    def assistant(self, assistant_id: str) -> dict:
        return self._get(f"/v1/assistants/{assistant_id}")

    def assistant_ids(self) -> list[str]:
        return [a["id"] for a in self._get("/v1/assistants")["data"]]

    def close(self) -> None:
        if self.app is not None:
            self.app.extensions["bridge.engine"].shutdown()


@pytest.fixture
def registry(registry_file):
    reader = Registry(registry_file)
    yield reader
    reader.close()


def printed_id(result: subprocess.CompletedProcess) -> str:
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and ASSISTANT_ID.match(lines[0]), result.stdout
    return lines[0]


def test_setup_assistant_is_idempotent_by_name(setup_assistant, registry):
    first = setup_assistant("--name", "support", "--model", "gpt-4o-mini",
                            "--instructions", "Be brief.")
    again = setup_assistant("--name", "support", "--model", "llama3.2")
    other = setup_assistant("--name", "sales", "--model", "gpt-4o-mini")

    assistant_id = printed_id(first)
    assert "created" in first.stderr and "updated" in again.stderr
    assert printed_id(again) == assistant_id
    assert printed_id(other) != assistant_id
    assert sorted(registry.assistant_ids()) == sorted([assistant_id, printed_id(other)])
    updated = registry.assistant(assistant_id)
    assert updated["model"] == "llama3.2"
    assert updated["name"] == "support"
    assert updated["instructions"] == "Be brief."  # not given the second time: kept


def test_setup_assistant_reads_instructions_from_a_file(setup_assistant, registry):
    instructions = "You answer questions about parcels.\nNever promise a delivery date.\n"
    (setup_assistant.workdir / "instructions.md").write_text(instructions)

    result = setup_assistant("--name", "parcels", "--model", "m",
                             "--instructions-file", "instructions.md")

    assert registry.assistant(printed_id(result))["instructions"] == instructions


def test_setup_assistant_write_env_updates_only_assistant_id(setup_assistant):
    env_file = setup_assistant.workdir / ".env"
    env_file.write_text("# my settings\nBRIDGE_ENGINE=offline\nASSISTANT_ID=asst_old\n"
                        "OPENAI_TIMEOUT=30\n")

    first = printed_id(setup_assistant("--name", "helper", "--model", "m", "--write-env"))

    assert env_file.read_text() == (f"# my settings\nBRIDGE_ENGINE=offline\nASSISTANT_ID={first}\n"
                                    "OPENAI_TIMEOUT=30\n")

    second = printed_id(setup_assistant("--name", "other", "--model", "m", "--write-env"))

    assert second != first
    assert env_file.read_text() == (f"# my settings\nBRIDGE_ENGINE=offline\nASSISTANT_ID={second}\n"
                                    "OPENAI_TIMEOUT=30\n")


def test_setup_assistant_write_env_creates_the_named_file(setup_assistant):
    assistant_id = printed_id(setup_assistant("--name", "helper", "--model", "m",
                                              "--write-env", "deploy.env"))

    assert (setup_assistant.workdir / "deploy.env").read_text() == f"ASSISTANT_ID={assistant_id}\n"
    assert not (setup_assistant.workdir / ".env").exists()


# ---- .env.example ----------------------------------------------------------------------------

def env_example() -> dict[str, str]:
    """NAME -> value of every `NAME=value` or `# NAME=value` line."""
    entries = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.match(SETTING_LINE, line)
        if match:
            assert match.group(1) not in entries, f"{match.group(1)} is listed twice"
            entries[match.group(1)] = match.group(2)
    return entries


def test_env_example_names_every_setting_and_nothing_else():
    names = set(env_example())

    assert set(Settings.model_fields) <= names, set(Settings.model_fields) - names
    assert set(GUNICORN_SETTINGS) <= names
    assert names <= set(Settings.model_fields) | set(GUNICORN_SETTINGS), names - set(Settings.model_fields)


def test_env_example_comments_every_setting():
    lines = ENV_EXAMPLE.read_text().splitlines()
    for index, line in enumerate(lines):
        if re.match(SETTING_LINE, line):
            comment = lines[index - 1]
            assert comment.startswith("# ") and not re.match(SETTING_LINE, comment), \
                f"no comment above {line!r}"


def test_env_example_shows_the_defaults(monkeypatch):
    for name in Settings.model_fields:
        monkeypatch.delenv(name, raising=False)
    entries = env_example()
    for name, field in Settings.model_fields.items():
        shown = entries[name]
        if name == "BRIDGE_ENGINE":  # unset means offline; the example says so
            assert Settings(BRIDGE_ENGINE=shown).engine == Settings().engine == "offline"
        elif field.default in (None, ""):
            assert shown == "", f"{name} defaults to unset but .env.example shows {shown!r}"
        else:
            assert getattr(Settings(**{name: shown}), name) == field.default, name


def test_env_example_shows_gunicorn_defaults(monkeypatch):
    for name in GUNICORN_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    entries = env_example()
    config = runpy.run_path(str(ROOT / "gunicorn.conf.py"))

    assert config["bind"] == entries["BIND"]
    assert config["workers"] == int(entries["WEB_CONCURRENCY"])
    # A thread for each ordinary request and each stream a worker holds at once.
    assert config["threads"] == int(entries["GUNICORN_THREADS"]) + int(
        entries["STREAMS_PER_PROCESS"])
    assert config["timeout"] == int(entries["GUNICORN_TIMEOUT"])


# ---- examples/stream.py ----------------------------------------------------------------------

STREAM_EXAMPLE = ROOT / "examples" / "stream.py"


def run_stream_example(bridge, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return run_example(STREAM_EXAMPLE, cwd, *args, BRIDGE_URL=bridge.api,
                       BRIDGE_TOKEN=bridge.token("alice"),
                       ASSISTANT_ID=bridge.assistant(tools=[WEATHER_TOOL]))


def test_stream_example_prints_the_reply_as_it_comes(offline_bridge, tmp_path):
    result = run_stream_example(offline_bridge, tmp_path, "Hello", "streams")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('You said: "Hello streams".')
    assert "DeprecationWarning" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("engine", ["offline", "responses"])
def test_stream_example_answers_tool_calls_in_the_stream(start_bridge, tmp_path, engine):
    bridge = start_bridge(engine)
    if engine == "responses":
        bridge.fake.enqueue({"function_calls": [{"name": "get_weather",
                                                 "arguments": {"city": "Oslo"}}]},
                            "Rain in Oslo: take an umbrella.")

    result = run_stream_example(bridge, tmp_path, 'Use get_weather for {"city": "Oslo"}')

    assert result.returncode == 0, result.stderr
    assert '-> get_weather({"city": "Oslo"})' in result.stderr
    expected = (f'get_weather returned "{OSLO}"' if engine == "offline"
                else "Rain in Oslo: take an umbrella.")
    assert expected in result.stdout
