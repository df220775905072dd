"""Stored names: the shortcut for plain ASCII names gives exactly what the general escaping gives."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from watcher.intake.claimed import claimed_frame
from watcher.intake.names import (
    NAME_MAX_BYTES,
    destination_relative,
    fit_name,
    flat_name,
    original_bytes,
    storable,
)
from watcher.intake.placement import joined, place

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


@settings(max_examples=50, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=_PARTS)
def test_a_destination_is_the_output_root_joined_with_the_frame_path(
    tmp_path: Path, parts: list[str]
) -> None:
    """place() joins the root and the frame's path as text: what os.path.join gives (or the flat
    name, where that is too long)."""
    relative = PurePosixPath(*parts)
    frame = claimed_frame("0123456789abcdef0123456789abcdef", relative, "/a/k=x", datetime.now(UTC), None)
    root = tmp_path / uuid.uuid4().hex  # one an example: an earlier one's folders are not in the way
    placed = place(root, frame, taken=set())
    assert placed in (
        os.path.join(root, destination_relative(relative)),
        os.path.join(root, flat_name(frame.key, relative)),
    )
    assert os.path.isdir(os.path.dirname(placed))


@pytest.mark.parametrize("root", ["/", "//", ".", "rel", "rel/out", "/srv/processed"])
@given(parts=_PARTS)
def test_a_root_and_a_frame_path_join_as_os_path_join_does(root: str, parts: list[str]) -> None:
    relative = PurePosixPath(*parts)
    assert joined(Path(root), relative) == os.path.join(Path(root), relative)
