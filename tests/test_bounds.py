"""The app's own bounds (bridge/bounds.py): a long request target is a 414, a large header a 431.

Through the Flask test client, so they run fast; tests/test_server_limits.py sends the same over
a socket to gunicorn. Both answers are the error envelope with their `code`, carry the request
id, and come before authentication and routing. An oversized Authorization is not a 431 but the
401 of bridge/auth.py, on /v1; routes that read no token ignore it.
"""

from __future__ import annotations

import pytest

from bridge.auth import MAX_TOKEN_BYTES
from bridge.bounds import MAX_HEADER_BYTES, MAX_TARGET_BYTES
from tests.conftest import make_token
from tests.test_errors import error_of


@pytest.fixture
def headers(app) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(app, 'alice')}"}


def target_of(size: int, path: str = "/v1/threads") -> str:
    """A request target of exactly `size` bytes: `path?pad=aaa…`."""
    prefix = f"{path}?pad="
    return prefix + "a" * (size - len(prefix))


def header_of(size: int, name: str = "X-Padding") -> dict[str, str]:
    """One header whose name and value together are `size` bytes."""
    return {name: "h" * (size - len(name))}


def test_a_target_at_the_limit_is_served(client, headers):
    assert client.get(target_of(MAX_TARGET_BYTES), headers=headers).status_code == 200


@pytest.mark.parametrize("size", [MAX_TARGET_BYTES + 1, 5 * 1024, 8000])
@pytest.mark.parametrize("path", ["/v1/threads", "/v1/threads/runs", "/healthz", "/nope"])
def test_a_longer_target_is_a_414(client, headers, size, path):
    response = client.get(target_of(size, path), headers=headers)

    error = error_of(response, 414)
    assert (error["code"], error["param"]) == ("uri_too_long", None)
    assert str(MAX_TARGET_BYTES) in error["message"]
    assert response.headers["x-request-id"]


def test_a_long_path_counts_too(client, headers):
    response = client.get("/v1/threads/thread_" + "x" * MAX_TARGET_BYTES, headers=headers)

    assert error_of(response, 414)["code"] == "uri_too_long"


def test_a_header_at_the_limit_is_served(client, headers):
    response = client.get("/v1/threads", headers={**headers, **header_of(MAX_HEADER_BYTES)})

    assert response.status_code == 200


@pytest.mark.parametrize("name", ["X-Padding", "Accept", "User-Agent", "Idempotency-Key"])
@pytest.mark.parametrize("size", [MAX_HEADER_BYTES + 1, 64 * 1024])
def test_a_larger_header_is_a_431_naming_it(client, headers, name, size):
    response = client.post("/v1/threads", json={}, headers={**headers, **header_of(size, name)})

    error = error_of(response, 431)
    assert (error["code"], error["param"]) == ("header_too_large", name)
    assert str(MAX_HEADER_BYTES) in error["message"]
    assert response.headers["x-request-id"]


def test_bounds_come_before_authentication(client):
    no_token = client.get("/v1/threads", headers=header_of(MAX_HEADER_BYTES + 1))
    assert error_of(no_token, 431)["code"] == "header_too_large"
    assert error_of(client.get(target_of(5000)), 414)["code"] == "uri_too_long"


def test_a_huge_header_name_is_not_echoed_whole(client):
    name = "X-" + "n" * MAX_HEADER_BYTES
    response = client.get("/healthz", headers={name: "v"})

    error = error_of(response, 431)
    assert len(error["message"]) < 200 and len(error["param"]) <= 64


@pytest.mark.parametrize("size", [MAX_TOKEN_BYTES + 1, 9 * 1024, 64 * 1024])
def test_an_oversized_token_is_the_401_of_auth(client, size):
    authorization = "Bearer " + "t" * (size - len("Bearer "))
    response = client.get("/v1/threads", headers={"Authorization": authorization})

    error = error_of(response, 401)
    assert error["code"] == "invalid_token"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_routes_without_a_token_ignore_an_oversized_authorization(client):
    response = client.get("/healthz", headers={"Authorization": "Bearer " + "t" * 64 * 1024})

    assert response.status_code == 200


def test_the_spec_documents_the_bounds_on_every_operation(client):
    spec = client.get("/openapi.json").get_json()
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            assert {"414", "431"} <= set(operation["responses"]), (method, path)
