"""The upstream edge: SDK exceptions become EngineErrors, and those become 502/503/504 envelopes."""

from __future__ import annotations

import pytest

from bridge.engines.base import (EngineError, UpstreamConflict, UpstreamMisconfigured,
                                 UpstreamNotFound, UpstreamRateLimited,
                                 UpstreamRejected, UpstreamTimeout, UpstreamUnavailable)
from bridge.engines.upstream import OpenAIUpstream


@pytest.fixture
def upstream(fake_chat):
    edge = OpenAIUpstream(api_key=fake_chat.api_key, base_url=fake_chat.base_url, timeout=0.5,
                          max_retries=0)
    yield edge
    edge.client.close()


def _complete(client):
    return client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])


@pytest.mark.parametrize("reply, error", [
    ({"status": 500}, EngineError),
    ({"status": 503}, EngineError),
    ({"status": 400}, UpstreamRejected),
    ({"status": 404}, UpstreamNotFound),
    ({"status": 409}, UpstreamConflict),
    ({"status": 401}, UpstreamMisconfigured),
    ({"status": 403}, UpstreamMisconfigured),
    ({"status": 429, "headers": {"retry-after": "7"}}, UpstreamRateLimited),
    ({"drop": True}, UpstreamUnavailable),
    ({"delay": 1.5}, UpstreamTimeout),
])
def test_sdk_errors_become_engine_errors(upstream, fake_chat, reply, error):
    fake_chat.enqueue(reply)
    with pytest.raises(EngineError) as caught:
        upstream.call(_complete)
    assert type(caught.value) is error
    if error is UpstreamRateLimited:
        assert caught.value.retry_after == 7


def test_successful_call_returns_the_sdk_object(upstream, fake_chat):
    fake_chat.enqueue("fine")
    assert upstream.call(_complete).choices[0].message.content == "fine"


def test_client_is_built_once(upstream):
    assert upstream.client is upstream.client


@pytest.mark.parametrize("error, status, retry_after", [
    (EngineError("500: provider said secret things sk-live-123"), 502, None),
    (UpstreamUnavailable("connection refused"), 502, None),
    (UpstreamMisconfigured("401: bad key sk-live-123"), 502, None),
    (UpstreamRejected("400: unknown model"), 502, None),
    (UpstreamTimeout("read timeout"), 504, None),
    (UpstreamRateLimited("429", retry_after=9), 503, "9"),
])
def test_engine_errors_map_to_gateway_statuses(make_app, token_for, error, status, retry_after):
    app = make_app(PROPAGATE_EXCEPTIONS=False)

    def fail():
        raise error

    app.add_url_rule("/v1/_fail", view_func=fail)
    response = app.test_client().get("/v1/_fail")

    assert response.status_code == status
    body = response.get_json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"] == error.public_message
    assert "sk-live" not in response.get_data(as_text=True)
    assert response.headers.get("Retry-After") == retry_after
