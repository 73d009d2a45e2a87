"""The transaction protocol's shared spellings (wire/protocol.py): what the service writes, the edge reads."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire.errors import InvalidInput
from wire.protocol import content_range, parse_content_range

MAX = 10**19 - 1  # the most digits a position may have


@given(size=st.integers(1, MAX), data=st.data())
def test_a_resume_range_reads_back_as_written(size: int, data: st.DataObject) -> None:
    offset = data.draw(st.integers(0, size - 1))
    assert parse_content_range(content_range(offset, size)) == (offset, size - 1, size)


@pytest.mark.parametrize(
    "header",
    ["bytes 0-9", "bytes=0-9/10", "bytes -1-9/10", "bytes 0-9/*", "bytes 0-9/10, 11-12/13", f"bytes 0-1/{MAX + 1}"],
)
def test_anything_but_first_last_size_is_a_400(header: str) -> None:
    with pytest.raises(InvalidInput, match="Content-Range must be 'bytes first-last/size'"):
        parse_content_range(header)
