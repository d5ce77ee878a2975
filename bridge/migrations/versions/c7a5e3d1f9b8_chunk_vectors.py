"""chunk vectors: embeddings of vector store chunks, for hybrid search (EMBEDDINGS_MODEL)

Revision ID: c7a5e3d1f9b8
Revises: b4d2e8f1a6c3
Create Date: 2026-12-10 10:00:00.000000
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


revision = 'c7a5e3d1f9b8'
down_revision = 'b4d2e8f1a6c3'
branch_labels = None
depends_on = None


def upgrade():
    # real[] on PostgreSQL (unnest ranks it in SQL), packed floats on SQLite.
    vector = sa.LargeBinary().with_variant(postgresql.ARRAY(sa.REAL()), 'postgresql')
    op.create_table('vector_store_chunk_vectors',
    sa.Column('chunk_pk', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('vector_store_pk', sa.Integer(), nullable=False),
    sa.Column('embedding', vector, nullable=False),
    sa.ForeignKeyConstraint(['chunk_pk'], ['vector_store_chunks.pk'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['vector_store_pk'], ['vector_stores.pk'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('chunk_pk')
    )
    op.create_index(op.f('ix_vector_store_chunk_vectors_vector_store_pk'),
                    'vector_store_chunk_vectors', ['vector_store_pk'], unique=False)


def downgrade():
    op.drop_index(op.f('ix_vector_store_chunk_vectors_vector_store_pk'),
                  table_name='vector_store_chunk_vectors')
    op.drop_table('vector_store_chunk_vectors')
