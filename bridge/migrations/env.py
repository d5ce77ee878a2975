"""Alembic environment: the registry's metadata, bound to the app's engine."""

from alembic import context
from flask import current_app

config = context.config
target_metadata = current_app.extensions["migrate"].db.metadata


def include_object(obj, name, type_, reflected, compare_to):
    # SQLite's FTS5 index over the chunks (and its shadow tables), and PostgreSQL's tsvector
    # column of the chunks with its GIN index, are made by hand in migrations 9c1d5e7a3b20 and
    # c283bb5cb070, not by a model: autogenerate must not offer to drop them.
    if type_ == "table" and reflected and name.startswith("vector_store_chunks_fts"):
        return False
    if type_ == "index" and reflected and name == "ix_vector_store_chunks_tsv":
        return False
    return not (type_ == "column" and reflected and name == "tsv"
                and obj.table.name == "vector_store_chunks")


def run_migrations_offline() -> None:
    context.configure(url=current_app.config["SQLALCHEMY_DATABASE_URI"],
                      target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=True, include_object=include_object)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = current_app.extensions["migrate"].db.engine
    with connectable.connect() as connection:
        # Batch mode lets later migrations alter SQLite tables too.
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=True, compare_type=True,
                          include_object=include_object)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
