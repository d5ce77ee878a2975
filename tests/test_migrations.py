"""The migrations make the schema the models describe: a database upgraded from nothing has
every table, column, index and constraint of bridge/models.py, and nothing else."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from bridge.extensions import db


# The full-text search structures of vector store chunks (SQLite's FTS5 tables, PostgreSQL's
# expression index) are made by their migration and have no model.
_FULL_TEXT = ("vector_store_chunks_fts", "ix_vector_store_chunks_tsv")


def _ours(object_, name, type_, reflected, compare_to) -> bool:
    return not (name or "").startswith(_FULL_TEXT)


def test_upgraded_schema_matches_the_models(make_app):
    app = make_app()  # AUTO_MIGRATE upgrades the fresh registry to the newest migration
    with app.app_context():
        with db.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={
                "compare_type": True, "include_object": _ours})
            differences = compare_metadata(context, db.metadata)
        db.session.remove()
    assert differences == []
