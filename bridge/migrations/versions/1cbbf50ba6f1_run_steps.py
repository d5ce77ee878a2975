"""run steps

Revision ID: 1cbbf50ba6f1
Revises: 8202282b95d3
Create Date: 2026-12-02 05:03:07.013926
"""
from alembic import op
import sqlalchemy as sa


revision = '1cbbf50ba6f1'
down_revision = '8202282b95d3'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('run_steps',
    sa.Column('pk', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('upstream_id', sa.String(length=128), nullable=True),
    sa.Column('run_pk', sa.Integer(), nullable=False),
    sa.Column('thread_pk', sa.Integer(), nullable=False),
    sa.Column('assistant_id', sa.String(length=64), nullable=False),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('step_details', sa.JSON(), nullable=False),
    sa.Column('usage', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.Integer(), nullable=False),
    sa.Column('completed_at', sa.Integer(), nullable=True),
    sa.Column('failed_at', sa.Integer(), nullable=True),
    sa.Column('cancelled_at', sa.Integer(), nullable=True),
    sa.Column('expired_at', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['run_pk'], ['runs.pk'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['thread_pk'], ['threads.pk'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('pk')
    )
    with op.batch_alter_table('run_steps', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_run_steps_id'), ['id'], unique=True)
        batch_op.create_index(batch_op.f('ix_run_steps_run_pk'), ['run_pk'], unique=False)
        batch_op.create_index(batch_op.f('ix_run_steps_thread_pk'), ['thread_pk'], unique=False)



def downgrade():
    with op.batch_alter_table('run_steps', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_run_steps_thread_pk'))
        batch_op.drop_index(batch_op.f('ix_run_steps_run_pk'))
        batch_op.drop_index(batch_op.f('ix_run_steps_id'))

    op.drop_table('run_steps')
