"""Pages of the change log for the CLI (`python -m collector changes`) and `GET /changes`."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from collector.store.base import Store
from collector.store.rows import MAX_SEQ

MAX_PAGE = 1000  # events per GET /changes answer, and per store read of the CLI
DEFAULT_PAGE = 100


class BadPageArgs(ValueError):
    """since / limit that are not what a reader accepts (the message says what is)."""


def page_args(query: Mapping[str, str]) -> tuple[int, int, str | None]:
    """(since, limit, code_id) from GET /changes's query: since >= 0 (default 0), 1 <= limit
    (default DEFAULT_PAGE, capped at MAX_PAGE), code optional."""
    values = {}
    for name, default in (("since", 0), ("limit", DEFAULT_PAGE)):
        raw = query.get(name)
        try:
            values[name] = default if raw is None else int(raw.strip())
        except ValueError:
            raise BadPageArgs(f"{name} must be an integer, got {raw!r}"[:200]) from None
    if not 0 <= values["since"] <= MAX_SEQ:
        raise BadPageArgs(f"since must be from 0 to {MAX_SEQ} (the last seq you handled), got {values['since']}"[:200])
    if values["limit"] < 1:
        raise BadPageArgs(f"limit must be >= 1, got {values['limit']}")
    return values["since"], min(values["limit"], MAX_PAGE), query.get("code") or None


def read_page(store: Store, since: int, limit: int, code_id: str | None = None) -> dict[str, Any]:
    """{"changes": [...], "next_since": N}: N is the last seq returned (since when none), the
    value to send as `since` next."""
    changes = store.read_changes(since, limit, code_id)
    return {"changes": changes, "next_since": changes[-1]["seq"] if changes else since}


def iter_changes(store: Store, since: int = 0, limit: int | None = None,
                 code_id: str | None = None) -> Iterator[dict[str, Any]]:
    """Every event after `since` in seq order (at most `limit`), read MAX_PAGE at a time."""
    left = limit
    while left is None or left > 0:
        want = MAX_PAGE if left is None else min(left, MAX_PAGE)
        changes = store.read_changes(since, want, code_id)
        yield from changes
        if len(changes) < want:
            return
        since = changes[-1]["seq"]
        if left is not None:
            left -= len(changes)
