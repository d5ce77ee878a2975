"""The migrations make the schema the models describe: a database upgraded from nothing has
every table, column, index and constraint of bridge/models.py, and nothing else."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from bridge.extensions import db


def _ours(object_, name, type_, reflected, compare_to) -> bool:
    # The full-text search structures of vector store chunks (SQLite's FTS5 tables,
    # PostgreSQL's tsvector column and its index) are made by their migrations and have no model.
    if type_ == "table" and (name or "").startswith("vector_store_chunks_fts"):
        return False
    if type_ == "index" and name == "ix_vector_store_chunks_tsv":
        return False
    return not (type_ == "column" and name == "tsv")


def test_upgraded_schema_matches_the_models(make_app):
    app = make_app()  # AUTO_MIGRATE upgrades the fresh registry to the newest migration
    with app.app_context():
        with db.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={
                "compare_type": True, "include_object": _ours})
            differences = compare_metadata(context, db.metadata)
        db.session.remove()
    assert differences == []
