#!/usr/bin/env python3
"""A function-tool round trip through assistants-bridge with the official `openai` SDK.

The model cannot look up the weather; it asks for `get_weather(city)`, this script runs the
Python function below and hands the result back, and the model answers with it:

    run = create_and_poll(...)                   -> requires_action, with tool calls
    run = submit_tool_outputs_and_poll(outputs)  -> completed (or another round of calls)

It needs an assistant that has the `get_weather` function tool. The operator provisions one:

    python scripts/setup_assistant.py --name weather --model gpt-4o-mini --tool '{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}'

then:

    export BRIDGE_TOKEN=$(.venv/bin/flask --app bridge token alice)
    export ASSISTANT_ID=asst_...        # printed by the command above
    .venv/bin/python examples/tools.py "Should I take an umbrella in Oslo?"

BRIDGE_URL defaults to http://127.0.0.1:8000/v1. Variables missing from the environment are read
from a .env file in the current directory, when there is one. The reply goes to stdout; the tool
calls and the thread and run ids go to stderr.
"""

import argparse
import json
import os
import sys
import warnings

import openai

DEFAULT_URL = "http://127.0.0.1:8000/v1"
DEFAULT_MESSAGE = "What's the weather like in Paris?"
# A model that keeps asking for tools is stopped after this many rounds.
MAX_TOOL_ROUNDS = 5

# The SDK marks its Assistants resources as deprecated (OpenAI shut that API down); serving them
# is what the bridge is for, so the warning is noise here.
warnings.filterwarnings("ignore", "The Assistants API is deprecated", DeprecationWarning)


# ---- the local functions the assistant may call -----------------------------------------------

def get_weather(city: str) -> dict:
    """Today's weather for a city. A real app would call a weather service here."""
    forecasts = {"paris": ("sunny", 24), "oslo": ("rain", 9), "lyon": ("cloudy", 18)}
    sky, celsius = forecasts.get(city.strip().lower(), ("clear", 20))
    return {"city": city, "sky": sky, "temperature_c": celsius}


# Tool name, as declared on the assistant -> the Python function that implements it.
FUNCTIONS = {"get_weather": get_weather}


def call_function(name: str, arguments: str) -> str:
    """Run one tool call and return its output as the string the model reads back.

    A failure is reported to the model as the output, so it can tell the user or try again.
    """
    function = FUNCTIONS.get(name)
    if function is None:
        return json.dumps({"error": f"unknown function {name!r}"})
    try:
        result = function(**json.loads(arguments or "{}"))
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        return json.dumps({"error": f"bad arguments for {name}: {exc}"})
    return json.dumps(result)


# ---- the client -------------------------------------------------------------------------------

def setting(name: str, default: str | None = None, hint: str = "") -> str:
    value = os.environ.get(name, "").strip() or default
    if not value:
        sys.exit(f"{name} is not set. {hint}")
    return value


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("message", nargs="*",
                        help=f"the message to send (default: {DEFAULT_MESSAGE!r})")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    try:
        from dotenv import find_dotenv, load_dotenv
    except ImportError:
        pass
    else:
        load_dotenv(find_dotenv(usecwd=True))

    url = setting("BRIDGE_URL", DEFAULT_URL)
    token = setting("BRIDGE_TOKEN", hint="Mint one with: .venv/bin/flask --app bridge token alice")
    assistant_id = setting("ASSISTANT_ID", hint="Provision an assistant with the get_weather tool: "
                                                "see the top of examples/tools.py")
    text = " ".join(args.message) or DEFAULT_MESSAGE

    client = openai.OpenAI(base_url=url, api_key=token)
    runs = client.beta.threads.runs
    try:
        thread = client.beta.threads.create(messages=[{"role": "user", "content": text}])
        run = runs.create_and_poll(thread_id=thread.id, assistant_id=assistant_id)

        rounds = 0
        while run.status == "requires_action" and rounds < MAX_TOOL_ROUNDS:
            rounds += 1
            outputs = []
            for call in run.required_action.submit_tool_outputs.tool_calls:
                output = call_function(call.function.name, call.function.arguments)
                print(f"-> {call.function.name}({call.function.arguments}) = {output}",
                      file=sys.stderr)
                outputs.append({"tool_call_id": call.id, "output": output})
            run = runs.submit_tool_outputs_and_poll(thread_id=thread.id, run_id=run.id,
                                                    tool_outputs=outputs)

        if run.status == "requires_action":  # still asking after MAX_TOOL_ROUNDS: give up
            run = runs.cancel(run.id, thread_id=thread.id)
            print(f"Run {run.id} still wanted tools after {MAX_TOOL_ROUNDS} rounds: cancelled",
                  file=sys.stderr)
            return 1
    except openai.APIStatusError as exc:
        sys.exit(f"The bridge refused the request: {exc.message}")
    except openai.APIConnectionError:
        sys.exit(f"Could not reach the bridge at {url}. Is it running (make run)?")

    if run.status != "completed":  # failed, cancelled, expired or incomplete
        detail = ""
        if run.last_error:
            detail = f": {run.last_error.code}: {run.last_error.message}"
        elif run.incomplete_details:
            detail = f": {run.incomplete_details.reason}"
        print(f"Run {run.id} ended {run.status}{detail}", file=sys.stderr)
        return 1

    replies = client.beta.threads.messages.list(thread_id=thread.id, run_id=run.id, order="asc")
    for message in replies.data:
        for part in message.content:
            if part.type == "text":
                print(part.text.value)
    print(f"(thread {thread.id}, run {run.id})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
