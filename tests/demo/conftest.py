"""Helpers for the emulator tests: an httpx client bound to a DemoServer, TOC walking."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx

from collector.demo import (
    DEMO_API_BASE_URL,
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    DEMO_OAUTH_URL,
    DemoServer,
    demo_transport,
)


class Api:
    """Minimal async caller of the emulator (in-process unless base URLs of a socket are given)."""

    def __init__(self, server: DemoServer | None, *, oauth_url: str = DEMO_OAUTH_URL,
                 api_base_url: str = DEMO_API_BASE_URL, read_timeout: float = 10.0) -> None:
        transport = demo_transport(server) if server is not None else None
        self.http = httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(10.0, read=read_timeout))
        self.oauth_url = oauth_url
        self.base = api_base_url
        self.token: str | None = None

    async def __aenter__(self) -> Api:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    async def get_token(self, client_id: str = DEMO_CLIENT_ID, client_secret: str = DEMO_CLIENT_SECRET) -> httpx.Response:
        r = await self.http.post(self.oauth_url, data={
            "grant_type": "client_credentials", "client_id": client_id,
            "client_secret": client_secret, "scope": "openid",
        })
        if r.status_code == 200:
            self.token = r.json()["access_token"]
        return r

    async def post(self, route: str, body: dict[str, Any]) -> httpx.Response:
        if self.token is None:
            assert (await self.get_token()).status_code == 200
        return await self.http.post(self.base + route, json=body, headers={"Authorization": f"Bearer {self.token}"})

    async def toc(self, code_id: str, on: str | int = "2025-06-01") -> dict[str, Any]:
        r = await self.post("/consult/legi/tableMatieres", {"textId": code_id, "date": on, "nature": "CODE"})
        assert r.status_code == 200, r.text
        return r.json()

    async def article(self, article_id: str) -> dict[str, Any] | None:
        r = await self.post("/consult/getArticle", {"id": article_id})
        assert r.status_code == 200, r.text
        return r.json()["article"]


def walk_sections(node: dict[str, Any], depth: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
    """(depth, section) for every section below `node`."""
    for section in node.get("sections") or []:
        yield depth + 1, section
        yield from walk_sections(section, depth + 1)


def toc_articles(toc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every article entry of a TOC, in document order."""
    out = list(toc.get("articles") or [])
    for _, section in walk_sections(toc):
        out.extend(section.get("articles") or [])
    return out
