"""The `reviews` table: operators' judgements of frames, from `cctv-gender serve`.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("result_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(16), nullable=False),
        sa.Column("reviewer", sa.String(64), nullable=False),
        sa.Column("reviewed_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("label IN ('female', 'male', 'unsure')", name="ck_reviews_label"),
        sa.ForeignKeyConstraint(
            ["result_id"], ["results.id"], name="fk_reviews_result_id_results", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_reviews"),
    )
    op.create_index("ix_reviews_result_id_id", "reviews", ["result_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_reviews_result_id_id", table_name="reviews")
    op.drop_table("reviews")
