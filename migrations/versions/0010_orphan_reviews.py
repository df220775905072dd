"""Reviews whose `results` row is gone are deleted: on SQLite they would label another frame.

SQLite never ran the reviews table's ON DELETE CASCADE (foreign keys stay off there: a batch
migration copies, drops and renames `results`, and with them on that DROP would take every review
along). Until a backfill's supersede learnt to delete a failed row's reviews with it, the row went
and its reviews stayed. `results.id` has no AUTOINCREMENT, so a row inserted later can be given
the freed id and would inherit such a review: the review pages and `dataset export` would then
train on a label an operator never gave that frame. They label nothing now; delete them before
the next insert can adopt one. PostgreSQL enforced the cascade and has none.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29
"""

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

logger = logging.getLogger("migrations.0010_orphan_reviews")

ORPHANS = "NOT EXISTS (SELECT 1 FROM results WHERE results.id = reviews.result_id)"


def upgrade() -> None:
    deleted = op.get_bind().execute(sa.text(f"DELETE FROM reviews WHERE {ORPHANS}")).rowcount
    if deleted:
        logger.warning("deleted %d reviews of rows no longer in results (they labelled no frame)", deleted)


def downgrade() -> None:
    pass  # what was deleted labelled nothing; there is nothing to put back
