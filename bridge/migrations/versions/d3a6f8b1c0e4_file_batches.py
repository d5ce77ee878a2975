"""file batches: files attached to a vector store in one request, and which attachments each
batch holds (an attachment may be in several)

Revision ID: d3a6f8b1c0e4
Revises: c7a5e3d1f9b8
Create Date: 2026-12-12 10:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = 'd3a6f8b1c0e4'
down_revision = 'c7a5e3d1f9b8'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('vector_store_file_batches',
    sa.Column('pk', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('vector_store_pk', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.Integer(), nullable=False),
    sa.Column('cancelled_at', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['vector_store_pk'], ['vector_stores.pk'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('pk')
    )
    with op.batch_alter_table('vector_store_file_batches', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_vector_store_file_batches_id'), ['id'], unique=True)
        batch_op.create_index(batch_op.f('ix_vector_store_file_batches_vector_store_pk'),
                              ['vector_store_pk'], unique=False)

    op.create_table('vector_store_file_batch_files',
    sa.Column('batch_pk', sa.Integer(), nullable=False),
    sa.Column('vector_store_file_pk', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['batch_pk'], ['vector_store_file_batches.pk'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['vector_store_file_pk'], ['vector_store_files.pk'],
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('batch_pk', 'vector_store_file_pk')
    )
    with op.batch_alter_table('vector_store_file_batch_files', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_vector_store_file_batch_files_vector_store_file_pk'),
                              ['vector_store_file_pk'], unique=False)


def downgrade():
    with op.batch_alter_table('vector_store_file_batch_files', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_vector_store_file_batch_files_vector_store_file_pk'))
    op.drop_table('vector_store_file_batch_files')
    with op.batch_alter_table('vector_store_file_batches', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_vector_store_file_batches_vector_store_pk'))
        batch_op.drop_index(batch_op.f('ix_vector_store_file_batches_id'))
    op.drop_table('vector_store_file_batches')
