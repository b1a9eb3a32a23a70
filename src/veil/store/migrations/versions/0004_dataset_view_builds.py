"""datasets: background view builds

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 16:45:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('build', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('build_worker', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('build_heartbeat', sa.DateTime(timezone=True),
                                      nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.drop_column('build_heartbeat')
        batch_op.drop_column('build_worker')
        batch_op.drop_column('build')
