"""One OpenAI SDK client per process, and the translation of its exceptions into EngineErrors.

Settings read: OPENAI_API_KEY, OPENAI_BASE_URL, OPENAI_TIMEOUT, OPENAI_MAX_RETRIES.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, TypeVar

from ..observability import record_upstream_call
from .base import (EngineError, UpstreamConflict, UpstreamMisconfigured, UpstreamNotFound,
                   UpstreamRateLimited, UpstreamRejected, UpstreamTimeout, UpstreamUnavailable)

log = logging.getLogger(__name__)

T = TypeVar("T")


def _retry_after(headers: Any) -> int | None:
    try:
        value = headers.get("retry-after") if headers is not None else None
        return max(1, int(float(value))) if value is not None else None
    except (TypeError, ValueError):
        return None


class OpenAIUpstream:
    """Builds the SDK client once (about 32 ms a construction) and reuses it for every call."""

    def __init__(self, *, api_key: str | None, base_url: str | None, timeout: float,
                 max_retries: int):
        self._options = {"api_key": api_key or "unused", "base_url": base_url,
                         "timeout": timeout, "max_retries": max_retries}
        self._client = None
        self._lock = threading.Lock()

    @property
    def client(self):
        if self._client is None:
            with self._lock:
                if self._client is None:
                    import openai  # ~0.5 s: paid in warm_up, not at app import

                    self._client = openai.OpenAI(**self._options)
        return self._client

    def warm_up(self) -> None:
        """Import the SDK and open a connection, so the first user does not pay for it."""
        try:
            self.client.with_options(max_retries=0, timeout=5).models.list()
        except Exception as exc:  # a server without /models still warms the import and DNS
            log.info("upstream warm-up call failed (not fatal): %s", type(exc).__name__)

    def close(self) -> None:
        """Close the client's connection pool, if one was opened."""
        if self._client is not None:
            self._client.close()

    def create(self, operation: Callable[[Any], T]) -> T:
        """Like `call`, without retries: for requests that create something upstream.

        A retry after a timeout could create it twice; the caller decides what a failure means.
        """
        return self.call(operation, retries=False)

    def call(self, operation: Callable[[Any], T], *, retries: bool = True) -> T:
        """Run `operation(client)`, turning SDK exceptions into EngineErrors."""
        client = self.client if retries else self.client.with_options(max_retries=0)
        started = time.perf_counter()
        try:
            with translated_errors():
                return operation(client)
        finally:
            record_upstream_call(time.perf_counter() - started)  # the request's upstream_ms

    def events(self, stream: Iterable[T]) -> Iterator[T]:
        """The events of an upstream stream, its failures as EngineErrors like any call's."""
        with translated_errors():
            yield from stream


@contextmanager
def translated_errors():
    """SDK exceptions as EngineErrors: nothing of the provider's answer reaches a client."""
    import openai

    try:
        yield
    except openai.APITimeoutError as exc:
        raise UpstreamTimeout(str(exc)) from None
    except openai.APIConnectionError as exc:
        raise UpstreamUnavailable(str(exc)) from None
    except openai.RateLimitError as exc:
        raise UpstreamRateLimited(str(exc), retry_after=_retry_after(exc.response.headers)) from None
    except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
        raise UpstreamMisconfigured(f"{exc.status_code}: {exc.message}") from None
    except openai.NotFoundError as exc:
        raise UpstreamNotFound(f"{exc.status_code}: {exc.message}") from None
    except openai.APIStatusError as exc:
        if exc.code == "conversation_locked" or exc.status_code == 409:
            raise UpstreamConflict(f"{exc.status_code}: {exc.message}") from None
        if exc.status_code >= 500:
            raise EngineError(f"{exc.status_code}: {exc.message}") from None
        raise UpstreamRejected(f"{exc.status_code}: {exc.message}") from None
    except openai.APIError as exc:
        raise EngineError(str(exc)) from None
    except httpx_errors() as exc:  # a stream cut mid-body surfaces as the transport's own error
        raise UpstreamUnavailable(f"{type(exc).__name__}: {exc}") from None


def httpx_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client's transport errors, which a broken stream raises past the SDK."""
    try:
        import httpx2 as httpx
    except ImportError:  # an SDK built on plain httpx
        import httpx
    return (httpx.TransportError,)
