"""Liveness and readiness probes; no authentication."""

from flask import Blueprint, jsonify
from sqlalchemy import text

from ..engines import current_engine
from ..extensions import db

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """The process is up."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    """The registry answers and an engine is configured."""
    try:
        db.session.execute(text("SELECT 1"))
    except Exception:
        db.session.rollback()
        return jsonify({"status": "unavailable", "database": "unreachable"}), 503
    return jsonify({"status": "ready", "database": "ok", **current_engine().describe()})
