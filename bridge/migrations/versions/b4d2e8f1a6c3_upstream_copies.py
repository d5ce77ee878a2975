"""upstream copies of files and vector stores (the provider's ids, for the engines that search
there), and file contents kept in the database for FILE_STORAGE=database

Revision ID: b4d2e8f1a6c3
Revises: c283bb5cb070
Create Date: 2026-12-10 09:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = 'b4d2e8f1a6c3'
down_revision = 'c283bb5cb070'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('files', sa.Column('upstream_id', sa.String(length=128), nullable=True))
    op.create_index(op.f('ix_files_upstream_id'), 'files', ['upstream_id'], unique=False)
    op.add_column('vector_stores', sa.Column('upstream_id', sa.String(length=128), nullable=True))
    op.create_table('file_blobs',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('position', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('key', 'position')
    )


def downgrade():
    # Plain ALTER TABLE (SQLite 3.35+): a batch rebuild of these tables would cascade-delete
    # the rows that point at them.
    op.drop_table('file_blobs')
    op.drop_column('vector_stores', 'upstream_id')
    op.drop_index(op.f('ix_files_upstream_id'), table_name='files')
    op.drop_column('files', 'upstream_id')
