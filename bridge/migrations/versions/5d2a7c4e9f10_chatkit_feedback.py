"""chatkit feedback: a user's thumbs up or down on the items of a ChatKit thread

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


def downgrade():
    op.drop_table('chatkit_feedback')
