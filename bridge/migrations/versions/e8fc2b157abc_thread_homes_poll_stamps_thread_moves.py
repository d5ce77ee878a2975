"""thread homes, poll stamps, thread moves

Revision ID: e8fc2b157abc
Revises: 12a08f6bda22
Create Date: 2026-11-23 11:36:27.444643
"""
from alembic import op
import sqlalchemy as sa


revision = 'e8fc2b157abc'
down_revision = '12a08f6bda22'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('thread_moves',
    sa.Column('pk', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('thread_pk', sa.Integer(), nullable=False),
    sa.Column('target', sa.String(length=16), nullable=False),
    sa.Column('upstream_id', sa.String(length=128), nullable=True),
    sa.Column('copied', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['thread_pk'], ['threads.pk'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('pk'),
    sa.UniqueConstraint('thread_pk')
    )
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('polled_at', sa.Float(), nullable=True))

    with op.batch_alter_table('threads', schema=None) as batch_op:
        batch_op.add_column(sa.Column('home', sa.String(length=16), server_default='local', nullable=False))
        batch_op.add_column(sa.Column('status', sa.String(length=16), server_default='active', nullable=False))



def downgrade():
    with op.batch_alter_table('threads', schema=None) as batch_op:
        batch_op.drop_column('status')
        batch_op.drop_column('home')

    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('polled_at')

    op.drop_table('thread_moves')
