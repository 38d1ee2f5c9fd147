"""The emulator's HTTP behaviour, in-process (httpx + DemoTransport): token, routes, errors."""

from __future__ import annotations

import asyncio
import base64
import re
from datetime import date
from typing import Any

import pytest

from collector.demo import (
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    DEMO_MAINTENANCE_CODES,
    DEMO_MASSIVE_CODES,
    DEMO_OAUTH_URL,
    DemoConfig,
    DemoServer,
)
from collector.demo.corpus import DEMO_REPEALED_CODES, NO_END_MS, utc_today
from tests.demo.conftest import Api, toc_articles, walk_sections

LIST_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}T00:00:00\.000\+0000$")


def run(coro: Any) -> Any:
    return asyncio.run(coro)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---- token ---------------------------------------------------------------------------------------
def test_token_with_form_credentials() -> None:
    async def go() -> None:
        async with Api(DemoServer(DemoConfig(token_lifetime_s=120))) as api:
            r = await api.get_token()
            assert r.status_code == 200
            body = r.json()
            assert body["token_type"] == "Bearer" and body["expires_in"] == 120 and body["scope"] == "openid"
            assert len(body["access_token"]) >= 40
            assert (await api.post("/list/code", {"pageNumber": 1, "pageSize": 10})).status_code == 200

    run(go())


def test_token_with_http_basic() -> None:
    async def go() -> None:
        async with Api(DemoServer()) as api:
            basic = base64.b64encode(f"{DEMO_CLIENT_ID}:{DEMO_CLIENT_SECRET}".encode()).decode()
            r = await api.http.post(DEMO_OAUTH_URL, data={"grant_type": "client_credentials", "scope": "openid"},
                                    headers={"Authorization": f"Basic {basic}"})
            assert r.status_code == 200 and r.json()["token_type"] == "Bearer"

    run(go())


@pytest.mark.parametrize("client_id,secret", [(DEMO_CLIENT_ID, "wrong"), ("someone", DEMO_CLIENT_SECRET), ("", "")])
def test_bad_credentials_get_401_invalid_client(client_id: str, secret: str) -> None:
    async def go() -> None:
        async with Api(DemoServer()) as api:
            r = await api.get_token(client_id, secret)
            assert r.status_code == 401
            assert r.json()["error"] == "invalid_client"
            assert "access_token" not in r.text
            assert secret not in r.text or not secret

    run(go())


def test_wrong_grant_type_is_400() -> None:
    async def go() -> None:
        async with Api(DemoServer()) as api:
            r = await api.http.post(DEMO_OAUTH_URL, data={"grant_type": "password", "client_id": DEMO_CLIENT_ID,
                                                          "client_secret": DEMO_CLIENT_SECRET})
            assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"

    run(go())


def test_token_expiry_and_missing_or_unknown_tokens_get_401() -> None:
    clock = FakeClock()
    server = DemoServer(DemoConfig(token_lifetime_s=60), clock=clock)

    async def go() -> None:
        async with Api(server) as api:
            body = {"pageNumber": 1, "pageSize": 5}
            assert (await api.post("/list/code", body)).status_code == 200
            clock.now += 59
            assert (await api.post("/list/code", body)).status_code == 200
            clock.now += 2
            r = await api.post("/list/code", body)
            assert r.status_code == 401 and "invalid_token" in r.headers["www-authenticate"]
            await api.get_token()
            assert (await api.post("/list/code", body)).status_code == 200
            assert server.expire_tokens() == 1  # the expired token was already pruned
            assert (await api.post("/list/code", body)).status_code == 401
            r = await api.http.post(api.base + "/list/code", json=body)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
            api.token = "not-a-token"
            assert (await api.post("/list/code", body)).status_code == 401

    run(go())


def test_forbidden_knob_gives_403_with_a_valid_token() -> None:
    server = DemoServer(DemoConfig(forbidden=True))

    async def go() -> None:
        async with Api(server) as api:
            assert (await api.get_token()).status_code == 200
            assert (await api.post("/list/code", {"pageNumber": 1, "pageSize": 5})).status_code == 403
            server.update(forbidden=False)
            assert (await api.post("/list/code", {"pageNumber": 1, "pageSize": 5})).status_code == 200

    run(go())


# ---- /list/code -------------------------------------------------------------------------------------
def test_list_code_pages_and_validates_page_size() -> None:
    async def go() -> None:
        async with Api(DemoServer()) as api:
            seen: list[str] = []
            page = 1
            while True:
                r = await api.post("/list/code", {"pageNumber": page, "pageSize": 2})
                assert r.status_code == 200
                body = r.json()
                assert body["totalResultNumber"] == len(DEMO_MASSIVE_CODES) + len(DEMO_REPEALED_CODES)
                if not body["results"]:
                    break
                seen += [item["cid"] for item in body["results"]]
                page += 1
            assert page == 4 and sorted(seen) == sorted(DEMO_MASSIVE_CODES + DEMO_REPEALED_CODES)
            r = await api.post("/list/code", {"pageNumber": 1, "pageSize": 100, "states": ["VIGUEUR"]})
            items = r.json()["results"]
            assert sorted(i["cid"] for i in items) == sorted(DEMO_MASSIVE_CODES)
            for item in items:
                for key in ("dateDebut", "dateFin", "lastUpdate"):
                    assert LIST_DATE.match(item[key]), item[key]
            for bad in ({"pageNumber": 1, "pageSize": 101}, {"pageNumber": 0, "pageSize": 10}, {"pageSize": 10}):
                r = await api.post("/list/code", bad)
                assert r.status_code == 400 and r.json()["message"]

    run(go())


# ---- tableMatieres -----------------------------------------------------------------------------------
def test_toc_shape_nesting_repeals_and_repeated_cids() -> None:
    server = DemoServer(DemoConfig(articles=600))

    async def go() -> None:
        async with Api(server) as api:
            code = DEMO_MASSIVE_CODES[-1]
            toc = await api.toc(code, "2025-06-01")
            listing = (await api.post("/list/code", {"pageNumber": 1, "pageSize": 100})).json()["results"]
            last_update = next(i["lastUpdate"] for i in listing if i["cid"] == code)
            assert toc["cid"] == code and toc["nature"] == "CODE" and "DÉMO" in toc["title"]
            assert toc["modifDate"] == last_update[:10]
            y, m, d = toc["modifDate"].split("-")
            assert toc["id"] == f"{code}_{d}-{m}-{y}"
            depths = {depth for depth, _ in walk_sections(toc)}
            assert max(depths) == 4  # Partie > Livre > Titre > Chapitre
            sections = [s for _, s in walk_sections(toc)]
            assert any(s["etat"] == "ABROGE" for s in sections)
            assert all(isinstance(s["intOrdre"], int) for s in sections)
            entries = toc_articles(toc)
            assert all(e["content"] is None and e["dateDebut"] is None and e["dateFin"] is None for e in entries)
            assert any(e["etat"] == "ABROGE" for e in entries)
            assert any(e["etat"] == "MODIFIE" for e in entries)
            cids = [e["cid"] for e in entries]
            assert len(cids) > len(set(cids)), "some cid is listed more than once"
            pairs = [(e["id"], e["cid"]) for e in entries]
            assert len(pairs) > len(set(pairs)), "some entry is listed twice"
            assert any(e["id"] != e["cid"] for e in entries)
            # date as epoch ms means the same day
            assert await api.toc(code, 1748736000000) == toc

    run(go())


def test_toc_errors() -> None:
    async def go() -> None:
        async with Api(DemoServer()) as api:
            r = await api.post("/consult/legi/tableMatieres", {"textId": "LEGITEXT000006070721", "date": "2025-01-01"})
            assert r.status_code == 404 and r.headers["content-type"].startswith("application/json")
            r = await api.post("/consult/legi/tableMatieres", {"textId": DEMO_MASSIVE_CODES[0]})
            assert r.status_code == 400
            r = await api.post("/consult/legi/tableMatieres", {"textId": DEMO_MASSIVE_CODES[0], "date": "01/02/2025"})
            assert r.status_code == 400
            r = await api.http.post(api.base + "/consult/legi/tableMatieres", content=b"textId=x",
                                    headers={"Authorization": f"Bearer {api.token}",
                                             "Content-Type": "application/x-www-form-urlencoded"})
            assert r.status_code == 400
            r = await api.post("/consult/unknownRoute", {})
            assert r.status_code == 404

    run(go())


# ---- getArticle -------------------------------------------------------------------------------------
def test_get_article_shape_and_versions() -> None:
    server = DemoServer()

    async def go() -> None:
        async with Api(server) as api:
            toc = await api.toc(DEMO_MAINTENANCE_CODES[0])
            entries = [e for e in toc_articles(toc) if e["etat"] == "VIGUEUR" and e["id"] != e["cid"]]
            entry = entries[0]
            article = await api.article(entry["id"])
            assert article is not None
            assert article["id"] == entry["id"] and article["cid"] == entry["cid"] and article["num"] == entry["num"]
            assert article["etat"] == "VIGUEUR" and article["dateFin"] == NO_END_MS
            assert isinstance(article["dateDebut"], int) and article["texte"] and article["texteHtml"].startswith("<p>")
            assert [v["id"] for v in article["articleVersions"]][-1] == article["id"]
            assert article["articleVersions"][0]["id"] == article["cid"]
            titres = article["context"]["titresTM"]
            assert [t["titre"] for t in titres][0] in ("Partie législative", "Partie réglementaire") and len(titres) == 4
            assert article["sectionParentId"] == titres[-1]["id"]
            # getArticle(cid) returns the first version, MODIFIE
            first = await api.article(entry["cid"])
            assert first is not None and first["id"] == entry["cid"] and first["etat"] == "MODIFIE"
            r = await api.post("/consult/getArticleByCid", {"cid": entry["cid"]})
            listed = r.json()["listArticle"]
            assert [a["id"] for a in listed] == [v["id"] for v in reversed(article["articleVersions"])]

    run(go())


def test_unknown_article_is_200_with_null_and_missing_id_is_400() -> None:
    async def go() -> None:
        async with Api(DemoServer()) as api:
            for unknown in ("LEGIARTI000099999999", "LEGIARTI000006398213", "nonsense"):
                r = await api.post("/consult/getArticle", {"id": unknown})
                assert r.status_code == 200 and r.json() == {"executionTime": 0, "dereferenced": False, "article": None}
            assert (await api.post("/consult/getArticle", {})).status_code == 400
            r = await api.post("/consult/getArticleByCid", {"cid": "LEGIARTI000099999999"})
            assert r.status_code == 200 and r.json()["listArticle"] == []

    run(go())


def test_stats_count_get_article_answers_per_id() -> None:
    """Demo ids and any other id are counted per id; answers beyond the first are re-work."""
    server = DemoServer()
    demo_ids = sorted(server.expected_ids(min_chars=0))[:3]
    asked = [demo_ids[0], demo_ids[1], demo_ids[0], demo_ids[0], "LEGIARTI000006398213", "LEGIARTI000006398213",
             "LEGIARTI000099999999"]

    async def go() -> None:
        async with Api(server) as api:
            for article_id in asked:
                await api.article(article_id)

    run(go())
    stats = server.stats(per_id=True)
    assert stats["articles_served_by_id"] == {demo_ids[0]: 3, demo_ids[1]: 1, "LEGIARTI000006398213": 2,
                                              "LEGIARTI000099999999": 1}
    assert stats["articles_served"] == 4 and stats["articles_served_again"] == 3
    server.reset_stats()
    assert server.stats(per_id=True)["articles_served_by_id"] == {}


def test_a_toc_walk_plus_get_article_finds_exactly_the_expected_ids() -> None:
    """What a correct collector does (VIGUEUR entries, one id per cid, text >= 100) gives
    exactly `expected_ids`: the emulator's answer key agrees with its own API."""
    server = DemoServer(DemoConfig(articles=300, seed=11))

    async def go() -> set[str]:
        found: set[str] = set()
        async with Api(server) as api:
            for code in DEMO_MAINTENANCE_CODES:
                by_cid: dict[str, str] = {}
                for e in toc_articles(await api.toc(code)):
                    if e["etat"].startswith("VIGUEUR"):
                        by_cid[e["cid"]] = max(by_cid.get(e["cid"], ""), e["id"])
                for article_id in by_cid.values():
                    article = await api.article(article_id)
                    if article is not None and len(article["texte"]) >= 100:
                        found.add(article_id)
        return found

    assert run(go()) == server.expected_ids(DEMO_MAINTENANCE_CODES, on=date(2025, 6, 1))


# ---- admin routes ------------------------------------------------------------------------------------
def test_admin_publish_changes_toc_last_update_and_expected_ids() -> None:
    server = DemoServer(DemoConfig(articles=200))
    code = DEMO_MAINTENANCE_CODES[1]

    async def go() -> None:
        async with Api(server) as api:
            today = utc_today().isoformat()
            before_toc = await api.toc(code, today)
            before_ids = server.expected_ids([code], min_chars=0)
            r = await api.http.post("http://demo.invalid/_demo/publish", json={"count": 3, "code": code})
            assert r.status_code == 200
            published = r.json()["published"]
            assert len(published) == 3 and r.json()["last_update"][code] >= today
            after_toc = await api.toc(code, today)
            assert after_toc["modifDate"] > before_toc["modifDate"]
            listing = (await api.post("/list/code", {"pageNumber": 1, "pageSize": 100})).json()["results"]
            assert next(i["lastUpdate"] for i in listing if i["cid"] == code)[:10] == after_toc["modifDate"]
            now_ids = {e["id"] for e in toc_articles(after_toc) if e["etat"] == "VIGUEUR"}
            assert {p["id"] for p in published} <= now_ids
            assert server.expected_ids([code], min_chars=0) == (before_ids - {p["previous_id"] for p in published}) | {p["id"] for p in published}
            bad = await api.http.post("http://demo.invalid/_demo/publish", json={"count": "x"})
            assert bad.status_code == 400
            bad = await api.http.post("http://demo.invalid/_demo/publish", json={"count": 1, "code": "LEGITEXT000006070721"})
            assert bad.status_code == 400

    run(go())


def test_admin_stats_settings_expected_and_expire() -> None:
    server = DemoServer(DemoConfig(articles=100))

    async def go() -> None:
        async with Api(server) as api:
            await api.post("/list/code", {"pageNumber": 1, "pageSize": 10})
            await api.post("/consult/getArticle", {"id": "LEGIARTI000099999999"})
            stats = (await api.http.get("http://demo.invalid/_demo/stats")).json()
            assert stats["requests"] == {"token": 1, "list_code": 1, "get_article": 1}
            assert stats["statuses"] == {"200": 3} and stats["tokens_issued"] == 1
            assert stats["max_requests_in_1s_window"] == 2  # API calls only
            r = await api.http.post("http://demo.invalid/_demo/settings", json={"latency_ms": 1, "rate_limit": 50})
            assert r.status_code == 200 and r.json()["rate_limit"] == 50 and "client_secret" not in r.json()
            r = await api.http.post("http://demo.invalid/_demo/settings", json={"articles": 5})
            assert r.status_code == 400
            r = await api.http.post("http://demo.invalid/_demo/settings", json={"rate_limit": -1})
            assert r.status_code == 400 and server.config.rate_limit == 50
            expected = (await api.http.get("http://demo.invalid/_demo/expected?min_chars=0")).json()
            assert expected["count"] == 100 and set(expected["ids"]) == server.expected_ids(min_chars=0)
            r = await api.http.post("http://demo.invalid/_demo/expire-tokens")
            assert r.json() == {"expired": 1}
            assert (await api.post("/list/code", {"pageNumber": 1, "pageSize": 10})).status_code == 401
            await api.http.delete("http://demo.invalid/_demo/stats")
            assert server.stats()["total_requests"] == 0

    run(go())
