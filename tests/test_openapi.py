"""/openapi.json and /docs describe exactly the routes the app serves, with the models it validates.

The spec is generated from the `endpoint` records, so these tests hold it against the other two
sources of truth: Flask's `url_map` (every /v1 rule and method is documented, nothing else is) and
the pydantic request/response models (the schemas are theirs, and real replies match them). Every
`$ref` must resolve inside `components.schemas`. When `openapi-spec-validator` is installed the
document is also validated against the OpenAPI 3.1 meta-schema.
"""

from __future__ import annotations

import io
import re
from html import escape
from typing import Any, Iterator

import pytest

from bridge.schemas import (AssistantCreate, AssistantModify, FileCreate, MessageCreate,
                            MessageModify, RunCreate, RunModify, ThreadAndRunCreate, ThreadCreate, ThreadModify,
                            ToolOutputsSubmit, VectorStoreCreate, VectorStoreFileBatchCreate,
                            VectorStoreFileCreate, VectorStoreModify, VectorStoreSearch)
from tests.conftest import wait_for

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
IMPLICIT_METHODS = {"HEAD", "OPTIONS"}  # added by Flask to every rule; not operations of ours
REF_PREFIX = "#/components/schemas/"
FLASK_PARAM = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")

REQUEST_BODIES = [
    # (method, path, model that validates the body)
    ("post", "/v1/threads", ThreadCreate),
    ("post", "/v1/threads/{thread_id}", ThreadModify),
    ("post", "/v1/threads/{thread_id}/messages", MessageCreate),
    ("post", "/v1/threads/{thread_id}/messages/{message_id}", MessageModify),
    ("post", "/v1/threads/{thread_id}/runs", RunCreate),
    ("post", "/v1/threads/{thread_id}/runs/{run_id}", RunModify),
    ("post", "/v1/threads/{thread_id}/runs/{run_id}/submit_tool_outputs", ToolOutputsSubmit),
    ("post", "/v1/threads/runs", ThreadAndRunCreate),
    ("post", "/v1/assistants", AssistantCreate),
    ("post", "/v1/assistants/{assistant_id}", AssistantModify),
    ("post", "/v1/vector_stores", VectorStoreCreate),
    ("post", "/v1/vector_stores/{vector_store_id}", VectorStoreModify),
    ("post", "/v1/vector_stores/{vector_store_id}/files", VectorStoreFileCreate),
    ("post", "/v1/vector_stores/{vector_store_id}/search", VectorStoreSearch),
    ("post", "/v1/vector_stores/{vector_store_id}/file_batches", VectorStoreFileBatchCreate),
]
# Multipart bodies (uploads): (method, path, model that validates the form).
UPLOAD_BODIES = [("post", "/v1/files", FileCreate)]
# Operations whose success is a file's own bytes rather than JSON.
BYTES_ROUTES = {("get", "/v1/files/{file_id}/content")}
LIST_ROUTES = ["/v1/threads", "/v1/threads/{thread_id}/messages", "/v1/threads/{thread_id}/runs",
               "/v1/threads/{thread_id}/runs/{run_id}/steps", "/v1/assistants", "/v1/vector_stores",
               "/v1/vector_stores/{vector_store_id}/files",
               "/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}/files"]


@pytest.fixture
def spec(client) -> dict:
    response = client.get("/openapi.json")  # no token: the spec is public
    assert response.status_code == 200
    assert response.is_json
    return response.get_json()


def served_operations(app) -> set[tuple[str, str]]:
    """(method, OpenAPI path) for every /v1 rule and method Flask routes."""
    operations = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/v1/"):
            continue
        path = FLASK_PARAM.sub(r"{\1}", rule.rule)
        operations |= {(method.lower(), path) for method in rule.methods - IMPLICIT_METHODS}
    return operations


def documented_operations(spec: dict) -> Iterator[tuple[str, str, dict]]:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield method, path, operation


def walk(node: Any, where: str = "#") -> Iterator[tuple[str, Any, str]]:
    """Every (key, value, location) pair in a JSON document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value, where
            yield from walk(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{where}/{index}")


def component(spec: dict, ref: str) -> dict:
    assert ref.startswith(REF_PREFIX), ref
    return spec["components"]["schemas"][ref[len(REF_PREFIX):]]


def pydantic_schema(model) -> dict:
    """The model's own JSON schema, with refs pointing where the spec keeps shared schemas."""
    schema = model.model_json_schema(ref_template=REF_PREFIX + "{model}")
    schema.pop("$defs", None)
    return schema


# ---- the document ---------------------------------------------------------------------------------

def test_spec_is_openapi_3_1(spec):
    assert re.fullmatch(r"3\.1\.\d+", spec["openapi"])
    assert spec["info"]["title"] and spec["info"]["version"]
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT"}


def test_every_v1_route_is_documented_and_nothing_else(app, spec):
    served = served_operations(app)
    documented = {(method, path) for method, path, _ in documented_operations(spec)}

    assert served, "no /v1 routes found in the url_map"
    assert served - documented == set(), "routes missing from the spec"
    assert documented - served == set(), "documented operations that the app does not serve"


def test_every_path_uses_brace_parameters_that_are_declared(spec):
    for method, path, operation in documented_operations(spec):
        assert "<" not in path and ">" not in path, path
        in_path = re.findall(r"\{([^{}]+)\}", path)
        declared = [p for p in operation["parameters"] if p["in"] == "path"]
        assert [p["name"] for p in declared] == in_path, (method, path)
        assert all(p["required"] is True for p in declared), (method, path)


def test_operation_ids_are_unique(spec):
    ids = [operation["operationId"] for _, _, operation in documented_operations(spec)]

    assert len(ids) == len(set(ids))


def test_every_ref_resolves_inside_components(spec):
    schemas = spec["components"]["schemas"]
    refs = [(value, where) for key, value, where in walk(spec) if key == "$ref"]
    # Discriminator mappings are references too.
    refs += [(target, where) for key, value, where in walk(spec) if key == "mapping"
             for target in value.values()]

    assert refs, "the spec has no $ref at all"
    for ref, where in refs:
        assert ref.startswith(REF_PREFIX), f"{ref} at {where} points outside components.schemas"
        assert ref[len(REF_PREFIX):] in schemas, f"{ref} at {where} does not resolve"
    assert not any(key == "$defs" for key, _, _ in walk(spec)), "pydantic $defs left in the spec"


def test_every_v1_operation_needs_a_bearer_token(spec):
    for method, path, operation in documented_operations(spec):
        assert operation.get("security") == [{"bearerAuth": []}], (method, path)
        assert operation["responses"]["401"]["content"]["application/json"]["schema"] == {
            "$ref": REF_PREFIX + "ErrorObject"}


def test_every_operation_has_one_json_success_response(spec):
    for method, path, operation in documented_operations(spec):
        success = [code for code in operation["responses"] if code.startswith("2")]
        assert len(success) == 1, (method, path)
        content = operation["responses"][success[0]]["content"]
        if (method, path) in BYTES_ROUTES:
            assert list(content) == ["*/*"], (method, path)
            assert content["*/*"]["schema"]["format"] == "binary"
            continue
        component(spec, content["application/json"]["schema"]["$ref"])


@pytest.mark.parametrize("path", LIST_ROUTES)
def test_list_routes_document_cursor_parameters(spec, path):
    operation = spec["paths"][path]["get"]
    query = {p["name"]: p for p in operation["parameters"] if p["in"] == "query"}

    assert {"limit", "order", "after", "before"} <= set(query)
    assert query["limit"]["schema"]["default"] == 20
    assert (query["limit"]["schema"]["minimum"], query["limit"]["schema"]["maximum"]) == (1, 100)
    assert query["order"]["schema"]["enum"] == ["asc", "desc"]
    assert query["order"]["schema"]["default"] == "desc"
    listing = component(spec, operation["responses"]["200"]["content"]["application/json"]
                        ["schema"]["$ref"])
    assert set(listing["properties"]) == {"object", "data", "first_id", "last_id", "has_more"}


def test_message_list_documents_its_run_filter(spec):
    operation = spec["paths"]["/v1/threads/{thread_id}/messages"]["get"]

    assert "run_id" in {p["name"] for p in operation["parameters"] if p["in"] == "query"}


@pytest.mark.parametrize("path", ["/v1/threads/{thread_id}/runs/{run_id}/steps",
                                  "/v1/threads/{thread_id}/runs/{run_id}/steps/{step_id}"])
def test_step_routes_document_include_as_the_sdk_sends_it(spec, path):
    query = {p["name"]: p for p in spec["paths"][path]["get"]["parameters"] if p["in"] == "query"}

    include = query["include[]"]["schema"]["anyOf"][0]
    assert include["type"] == "array"
    assert include["items"]["const"] == \
        "step_details.tool_calls[*].file_search.results[*].content"


# ---- schemas are the pydantic models ----------------------------------------------------------------

@pytest.mark.parametrize("method, path, model", REQUEST_BODIES,
                         ids=[f"{m}-{p}" for m, p, _ in REQUEST_BODIES])
def test_request_body_schema_is_the_model(spec, method, path, model):
    body = spec["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
    documented = component(spec, body["$ref"])
    own = pydantic_schema(model)

    assert set(documented["properties"]) == set(model.model_fields)
    assert set(documented.get("required", [])) == set(own.get("required", []))
    assert documented.get("additionalProperties") is False, "request models forbid unknown fields"
    assert documented == own


def test_thread_create_properties(spec):
    body = spec["paths"]["/v1/threads"]["post"]["requestBody"]["content"]["application/json"]

    documented = component(spec, body["schema"]["$ref"])

    assert set(documented["properties"]) == set(ThreadCreate.model_json_schema()["properties"]) \
        == {"messages", "metadata", "tool_resources"}
    assert documented["properties"]["messages"]["anyOf"][0]["maxItems"] == 32
    # One of the 16 keys upstreams allow is the owner stamp.
    assert documented["properties"]["metadata"]["anyOf"][0]["maxProperties"] == 15


def test_every_documented_body_is_a_known_model(spec):
    documented = {(method, path, media) for method, path, operation in documented_operations(spec)
                  if "requestBody" in operation for media in operation["requestBody"]["content"]}

    assert documented == {(method, path, "application/json") for method, path, _ in REQUEST_BODIES} \
        | {(method, path, "multipart/form-data") for method, path, _ in UPLOAD_BODIES}


@pytest.mark.parametrize("method, path, model", UPLOAD_BODIES)
def test_upload_body_is_multipart_with_a_binary_file(spec, method, path, model):
    operation = spec["paths"][path][method]
    body = operation["requestBody"]
    documented = component(spec, body["content"]["multipart/form-data"]["schema"]["$ref"])

    assert body["required"] is True
    assert documented == pydantic_schema(model)
    assert documented["properties"]["file"] == {
        "type": "string", "format": "binary", "title": "File",
        "description": "The file's contents, a part with a filename."}
    assert documented["properties"]["purpose"]["enum"] == [
        "assistants", "batch", "fine-tune", "vision", "user_data", "evals"]
    assert set(documented["required"]) == {"file", "purpose"}
    # An upload streams to storage: it takes no Idempotency-Key, which needs the whole body.
    assert "Idempotency-Key" not in {p["name"] for p in operation["parameters"]}
    assert "413" in operation["responses"]


def test_file_list_documents_openai_limits_and_filter(spec):
    query = {p["name"]: p for p in spec["paths"]["/v1/files"]["get"]["parameters"]
             if p["in"] == "query"}

    assert {"limit", "order", "after", "purpose"} <= set(query)
    limit = query["limit"]["schema"]
    assert (limit["minimum"], limit["maximum"], limit["default"]) == (1, 10_000, 10_000)


def test_file_batch_body_documents_exactly_one_file_list(spec):
    documented = component(spec, spec["paths"]["/v1/vector_stores/{vector_store_id}/file_batches"]
                           ["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"])
    assert [branch["required"] for branch in documented["oneOf"]] == [["file_ids"], ["files"]]
    assert documented["properties"]["file_ids"]["anyOf"][0]["maxItems"] == 2000


def test_request_body_is_required_when_the_model_has_required_fields(spec):
    mismatched = []
    for method, path, operation in documented_operations(spec):
        if "requestBody" not in operation:
            continue
        (content,) = operation["requestBody"]["content"].values()
        schema = component(spec, content["schema"]["$ref"])
        if operation["requestBody"]["required"] != bool(schema.get("required")):
            mismatched.append((method, path))

    assert mismatched == []


def _response_schema(spec: dict, method: str, path: str) -> dict:
    responses = spec["paths"][path][method]["responses"]
    code = next(code for code in responses if code.startswith("2"))
    return component(spec, responses[code]["content"]["application/json"]["schema"]["$ref"])


def test_real_replies_have_the_documented_fields(app, client, spec, token_for):
    user = {"Authorization": f"Bearer {token_for('alice')}"}
    admin = {"Authorization": f"Bearer {token_for('admin', admin=True)}"}
    assistant = client.post("/v1/assistants", json={"model": "m"}, headers=admin).get_json()
    thread = client.post("/v1/threads", json={"messages": [{"role": "user", "content": "hi"}]},
                         headers=user).get_json()
    run_url = f"/v1/threads/{thread['id']}/runs"
    run = client.post(run_url, json={"assistant_id": assistant["id"]}, headers=user).get_json()
    wait_for(lambda: client.get(f"{run_url}/{run['id']}", headers=user).get_json()["status"]
             == "completed")
    steps = client.get(f"{run_url}/{run['id']}/steps", headers=user).get_json()
    replies = {
        ("post", "/v1/assistants"): assistant,
        ("post", "/v1/threads"): thread,
        ("get", "/v1/threads/{thread_id}/runs/{run_id}"):
            client.get(f"{run_url}/{run['id']}", headers=user).get_json(),
        ("get", "/v1/threads/{thread_id}/messages"):
            client.get(f"/v1/threads/{thread['id']}/messages", headers=user).get_json(),
        ("get", "/v1/threads/{thread_id}/runs/{run_id}/steps"): steps,
        ("get", "/v1/threads/{thread_id}/runs/{run_id}/steps/{step_id}"):
            client.get(f"{run_url}/{run['id']}/steps/{steps['data'][0]['id']}",
                       headers=user).get_json(),
        ("delete", "/v1/threads/{thread_id}"):
            client.delete(f"/v1/threads/{thread['id']}", headers=user).get_json(),
    }
    file = client.post("/v1/files", headers=user, data={
        "purpose": "assistants", "file": (io.BytesIO(b"bytes"), "a.txt")}).get_json()
    replies[("post", "/v1/files")] = file
    replies[("get", "/v1/files")] = client.get("/v1/files", headers=user).get_json()
    replies[("get", "/v1/files/{file_id}")] = client.get(f"/v1/files/{file['id']}",
                                                          headers=user).get_json()
    store = client.post("/v1/vector_stores", json={}, headers=user).get_json()
    batch = client.post(f"/v1/vector_stores/{store['id']}/file_batches",
                        json={"file_ids": [file["id"]]}, headers=user).get_json()
    replies[("post", "/v1/vector_stores/{vector_store_id}/file_batches")] = batch
    replies[("get", "/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}/files")] = \
        client.get(f"/v1/vector_stores/{store['id']}/file_batches/{batch['id']}/files",
                   headers=user).get_json()
    replies[("delete", "/v1/files/{file_id}")] = client.delete(f"/v1/files/{file['id']}",
                                                                headers=user).get_json()

    for (method, path), reply in replies.items():
        schema = _response_schema(spec, method, path)
        assert set(reply) == set(schema["properties"]), (method, path)
        assert set(schema.get("required", [])) <= set(reply), (method, path)
    messages = replies[("get", "/v1/threads/{thread_id}/messages")]["data"]
    assert len(messages) == 2
    message_schema = component(spec, REF_PREFIX + "MessageObject")
    assert all(set(m) == set(message_schema["properties"]) for m in messages)


def test_spec_validates_against_openapi_3_1():
    validator = pytest.importorskip("openapi_spec_validator")
    from bridge.api.docs import openapi_spec

    validator.validate(openapi_spec())


# ---- the /docs page -----------------------------------------------------------------------------------

def test_docs_page_lists_every_operation(client, spec):
    response = client.get("/docs")

    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert html.lstrip().lower().startswith("<!doctype html>")
    assert "/openapi.json" in html
    for method, path, operation in documented_operations(spec):
        assert escape(path) in html, f"{path} is not on the docs page"
        assert escape(operation["summary"]) in html, (method, path)
    rows = re.findall(r"<tr><td><code>([A-Z]+)</code></td><td><code>([^<]+)</code>", html)
    assert {(m.lower(), p) for m, p in rows} == {
        (method, escape(path)) for method, path, _ in documented_operations(spec)}


def test_docs_page_lists_body_fields(client):
    html = client.get("/docs").get_data(as_text=True)

    row = re.search(r"<tr><td><code>POST</code></td><td><code>/v1/threads</code>.*?</tr>", html)
    assert row
    assert all(field in row.group(0) for field in ("messages", "metadata", "tool_resources"))
