"""chunk tsvectors: on PostgreSQL each vector store chunk keeps its tsvector in a stored
generated column, which the GIN index now covers instead of the expression

Ranking needs every found chunk's words and positions. With only an expression index, each
search parsed the text of every chunk it found again: about a millisecond a chunk, seconds for
a common word in a store of a thousand chunks. The stored column is computed once, when the
chunk is inserted. SQLite is untouched: its FTS5 index keeps positions itself.

Revision ID: c283bb5cb070
Revises: 9c1d5e7a3b20
Create Date: 2026-12-14 10:00:00.000000
"""
from alembic import op


revision = 'c283bb5cb070'
down_revision = '9c1d5e7a3b20'
branch_labels = None
depends_on = None

# Kept in step with bridge/retrieval/index.py, which reads the column.
EXPRESSION_INDEX = ("CREATE INDEX ix_vector_store_chunks_tsv ON vector_store_chunks "
                    "USING GIN (to_tsvector('english', text))")


def upgrade():
    if op.get_bind().dialect.name != 'postgresql':
        return
    # Generated columns need PostgreSQL 12. Adding one computes it for every existing chunk.
    op.execute("ALTER TABLE vector_store_chunks ADD COLUMN tsv tsvector "
               "GENERATED ALWAYS AS (to_tsvector('english', text)) STORED")
    op.execute("DROP INDEX IF EXISTS ix_vector_store_chunks_tsv")
    op.execute("CREATE INDEX ix_vector_store_chunks_tsv ON vector_store_chunks USING GIN (tsv)")


def downgrade():
    if op.get_bind().dialect.name != 'postgresql':
        return
    op.execute("DROP INDEX IF EXISTS ix_vector_store_chunks_tsv")
    op.execute("ALTER TABLE vector_store_chunks DROP COLUMN tsv")
    op.execute(EXPRESSION_INDEX)
