"""vector stores: stores per user, the files attached to them, their chunks, and the full-text
index over the chunks (FTS5 on SQLite, a GIN expression index on PostgreSQL)

Revision ID: 9c1d5e7a3b20
Revises: 7b3e1f0a2c64
Create Date: 2026-12-10 10:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '9c1d5e7a3b20'
down_revision = '7b3e1f0a2c64'
branch_labels = None
depends_on = None

# Kept in step with bridge/retrieval/index.py, which queries these structures.
SQLITE_FTS = [
    "CREATE VIRTUAL TABLE vector_store_chunks_fts USING fts5(text, content='vector_store_chunks', "
    "content_rowid='pk', tokenize='porter unicode61')",
    # Cascaded deletes fire these triggers too, so the index never keeps a removed chunk.
    "CREATE TRIGGER vector_store_chunks_ai AFTER INSERT ON vector_store_chunks BEGIN "
    "INSERT INTO vector_store_chunks_fts(rowid, text) VALUES (new.pk, new.text); END",
    "CREATE TRIGGER vector_store_chunks_ad AFTER DELETE ON vector_store_chunks BEGIN "
    "INSERT INTO vector_store_chunks_fts(vector_store_chunks_fts, rowid, text) "
    "VALUES ('delete', old.pk, old.text); END",
]
POSTGRES_FTS = ("CREATE INDEX ix_vector_store_chunks_tsv ON vector_store_chunks "
                "USING GIN (to_tsvector('english', text))")


def upgrade():
    op.create_table('vector_stores',
    sa.Column('pk', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.String(length=256), nullable=False),
    sa.Column('created_at', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=256), nullable=False),
    sa.Column('metadata', sa.JSON(), nullable=False),
    sa.Column('expires_after', sa.JSON(), nullable=True),
    sa.Column('last_active_at', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('pk')
    )
    with op.batch_alter_table('vector_stores', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_vector_stores_id'), ['id'], unique=True)
        batch_op.create_index(batch_op.f('ix_vector_stores_user_id'), ['user_id'], unique=False)

    op.create_table('vector_store_files',
    sa.Column('pk', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('vector_store_pk', sa.Integer(), nullable=False),
    sa.Column('file_pk', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('last_error', sa.JSON(), nullable=True),
    sa.Column('chunking_strategy', sa.JSON(), nullable=False),
    sa.Column('attributes', sa.JSON(), nullable=True),
    sa.Column('usage_bytes', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['file_pk'], ['files.pk'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['vector_store_pk'], ['vector_stores.pk'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('pk'),
    sa.UniqueConstraint('vector_store_pk', 'file_pk', name='uq_vector_store_files_store_file')
    )
    with op.batch_alter_table('vector_store_files', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_vector_store_files_id'), ['id'], unique=False)
        batch_op.create_index(batch_op.f('ix_vector_store_files_vector_store_pk'),
                              ['vector_store_pk'], unique=False)
        batch_op.create_index(batch_op.f('ix_vector_store_files_file_pk'), ['file_pk'],
                              unique=False)

    op.create_table('vector_store_chunks',
    sa.Column('pk', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('vector_store_pk', sa.Integer(), nullable=False),
    sa.Column('vector_store_file_pk', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['vector_store_pk'], ['vector_stores.pk'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['vector_store_file_pk'], ['vector_store_files.pk'],
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('pk')
    )
    with op.batch_alter_table('vector_store_chunks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_vector_store_chunks_vector_store_pk'),
                              ['vector_store_pk'], unique=False)
        batch_op.create_index(batch_op.f('ix_vector_store_chunks_vector_store_file_pk'),
                              ['vector_store_file_pk'], unique=False)

    dialect = op.get_bind().dialect.name
    if dialect == 'sqlite':
        for statement in SQLITE_FTS:
            op.execute(statement)
    elif dialect == 'postgresql':
        op.execute(POSTGRES_FTS)


def downgrade():
    dialect = op.get_bind().dialect.name
    if dialect == 'sqlite':
        op.execute("DROP TRIGGER IF EXISTS vector_store_chunks_ad")
        op.execute("DROP TRIGGER IF EXISTS vector_store_chunks_ai")
        op.execute("DROP TABLE IF EXISTS vector_store_chunks_fts")
    elif dialect == 'postgresql':
        op.execute("DROP INDEX IF EXISTS ix_vector_store_chunks_tsv")
    op.drop_table('vector_store_chunks')
    op.drop_table('vector_store_files')
    op.drop_table('vector_stores')
