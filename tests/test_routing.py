"""Routing answers for exactly what a path serves: no redirects, and `Allow` as the routes say.

- Nothing under /v1 answers 3xx. `//` anywhere in a path and a trailing slash are JSON 404s;
  werkzeug's default would merge the slashes and send a 308 to another route.
- OPTIONS on every documented path, and every method the path does not serve, advertise exactly
  the methods of the operations recorded for it in `bridge.api.OPERATIONS` (plus HEAD beside GET,
  and OPTIONS). `/v1/threads/runs` serves POST alone, though `/v1/threads/{thread_id}` serves
  GET, POST and DELETE.
- A malformed id is still the registry's 404, the same as a missing id: `runs` where a thread,
  message or run id goes deeper in a path is not a routing miss.
"""

from __future__ import annotations

import re
from collections import defaultdict

import pytest

from tests.conftest import make_token
from tests.test_errors import error_of

PATH_PARAM = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
PLACEHOLDER_IDS = {"thread_id": "thread_" + "x" * 24, "message_id": "msg_" + "x" * 24,
                   "run_id": "run_" + "x" * 24, "step_id": "step_" + "x" * 24,
                   "assistant_id": "asst_" + "x" * 24, "file_id": "file-" + "x" * 24,
                   "vector_store_id": "vs_" + "x" * 24, "batch_id": "vsfb_" + "x" * 24}
METHODS = ("GET", "POST", "DELETE", "PUT", "PATCH")


def served_methods(app) -> dict[str, set[str]]:
    """Concrete URL -> the methods its operations serve, from the records behind the spec."""
    from bridge.api import OPERATIONS

    served: dict[str, set[str]] = defaultdict(set)
    for op in OPERATIONS:
        url = PATH_PARAM.sub(lambda m: PLACEHOLDER_IDS[m.group(1)], op.path)
        served[url].add(op.method.upper())
    return served


def advertised(response) -> set[str]:
    return {method.strip() for method in response.headers.get("Allow", "").split(",") if method}


@pytest.fixture
def headers(app) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(app, 'alice', admin=True)}"}


def test_options_and_405_advertise_what_each_path_serves(app, client, headers):
    served = served_methods(app)
    assert "/v1/threads/runs" in served and len(served) >= 10
    for url, methods in served.items():
        expected = methods | {"OPTIONS"} | ({"HEAD"} if "GET" in methods else set())

        options = client.options(url, headers=headers)
        assert options.status_code == 200, url
        assert advertised(options) == expected, url
        for method in set(METHODS) - methods:
            refused = client.open(url, method=method, headers=headers)
            error_of(refused, 405)
            assert advertised(refused) == expected, (method, url)


def test_threads_runs_serves_post_alone(client, headers):
    assert advertised(client.options("/v1/threads/runs", headers=headers)) == {"POST", "OPTIONS"}
    for method in ("GET", "DELETE"):
        refused = client.open("/v1/threads/runs", method=method, headers=headers)
        error_of(refused, 405)
        assert refused.headers["Allow"] == "OPTIONS, POST"


def slash_variants(url: str) -> list[str]:
    """The URL with `//` at each of its slashes but the first, and with a trailing slash.

    (A target starting with `//` is a host to URL parsers; werkzeug's router strips leading
    slashes of a path, so it serves the path as if it had one.)
    """
    positions = [i for i, char in enumerate(url) if char == "/"][1:]
    return [url[:i] + "/" + url[i:] for i in positions] + [url + "/"]


def test_nothing_under_v1_redirects(app, client, headers):
    urls = sorted(served_methods(app))
    tried = 0
    for url in urls:
        if not url.startswith("/v1/"):
            continue
        for variant in slash_variants(url):
            for method in ("GET", "POST", "DELETE"):
                response = client.open(variant, method=method, headers=headers, json={})
                assert not 300 <= response.status_code < 400, (method, variant,
                                                                response.headers.get("Location"))
                error = error_of(response, 404)
                assert error["param"] is None, (method, variant)
                tried += 1
    assert tried > 100


def test_double_slash_is_a_404_not_a_redirect(client, headers):
    response = client.get("/v1/threads//messages", headers=headers)

    error_of(response, 404)
    assert "Location" not in response.headers


@pytest.fixture
def thread_id(client, headers) -> str:
    return client.post("/v1/threads", json={}, headers=headers).get_json()["id"]


@pytest.fixture
def run_id(client, headers, thread_id) -> str:
    assistant = client.post("/v1/assistants", json={"model": "m"}, headers=headers).get_json()
    return client.post(f"/v1/threads/{thread_id}/runs", json={"assistant_id": assistant["id"]},
                       headers=headers).get_json()["id"]


ID_SLOTS = [
    ("/v1/threads/{word}", "thread_id"),
    ("/v1/threads/{word}/messages", "thread_id"),
    ("/v1/threads/{word}/runs", "thread_id"),
    ("/v1/threads/{thread}/messages/{word}", "message_id"),
    ("/v1/threads/{thread}/runs/{word}", "run_id"),
    ("/v1/threads/{thread}/runs/{word}/steps", "run_id"),
    ("/v1/threads/{thread}/runs/{run}/steps/{word}", "step_id"),
    ("/v1/assistants/{word}", "assistant_id"),
]
MALFORMED = [(template, param, word) for template, param in ID_SLOTS
             for word in ("runs", "messages", "not-an-id")
             if (template, word) != ("/v1/threads/{word}", "runs")]  # a route of its own


@pytest.mark.parametrize("template, param, word", MALFORMED)
def test_a_malformed_id_is_the_registrys_404(client, headers, thread_id, run_id, template, param,
                                             word):
    response = client.get(template.format(thread=thread_id, run=run_id, word=word),
                          headers=headers)

    error = error_of(response, 404)
    assert error["param"] == param
    assert f"id '{word}'" in error["message"]
