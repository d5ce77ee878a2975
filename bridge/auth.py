"""Identity: every /v1 request carries a JWT whose user claim names the caller.

PyJWT verifies the token once per request, with exactly the configured algorithm and a key
loaded once at start; the verified claims stay on `flask.g` for the rest of the request. A token
needs `exp` and a user claim that is a safe, non-empty string; `aud` and `iss` must match when
they are configured. Every failure is a 401 in the error envelope with `WWW-Authenticate`.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import jwt
from flask import Flask, current_app, g, request

from .config import Settings, development_secret, read_pem
from .errors import Forbidden, Unauthorized

# Ids end up in metadata, logs and upstream calls: keep them to printable, unambiguous characters.
USER_ID_SHAPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@|+\-]{0,254}")
# Far above any real token (a few hundred bytes to a few KiB), far below what it costs to parse.
MAX_TOKEN_BYTES = 8192
SCHEME = "Bearer"
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="assistants-bridge"'}
_EXTENSION_KEY = "bridge.tokens"


def _unauthorized(message: str) -> Unauthorized:
    return Unauthorized(message, code="invalid_token", headers=dict(_CHALLENGE))


class Tokens:
    """Verifies (and, for development, mints) the bridge's JWTs with the configured key."""

    def __init__(self, settings: Settings, instance_path: str):
        self.algorithm = settings.JWT_ALGORITHM
        self.user_claim = settings.JWT_USER_CLAIM
        self.audience, self.issuer = settings.JWT_AUDIENCE, settings.JWT_ISSUER
        self.leeway = settings.JWT_LEEWAY_SECONDS
        self.signing_key: Any = None
        if self.algorithm.startswith("RS"):
            # Parsed once: PyJWT would parse a PEM string again on every request.
            algorithm = jwt.get_algorithm_by_name(self.algorithm)
            self.verifying_key = algorithm.prepare_key(read_pem(settings.JWT_PUBLIC_KEY))
            if settings.JWT_PRIVATE_KEY:
                self.signing_key = algorithm.prepare_key(read_pem(settings.JWT_PRIVATE_KEY))
        else:
            secret = settings.JWT_SECRET_KEY or development_secret(instance_path)
            self.verifying_key = self.signing_key = secret
        self._decoder = jwt.PyJWT(options={"require": ["exp"]})

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a valid token; raises Unauthorized for anything else."""
        try:
            claims = self._decoder.decode(
                token, self.verifying_key, algorithms=[self.algorithm], audience=self.audience,
                issuer=self.issuer, leeway=self.leeway,
                options={"verify_aud": self.audience is not None})
        except jwt.ExpiredSignatureError:
            raise _unauthorized("Token has expired.") from None
        except jwt.MissingRequiredClaimError:
            raise _unauthorized(_CLAIMS_NEEDED) from None
        except jwt.InvalidTokenError:
            raise _unauthorized("Invalid token.") from None
        user = claims.get(self.user_claim)
        if not isinstance(user, str) or not USER_ID_SHAPE.fullmatch(user):
            raise _unauthorized(_CLAIMS_NEEDED)
        if claims.get("type") == "refresh":
            raise _unauthorized("Invalid token: refresh tokens are not accepted here.")
        return claims

    def mint(self, user: str | None, *, ttl: int, claims: dict[str, Any] | None = None) -> str:
        """A token for `user` valid for `ttl` seconds (development and tests)."""
        if self.signing_key is None:
            raise ValueError(f"Minting {self.algorithm} tokens needs JWT_PRIVATE_KEY.")
        now = int(time.time())
        payload = {"sub": user, "iat": now, "nbf": now, "exp": now + ttl,
                   "jti": str(uuid.uuid4()), "type": "access", self.user_claim: user,
                   **(claims or {})}
        if self.audience is not None:
            payload["aud"] = self.audience
        if self.issuer is not None:
            payload["iss"] = self.issuer
        return jwt.encode(payload, self.signing_key, algorithm=self.algorithm)


_CLAIMS_NEEDED = "Invalid token: it needs an 'exp' claim and a non-empty string user id."


def init_app(app: Flask, settings: Settings) -> Tokens:
    tokens = Tokens(settings, app.instance_path)
    app.extensions[_EXTENSION_KEY] = tokens
    return tokens


def tokens() -> Tokens:
    """The running app's token verifier."""
    return current_app.extensions[_EXTENSION_KEY]


def _bearer_token() -> str:
    """The token of `Authorization: Bearer <JWT>` (one such entry in a comma-separated list)."""
    header = request.headers.get("Authorization", "").strip().strip(",")
    if len(header) > MAX_TOKEN_BYTES:
        raise _unauthorized(f"Invalid token: longer than {MAX_TOKEN_BYTES} bytes.")
    entries = [entry for entry in re.split(r",\s*", header) if entry and entry.split()[0] == SCHEME]
    if len(entries) != 1:
        raise _unauthorized("Missing bearer token: send 'Authorization: Bearer <JWT>'.")
    parts = entries[0].split()
    if len(parts) != 2:
        raise _unauthorized("Invalid token.")
    return parts[1]


def require_user() -> None:
    """Verify the request's token once; its claims serve the rest of the request."""
    if request.method == "OPTIONS":
        return  # a CORS preflight carries no credentials
    if "token_claims" not in g:
        g.token_claims = tokens().verify(_bearer_token())


def verified_claims() -> dict[str, Any] | None:
    """The claims of this request's verified token, or None when none was verified."""
    return g.get("token_claims")


def current_user_id() -> str:
    """The verified user id of this request."""
    return g.token_claims[tokens().user_claim]


def require_admin() -> None:
    """Only tokens whose admin claim has the admin value may change assistants."""
    settings: Settings = current_app.config["BRIDGE_SETTINGS"]
    claim = g.token_claims.get(settings.JWT_ADMIN_CLAIM)
    values = claim if isinstance(claim, list) else [claim]
    if settings.JWT_ADMIN_VALUE not in values:
        raise Forbidden("This operation needs an admin token.", code="forbidden")
