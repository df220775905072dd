"""Stored names: the shortcut for plain ASCII names gives exactly what the general escaping gives."""

from __future__ import annotations

import os
from pathlib import PurePosixPath

from hypothesis import given
from hypothesis import strategies as st

from watcher.intake.names import NAME_MAX_BYTES, destination_relative, fit_name, original_bytes, storable

# Names as the inbox yields them: any bytes but '/' and NUL, decoded as Python does (undecodable
# bytes as lone surrogates), ASCII often enough that the shortcut is taken.
_PART_BYTES = st.one_of(
    st.binary(min_size=1, max_size=300),
    st.text(st.characters(min_codepoint=1, max_codepoint=127), min_size=1, max_size=300).map(str.encode),
).map(lambda raw: raw.replace(b"/", b"_").replace(b"\x00", b"_"))
_PARTS = st.lists(
    _PART_BYTES.map(os.fsdecode).filter(lambda part: part not in {".", ".."}), min_size=1, max_size=4
)


def _escaped(text: str) -> str:
    """The general escaping, as it was before the shortcut."""
    return os.fsencode(text).replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")


@given(parts=_PARTS)
def test_storable_and_destinations_equal_the_general_escaping(parts: list[str]) -> None:
    relative = PurePosixPath(*parts)
    text = relative.as_posix()

    assert storable(text) == _escaped(text)
    assert original_bytes(storable(text)) == os.fsencode(text)
    expected = PurePosixPath(*(fit_name(_escaped(part)) for part in relative.parts))
    assert destination_relative(relative) == expected
    assert all(len(part.encode("utf-8", "surrogateescape")) <= NAME_MAX_BYTES for part in expected.parts)


def test_plain_names_are_their_own_storable_text() -> None:
    relative = PurePosixPath("cam-07/2026-11-26 10:00:00.bmp")

    assert storable(relative) == "cam-07/2026-11-26 10:00:00.bmp"
    assert destination_relative(relative) == relative
    assert storable("cam\\x.bmp") == "cam\\\\x.bmp"  # a backslash is doubled, shortcut or not
    assert destination_relative(PurePosixPath("a" * 300 + ".bmp")).name == "a" * 251 + ".bmp"
