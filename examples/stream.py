#!/usr/bin/env python3
"""A streamed run through assistants-bridge with the official `openai` SDK: the reply is printed
as it is written, and tool calls are answered as they come, in the same stream style.

    run = runs.stream(...)                   -> text deltas ... (or: tool calls, requires_action)
    run = runs.submit_tool_outputs_stream()  -> the reply's text deltas, now that it has them

On every engine; with the `offline` engine name the tool to have it called:

    export BRIDGE_TOKEN=$(.venv/bin/flask --app bridge token alice)
    export ASSISTANT_ID=asst_...   # an assistant with the get_weather tool (see examples/tools.py)
    .venv/bin/python examples/stream.py 'Use get_weather for {"city": "Oslo"}'

BRIDGE_URL defaults to http://127.0.0.1:8000/v1; variables missing from the environment are read
from a .env file in the current directory, when there is one. The reply goes to stdout as it
arrives; tool calls go to stderr. Exit status 1 when the run does not complete.
"""

import argparse
import json
import os
import sys
import warnings

import openai
from openai import AssistantEventHandler

DEFAULT_URL = "http://127.0.0.1:8000/v1"
DEFAULT_MESSAGE = "Tell me about streams."
MAX_TOOL_ROUNDS = 5

# The SDK marks its Assistants resources as deprecated (OpenAI shut that API down); serving them
# is what the bridge is for, so the warning is noise here.
warnings.filterwarnings("ignore", "The Assistants API is deprecated", DeprecationWarning)


def get_weather(city: str) -> dict:
    """Today's weather for a city. A real app would call a weather service here."""
    forecasts = {"paris": ("sunny", 24), "oslo": ("rain", 9), "lyon": ("cloudy", 18)}
    sky, celsius = forecasts.get(city.strip().lower(), ("clear", 20))
    return {"city": city, "sky": sky, "temperature_c": celsius}


def call_function(name: str, arguments: str) -> str:
    """One tool call's output, as the string the model reads back (errors included)."""
    if name != "get_weather":
        return json.dumps({"error": f"unknown function {name!r}"})
    try:
        return json.dumps(get_weather(**json.loads(arguments or "{}")))
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        return json.dumps({"error": f"bad arguments for {name}: {exc}"})


class Printer(AssistantEventHandler):
    """Prints the reply's text as each delta arrives."""

    def on_text_delta(self, delta, snapshot) -> None:
        print(delta.value, end="", flush=True)

    def on_tool_call_done(self, tool_call) -> None:
        print(f"-> {tool_call.function.name}({tool_call.function.arguments})", file=sys.stderr)


def setting(name: str, default: str | None = None, hint: str = "") -> str:
    value = os.environ.get(name, "").strip() or default
    if not value:
        sys.exit(f"{name} is not set. {hint}")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("message", nargs="*",
                        help=f"the message to send (default: {DEFAULT_MESSAGE!r})")
    args = parser.parse_args()
    try:
        from dotenv import find_dotenv, load_dotenv
    except ImportError:
        pass
    else:
        load_dotenv(find_dotenv(usecwd=True))

    url = setting("BRIDGE_URL", DEFAULT_URL)
    token = setting("BRIDGE_TOKEN", hint="Mint one with: .venv/bin/flask --app bridge token alice")
    assistant_id = setting("ASSISTANT_ID", hint="Provision an assistant: see examples/tools.py")
    text = " ".join(args.message) or DEFAULT_MESSAGE

    client = openai.OpenAI(base_url=url, api_key=token)
    runs = client.beta.threads.runs
    try:
        thread = client.beta.threads.create(messages=[{"role": "user", "content": text}])
        with runs.stream(thread_id=thread.id, assistant_id=assistant_id,
                         event_handler=Printer()) as stream:
            stream.until_done()
            run = stream.get_final_run()
        rounds = 0
        while run.status == "requires_action" and rounds < MAX_TOOL_ROUNDS:
            rounds += 1
            outputs = [{"tool_call_id": call.id,
                        "output": call_function(call.function.name, call.function.arguments)}
                       for call in run.required_action.submit_tool_outputs.tool_calls]
            with runs.submit_tool_outputs_stream(thread_id=thread.id, run_id=run.id,
                                                 tool_outputs=outputs,
                                                 event_handler=Printer()) as stream:
                stream.until_done()
                run = stream.get_final_run()
    except openai.APIStatusError as exc:
        sys.exit(f"The bridge refused the request: {exc.message}")
    except openai.APIConnectionError:
        sys.exit(f"Could not reach the bridge at {url}. Is it running (make run)?")
    print()
    if run.status != "completed":
        print(f"Run {run.id} ended {run.status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
