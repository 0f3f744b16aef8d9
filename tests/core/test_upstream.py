"""What the upstream clients share (shared.core.upstream): the optional text field of an answer. Pure, no I/O."""

from __future__ import annotations

from typing import Any

import pytest

from shared.core.upstream import optional_text


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), ("r-1", "r-1"), (" ", " "), (42, "42"), (0, "0"), (False, "False")],
)
def test_an_optional_text_field(value: Any, expected: str | None) -> None:
    assert optional_text(value) == expected
