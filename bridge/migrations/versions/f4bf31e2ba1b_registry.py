"""registry: assistants, threads, messages, runs

Revision ID: f4bf31e2ba1b
Revises: 
Create Date: 2026-11-23 09:18:16.748255
"""
from alembic import op
import sqlalchemy as sa


revision = 'f4bf31e2ba1b'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('assistants',
    sa.Column('pk', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('upstream_id', sa.String(length=128), nullable=True),
    sa.Column('created_at', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=256), nullable=True),
    sa.Column('description', sa.String(length=512), nullable=True),
    sa.Column('model', sa.String(length=256), nullable=False),
    sa.Column('instructions', sa.Text(), nullable=True),
    sa.Column('tools', sa.JSON(), nullable=False),
    sa.Column('tool_resources', sa.JSON(), nullable=True),
    sa.Column('metadata', sa.JSON(), nullable=False),
    sa.Column('temperature', sa.Float(), nullable=True),
    sa.Column('top_p', sa.Float(), nullable=True),
    sa.Column('response_format', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('pk')
    )
    with op.batch_alter_table('assistants', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_assistants_id'), ['id'], unique=True)
        batch_op.create_index(batch_op.f('ix_assistants_name'), ['name'], unique=False)

    op.create_table('threads',
    sa.Column('pk', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('upstream_id', sa.String(length=128), nullable=True),
    sa.Column('user_id', sa.String(length=256), nullable=False),
    sa.Column('created_at', sa.Integer(), nullable=False),
    sa.Column('metadata', sa.JSON(), nullable=False),
    sa.Column('tool_resources', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('pk')
    )
    with op.batch_alter_table('threads', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_threads_id'), ['id'], unique=True)
        batch_op.create_index(batch_op.f('ix_threads_user_id'), ['user_id'], unique=False)

    op.create_table('messages',
    sa.Column('pk', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('upstream_id', sa.String(length=128), nullable=True),
    sa.Column('thread_pk', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.Integer(), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('content', sa.JSON(), nullable=False),
    sa.Column('attachments', sa.JSON(), nullable=True),
    sa.Column('metadata', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('assistant_id', sa.String(length=64), nullable=True),
    sa.Column('run_id', sa.String(length=64), nullable=True),
    sa.Column('completed_at', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['thread_pk'], ['threads.pk'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('pk')
    )
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_messages_id'), ['id'], unique=True)
        batch_op.create_index(batch_op.f('ix_messages_run_id'), ['run_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_messages_thread_pk'), ['thread_pk'], unique=False)

    op.create_table('runs',
    sa.Column('pk', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('upstream_id', sa.String(length=128), nullable=True),
    sa.Column('thread_pk', sa.Integer(), nullable=False),
    sa.Column('assistant_id', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('model', sa.String(length=256), nullable=False),
    sa.Column('instructions', sa.Text(), nullable=False),
    sa.Column('tools', sa.JSON(), nullable=False),
    sa.Column('metadata', sa.JSON(), nullable=False),
    sa.Column('temperature', sa.Float(), nullable=True),
    sa.Column('top_p', sa.Float(), nullable=True),
    sa.Column('max_completion_tokens', sa.Integer(), nullable=True),
    sa.Column('max_prompt_tokens', sa.Integer(), nullable=True),
    sa.Column('response_format', sa.JSON(), nullable=True),
    sa.Column('tool_choice', sa.JSON(), nullable=True),
    sa.Column('parallel_tool_calls', sa.Boolean(), nullable=False),
    sa.Column('truncation_strategy', sa.JSON(), nullable=True),
    sa.Column('started_at', sa.Integer(), nullable=True),
    sa.Column('expires_at', sa.Integer(), nullable=True),
    sa.Column('completed_at', sa.Integer(), nullable=True),
    sa.Column('failed_at', sa.Integer(), nullable=True),
    sa.Column('cancelled_at', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.JSON(), nullable=True),
    sa.Column('incomplete_details', sa.JSON(), nullable=True),
    sa.Column('required_action', sa.JSON(), nullable=True),
    sa.Column('usage', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['thread_pk'], ['threads.pk'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('pk')
    )
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_runs_id'), ['id'], unique=True)
        batch_op.create_index(batch_op.f('ix_runs_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_runs_thread_pk'), ['thread_pk'], unique=False)
        batch_op.create_index('uq_runs_one_active_per_thread', ['thread_pk'], unique=True, sqlite_where=sa.text("status IN ('queued', 'in_progress', 'requires_action', 'cancelling')"), postgresql_where=sa.text("status IN ('queued', 'in_progress', 'requires_action', 'cancelling')"))



def downgrade():
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_index('uq_runs_one_active_per_thread', sqlite_where=sa.text("status IN ('queued', 'in_progress', 'requires_action', 'cancelling')"), postgresql_where=sa.text("status IN ('queued', 'in_progress', 'requires_action', 'cancelling')"))
        batch_op.drop_index(batch_op.f('ix_runs_thread_pk'))
        batch_op.drop_index(batch_op.f('ix_runs_status'))
        batch_op.drop_index(batch_op.f('ix_runs_id'))

    op.drop_table('runs')
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_messages_thread_pk'))
        batch_op.drop_index(batch_op.f('ix_messages_run_id'))
        batch_op.drop_index(batch_op.f('ix_messages_id'))

    op.drop_table('messages')
    with op.batch_alter_table('threads', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_threads_user_id'))
        batch_op.drop_index(batch_op.f('ix_threads_id'))

    op.drop_table('threads')
    with op.batch_alter_table('assistants', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_assistants_name'))
        batch_op.drop_index(batch_op.f('ix_assistants_id'))

    op.drop_table('assistants')
