"""Alembic migrations of the results database (applied by `cctv-gender db upgrade`)."""
