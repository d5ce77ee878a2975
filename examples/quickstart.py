#!/usr/bin/env python3
"""Talk to assistants-bridge with the official `openai` SDK, as any Assistants API v2 client would.

    export BRIDGE_TOKEN=$(.venv/bin/flask --app bridge token alice)
    export ASSISTANT_ID=asst_...        # printed by scripts/setup_assistant.py
    .venv/bin/python examples/quickstart.py "What can you do?"

BRIDGE_URL defaults to http://127.0.0.1:8000/v1. Variables missing from the environment are read
from a .env file in the current directory, when there is one (`setup_assistant.py --write-env`
records ASSISTANT_ID there).
"""

import argparse
import os
import sys
import warnings

import openai

DEFAULT_URL = "http://127.0.0.1:8000/v1"
DEFAULT_MESSAGE = "Hello! What can you do?"

# The SDK marks its Assistants resources as deprecated (OpenAI shut that API down); serving them
# is what the bridge is for, so the warning is noise here.
warnings.filterwarnings("ignore", "The Assistants API is deprecated", DeprecationWarning)


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
    assistant_id = setting("ASSISTANT_ID", hint="Create one with: python scripts/setup_assistant.py "
                                                "--name helper --model gpt-4o-mini --write-env")
    text = " ".join(args.message) or DEFAULT_MESSAGE

    # The bridge's JWT goes where an OpenAI key would; the provider key stays on the server.
    client = openai.OpenAI(base_url=url, api_key=token)
    try:
        thread = client.beta.threads.create()
        client.beta.threads.messages.create(thread_id=thread.id, role="user", content=text)
        run = client.beta.threads.runs.create_and_poll(thread_id=thread.id,
                                                       assistant_id=assistant_id)
    except openai.APIStatusError as exc:
        sys.exit(f"The bridge refused the request: {exc.message}")
    except openai.APIConnectionError:
        sys.exit(f"Could not reach the bridge at {url}. Is it running (make run)?")

    if run.status != "completed":
        detail = f": {run.last_error.code}: {run.last_error.message}" if run.last_error else ""
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
