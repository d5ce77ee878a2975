"""chatkit feedback and item places: a user's thumbs up or down on the items of a ChatKit
thread; each ChatKit item placed after the message it follows

Revision ID: 5d2a7c4e9f10
Revises: 3c5e0d9a7b21
Create Date: 2026-12-02 17:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '5d2a7c4e9f10'
down_revision = '3c5e0d9a7b21'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('chatkit_feedback',
    sa.Column('pk', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('thread_pk', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['thread_pk'], ['threads.pk'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('pk'),
    sa.UniqueConstraint('thread_pk', 'item_id')
    )
    with op.batch_alter_table('chatkit_items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('follows_message_pk', sa.Integer(), nullable=False,
                                      server_default='0'))
    # Items kept before: after the thread's last message made no later than they were.
    op.execute("UPDATE chatkit_items SET follows_message_pk = COALESCE((SELECT MAX(messages.pk) "
               "FROM messages WHERE messages.thread_pk = chatkit_items.thread_pk "
               "AND messages.created_at <= chatkit_items.created_at), 0)")


def downgrade():
    with op.batch_alter_table('chatkit_items', schema=None) as batch_op:
        batch_op.drop_column('follows_message_pk')
    op.drop_table('chatkit_feedback')
