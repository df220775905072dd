"""`results.source`: `inbox` for the daemon's frames, `archive:<folder>` for `cctv-gender backfill`'s.

Every existing row came from the inbox (the server default fills them in without rewriting the
table on SQLite, which adds a column in place). The index finds an archive's rows by path, so a
rerun of a backfill skips what is done without reading the files again.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26
"""

import importlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The view exactly as migration 0003 made it (a module name starting with a digit needs importlib).
results_view = importlib.import_module("migrations.versions.0003_results_view")


def upgrade() -> None:
    op.add_column("results", sa.Column("source", sa.Text(), server_default="inbox", nullable=False))
    op.create_index("ix_results_source_source_path", "results", ["source", "source_path"])


def downgrade() -> None:
    op.drop_index("ix_results_source_source_path", table_name="results")
    # SQLite drops a column by copying the table, which a view on it does not survive.
    op.execute("DROP VIEW v_results")
    with op.batch_alter_table("results") as batch:
        batch.drop_column("source")
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.execute(results_view.SQLITE_VIEW if sqlite else results_view.POSTGRES_VIEW)
