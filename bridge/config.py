"""Settings from the environment: one place, with defaults and validation."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

class Settings(BaseSettings):
    """Every setting the bridge reads; `.env.example` documents each one."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=True)

    # Where the registry lives. Empty means a SQLite file in the instance folder.
    DATABASE_URL: str = ""
    # Upgrade the schema to the newest migration when the app starts.
    AUTO_MIGRATE: bool = True

    # Which engine keeps threads and answers runs: offline (built-in responder), chat (Chat
    # Completions, threads in the registry), responses (OpenAI Conversations + background
    # Responses) or assistants (an upstream that still serves the Assistants API). Unset means
    # responses when OPENAI_API_KEY is set, offline otherwise.
    BRIDGE_ENGINE: Literal["offline", "chat", "responses", "assistants"] | None = None

    # Upstream provider, for the engines that call one.
    OPENAI_API_KEY: str | None = None
    OPENAI_BASE_URL: str | None = None
    # Seconds; must stay under gunicorn's worker timeout.
    OPENAI_TIMEOUT: float = Field(default=60.0, gt=0, le=600)
    # Retries for calls that are safe to repeat; calls that create something never retry.
    OPENAI_MAX_RETRIES: int = Field(default=2, ge=0, le=10)

    # Identity.
    JWT_SECRET_KEY: str | None = None
    JWT_ALGORITHM: Literal["HS256", "HS384", "HS512", "RS256", "RS384", "RS512"] = "HS256"
    # PEM text or a path to a PEM file; required for RS* algorithms.
    JWT_PUBLIC_KEY: str | None = None
    # Only used by `flask token` to mint development tokens under RS*.
    JWT_PRIVATE_KEY: str | None = None
    JWT_AUDIENCE: str | None = None
    JWT_ISSUER: str | None = None
    JWT_USER_CLAIM: str = "sub"
    JWT_ADMIN_CLAIM: str = "role"
    JWT_ADMIN_VALUE: str = "admin"
    JWT_LEEWAY_SECONDS: int = Field(default=30, ge=0, le=300)

    # Run execution.
    RUN_WORKERS: int = Field(default=8, ge=1, le=256)
    RUN_QUEUE_LIMIT: int = Field(default=1000, ge=1)
    POLL_AFTER_MS: int = Field(default=500, ge=10, le=60_000)
    # A run that has not ended this many seconds after its creation ends as `expired`.
    RUN_TIMEOUT_SECONDS: int = Field(default=600, ge=10, le=86_400)
    # Seconds between passes of each process's sweepers: the run sweeper (expires overdue runs,
    # restarts queued ones, finishes interrupted ones, tracks upstream runs nobody polls) and the
    # ingestion sweeper (see INGEST_STALE_SECONDS); 0 turns both off.
    RUN_SWEEP_SECONDS: float = Field(default=5.0, ge=0, le=3600)
    # Where offline and chat runs execute: "threads" in each server process, or "rq": a Redis
    # queue (REDIS_URL) served by `flask run-worker` processes on any host.
    RUN_EXECUTOR: Literal["threads", "rq"] = "threads"
    RQ_QUEUE: str = Field(default="bridge-runs", min_length=1, max_length=64)
    # Artificial latency of the offline responder, to demonstrate polling and cancel.
    OFFLINE_REPLY_DELAY: float = Field(default=0.0, ge=0, le=600)

    # Streams (`"stream": true`): a `: ping` comment after this many idle seconds, so proxies do
    # not cut a stream that waits; and the most streams one server process holds open at once.
    STREAM_PING_SECONDS: float = Field(default=15.0, gt=0, le=300)
    STREAMS_PER_PROCESS: int = Field(default=256, ge=1, le=10_000)

    # Request bounds. Uploads to POST /v1/files have their own, FILE_MAX_BYTES.
    MAX_CONTENT_LENGTH: int = Field(default=1024 * 1024, ge=1024)

    # Files (/v1/files): the largest upload, the bytes one user's files may take in all, and the
    # directory that keeps their contents (empty: `files` in the instance folder).
    FILE_MAX_BYTES: int = Field(default=32 * 1024 * 1024, ge=1, le=1024 ** 4)
    FILE_QUOTA_BYTES: int = Field(default=256 * 1024 * 1024, ge=1, le=1024 ** 5)
    # Where file contents live: a directory (FILE_STORAGE_DIR, the instance folder's `files` when
    # empty) or the registry's database, which every host of a deployment shares.
    FILE_STORAGE: Literal["directory", "database"] = "directory"
    FILE_STORAGE_DIR: str = ""
    # Vector stores: threads of each process that extract, chunk and index attached files, and
    # the most text one file may yield for indexing (more fails the file, never the process).
    INGEST_WORKERS: int = Field(default=2, ge=1, le=64)
    INGEST_MAX_TEXT_BYTES: int = Field(default=16 * 1024 * 1024, ge=1024, le=1024 ** 3)
    # An embeddings model (say text-embedding-3-small) makes searches hybrid: lexical and
    # semantic ranks fused. Empty: lexical only. Its server is OPENAI_BASE_URL with
    # OPENAI_API_KEY unless these two say otherwise (an Ollama or vLLM server, say).
    EMBEDDINGS_MODEL: str = ""
    EMBEDDINGS_BASE_URL: str | None = None
    EMBEDDINGS_API_KEY: str | None = None
    # Each process's sweep renews its hold on the files it is ingesting or has queued; a file
    # left in_progress that nobody has held for this many seconds (its process died) is queued
    # again by the next sweep of any process, once, and ends `failed` if it stalls again.
    INGEST_STALE_SECONDS: int = Field(default=300, ge=10, le=86_400)

    # The assistant that examples and clients use by default (written by setup-assistant).
    ASSISTANT_ID: str | None = None
    # The assistant that answers ChatKit front ends (POST /chatkit): an id or a name, looked up
    # when a message needs an answer, so it may be set before the assistant exists.
    CHATKIT_ASSISTANT: str | None = None
    # The bridge's address as browsers reach it (https://chat.example.org), for the absolute
    # URLs it hands out (where a ChatKit attachment is uploaded); unset: the request's own host.
    PUBLIC_BASE_URL: str | None = Field(default=None, pattern=r"^https?://[^/?#\s]+(/[^?#\s]*)?$")

    # Shared state for several bridge processes or hosts (rate-limit counters); unset: memory.
    REDIS_URL: str | None = None

    # Per-user rate limits, in the limits library's notation ("120/minute", "10/second;500/hour");
    # empty turns a category off. Reads are GETs, writes other methods, runs the run creations.
    RATE_LIMIT_READS: str = "600/minute"
    RATE_LIMIT_WRITES: str = "120/minute"
    RATE_LIMIT_RUNS: str = "30/minute"

    # How long a POST's Idempotency-Key and its first response are kept, in hours.
    IDEMPOTENCY_TTL_HOURS: int = Field(default=24, ge=1, le=24 * 30)

    # Browser origins allowed by CORS, comma-separated ("*" for any); empty turns CORS off.
    CORS_ORIGINS: str = ""

    # Logging: one structured line per request.
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    LOG_FORMAT: Literal["json", "text"] = "json"

    @field_validator("OPENAI_API_KEY", "OPENAI_BASE_URL", "JWT_SECRET_KEY", "JWT_PUBLIC_KEY",
                     "JWT_PRIVATE_KEY", "JWT_AUDIENCE", "JWT_ISSUER", "ASSISTANT_ID", "BRIDGE_ENGINE",
                     "REDIS_URL", "CHATKIT_ASSISTANT", "PUBLIC_BASE_URL",
                     mode="before")
    @classmethod
    def _blank_is_unset(cls, value):
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("RATE_LIMIT_READS", "RATE_LIMIT_WRITES", "RATE_LIMIT_RUNS")
    @classmethod
    def _rate_limits(cls, value: str, info) -> str:
        from limits import parse_many

        value = value.strip()
        if not value:
            return ""  # the category is off
        try:
            items = parse_many(value)
        except ValueError:
            items = []
        if not items or any(item.amount < 1 for item in items):
            raise ValueError(f"{info.field_name} must be rate limits such as '120/minute' or "
                             f"'10/second;500/hour' (empty turns it off), not {value!r}")
        return value

    @model_validator(mode="after")
    def _check_keys(self) -> "Settings":
        if self.JWT_ALGORITHM.startswith("RS") and not self.JWT_PUBLIC_KEY:
            raise ValueError(f"JWT_PUBLIC_KEY is required when JWT_ALGORITHM is {self.JWT_ALGORITHM}")
        if self.engine == "chat" and not self.OPENAI_BASE_URL and not self.OPENAI_API_KEY:
            raise ValueError("BRIDGE_ENGINE=chat needs OPENAI_BASE_URL (and OPENAI_API_KEY if the server wants one)")
        if self.RUN_EXECUTOR == "rq" and not self.REDIS_URL:
            raise ValueError("RUN_EXECUTOR=rq needs REDIS_URL")
        if self.engine in ("responses", "assistants") and not self.OPENAI_API_KEY:
            raise ValueError(f"BRIDGE_ENGINE={self.engine} needs OPENAI_API_KEY")
        # Holds are renewed once a sweep: a few sweeps must fit in the bound, or the files of a
        # live process would look abandoned to the others.
        if self.RUN_SWEEP_SECONDS and self.INGEST_STALE_SECONDS < 3 * self.RUN_SWEEP_SECONDS:
            raise ValueError("INGEST_STALE_SECONDS must be at least 3 times RUN_SWEEP_SECONDS")
        return self

    @property
    def engine(self) -> str:
        """The selected engine: responses when a provider key is set, offline when nothing is."""
        return self.BRIDGE_ENGINE or ("responses" if self.OPENAI_API_KEY else "offline")

    @property
    def uses_development_secret(self) -> bool:
        """No key is configured, so tokens are signed with the instance folder's random secret."""
        return not (self.JWT_SECRET_KEY or self.JWT_PUBLIC_KEY)


def read_pem(value: str) -> str:
    """Return PEM text given either the text itself or a path to it."""
    if "-----BEGIN" in value:
        return value
    return Path(value).expanduser().read_text()


def development_secret(instance_path: str) -> str:
    """A random HS256 secret kept in the instance folder, so a fresh checkout is safe and usable.

    The server and `flask token` read the same file, so tokens minted locally verify.
    """
    path = Path(instance_path) / "jwt-secret"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(48)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another worker wrote it first
            return path.read_text().strip()
        with os.fdopen(fd, "w") as handle:
            handle.write(secret)
        return secret
