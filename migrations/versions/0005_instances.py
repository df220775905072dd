"""The `instances` table: a heartbeat row per daemon, for `cctv-gender status` across hosts.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "instances",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
        sa.Column("claimed", sa.Integer(), nullable=False),
        sa.Column("frames_ok", sa.Integer(), nullable=False),
        sa.Column("frames_failed", sa.Integer(), nullable=False),
        sa.Column("frames_per_s", sa.Float(), nullable=False),
        sa.Column("model_version", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_instances"),
    )


def downgrade() -> None:
    op.drop_table("instances")
