"""chatkit attachments: the files ChatKit front ends attach to messages, from the declaration
to the uploaded file and the thread that holds it

Revision ID: c7e3a9d2f5b8
Revises: f1b7c3a9d5e2
Create Date: 2026-12-12 09:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = 'c7e3a9d2f5b8'
down_revision = 'f1b7c3a9d5e2'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('chatkit_attachments',
    sa.Column('pk', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.String(length=256), nullable=False),
    sa.Column('created_at', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('mime_type', sa.String(length=255), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('file_pk', sa.Integer(), nullable=True),
    sa.Column('thread_pk', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['file_pk'], ['files.pk'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['thread_pk'], ['threads.pk'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('pk'),
    sa.UniqueConstraint('file_pk')
    )
    with op.batch_alter_table('chatkit_attachments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_chatkit_attachments_id'), ['id'], unique=True)
        batch_op.create_index(batch_op.f('ix_chatkit_attachments_user_id'), ['user_id'],
                              unique=False)
        batch_op.create_index(batch_op.f('ix_chatkit_attachments_thread_pk'), ['thread_pk'],
                              unique=False)


def downgrade():
    with op.batch_alter_table('chatkit_attachments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_chatkit_attachments_thread_pk'))
        batch_op.drop_index(batch_op.f('ix_chatkit_attachments_user_id'))
        batch_op.drop_index(batch_op.f('ix_chatkit_attachments_id'))
    op.drop_table('chatkit_attachments')
