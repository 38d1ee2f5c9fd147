"""The retire guard shared by the API pass (harvest) and the dump loader, at its edges."""

from __future__ import annotations

import pytest

from collector.retire_guard import retiring_looks_wrong


@pytest.mark.parametrize(("listed", "in_force", "wrong"), [
    (0, 0, False),  # nothing stored: nothing to protect
    (0, 1, True),  # an empty listing of a code that has rows
    (50, 100, False),  # exactly half would go: allowed
    (49, 100, True),  # more than half, and more than 20 rows
    (10, 30, False),  # 20 rows would go: not more than 20
    (9, 30, True),
    (1, 20, False),  # 19 of 20 would go, but not more than 20 rows
    (120, 100, False),  # a listing larger than the store
])
def test_retiring_looks_wrong(listed: int, in_force: int, wrong: bool) -> None:
    assert retiring_looks_wrong(listed, in_force) is wrong
