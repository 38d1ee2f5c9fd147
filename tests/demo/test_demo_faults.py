"""Fault injection in-process: scripted plans, seeded random faults, each fault's effect."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from collector.demo import DEMO_MASSIVE_CODES, DemoConfig, DemoServer, FaultKind, FaultRule
from tests.demo.conftest import Api

ARTICLE = "LEGIARTI000099000000"  # first version of the first demo article


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_scripted_plan_next_three_get_article_calls_answer_429() -> None:
    server = DemoServer(DemoConfig(retry_after=2))
    server.set_faults([FaultRule(FaultKind.HTTP_429, count=3, endpoint="getArticle")])

    async def go() -> None:
        async with Api(server) as api:
            assert (await api.post("/list/code", {"pageNumber": 1, "pageSize": 5})).status_code == 200
            for _ in range(3):
                r = await api.post("/consult/getArticle", {"id": ARTICLE})
                assert r.status_code == 429 and r.headers["retry-after"] == "2"
            assert (await api.post("/consult/getArticle", {"id": ARTICLE})).status_code == 200
            assert server.faults()["plan"] == []

    run(go())
    stats = server.stats()
    assert stats["faults"] == {"http_429": 3} and stats["rate_limited"] == 0


def test_429_has_no_retry_after_unless_configured() -> None:
    server = DemoServer()
    server.set_faults([FaultRule("http_429")])

    async def go() -> None:
        async with Api(server) as api:
            r = await api.post("/consult/getArticle", {"id": ARTICLE})
            assert r.status_code == 429 and "retry-after" not in r.headers

    run(go())


def test_each_fault_kind_has_its_effect() -> None:
    server = DemoServer(DemoConfig(hang_s=30))
    server.set_faults([FaultRule(k, endpoint="get_article") for k in (
        "http_500", "http_503", "http_401", "truncated", "null_article", "drop", "hang")])

    async def go() -> None:
        async with Api(server, read_timeout=0.5) as api:
            await api.get_token()
            r = await api.post("/consult/getArticle", {"id": ARTICLE})
            assert r.status_code == 500 and r.headers["content-type"].startswith("text/html") and b"<html>" in r.content
            r = await api.post("/consult/getArticle", {"id": ARTICLE})
            assert r.status_code == 503 and r.headers["content-type"].startswith("text/html")
            r = await api.post("/consult/getArticle", {"id": ARTICLE})
            assert r.status_code == 401
            r = await api.post("/consult/getArticle", {"id": ARTICLE})
            assert r.status_code == 200 and r.content.startswith(b'{"executionTime"')
            with pytest.raises(json.JSONDecodeError):
                r.json()
            r = await api.post("/consult/getArticle", {"id": ARTICLE})
            assert r.status_code == 200 and r.json()["article"] is None
            with pytest.raises(httpx.RemoteProtocolError):
                await api.post("/consult/getArticle", {"id": ARTICLE})
            with pytest.raises(httpx.ReadTimeout):
                await api.post("/consult/getArticle", {"id": ARTICLE})
            r = await api.post("/consult/getArticle", {"id": ARTICLE})
            assert r.status_code == 200 and r.json()["article"]["id"] == ARTICLE

    run(go())
    statuses = server.stats()["by_endpoint"]["get_article"]
    assert statuses["dropped"] == 1 and statuses["cancelled"] == 1 and server.stats()["in_flight"] == 0


def test_scripted_fault_on_the_token_endpoint() -> None:
    server = DemoServer()
    server.set_faults([FaultRule("http_503", endpoint="token")])

    async def go() -> None:
        async with Api(server) as api:
            assert (await api.get_token()).status_code == 503
            assert (await api.get_token()).status_code == 200

    run(go())


def outcomes(server: DemoServer, n: int) -> list[str]:
    async def go() -> list[str]:
        out = []
        async with Api(server) as api:
            await api.get_token()
            for i in range(n):
                try:
                    r = await api.post("/consult/getArticle", {"id": ARTICLE})
                except httpx.TransportError as exc:
                    out.append(type(exc).__name__)
                    continue
                if r.status_code != 200:
                    out.append(str(r.status_code))
                elif not r.content.endswith(b"}"):
                    out.append("truncated")
                else:
                    out.append("null" if r.json()["article"] is None else "ok")
        return out

    return run(go())


def test_random_faults_appear_at_the_configured_rate_and_are_seeded() -> None:
    config = DemoConfig(fault_rate=0.25, seed=9)
    first = outcomes(DemoServer(config), 240)
    faulty = sum(o != "ok" for o in first)
    assert 30 <= faulty <= 90  # 60 expected; binomial sd ~6.7
    assert {"500", "503", "RemoteProtocolError", "truncated", "null"} <= set(first)
    assert outcomes(DemoServer(config), 240) == first
    assert outcomes(DemoServer(DemoConfig(fault_rate=0.25, seed=10)), 240) != first


def test_null_article_fault_only_hits_get_article() -> None:
    server = DemoServer(DemoConfig(fault_rate=1.0, fault_kinds=("null_article",)))

    async def go() -> None:
        async with Api(server) as api:
            assert (await api.post("/list/code", {"pageNumber": 1, "pageSize": 5})).status_code == 200
            toc = await api.toc(DEMO_MASSIVE_CODES[0])
            assert toc["sections"]
            assert await api.article(ARTICLE) is None

    run(go())


def test_fault_plan_through_the_admin_route_and_bad_rules() -> None:
    server = DemoServer()

    async def go() -> None:
        async with Api(server) as api:
            admin = "http://demo.invalid/_demo/faults"
            r = await api.http.post(admin, json={"plan": [{"kind": "http_500", "count": 2, "endpoint": "list_code"}]})
            assert r.status_code == 200 and r.json()["plan"] == [{"kind": "http_500", "remaining": 2, "endpoint": "list_code"}]
            for bad in ({"plan": [{"kind": "boom"}]}, {"plan": [{"kind": "http_500", "count": 0}]},
                        {"plan": [{"kind": "http_500", "endpoint": "nowhere"}]}, {"plan": "x"}, {"fault_rate": 2},
                        {"surprise": 1}):
                bad_r = await api.http.post(admin, json=bad)
                assert bad_r.status_code == 400, bad
            assert len((await api.http.get(admin)).json()["plan"]) == 1  # bad requests changed nothing
            assert (await api.post("/list/code", {"pageNumber": 1, "pageSize": 5})).status_code == 500
            assert (await api.post("/list/code", {"pageNumber": 1, "pageSize": 5})).status_code == 500
            assert (await api.post("/list/code", {"pageNumber": 1, "pageSize": 5})).status_code == 200
            r = await api.http.post(admin, json={"fault_rate": 1.0, "fault_kinds": ["http_503"]})
            assert r.json()["fault_rate"] == 1.0
            assert (await api.post("/list/code", {"pageNumber": 1, "pageSize": 5})).status_code == 503

    run(go())


def test_config_accepts_rule_dicts_and_rejects_bad_knobs() -> None:
    server = DemoServer(DemoConfig(faults=({"kind": "http_503", "count": 2, "endpoint": "get_article"},)))
    assert server.faults()["plan"] == [{"kind": "http_503", "remaining": 2, "endpoint": "get_article"}]
    for bad in ({"articles": 4}, {"fault_rate": -0.1}, {"rate_limit": 0}, {"latency_ms": -1},
                {"token_lifetime_s": 0}, {"fault_kinds": ("boom",)}, {"faults": ({"kind": "nope"},)}):
        with pytest.raises(ValueError):
            DemoConfig(**bad)
    with pytest.raises(ValueError):
        server.set_faults([{"kind": "http_500"}, {"kind": "nope"}])
    assert len(server.faults()["plan"]) == 1  # the valid rule was not applied alone


def test_empty_toc_fault_serves_the_codes_toc_with_nothing_in_it() -> None:
    server = DemoServer(DemoConfig(fault_rate=1.0, fault_kinds=("empty_toc",)))  # only tableMatieres can get it
    code = DEMO_MASSIVE_CODES[0]

    async def go() -> None:
        async with Api(server) as api:
            assert await api.article(ARTICLE) is not None
            empty = await api.toc(code)
            server.set_faults([], rate=0.0)
            full = await api.toc(code)
            assert empty["sections"] == empty["articles"] == [] and full["sections"]
            assert empty == {**full, "sections": [], "articles": []}  # same code, title, modifDate: it parses

    run(go())
    assert server.stats()["faults"] == {"empty_toc": 1}
