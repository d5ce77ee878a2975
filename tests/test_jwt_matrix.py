"""Every bad bearer token is a 401, on an HS256 app and on an RS256 app alike.

One table of bad tokens runs against both key configurations, each app expecting an audience and
an issuer: forged algorithms (`none`, HS/RS confusion, another algorithm of the same family),
wrong keys, header parameters that name other keys (`kid`, `jku`, `x5u`, `jwk`), unknown `crit`
extensions, malformed encodings, time claims out of range, wrong audience or issuer, user ids
that are not safe strings, and huge tokens. Every row must answer 401 with the error envelope and
`WWW-Authenticate: Bearer`. Tokens are built and signed by hand here (HMAC and RSA straight from
`hashlib`/`cryptography`), so PyJWT's own encoder cannot refuse or tidy a malformed one; the
controls at the end go through the same builder and must be accepted, so no row fails for an
unrelated reason. test_auth.py holds the HS256-only tables (schemes, the admin claim, the CLI).

Huge tokens: in process, garbage or a bad signature of 64 KiB is a 401. Over HTTP the server
refuses an oversized header before the app sees it (Werkzeug: 431; gunicorn's default
`limit_request_field_size` of 8190 bytes: 400). The app refuses any token over 8 KiB
itself, validly signed or not.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import time
import uuid
from dataclasses import dataclass
from functools import cache
from typing import Any, Callable
from urllib.parse import urlsplit

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from bridge import create_app
from tests.conftest import JWT_SECRET

AUDIENCE, ISSUER, LEEWAY = "bridge", "https://issuer.test", 30
ENVELOPE_FIELDS = {"message", "type", "param", "code"}
DROP = object()  # a claim value meaning "leave this claim out"
KIB = 1024

Signer = Callable[[bytes], bytes]


# ---- keys and signing ---------------------------------------------------------------------------

@cache
def rsa_key(name: str) -> rsa.RSAPrivateKey:
    """An RSA key by name: the RS256 app trusts "trusted"; every other name is an attacker's."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(name: str) -> str:
    return rsa_key(name).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def hmac_signer(secret: str | bytes, alg: str = "HS256") -> Signer:
    secret = secret.encode() if isinstance(secret, str) else secret
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    return lambda data: hmac.new(secret, data, digest).digest()


def rsa_signer(name: str, alg: str = "RS256") -> Signer:
    key = rsa_key(name)
    digest = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}[alg[2:]]()
    if alg.startswith("PS"):
        pad = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
    else:
        pad = padding.PKCS1v15()
    return lambda data: key.sign(data, pad, digest)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwk(name: str) -> dict[str, str]:
    numbers = rsa_key(name).public_key().public_numbers()

    def as_b64(value: int) -> str:
        return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))

    return {"kty": "RSA", "e": as_b64(numbers.e), "n": as_b64(numbers.n)}


@dataclass(frozen=True)
class Config:
    """One key configuration of the app, and how its trusted issuer signs."""

    alg: str
    settings: dict[str, Any]
    sign: Signer  # the issuer the app trusts
    forge: Signer  # an attacker's key, same algorithm


def make_config(alg: str) -> Config:
    common = {"JWT_AUDIENCE": AUDIENCE, "JWT_ISSUER": ISSUER, "JWT_LEEWAY_SECONDS": LEEWAY}
    if alg == "HS256":
        return Config(alg, {"JWT_ALGORITHM": "HS256", "JWT_SECRET_KEY": JWT_SECRET, **common},
                      hmac_signer(JWT_SECRET), hmac_signer("another-secret-" + "y" * 40))
    return Config(alg, {"JWT_ALGORITHM": "RS256", "JWT_PUBLIC_KEY": public_pem("trusted"),
                        **common}, rsa_signer("trusted"), rsa_signer("attacker"))


CONFIGS = ("HS256", "RS256")


# ---- tokens -------------------------------------------------------------------------------------

def claims(**overrides: Any) -> dict[str, Any]:
    """A token the app accepts, with overrides; an int override of a time claim is an offset
    from now (negative: in the past), DROP leaves a claim out."""
    now = int(time.time())
    payload: dict[str, Any] = {"sub": "alice", "aud": AUDIENCE, "iss": ISSUER, "iat": now,
                               "nbf": now, "exp": now + 600, "jti": str(uuid.uuid4()),
                               "type": "access", "fresh": False}
    for name, value in overrides.items():
        if value is DROP:
            payload.pop(name, None)
        elif name in ("iat", "nbf", "exp") and type(value) is int:
            payload[name] = now + value
        else:
            payload[name] = value
    return payload


def token(config: Config, payload: dict | bytes | None = None, *, alg: str | None = None,
          header: dict[str, Any] | None = None, sign: Signer | None = None) -> str:
    """header.payload.signature; by default the trusted issuer's token with `claims()`."""
    head = {"alg": alg or config.alg, "typ": "JWT", **(header or {})}
    body = payload if isinstance(payload, bytes) else json.dumps(
        claims() if payload is None else payload).encode()
    signing_input = f"{b64url(json.dumps(head).encode())}.{b64url(body)}"
    signature = (sign or config.sign)(signing_input.encode())
    return f"{signing_input}.{b64url(signature)}"


def resign_segments(config: Config, *segments: str) -> str:
    """Segments as given, signed (over their text) by the trusted issuer."""
    signing_input = ".".join(segments)
    return f"{signing_input}.{b64url(config.sign(signing_input.encode()))}"


def good_header_and_payload(config: Config) -> tuple[str, str]:
    header, payload, _ = token(config).split(".")
    return header, payload


def tampered(config: Config) -> str:
    """The trusted signature of alice's claims, on claims that say bob."""
    header, _, signature = token(config).split(".")
    return f"{header}.{b64url(json.dumps(claims(sub='bob')).encode())}.{signature}"


def claimed(**overrides: Any) -> Callable[[Config], str]:
    """A row: the trusted issuer signs claims() with these overrides."""
    return lambda c: token(c, claims(**overrides))


ELSEWHERE = {"kid": "../../../../../../dev/null", "jku": "https://attacker.test/jwks.json",
             "x5u": "https://attacker.test/cert.pem"}

# (name, builds the token from the app's Config[, only on these configurations])
BAD_TOKENS: list[tuple] = [
    # -- algorithms and keys
    ("alg none", lambda c: token(c, alg="none", sign=lambda _: b"")),
    ("alg NONE with the trusted signature",
     lambda c: token(c, alg="NONE", sign=lambda data: c.sign(data))),
    ("alg none on a trusted token's payload and signature", lambda c: ".".join(
        [b64url(b'{"alg":"none","typ":"JWT"}'), *token(c).split(".")[1:]])),
    ("signed by another key", lambda c: token(c, sign=c.forge)),
    ("HS256 keyed with the trusted RSA public key PEM (HS/RS confusion)",
     lambda c: token(c, alg="HS256", sign=hmac_signer(public_pem("trusted")))),
    ("HS256 keyed with the public key PEM, no trailing newline",
     lambda c: token(c, alg="HS256", sign=hmac_signer(public_pem("trusted").strip()))),
    ("RS256 signed by another RSA key", lambda c: token(c, alg="RS256",
                                                        sign=rsa_signer("attacker"))),
    ("RS256 signed by the RS app's trusted key (an RS token on the HS app)",
     lambda c: token(c, alg="RS256", sign=rsa_signer("trusted")), ("HS256",)),
    ("other algorithm of the family, trusted key",
     lambda c: token(c, alg="HS512", sign=hmac_signer(JWT_SECRET, "HS512")) if c.alg == "HS256"
     else token(c, alg="PS256", sign=rsa_signer("trusted", "PS256"))),
    ("RS512 with the trusted RSA key",
     lambda c: token(c, alg="RS512", sign=rsa_signer("trusted", "RS512"))),
    ("bad signature: random bytes", lambda c: token(c, sign=lambda _: uuid.uuid4().bytes * 8)),
    ("bad signature: truncated", lambda c: token(c)[:-8]),
    ("empty signature", lambda c: token(c).rsplit(".", 1)[0] + "."),
    ("tampered payload", tampered),
    # -- header parameters that name a key: ignored, so an attacker's key stays an attacker's
    ("kid pointing at /dev/null, HMAC with an empty key",
     lambda c: token(c, alg="HS256", header={"kid": ELSEWHERE["kid"]}, sign=hmac_signer(b""))),
    ("jku at the attacker's JWKS, attacker's key",
     lambda c: token(c, header={"jku": ELSEWHERE["jku"]}, sign=c.forge)),
    ("x5u at the attacker's certificate, attacker's key",
     lambda c: token(c, header={"x5u": ELSEWHERE["x5u"]}, sign=c.forge)),
    ("kid naming another key, attacker's key",
     lambda c: token(c, header={"kid": "trusted"}, sign=c.forge)),
    ("embedded jwk of the attacker's key (RS256)",
     lambda c: token(c, alg="RS256", header={"jwk": jwk("attacker")},
                     sign=rsa_signer("attacker"))),
    ("crit with an unknown extension",
     lambda c: token(c, header={"crit": ["exp-ext"], "exp-ext": True})),
    # -- encodings
    ("one segment", lambda c: good_header_and_payload(c)[0]),
    ("two segments", lambda c: ".".join(good_header_and_payload(c))),
    ("four segments", lambda c: token(c) + ".AAAA"),
    ("five segments (JWE shape)", lambda c: token(c) + ".AAAA.AAAA"),
    ("malformed base64 in the header",
     lambda c: resign_segments(c, "eyJ!!!", good_header_and_payload(c)[1])),
    ("malformed base64 in the payload",
     lambda c: resign_segments(c, good_header_and_payload(c)[0], "e30*&^")),
    ("malformed base64 in the signature", lambda c: token(c)[:-4] + "*&^%"),
    ("header not JSON",
     lambda c: resign_segments(c, b64url(b"{alg: HS256"), good_header_and_payload(c)[1])),
    ("payload not JSON", lambda c: token(c, b"not json")),
    ("payload a JSON array", lambda c: token(c, b'["alice"]')),
    ("payload with trailing data", lambda c: token(c, json.dumps(claims()).encode() + b" {}")),
    # -- time
    ("expired an hour ago", claimed(exp=-3600)),
    ("expired just beyond the leeway", claimed(exp=-LEEWAY - 10)),
    ("no exp", claimed(exp=DROP)),
    ("exp not a number", claimed(exp="tomorrow")),
    ("exp null", claimed(exp=None)),
    ("exp Infinity", lambda c: token(c, json.dumps(claims(exp="__inf__")).replace(
        '"__inf__"', "Infinity").encode())),
    ("nbf an hour ahead", claimed(nbf=3600)),
    ("nbf just beyond the leeway", claimed(nbf=LEEWAY + 10)),
    ("iat an hour ahead", claimed(iat=3600)),
    # -- audience and issuer
    ("audience missing", claimed(aud=DROP)),
    ("wrong audience", claimed(aud="other")),
    ("audience list without ours", claimed(aud=["other", "bridge-admin"])),
    ("audience empty list", claimed(aud=[])),
    ("audience differs in case", claimed(aud=AUDIENCE.upper())),
    ("issuer missing", claimed(iss=DROP)),
    ("wrong issuer", claimed(iss="https://attacker.test")),
    ("issuer with a trailing slash", claimed(iss=ISSUER + "/")),
    ("issuer a list holding ours", claimed(iss=[ISSUER])),
    # -- the user claim
    ("sub missing", claimed(sub=DROP)),
    ("sub null", claimed(sub=None)),
    ("sub empty", claimed(sub="")),
    ("sub whitespace", claimed(sub="   ")),
    ("sub int", claimed(sub=42)),
    ("sub true", claimed(sub=True)),
    ("sub list", claimed(sub=["alice"])),
    ("sub object", claimed(sub={"id": "alice"})),
    ("sub 256 characters", claimed(sub="a" * 256)),
    ("sub with a newline", claimed(sub="alice\nbob")),
    ("sub with a NUL", claimed(sub="alice\x00")),
    ("sub with DEL", claimed(sub="alice\x7f")),
    ("sub with an escape sequence", claimed(sub="alice\x1b[2J")),
    ("sub with a Cyrillic a", claimed(sub="\u0430lice")),
    ("refresh token", claimed(type="refresh")),
    ("jti not a string", claimed(jti=7)),
    # -- huge
    ("64 KiB of garbage", lambda c: "x" * (64 * KIB)),
    ("64 KiB header segment", lambda c: token(c, header={"pad": "x" * (64 * KIB)}, sign=c.forge)),
    ("64 KiB claim, attacker's key", lambda c: token(c, claims(pad="x" * (64 * KIB)),
                                                      sign=c.forge)),
    ("64 KiB user id, trusted key", claimed(sub="a" * (64 * KIB))),
]

# Accepted: the same builder, so a bad row above cannot fail for an unrelated reason.
GOOD_TOKENS: list[tuple] = [
    ("as the trusted issuer signs", lambda c: token(c)),
    ("kid, jku and x5u naming other keys, trusted key: ignored",
     lambda c: token(c, header=ELSEWHERE)),
    ("expired within the leeway", claimed(exp=-LEEWAY + 10)),
    ("nbf within the leeway", claimed(nbf=LEEWAY - 10)),
    ("iat within the leeway", claimed(iat=LEEWAY - 10)),
    ("audience among several", claimed(aud=["other", AUDIENCE])),
    ("sub of 255 allowed characters", claimed(sub=("a" + "b.c_d:e@f|g+h-" * 19)[:255])),
]


# ---- apps ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def apps(tmp_path_factory) -> dict[str, Any]:
    """One app per key configuration, for the whole module (the rows only read)."""
    folder = tmp_path_factory.mktemp("jwt-matrix")
    built = {}
    for alg in CONFIGS:
        config = make_config(alg)
        built[alg] = (config, create_app({
            "TESTING": True, "DATABASE_URL": f"sqlite:///{folder / alg}.db",
            "BRIDGE_ENGINE": "offline", "RATE_LIMIT_READS": "", **config.settings}))
    yield built
    for _, app in built.values():
        app.extensions["bridge.engine"].shutdown()


def get_threads(app, bearer: str):
    return app.test_client().get("/v1/threads", headers={"Authorization": f"Bearer {bearer}"})


def assert_unauthorized(response) -> None:
    assert response.status_code == 401, (response.status_code, response.get_data(as_text=True))
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == ENVELOPE_FIELDS, body
    assert body["error"]["code"] == "invalid_token" and body["error"]["message"]


def matrix(rows):
    """(configuration, row) pairs; a row's optional third item limits its configurations."""
    return [pytest.param(alg, build, id=f"{alg}: {name}") for name, build, *only in rows
            for alg in (only[0] if only else CONFIGS)]


@pytest.mark.parametrize("alg, build", matrix(BAD_TOKENS))
def test_bad_token_is_401(apps, alg, build):
    config, app = apps[alg]
    assert_unauthorized(get_threads(app, build(config)))


@pytest.mark.parametrize("alg, build", matrix(GOOD_TOKENS))
def test_control_token_is_accepted(apps, alg, build):
    config, app = apps[alg]
    response = get_threads(app, build(config))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["object"] == "list"


@pytest.mark.parametrize("alg", CONFIGS)
def test_huge_validly_signed_token_is_refused(apps, alg):
    config, app = apps[alg]
    response = get_threads(app, token(config, claims(pad="x" * (64 * KIB))))
    assert response.status_code < 500
    assert_unauthorized(response)


@pytest.mark.parametrize("signed", [False, True], ids=["garbage", "validly signed"])
def test_oversized_token_over_http_is_refused_by_the_server(apps, serve, signed):
    """Over real HTTP a 64 KiB Authorization header never reaches the app: 431 (or 400)."""
    config, app = apps["HS256"]
    bearer = token(config, claims(pad="x" * (64 * KIB))) if signed else "x" * (64 * KIB)
    url = urlsplit(serve(app))
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        connection.request("GET", "/v1/threads", headers={"Authorization": f"Bearer {bearer}"})
        status = connection.getresponse().status
    finally:
        connection.close()
    assert status in (400, 431), status
