"""chatkit: thread titles and the thread items that are not messages

Revision ID: 3c5e0d9a7b21
Revises: 1cbbf50ba6f1
Create Date: 2026-12-02 08:10:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '3c5e0d9a7b21'
down_revision = '1cbbf50ba6f1'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('chatkit_threads',
    sa.Column('thread_pk', sa.Integer(), nullable=False),
    sa.Column('title', sa.String(length=512), nullable=True),
    sa.ForeignKeyConstraint(['thread_pk'], ['threads.pk'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('thread_pk')
    )
    op.create_table('chatkit_items',
    sa.Column('pk', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('thread_pk', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.Integer(), nullable=False),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('item', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['thread_pk'], ['threads.pk'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('pk')
    )
    with op.batch_alter_table('chatkit_items', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_chatkit_items_id'), ['id'], unique=True)
        batch_op.create_index(batch_op.f('ix_chatkit_items_thread_pk'), ['thread_pk'], unique=False)


def downgrade():
    with op.batch_alter_table('chatkit_items', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_chatkit_items_thread_pk'))
        batch_op.drop_index(batch_op.f('ix_chatkit_items_id'))
    op.drop_table('chatkit_items')
    op.drop_table('chatkit_threads')
