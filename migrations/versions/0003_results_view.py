"""The `v_results` view: readable columns and local-time helpers for SQL users.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQLITE_VIEW = """
CREATE VIEW v_results AS
SELECT
    id,
    camera,
    label,
    round(probability, 3) AS probability,
    status,
    error,
    model_version,
    processed_at AS processed_utc,
    datetime(processed_at, 'localtime') AS processed_local,
    date(processed_at, 'localtime') AS day_local,
    CAST(strftime('%H', processed_at, 'localtime') AS INTEGER) AS hour_local,
    source_path,
    stored_path,
    width,
    height,
    size_bytes,
    sha256,
    file_mtime AS file_mtime_utc,
    received_at AS received_utc
FROM results
"""

POSTGRES_VIEW = """
CREATE VIEW v_results AS
SELECT
    id,
    camera,
    label,
    round(probability::numeric, 3)::double precision AS probability,
    status,
    error,
    model_version,
    processed_at AS processed_utc,
    (processed_at AT TIME ZONE 'UTC') AT TIME ZONE current_setting('TimeZone') AS processed_local,
    ((processed_at AT TIME ZONE 'UTC') AT TIME ZONE current_setting('TimeZone'))::date AS day_local,
    extract(hour FROM (processed_at AT TIME ZONE 'UTC') AT TIME ZONE current_setting('TimeZone'))::int
        AS hour_local,
    source_path,
    stored_path,
    width,
    height,
    size_bytes,
    sha256,
    file_mtime AS file_mtime_utc,
    received_at AS received_utc
FROM results
"""


def upgrade() -> None:
    op.execute(SQLITE_VIEW if op.get_bind().dialect.name == "sqlite" else POSTGRES_VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW v_results")
