"""The results table: one row per frame.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("frame_key", sa.String(32), nullable=False),
        sa.Column("camera", sa.String(255), nullable=True),
        sa.Column("source_path", sa.Text(), nullable=False),
        sa.Column("stored_path", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("size_bytes", sa.Integer(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("file_mtime", sa.DateTime(), nullable=True),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("processed_at", sa.DateTime(), nullable=False),
        sa.Column("label", sa.String(16), nullable=True),
        sa.Column("probability", sa.Float(), nullable=True),
        sa.Column("model_version", sa.String(255), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_results")),
        sa.UniqueConstraint("frame_key", name=op.f("uq_results_frame_key")),
        sa.CheckConstraint("status IN ('ok', 'failed')", name=op.f("ck_results_status")),
        sa.CheckConstraint("label IS NULL OR label IN ('female', 'male')", name=op.f("ck_results_label")),
    )
    op.create_index("ix_results_processed_at", "results", ["processed_at"])
    op.create_index("ix_results_camera_processed_at", "results", ["camera", "processed_at"])
    op.create_index("ix_results_label_processed_at", "results", ["label", "processed_at"])
    op.create_index("ix_results_status_processed_at", "results", ["status", "processed_at"])


def downgrade() -> None:
    op.drop_table("results")
