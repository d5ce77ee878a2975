"""runs: tool exchange

Revision ID: 12a08f6bda22
Revises: f4bf31e2ba1b
Create Date: 2026-11-23 10:49:20.008146
"""
from alembic import op
import sqlalchemy as sa


revision = '12a08f6bda22'
down_revision = 'f4bf31e2ba1b'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tool_exchange', sa.JSON(), nullable=True))



def downgrade():
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('tool_exchange')

