"""Indexes on when frames were captured: `coalesce(file_mtime, processed_at)`, alone and after the
camera, as summaries, the dashboard and `--time captured` filter on exactly that expression.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CAPTURED = sa.text("coalesce(file_mtime, processed_at)")


def upgrade() -> None:
    op.create_index("ix_results_captured", "results", [CAPTURED])
    op.create_index("ix_results_camera_captured", "results", [sa.text("camera"), CAPTURED])


def downgrade() -> None:
    op.drop_index("ix_results_camera_captured", table_name="results")
    op.drop_index("ix_results_captured", table_name="results")
