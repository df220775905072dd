"""Room for any file size and any camera name; crash counts in `instances`.

`results.size_bytes` becomes BIGINT (a 2.5 GB file overflows INTEGER) and `results.camera` TEXT
(a camera folder's name escaped from non-UTF-8 bytes can pass 255 characters): on PostgreSQL,
which enforces both, around a drop and re-creation of the view `v_results` that depends on them.
SQLite enforces neither (its INTEGER is 64-bit, VARCHAR(255) holds any length), so its declared
types stay: changing them would copy the whole table, embeddings and all, at a daemon's start.

`instances` gains `crashes` and `last_crash_at` (see watcher.service.heartbeat.Heartbeat.record_start).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

import importlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The view exactly as migration 0003 made it (a module name starting with a digit needs importlib).
results_view = importlib.import_module("migrations.versions.0003_results_view")


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("crashes", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("last_crash_at", sa.DateTime(), nullable=True))
    if op.get_bind().dialect.name == "sqlite":
        return
    op.execute("DROP VIEW v_results")
    op.alter_column(
        "results", "size_bytes", type_=sa.BigInteger(), existing_type=sa.Integer(), existing_nullable=True
    )
    op.alter_column(
        "results", "camera", type_=sa.Text(), existing_type=sa.String(255), existing_nullable=True
    )
    op.execute(results_view.POSTGRES_VIEW)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.execute("DROP VIEW v_results")
        op.alter_column(
            "results", "camera", type_=sa.String(255), existing_type=sa.Text(), existing_nullable=True
        )
        op.alter_column(
            "results", "size_bytes", type_=sa.Integer(), existing_type=sa.BigInteger(), existing_nullable=True
        )
        op.execute(results_view.POSTGRES_VIEW)
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("last_crash_at")
        batch.drop_column("crashes")
