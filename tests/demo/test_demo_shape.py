"""The demo's responses have the exact key sets of real Légifrance responses (../shared fixtures)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from collector.demo import DEMO_MASSIVE_CODES, DemoConfig, DemoServer
from collector.demo.corpus import utc_today
from tests.demo.conftest import toc_articles, walk_sections

REAL_TOC = "codes/LEGITEXT000006070666.json"
REAL_ARTICLE = "articles/LEGIARTI000006398213.json"  # 4 versions, with lienModifications


def load(fixtures: Path, name: str) -> Any:
    return json.loads((fixtures / name).read_text(encoding="utf-8"))


def demo_toc(server: DemoServer) -> dict[str, Any]:
    return json.loads(server.corpus.table_matieres_json(DEMO_MASSIVE_CODES[-1], utc_today()))


def test_toc_keys_match_a_real_toc(real_fixtures: Path) -> None:
    real = load(real_fixtures, REAL_TOC)
    demo = demo_toc(DemoServer(DemoConfig(articles=200)))
    assert set(demo) == set(real)
    real_sections = [s for _, s in walk_sections(real)]
    demo_sections = [s for _, s in walk_sections(demo)]
    assert {frozenset(s) for s in demo_sections} == {frozenset(s) for s in real_sections}
    assert {frozenset(a) for a in toc_articles(demo)} == {frozenset(a) for a in toc_articles(real)}
    for key in ("modifDate", "jurisDate", "dateDebutVersion", "dateFinVersion", "id", "cid", "title", "etat"):
        assert type(demo[key]) is type(real[key]), key
    assert type(demo["dateParution"]) is type(real["dateParution"])
    for demo_s, real_s in ((demo_sections[-1], real_sections[-1]),):
        for key in ("intOrdre", "dateDebut", "dateFin", "title", "etat"):
            assert type(demo_s[key]) is type(real_s[key]), key
    real_entry, demo_entry = toc_articles(real)[0], toc_articles(demo)[0]
    for key in ("intOrdre", "num", "id", "cid", "etat", "content", "dateDebut", "dateFin"):
        assert type(demo_entry[key]) is type(real_entry[key]), key


def test_article_keys_match_a_real_article(real_fixtures: Path) -> None:
    real = load(real_fixtures, REAL_ARTICLE)["listArticle"][0]
    server = DemoServer(DemoConfig(articles=200))
    multi = next(
        v.id for code in DEMO_MASSIVE_CODES for slot, v in server.corpus.in_force_entries(code) if v.number > 1
    )
    demo = server.corpus.article(multi)
    assert demo is not None
    assert set(demo) == set(real)
    assert set(demo["context"]) == set(real["context"])
    assert set(demo["context"]["titresTM"][0]) == set(real["context"]["titresTM"][0])
    assert set(demo["context"]["titreTxt"][0]) == set(real["context"]["titreTxt"][0])
    assert set(demo["textTitles"][0]) == set(real["textTitles"][0])
    assert set(demo["articleVersions"][0]) == set(real["articleVersions"][0])
    assert set(demo["lienModifications"][0]) == set(real["lienModifications"][0])
    for key, value in real.items():
        if value is not None and demo[key] is not None:
            assert type(demo[key]) is type(value), key


def test_get_article_by_cid_and_list_code_match_real_shapes(real_fixtures: Path) -> None:
    real_by_cid = load(real_fixtures, REAL_ARTICLE)
    real_codes = load(real_fixtures, "codelist.json")
    server = DemoServer(DemoConfig(articles=200))
    slot, version = next(server.corpus.in_force_entries(DEMO_MASSIVE_CODES[0]))
    listed = server.corpus.articles_by_cid(server.corpus.cid_of(slot))
    assert set({"executionTime": 0, "listArticle": listed}) == set(real_by_cid)
    assert {frozenset(a) for a in listed} == {frozenset(real_by_cid["listArticle"][0])}
    item = server.corpus.list_code_item(DEMO_MASSIVE_CODES[0])
    assert set(item) == set(real_codes[0])
    assert all(type(item[k]) is type(real_codes[0][k]) for k in item)
