"""The transaction protocol's shared spellings (wire/protocol.py): what the service writes, the edge reads."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire.errors import InvalidInput
from wire.protocol import Removal, content_range, parse_content_range, parse_removal, removal_body

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


@given(total=st.integers(1, MAX), data=st.data())
def test_a_removal_step_reads_back_as_the_edge_wrote_it(total: int, data: st.DataObject) -> None:
    step = Removal(data.draw(st.integers(0, total - 1)), total)
    assert parse_removal(removal_body(step)) == step and not step.done


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        {"status": "in_progress", "removed": 1},
        {"status": "in_progress", "removed": 1, "total": 3, "more": 0},
        {"status": "done", "removed": 1, "total": 3},
        {"status": "in_progress", "removed": -1, "total": 3},
        {"status": "in_progress", "removed": 1.0, "total": 3},
        {"status": "in_progress", "removed": True, "total": 3},
        {"status": "in_progress", "removed": "1", "total": 3},
        {"status": "in_progress", "removed": 3, "total": 3},  # all removed is a 204, not a step
        {"status": "in_progress", "removed": 4, "total": 3},
    ],
)
def test_a_removal_step_with_other_fields_or_counts_is_refused(body: object) -> None:
    with pytest.raises(InvalidInput, match="removal in progress"):
        parse_removal(body)
