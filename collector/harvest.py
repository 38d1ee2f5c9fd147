"""One pass over a list of codes: TOC -> in-force ids -> drop known -> fetch -> clean -> store.

STUB: signature agreed between helpers; the implementation replaces the body.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from collector.config import Mode
from collector.legifrance import LegifranceClient
from collector.models import PassSummary
from collector.status import StatusBoard
from collector.store.base import Store


@dataclass(frozen=True, slots=True)
class HarvestOptions:
    min_chars: int = 100
    batch_size: int = 100  # articles per commit (bounded memory, bounded loss on kill)
    max_in_flight: int = 8  # concurrent getArticle requests (the budget caps them too)
    today: date | None = None  # TOC date; None = today (UTC)


async def run_pass(
    mode: Mode,
    codes: Sequence[str],
    *,
    client: LegifranceClient,
    store: Store,
    status: StatusBoard,
    options: HarvestOptions,
    interrupt: asyncio.Event,
) -> PassSummary:
    """Run one pass. When `interrupt` is set (stop or mode change) the pass stops starting
    requests within 0.5 s (also during a request or a budget wait), commits every article
    already fetched, and returns with `interrupted=True`. A failing code (unknown id, API
    error after retries) is counted and the pass goes on; an auth or store fatal error ends
    the pass by raising."""
    raise NotImplementedError
