"""Authentication and authorization: who may call /v1, and who may change assistants.

Every way a bearer token can be wrong must end in a 401 with the OpenAI error envelope
`{"error": {"message", "type", "param", "code"}}` (never a 422 or a `{"msg": ...}` body, as
JWT libraries answer by default). Each table of bad tokens is paired with a control built by the same helper
that is accepted, so a negative cannot pass for the wrong reason.

Also covered: audience and issuer checks, RS256 keys (and the HS/RS confusion attack), a
configurable user claim, the admin rule for assistants (default and configured claim), the
unauthenticated probes, and the `flask token` command.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from typing import Any

import jwt
import openai
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bridge.observability import route_template
from tests.conftest import JWT_SECRET, make_token

DROP = object()  # a claim value meaning "leave this claim out"


class Ago(int):
    """A claim value meaning "this many seconds before now" (negative: after), taken at signing."""
ENVELOPE_FIELDS = {"message", "type", "param", "code"}
JWT_SHAPE = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*")


# ---- helpers ------------------------------------------------------------------------------------

def claims(**overrides: Any) -> dict[str, Any]:
    """The claims `flask token` mints for alice, with overrides (DROP removes)."""
    now = int(time.time())
    payload = {"sub": "alice", "iat": now, "nbf": now, "exp": now + 600, "jti": str(uuid.uuid4()),
               "type": "access", "fresh": False}
    for name, value in overrides.items():
        if isinstance(value, Ago):
            value = now - int(value)
        if value is DROP:
            payload.pop(name, None)
        else:
            payload[name] = value
    return payload


def signed(payload: dict[str, Any], key: Any = JWT_SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(payload, key, algorithm=algorithm)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_by_hand(payload: dict[str, Any], secret: bytes) -> str:
    """An HS256 token PyJWT refuses to build: e.g. one keyed with an RSA public key PEM."""
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps(payload).encode())
    signature = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64url(signature)}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_envelope(response, status: int) -> dict[str, Any]:
    """The response is `status` with exactly the OpenAI error envelope; returns the error."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == ENVELOPE_FIELDS
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    return error


def assert_unauthorized(response) -> None:
    assert_envelope(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def rsa_pems() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[str, str]:
    """(private PEM, public PEM) of the key the RS256 app trusts."""
    return rsa_pems()


@pytest.fixture(scope="module")
def other_rsa_keys() -> tuple[str, str]:
    return rsa_pems()


# ---- bad tokens on the default (HS256) app -----------------------------------------------------

def _tampered() -> str:
    """Alice's valid signature on a payload that says bob."""
    header, _, signature = signed(claims()).split(".")
    body = b64url(json.dumps(claims(sub="bob")).encode())
    return f"{header}.{body}.{signature}"


# name -> builds the Authorization header (None: no header); called when the test runs, so
# that every token is otherwise fresh
BAD_AUTHORIZATION = {
    "missing header": lambda: None,
    "basic scheme": lambda: "Basic " + base64.b64encode(b"alice:password").decode(),
    "bearer with empty token": lambda: "Bearer ",
    "bearer alone": lambda: "Bearer",
    "token without scheme": lambda: signed(claims()),
    "bearer with two tokens": lambda: f"Bearer {signed(claims())} {signed(claims())}",
    "garbage token": lambda: "Bearer not-a-jwt",
    "garbage three parts": lambda: "Bearer aaa.bbb.ccc",
    "signed with another secret":
        lambda: "Bearer " + signed(claims(), "another-secret-" + "y" * 40),
    "alg none": lambda: "Bearer " + jwt.encode(claims(), None, algorithm="none"),
    "alg none by hand": lambda: "Bearer " + b64url(b'{"alg":"none","typ":"JWT"}') + "."
                                + b64url(json.dumps(claims()).encode()) + ".",
    "HS384 with the right secret": lambda: "Bearer " + signed(claims(), algorithm="HS384"),
    "tampered payload": lambda: "Bearer " + _tampered(),
}

# name -> claim overrides, signed with the right secret and algorithm
BAD_CLAIMS = {
    "expired": {"exp": Ago(3600)},
    "no exp": {"exp": DROP},
    "exp not a number": {"exp": "tomorrow"},
    "nbf in the future": {"nbf": Ago(-3600)},
    "refresh token": {"type": "refresh"},
    "sub missing": {"sub": DROP},
    "sub empty": {"sub": ""},
    "sub null": {"sub": None},
    "sub number": {"sub": 42},
    "sub list": {"sub": ["alice"]},
    "sub object": {"sub": {"id": "alice"}},
    "sub with space": {"sub": "alice smith"},
    "sub with inner newline": {"sub": "alice\nadmin"},
    "sub with tab": {"sub": "alice\tadmin"},
    "sub with slash": {"sub": "alice/../bob"},
    "sub starting with a dot": {"sub": ".alice"},
    "sub too long": {"sub": "a" * 256},
    "sub with trailing newline": {"sub": "alice\n"},
}


@pytest.mark.parametrize("authorization", BAD_AUTHORIZATION.values(), ids=BAD_AUTHORIZATION.keys())
def test_bad_authorization_header_is_401(client, authorization):
    value = authorization()
    headers = {} if value is None else {"Authorization": value}
    assert_unauthorized(client.get("/v1/threads", headers=headers))


@pytest.mark.parametrize("overrides", BAD_CLAIMS.values(), ids=BAD_CLAIMS.keys())
def test_bad_claims_are_401(client, overrides):
    assert_unauthorized(client.get("/v1/threads", headers=bearer(signed(claims(**overrides)))))


@pytest.mark.parametrize("overrides", [
    pytest.param({}, id="as flask token mints"),
    pytest.param({"type": DROP, "jti": DROP, "fresh": DROP, "iat": DROP, "nbf": DROP},
                 id="minimal: sub and exp only"),
    pytest.param({"exp": Ago(10)}, id="expired within the leeway"),
    pytest.param({"sub": "user-1.a_b:c@d|e+f"}, id="sub with every allowed character"),
    pytest.param({"sub": "a" * 255}, id="sub at the length limit"),
])
def test_good_claims_are_accepted(client, overrides):
    """The controls of the tables above: the same helper, a token the API accepts."""
    response = client.get("/v1/threads", headers=bearer(signed(claims(**overrides))))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["object"] == "list"


def _v1_requests(app):
    """(method, url) for every /v1 route, with placeholder ids."""
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/v1/"):
            continue
        url = route_template(rule.rule)
        for name in rule.arguments:
            url = url.replace(f"<{name}>", f"{name.split('_')[0]}_x")
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield method, url


def test_every_v1_route_needs_a_token_before_anything_else(client, app):
    """No token: 401 on every /v1 route, even with an unparseable body (never 400, 404 or 422)."""
    seen = 0
    for method, url in _v1_requests(app):
        for headers in ({}, {"Authorization": "Bearer not-a-jwt"}):
            response = client.open(url, method=method, data="{not json",
                                   content_type="application/json", headers=headers)
            assert response.status_code == 401, (method, url, headers)
            assert_unauthorized(response)
            seen += 1
    assert seen >= 2 * 23  # 23 thread, message, run, step and assistant operations today


def test_sdk_reports_bad_token_as_authentication_error(offline_bridge):
    with openai.OpenAI(base_url=offline_bridge.api, api_key="not-a-jwt", max_retries=0) as sdk:
        with pytest.raises(openai.AuthenticationError) as caught:
            sdk.beta.threads.create()
    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_token"
    assert set(caught.value.body) == ENVELOPE_FIELDS  # the SDK unwraps {"error": ...}


# ---- audience and issuer ------------------------------------------------------------------------

AUDIENCE, ISSUER = "bridge", "https://issuer.test"


@pytest.mark.parametrize("overrides, status", [
    pytest.param({"aud": AUDIENCE, "iss": ISSUER}, 200, id="right audience and issuer"),
    pytest.param({"aud": ["other", AUDIENCE], "iss": ISSUER}, 200, id="audience among several"),
    pytest.param({"iss": ISSUER}, 401, id="audience missing"),
    pytest.param({"aud": "other", "iss": ISSUER}, 401, id="wrong audience"),
    pytest.param({"aud": ["other"], "iss": ISSUER}, 401, id="wrong audience list"),
    pytest.param({"aud": AUDIENCE}, 401, id="issuer missing"),
    pytest.param({"aud": AUDIENCE, "iss": "https://evil.test"}, 401, id="wrong issuer"),
])
def test_audience_and_issuer(make_app, overrides, status):
    app = make_app(JWT_AUDIENCE=AUDIENCE, JWT_ISSUER=ISSUER)
    response = app.test_client().get("/v1/threads", headers=bearer(signed(claims(**overrides))))
    if status == 401:
        assert_unauthorized(response)
    else:
        assert response.status_code == 200, response.get_data(as_text=True)


def test_audience_app_accepts_its_own_minted_tokens(make_app):
    app = make_app(JWT_AUDIENCE=AUDIENCE, JWT_ISSUER=ISSUER)
    token = make_token(app, "alice")
    assert jwt.decode(token, options={"verify_signature": False})["aud"] == AUDIENCE
    assert app.test_client().get("/v1/threads", headers=bearer(token)).status_code == 200


# ---- RS256 --------------------------------------------------------------------------------------

@pytest.fixture
def rs_app(make_app, rsa_keys):
    private, public = rsa_keys
    return make_app(JWT_ALGORITHM="RS256", JWT_PUBLIC_KEY=public, JWT_PRIVATE_KEY=private)


def test_rs256_token_is_accepted(rs_app, rsa_keys):
    token = signed(claims(), rsa_keys[0], "RS256")
    response = rs_app.test_client().post("/v1/threads", json={}, headers=bearer(token))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["metadata"]["user_id"] == "alice"


def test_rs256_app_rejects_other_tokens(rs_app, rsa_keys, other_rsa_keys):
    private, public = rsa_keys
    bad = {
        "HS256 with the shared test secret": signed(claims()),
        "HS256 keyed with the public key PEM (HS/RS confusion)":
            hs256_by_hand(claims(), public.encode()),
        "HS256 keyed with the public key PEM, no trailing newline":
            hs256_by_hand(claims(), public.strip().encode()),
        "RS256 signed by another key": signed(claims(), other_rsa_keys[0], "RS256"),
        "RS512 with the right key": signed(claims(), private, "RS512"),
        "alg none": jwt.encode(claims(), None, algorithm="none"),
        "RS256 expired": signed(claims(exp=Ago(3600)), private, "RS256"),
    }
    client = rs_app.test_client()
    for name, token in bad.items():
        response = client.get("/v1/threads", headers=bearer(token))
        assert response.status_code == 401, name
        assert_unauthorized(response)
    assert client.get("/v1/threads", headers=bearer(signed(claims(), private, "RS256"))
                      ).status_code == 200


# ---- a configured user claim --------------------------------------------------------------------

def test_configured_user_claim_names_the_user(make_app):
    app = make_app(JWT_USER_CLAIM="uid")
    client = app.test_client()
    token = signed(claims(uid="carol", sub="idp-subject-123"))
    response = client.post("/v1/threads", json={}, headers=bearer(token))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["metadata"]["user_id"] == "carol"
    listed = client.get("/v1/threads", headers=bearer(signed(claims(uid="carol", sub="other"))))
    assert [t["id"] for t in listed.get_json()["data"]] == [response.get_json()["id"]]


@pytest.mark.parametrize("overrides", [
    pytest.param({}, id="sub only, no uid"),
    pytest.param({"uid": ""}, id="uid empty"),
    pytest.param({"uid": 7}, id="uid number"),
    pytest.param({"uid": "carol smith"}, id="uid with space"),
    pytest.param({"uid": None}, id="uid null"),
])
def test_configured_user_claim_must_be_valid(make_app, overrides):
    app = make_app(JWT_USER_CLAIM="uid")
    assert_unauthorized(app.test_client().get("/v1/threads",
                                              headers=bearer(signed(claims(**overrides)))))


# ---- the admin rule for assistants --------------------------------------------------------------

def assistant_calls(assistant_id: str) -> list[tuple[str, str, dict | None]]:
    """The three admin-only operations, with valid bodies."""
    return [("POST", "/v1/assistants", {"model": "fake-model", "name": "intruder"}),
            ("POST", f"/v1/assistants/{assistant_id}", {"name": "renamed"}),
            ("DELETE", f"/v1/assistants/{assistant_id}", None)]


def create_assistant(client, token: str) -> dict:
    response = client.post("/v1/assistants", json={"model": "fake-model", "name": "helper"},
                           headers=bearer(token))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def test_any_user_may_read_assistants(app, client, token_for):
    assistant = create_assistant(client, token_for("root", admin=True))
    headers = bearer(token_for("alice"))
    listed = client.get("/v1/assistants", headers=headers)
    assert listed.status_code == 200
    assert [a["id"] for a in listed.get_json()["data"]] == [assistant["id"]]
    one = client.get(f"/v1/assistants/{assistant['id']}", headers=headers)
    assert one.status_code == 200 and one.get_json() == assistant


@pytest.mark.parametrize("role", [DROP, "user", "administrator", "", None, ["user"],
                                  {"admin": True}],
                         ids=["no claim", "user", "administrator", "empty", "null", "[user]",
                              "object"])
def test_normal_users_cannot_change_assistants(client, token_for, role):
    assistant = create_assistant(client, token_for("root", admin=True))
    token = signed(claims() if role is DROP else claims(role=role))
    for method, url, body in assistant_calls(assistant["id"]):
        response = client.open(url, method=method, json=body, headers=bearer(token))
        error = assert_envelope(response, 403)
        assert error["code"] == "forbidden", (method, url)
    # Nothing changed: the assistant is still there, unrenamed, and alone.
    listed = client.get("/v1/assistants", headers=bearer(token)).get_json()["data"]
    assert listed == [assistant]


@pytest.mark.parametrize("url, data", [
    ("/v1/assistants", "{}"),
    ("/v1/assistants", "{not json"),
    ("/v1/assistants", '{"model": "m", "bogus": 1}'),
    ("/v1/assistants/asst_" + "a" * 24, "{not json"),
    ("/v1/assistants/asst_" + "a" * 24, '{"bogus": 1}'),
])
def test_normal_users_get_403_whatever_the_body(client, token_for, url, data):
    response = client.post(url, data=data, content_type="application/json",
                           headers=bearer(token_for("alice")))
    assert_envelope(response, 403)


@pytest.mark.parametrize("role", ["admin", ["user", "admin"]], ids=["admin", "[user, admin]"])
def test_admins_can_change_assistants(client, role):
    token = signed(claims(sub="root", role=role))
    assistant = create_assistant(client, token)
    renamed = client.post(f"/v1/assistants/{assistant['id']}", json={"name": "renamed"},
                          headers=bearer(token))
    assert renamed.status_code == 200 and renamed.get_json()["name"] == "renamed"
    deleted = client.delete(f"/v1/assistants/{assistant['id']}", headers=bearer(token))
    assert deleted.get_json() == {"id": assistant["id"], "object": "assistant.deleted",
                                  "deleted": True}
    gone = client.get(f"/v1/assistants/{assistant['id']}", headers=bearer(token))
    assert assert_envelope(gone, 404)["param"] == "assistant_id"


@pytest.mark.parametrize("claim, status", [
    pytest.param({"roles": ["reader", "bridge-admin"]}, 200, id="roles list with the value"),
    pytest.param({"roles": "bridge-admin"}, 200, id="roles string equal to the value"),
    pytest.param({"role": "admin"}, 403, id="the default claim no longer counts"),
    pytest.param({"roles": ["admin"]}, 403, id="the default value no longer counts"),
    pytest.param({"roles": "bridge-admin-not"}, 403, id="a longer value"),
    pytest.param({"roles": "bridge"}, 403, id="a prefix of the value"),
])
def test_configured_admin_claim(make_app, claim, status):
    app = make_app(JWT_ADMIN_CLAIM="roles", JWT_ADMIN_VALUE="bridge-admin")
    response = app.test_client().post("/v1/assistants", json={"model": "fake-model"},
                                      headers=bearer(signed(claims(**claim))))
    if status == 403:
        assert_envelope(response, 403)
    else:
        assert response.status_code == 200 and response.get_json()["object"] == "assistant"


def test_sdk_reports_non_admin_as_permission_denied(offline_bridge):
    with offline_bridge.sdk("alice") as sdk:
        with pytest.raises(openai.PermissionDeniedError) as caught:
            sdk.beta.assistants.create(model="fake-model")
    assert caught.value.status_code == 403
    with offline_bridge.sdk("root", admin=True) as admin:
        assert admin.beta.assistants.create(model="fake-model").object == "assistant"


# ---- probes -------------------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer not-a-jwt"}],
                         ids=["no token", "bad token"])
def test_healthz_needs_no_token(client, headers):
    response = client.get("/healthz", headers=headers)
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_reports_database_ok(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ready" and body["database"] == "ok"
    assert body["engine"] == "offline"


# ---- the `flask token` command ------------------------------------------------------------------

def mint(app, *args: str) -> str:
    result = app.test_cli_runner().invoke(args=["token", *args])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert JWT_SHAPE.fullmatch(token), token
    return token


def test_cli_token_is_accepted(app, client):
    token = mint(app, "alice")
    created = client.post("/v1/threads", json={}, headers=bearer(token))
    assert created.status_code == 200
    assert created.get_json()["metadata"]["user_id"] == "alice"
    denied = client.post("/v1/assistants", json={"model": "fake-model"}, headers=bearer(token))
    assert_envelope(denied, 403)


def test_cli_admin_token_can_create_assistants(app, client):
    token = mint(app, "root", "--admin")
    response = client.post("/v1/assistants", json={"model": "fake-model"}, headers=bearer(token))
    assert response.status_code == 200 and response.get_json()["object"] == "assistant"


def test_cli_token_lifetime(app):
    payload = jwt.decode(mint(app, "alice", "--ttl", "120"), JWT_SECRET, algorithms=["HS256"])
    assert payload["exp"] - payload["iat"] == 120
    assert payload["sub"] == "alice" and payload["type"] == "access"


@pytest.mark.parametrize("user_id", [
    "alice smith", "alice\nadmin", "", "-alice", "a" * 256,
    "alice\n",
])
def test_cli_refuses_unsafe_user_ids(app, user_id):
    result = app.test_cli_runner().invoke(args=["token", "--", user_id])
    assert result.exit_code == 2, result.output
    assert "USER_ID" in result.output
    assert not JWT_SHAPE.search(result.output)


def test_cli_token_with_configured_user_claim(make_app):
    app = make_app(JWT_USER_CLAIM="uid")
    response = app.test_client().post("/v1/threads", json={},
                                      headers=bearer(mint(app, "carol")))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["metadata"]["user_id"] == "carol"


def test_cli_token_under_rs256(rs_app, rsa_keys):
    token = mint(rs_app, "alice")
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    jwt.decode(token, rsa_keys[1], algorithms=["RS256"])  # signed by the configured private key
    assert rs_app.test_client().get("/v1/threads", headers=bearer(token)).status_code == 200
