"""Repealing articles in the emulator (Corpus.repeal, DemoServer.repeal, POST /_demo/repeal)."""

from __future__ import annotations

import asyncio
import json
from datetime import date

import pytest

from collector.demo import DemoConfig, DemoServer
from collector.demo.corpus import DEMO_MAINTENANCE_CODES, DEMO_MASSIVE_CODES, DEMO_REPEALED_CODES, Corpus, utc_today
from tests.demo.conftest import Api, toc_articles

DAY_MS = 86_400_000


def in_force_toc_ids(corpus: Corpus, code: str, on: date) -> dict[str, str]:
    """cid -> id of the TOC's in-force entries (the highest id per cid, like collector.parse.TocParser)."""
    out: dict[str, str] = {}
    for entry in toc_articles(json.loads(corpus.table_matieres_json(code, on))):
        if entry["etat"].startswith("VIGUEUR"):
            out[entry["cid"]] = max(out.get(entry["cid"], ""), entry["id"])
    return out


def test_repeal_removes_articles_from_the_toc_and_moves_last_update() -> None:
    corpus = Corpus(600, seed=3)
    today = date(2026, 3, 10)
    code = DEMO_MAINTENANCE_CODES[0]
    before = corpus.expected_ids([code], min_chars=0, on=today)
    count_before, update_before = corpus.in_force_count(code), corpus.last_update(code)

    repealed = corpus.repeal(3, code_id=code, on=today)
    assert len({r.cid for r in repealed}) == 3 and {r.id for r in repealed} <= before
    assert corpus.expected_ids([code], min_chars=0, on=today) == before - {r.id for r in repealed}
    assert corpus.in_force_count(code) == count_before - 3
    assert corpus.last_update(code) == today > update_before
    listed = in_force_toc_ids(corpus, code, today)
    assert set(listed.values()) == before - {r.id for r in repealed}
    assert not {r.cid for r in repealed} & set(listed)
    toc = corpus.table_matieres_json(code, today)
    assert f'"id":"{repealed[0].id}","cid":"{repealed[0].cid}","intOrdre"' in toc  # still listed, ABROGE
    gone = corpus.article(repealed[0].id)
    assert gone is not None and gone["etat"] == "ABROGE" and gone["dateFin"] >= (today - date(1970, 1, 1)).days * DAY_MS
    assert gone["articleVersions"][-1] == {**gone["articleVersions"][-1], "id": gone["id"], "etat": "ABROGE"}


def test_repealed_articles_are_not_republished_nor_repealed_twice() -> None:
    corpus = Corpus(60, seed=4)
    code = DEMO_MAINTENANCE_CODES[0]
    total = corpus.in_force_count(code)
    repealed = corpus.repeal(total - 1, code_id=code)
    assert len({r.cid for r in repealed}) == total - 1
    (published,) = corpus.publish(1, code_id=code)
    assert published.cid not in {r.cid for r in repealed}
    with pytest.raises(ValueError, match="only 1 in-force"):
        corpus.repeal(2, code_id=code)
    corpus.repeal(1, code_id=code)
    assert corpus.expected_ids([code], min_chars=0) == set()
    with pytest.raises(ValueError, match="only 0 in-force"):
        corpus.publish(1, code_id=code)


def test_repeal_is_deterministic_and_rejects_bad_requests() -> None:
    a, b = Corpus(200, seed=5), Corpus(200, seed=5)
    assert a.repeal(3) == b.repeal(3)
    with pytest.raises(ValueError):
        a.repeal(-1)
    for code in (DEMO_REPEALED_CODES[0], "LEGITEXT000006070721"):
        with pytest.raises(ValueError):
            a.repeal(1, code_id=code)


def test_admin_repeal_route() -> None:
    server = DemoServer(DemoConfig(articles=200))
    code = DEMO_MASSIVE_CODES[2]

    async def go() -> None:
        async with Api(server) as api:
            today = utc_today()
            before = server.expected_ids([code], min_chars=0)
            r = await api.http.post("http://demo.invalid/_demo/repeal", json={"count": 2, "code": code})
            assert r.status_code == 200
            body = r.json()
            assert [item["code_id"] for item in body["repealed"]] == [code, code]
            assert body["last_update"][code] >= today.isoformat()
            gone = {item["id"] for item in body["repealed"]}
            assert server.expected_ids([code], min_chars=0) == before - gone
            etats = {e["id"]: e["etat"] for e in toc_articles(await api.toc(code, today.isoformat()))}
            assert {etats[i] for i in gone} == {"ABROGE"}
            for bad in ({"count": "x"}, {"count": 1, "code": DEMO_REPEALED_CODES[0]}, {"count": 10_000}):
                response = await api.http.post("http://demo.invalid/_demo/repeal", json=bad)
                assert response.status_code == 400, bad
            assert server.expected_ids([code], min_chars=0) == before - gone  # nothing changed

    asyncio.run(asyncio.wait_for(go(), timeout=60))
