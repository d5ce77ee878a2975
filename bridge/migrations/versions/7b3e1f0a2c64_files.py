"""files: uploads per user (metadata; the bytes are in the blob store) and the bytes each user's
files take, for the quota

Revision ID: 7b3e1f0a2c64
Revises: 5d2a7c4e9f10
Create Date: 2026-12-09 10:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '7b3e1f0a2c64'
down_revision = '5d2a7c4e9f10'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('files',
    sa.Column('pk', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.String(length=256), nullable=False),
    sa.Column('created_at', sa.Integer(), nullable=False),
    sa.Column('filename', sa.String(length=255), nullable=False),
    sa.Column('purpose', sa.String(length=32), nullable=False),
    sa.Column('bytes', sa.BigInteger(), nullable=False),
    sa.Column('blob_key', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('pk'),
    sa.UniqueConstraint('blob_key')
    )
    with op.batch_alter_table('files', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_files_id'), ['id'], unique=True)
        batch_op.create_index(batch_op.f('ix_files_user_id'), ['user_id'], unique=False)

    op.create_table('file_usage',
    sa.Column('user_id', sa.String(length=256), nullable=False),
    sa.Column('bytes', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('user_id')
    )


def downgrade():
    op.drop_table('file_usage')
    with op.batch_alter_table('files', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_files_user_id'))
        batch_op.drop_index(batch_op.f('ix_files_id'))
    op.drop_table('files')
