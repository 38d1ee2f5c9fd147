"""LegifranceClient: OAuth2 token, retries, endpoints. STUB: signatures agreed between helpers."""

from __future__ import annotations

from datetime import date
from typing import Any

import httpx

from collector.ratelimit import RequestBudget


class LegifranceError(RuntimeError):
    """A request failed for good (after retries); the message never holds a secret."""


class LegifranceAuthError(LegifranceError):
    """Bad credentials or 403: fatal; the message says what to check in the PISTE console."""


class LegifranceNotFound(LegifranceError):
    """The API does not know this id (unknown code id, ...)."""


class LegifranceClient:
    """Async client. All requests pass through `budget.slot()`."""

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        oauth_url: str,
        api_base_url: str,
        budget: RequestBudget,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        raise NotImplementedError

    async def list_codes(self) -> list[dict[str, Any]]:
        """/list/code, every page, in-force codes: the raw result items."""
        raise NotImplementedError

    async def table_matieres(self, code_id: str, on: date) -> dict[str, Any]:
        """/consult/legi/tableMatieres for a code (nature CODE) at a date: the raw JSON."""
        raise NotImplementedError

    async def get_article(self, article_id: str) -> dict[str, Any] | None:
        """/consult/getArticle: the `article` object, or None when the API returns none."""
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError
