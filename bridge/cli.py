"""Flask commands: `flask setup-assistant`, `flask token`, `flask migrate-threads`, `flask run-worker`."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import with_appcontext
from pydantic import ValidationError

from .api.bodies import check_body_bounds
from .errors import InvalidRequest, validation_message
from .provisioning import provision_assistant
from .schemas import AssistantCreate

_BUILTIN_TOOLS = {"code_interpreter", "file_search"}


def _parse_tool(value: str) -> dict:
    """A tool given as a built-in name, inline JSON, or @path to a JSON file."""
    if value in _BUILTIN_TOOLS:
        return {"type": value}
    text = Path(value[1:]).read_text() if value.startswith("@") else value
    try:
        return json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not a tool name or JSON: {exc}", param_hint="--tool") from None


def write_env_value(path: Path, key: str, value: str) -> None:
    """Set KEY=value in a .env file, replacing an existing line and keeping the others."""
    lines = path.read_text().splitlines() if path.exists() else []
    pattern = re.compile(rf"^\s*(export\s+)?{re.escape(key)}\s*=")
    replaced = False
    for index, line in enumerate(lines):
        if pattern.match(line):
            lines[index] = f"{key}={value}"
            replaced = True
    if not replaced:
        lines.append(f"{key}={value}")
    path.write_text("\n".join(lines) + "\n")


@click.command("setup-assistant")
@click.option("--name", required=True, help="Assistant name; running again with it updates that assistant.")
@click.option("--model", required=True, help="Model the assistant's runs use.")
@click.option("--instructions", help="System instructions, inline.")
@click.option("--instructions-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="System instructions, read from a file.")
@click.option("--description", help="A short description.")
@click.option("--temperature", type=click.FloatRange(0, 2), help="Sampling temperature, 0-2.")
@click.option("--tool", "tools", multiple=True,
              help="code_interpreter, file_search, a function tool as JSON, or @file.json. "
                   "Repeatable; replaces the stored tools.")
@click.option("--clear-tools", is_flag=True, help="Remove all tools from the assistant.")
@click.option("--write-env", "env_file", is_flag=False, flag_value=".env", default=None,
              help="Record ASSISTANT_ID in this .env file (default .env).")
@with_appcontext
def setup_assistant(name, model, instructions, instructions_file, description, temperature, tools,
                    clear_tools, env_file):
    """Create or update the assistant (idempotent by name) and print its id."""
    if instructions and instructions_file:
        raise click.UsageError("Give --instructions or --instructions-file, not both.")
    if instructions_file:
        instructions = instructions_file.read_text()
    if tools and clear_tools:
        raise click.UsageError("Give --tool or --clear-tools, not both.")
    # Options left out keep the stored values when the assistant already exists.
    fields = {"name": name, "model": model}
    if tools or clear_tools:
        fields["tools"] = [_parse_tool(t) for t in tools]
    for key, value in (("instructions", instructions), ("description", description),
                       ("temperature", temperature)):
        if value is not None:
            fields[key] = value
    try:
        check_body_bounds(fields)  # the same bounds as the admin API's
        body = AssistantCreate(**fields)
    except InvalidRequest as exc:
        raise click.UsageError(exc.message) from None
    except ValidationError as exc:
        raise click.UsageError(validation_message(exc)[0]) from None
    assistant, created = provision_assistant(body)
    click.echo(f"{'created' if created else 'updated'} assistant {assistant.name!r}", err=True)
    click.echo(assistant.id)
    if env_file:
        write_env_value(Path(env_file), "ASSISTANT_ID", assistant.id)
        click.echo(f"wrote ASSISTANT_ID to {env_file}", err=True)


@click.command("token")
@click.argument("user_id")
@click.option("--admin", is_flag=True, help="Add the admin claim (may manage assistants).")
@click.option("--ttl", type=click.IntRange(60, 60 * 60 * 24 * 30), default=3600, show_default=True,
              help="Lifetime in seconds.")
@click.option("--url", "as_link", is_flag=True,
              help="Print a link to the /chat page that signs in with the token "
                   "(only with the development secret).")
@click.option("--base-url", default="http://127.0.0.1:8000", show_default=True,
              help="Where the bridge is served, for --url.")
@with_appcontext
def token(user_id, admin, ttl, as_link, base_url):
    """Mint a development JWT for USER_ID, signed with this bridge's key."""
    from .auth import USER_ID_SHAPE, tokens

    if not USER_ID_SHAPE.fullmatch(user_id):
        raise click.BadParameter("use letters, digits and . _ : @ | + -", param_hint="USER_ID")
    settings = current_app.config["BRIDGE_SETTINGS"]
    if as_link and not settings.uses_development_secret:
        # A configured key signs real users' tokens: those belong to an identity provider, not
        # in links that end up in shell history and chat messages.
        raise click.UsageError("--url works only with the development secret; this bridge has "
                               "JWT_SECRET_KEY or JWT_PUBLIC_KEY configured. Paste a token into "
                               "the /chat page's sign-in box instead.")
    if as_link and not re.fullmatch(r"https?://[^\s#?]+", base_url):
        raise click.BadParameter("give an http:// or https:// URL without query or fragment",
                                 param_hint="--base-url")
    claims = {settings.JWT_ADMIN_CLAIM: settings.JWT_ADMIN_VALUE} if admin else {}
    try:
        minted = tokens().mint(user_id, ttl=ttl, claims=claims)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    # The page reads the token from the fragment, which browsers never send to a server.
    click.echo(f"{base_url.rstrip('/')}/chat#token={minted}" if as_link else minted)


_ENGINE_NAMES = ("offline", "chat", "responses", "assistants", "local")


@click.command("migrate-threads")
@click.option("--to", "target", required=True, type=click.Choice(_ENGINE_NAMES),
              help="Engine to move threads to (offline, chat and local all mean the registry).")
@click.option("--from", "source", type=click.Choice(_ENGINE_NAMES),
              help="Only threads kept by this engine or home (default: every other home).")
@click.option("--user", help="Only the threads of this user id.")
@click.option("--limit", type=click.IntRange(min=1), help="Move at most N threads this time.")
@click.option("--dry-run", is_flag=True, help="Report what would be moved; change nothing.")
@click.option("--delete-source", is_flag=True,
              help="After a thread is moved, delete its old upstream conversation or thread.")
@with_appcontext
def migrate_threads(target, source, user, limit, dry_run, delete_source):
    """Copy threads (messages, metadata, owner) to another engine, keeping their ids.

    Resumable: a move that was interrupted continues where it stopped when run again. Threads
    with an active run are skipped. Exits with 1 when a thread could not be moved.
    """
    from .moving import home_of, move_threads

    if source and home_of(source) == home_of(target):
        raise click.UsageError("--from and --to name the same home.")
    summary = move_threads(target, source=source, user=user, limit=limit, dry_run=dry_run,
                           delete_source=delete_source,
                           report=lambda outcome: click.echo(outcome.line()))
    click.echo(summary.line())
    if summary.failed:
        sys.exit(1)


@click.command("run-worker")
@click.option("--burst", is_flag=True, help="Exit once the queue is empty.")
@with_appcontext
def run_worker(burst):
    """Execute queued runs from Redis (RUN_EXECUTOR=rq); start as many as runs should overlap."""
    from redis import Redis
    from rq import Queue, SimpleWorker

    from .jobs import use_app

    settings = current_app.config["BRIDGE_SETTINGS"]
    if not settings.REDIS_URL:
        raise click.UsageError("REDIS_URL is not set.")
    use_app(current_app._get_current_object())
    connection = Redis.from_url(settings.REDIS_URL)
    # SimpleWorker runs jobs in this process: the app, its engine and connections stay warm.
    worker = SimpleWorker([Queue(settings.RQ_QUEUE, connection=connection)],
                          connection=connection)
    worker.work(burst=burst, with_scheduler=False)


def register_commands(app: Flask) -> None:
    app.cli.add_command(setup_assistant)
    app.cli.add_command(token)
    app.cli.add_command(migrate_threads)
    app.cli.add_command(run_worker)


def setup_assistant_main() -> None:
    """Entry point of scripts/setup_assistant.py: the same command, with the app built for it."""
    from dotenv import find_dotenv, load_dotenv

    from . import create_app

    # The same .env that `--write-env` writes by default: the current directory's.
    load_dotenv(find_dotenv(usecwd=True))
    app = create_app()
    with app.app_context():
        sys.exit(setup_assistant.main(standalone_mode=True))
