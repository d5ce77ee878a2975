"""ingestion holds: each vector store file's ingestion attempt and when a process last said it
holds that ingestion, for the sweep that takes over files a dead process left in_progress

Rows attached before this revision get attempt 1 and `held_at` 0: a file that a process which
died before this revision left `in_progress` is stale at the first sweep, and taken over once
like any other.

Revision ID: f1b7c3a9d5e2
Revises: d3a6f8b1c0e4
Create Date: 2026-12-13 10:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = 'f1b7c3a9d5e2'
down_revision = 'd3a6f8b1c0e4'
branch_labels = None
depends_on = None


# Plain ALTER TABLE both ways, never batch mode: SQLite would rebuild the table, and dropping the
# old copy would cascade to every chunk and batch membership. SQLite 3.35+ drops a column in
# place.
def upgrade():
    op.add_column('vector_store_files', sa.Column('ingest_attempts', sa.Integer(),
                                                  server_default='1', nullable=False))
    op.add_column('vector_store_files', sa.Column('held_at', sa.Integer(), server_default='0',
                                                  nullable=False))


def downgrade():
    op.drop_column('vector_store_files', 'held_at')
    op.drop_column('vector_store_files', 'ingest_attempts')
