"""Identity: every /v1 request carries a JWT whose user claim names the caller.

flask-jwt-extended verifies the token. Its defaults answer a bad token with 422, accept tokens
without `exp`, and accept a user claim that is empty, null, a number or a list; the loaders below
make each of those a 401 in our error envelope.
"""

from __future__ import annotations

import re

from flask import Flask, current_app, request
from flask_jwt_extended import get_jwt, verify_jwt_in_request

from .config import Settings, development_secret, read_pem
from .errors import Forbidden, Unauthorized, error_response
from .extensions import jwt

# Ids end up in metadata, logs and upstream calls: keep them to printable, unambiguous characters.
USER_ID_SHAPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@|+\-]{0,254}")


def configure_jwt(app: Flask, settings: Settings) -> None:
    """Translate our settings into flask-jwt-extended's configuration."""
    algorithm = settings.JWT_ALGORITHM
    if algorithm.startswith("RS"):
        app.config["JWT_PUBLIC_KEY"] = read_pem(settings.JWT_PUBLIC_KEY)
        if settings.JWT_PRIVATE_KEY:
            app.config["JWT_PRIVATE_KEY"] = read_pem(settings.JWT_PRIVATE_KEY)
    else:
        app.config["JWT_SECRET_KEY"] = settings.JWT_SECRET_KEY or development_secret(
            app.instance_path)
    app.config.update(
        JWT_ALGORITHM=algorithm,
        # Only the configured algorithm verifies: no `none`, no HS/RS confusion.
        JWT_DECODE_ALGORITHMS=[algorithm],
        JWT_TOKEN_LOCATION=["headers"],
        JWT_IDENTITY_CLAIM=settings.JWT_USER_CLAIM,
        JWT_DECODE_AUDIENCE=settings.JWT_AUDIENCE,
        JWT_ENCODE_AUDIENCE=settings.JWT_AUDIENCE,
        JWT_DECODE_ISSUER=settings.JWT_ISSUER,
        JWT_ENCODE_ISSUER=settings.JWT_ISSUER,
        JWT_DECODE_LEEWAY=settings.JWT_LEEWAY_SECONDS,
        # The claim shape is checked below, for whatever claim name is configured.
        JWT_VERIFY_SUB=False,
    )


_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="assistants-bridge"'}


def _unauthorized(message: str):
    return error_response(401, message, code="invalid_token", headers=dict(_CHALLENGE))


def register_jwt_callbacks() -> None:
    """Make every authentication failure a 401 in the error envelope."""

    @jwt.unauthorized_loader
    def missing_token(reason: str):
        return _unauthorized("Missing bearer token: send 'Authorization: Bearer <JWT>'.")

    @jwt.invalid_token_loader
    def invalid_token(reason: str):
        return _unauthorized("Invalid token.")

    @jwt.expired_token_loader
    def expired_token(header, payload):
        return _unauthorized("Token has expired.")

    @jwt.token_verification_loader
    def claims_are_sane(header, payload) -> bool:
        if "exp" not in payload:
            return False
        user_id = payload.get(current_app.config["JWT_IDENTITY_CLAIM"])
        return isinstance(user_id, str) and bool(USER_ID_SHAPE.fullmatch(user_id))

    @jwt.token_verification_failed_loader
    def bad_claims(header, payload):
        return _unauthorized("Invalid token: it needs an 'exp' claim and a non-empty string user id.")

    @jwt.revoked_token_loader
    def revoked(header, payload):
        return _unauthorized("Token has been revoked.")

    @jwt.needs_fresh_token_loader
    def not_fresh(header, payload):
        return _unauthorized("Fresh token required.")

    @jwt.user_lookup_error_loader
    def unknown_user(header, payload):
        return _unauthorized("Invalid token.")


# Far above any real token (a few hundred bytes to a few KiB), far below what it costs to parse.
MAX_TOKEN_BYTES = 8192


def require_user() -> None:
    """Verify the request's token; raises into the 401 loaders above."""
    if len(request.headers.get("Authorization", "")) > MAX_TOKEN_BYTES:
        raise Unauthorized(f"Invalid token: longer than {MAX_TOKEN_BYTES} bytes.",
                           code="invalid_token", headers=dict(_CHALLENGE))
    verify_jwt_in_request()


def current_user_id() -> str:
    """The verified user id of this request."""
    return get_jwt()[current_app.config["JWT_IDENTITY_CLAIM"]]


def require_admin() -> None:
    """Only tokens whose admin claim has the admin value may change assistants."""
    settings: Settings = current_app.config["BRIDGE_SETTINGS"]
    claim = get_jwt().get(settings.JWT_ADMIN_CLAIM)
    values = claim if isinstance(claim, list) else [claim]
    if settings.JWT_ADMIN_VALUE not in values:
        raise Forbidden("This operation needs an admin token.", code="forbidden")
