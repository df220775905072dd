"""Times in the results database: UTC, written on SQLite as the dialect's own text, whatever zone
the value came in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.sqlite import DATETIME

from watcher.store.schema import UTCDateTime

_ZONES = st.integers(-23 * 60, 23 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes)))
# The daemon's own times are in UTC (datetime.UTC itself): written the short way.
_ZONES_AND_UTC = st.one_of(st.just(UTC), _ZONES)


@given(
    moment=st.datetimes(
        min_value=datetime(1000, 1, 2), max_value=datetime(9998, 12, 30), timezones=_ZONES_AND_UTC
    )
)
def test_sqlite_gets_the_text_its_dialect_would_write(moment: datetime) -> None:
    dialect = sqlite.dialect()
    column_type = UTCDateTime()
    process = column_type.bind_processor(dialect)
    generic = DATETIME().bind_processor(dialect)
    assert process is not None and generic is not None

    written = process(moment)

    assert written == generic(moment.astimezone(UTC).replace(tzinfo=None))
    assert datetime.fromisoformat(written).replace(tzinfo=UTC) == moment
    assert process(None) is None


def test_a_naive_time_is_refused_on_sqlite_too() -> None:
    process = UTCDateTime().bind_processor(sqlite.dialect())
    assert process is not None
    with pytest.raises(ValueError, match="naive datetime"):
        process(datetime(2026, 11, 26, 12, 0))
