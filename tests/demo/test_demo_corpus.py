"""The synthetic corpus: determinism, the awkward cases it must contain, expected ids, publishing."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest

from collector.demo.corpus import (
    DEMO_MAINTENANCE_CODES,
    DEMO_MASSIVE_CODES,
    DEMO_REPEALED_CODES,
    NO_END_MS,
    Corpus,
    is_demo_id,
)

ON = date(2025, 6, 1)


def all_articles(corpus: Corpus, codes: tuple[str, ...] = DEMO_MASSIVE_CODES) -> list[dict]:
    out = []
    for code in codes:
        for slot in corpus.slots(code):
            for version in corpus.versions(slot):
                article = corpus.article(version.id)
                assert article is not None
                out.append(article)
    return out


def test_same_seed_same_corpus_and_other_seed_differs() -> None:
    a, b, c = Corpus(300, seed=7), Corpus(300, seed=7), Corpus(300, seed=8)
    code = DEMO_MASSIVE_CODES[-1]
    assert a.table_matieres_json(code, ON) == b.table_matieres_json(code, ON)
    assert a.expected_ids(on=ON) == b.expected_ids(on=ON)
    some = sorted(a.expected_ids(on=ON))[::25]
    assert [a.article(i) for i in some] == [b.article(i) for i in some]
    assert a.table_matieres_json(code, ON) != c.table_matieres_json(code, ON)


def test_codes_are_visibly_fake_and_in_the_demo_id_range() -> None:
    corpus = Corpus(100)
    assert set(DEMO_MAINTENANCE_CODES) < set(DEMO_MASSIVE_CODES)
    assert len(DEMO_MASSIVE_CODES) == 5 and DEMO_REPEALED_CODES
    for code in corpus.code_ids:
        assert code.startswith("LEGITEXT0000999") and is_demo_id(code)
        assert "DÉMO" in corpus.code_title(code)
    toc = json.loads(corpus.table_matieres_json(DEMO_MASSIVE_CODES[0], ON))
    assert toc["sections"] and all(is_demo_id(s["id"]) for s in toc["sections"])
    assert not is_demo_id("LEGIARTI000006398213")  # a real article id


@pytest.mark.parametrize("articles", [5, 37, 600, 2500])
def test_in_force_article_count_is_the_knob(articles: int) -> None:
    corpus = Corpus(articles)
    assert sum(corpus.in_force_count(c) for c in DEMO_MASSIVE_CODES) == articles
    assert len(corpus.expected_ids(min_chars=0, on=ON)) == articles
    assert sum(1 for c in DEMO_MASSIVE_CODES for _ in corpus.in_force_entries(c, ON)) == articles


def test_default_corpus_holds_every_awkward_case() -> None:
    corpus = Corpus(600)
    articles = all_articles(corpus)
    etats = {a["etat"] for a in articles}
    assert {"VIGUEUR", "MODIFIE", "ABROGE"} <= etats
    in_force = [a for a in articles if a["etat"] == "VIGUEUR"]
    assert all(a["dateFin"] == NO_END_MS for a in in_force)
    assert any(a["dateDebut"] < 0 for a in articles), "pre-1970 dates (negative ms)"
    assert any(len(a["texte"]) < 100 for a in in_force), "in-force text under 100 characters"
    html = [a["texteHtml"] for a in in_force]
    assert any("<table><tr><td>" in h for h in html)
    assert any("<br/>" in h for h in html)
    assert any("&amp;" in h for h in html) and any("&#233;" in h for h in html)
    assert any(a["nota"] and a["notaHtml"].startswith("<p>") for a in in_force)
    assert any(len(a["articleVersions"]) == 3 for a in in_force)
    # plain text never holds markup or entities
    assert not any("<" in a["texte"].replace("10 < 20", "") or "&#" in a["texte"] for a in articles)


def test_short_and_long_texts_are_well_apart() -> None:
    corpus = Corpus(600)
    lengths = [len(corpus.text(slot, v.number)[0]) for c in DEMO_MASSIVE_CODES for slot, v in corpus.in_force_entries(c, ON)]
    assert all(n <= 80 or n >= 150 for n in lengths)
    short = sum(n <= 80 for n in lengths)
    assert 0 < short < len(lengths) // 5


def test_expected_ids_follow_the_threshold_and_code_list() -> None:
    corpus = Corpus(600)
    every = corpus.expected_ids(min_chars=0, on=ON)
    long_only = corpus.expected_ids(min_chars=100, on=ON)
    assert long_only < every
    for article_id in every - long_only:
        assert len(corpus.article(article_id)["texte"]) < 100
    for article_id in long_only:
        article = corpus.article(article_id)
        assert article["etat"] == "VIGUEUR" and len(article["texte"]) >= 100
    maintenance = corpus.expected_ids(DEMO_MAINTENANCE_CODES, on=ON)
    assert maintenance < long_only
    assert len({corpus.article(i)["cid"] for i in long_only}) == len(long_only), "one id per cid"


def test_tocs_at_the_same_date_agree_with_expected_ids() -> None:
    corpus = Corpus(400, seed=3)
    for code in DEMO_MASSIVE_CODES:
        toc = json.loads(corpus.table_matieres_json(code, ON))
        ids: dict[str, str] = {}

        def walk(node: dict) -> None:
            for entry in node.get("articles") or []:
                if entry["etat"].startswith("VIGUEUR"):
                    ids[entry["cid"]] = max(ids.get(entry["cid"], ""), entry["id"])
            for section in node.get("sections") or []:
                walk(section)

        walk(toc)
        assert set(ids.values()) == corpus.expected_ids([code], min_chars=0, on=ON)


def test_publish_creates_new_versions_and_moves_last_update() -> None:
    corpus = Corpus(600, seed=2)
    today = date(2026, 3, 10)
    code = DEMO_MAINTENANCE_CODES[0]
    before = corpus.expected_ids([code], min_chars=0, on=today)
    update_before = corpus.last_update(code)
    published = corpus.publish(4, code_id=code, on=today)
    assert len(published) == 4 and len({p.cid for p in published}) == 4
    after = corpus.expected_ids([code], min_chars=0, on=today)
    assert after == (before - {p.previous_id for p in published}) | {p.id for p in published}
    assert corpus.last_update(code) == today > update_before
    toc = json.loads(corpus.table_matieres_json(code, today))
    assert toc["modifDate"] == today.isoformat() and toc["id"].endswith("_10-03-2026")
    new = corpus.article(published[0].id)
    old = corpus.article(published[0].previous_id)
    assert new["etat"] == "VIGUEUR" and old["etat"] == "MODIFIE"
    assert new["cid"] == old["cid"] == published[0].cid
    assert old["dateFin"] == new["dateDebut"] == (today - date(1970, 1, 1)).days * 86_400_000
    assert new["articleVersions"][-1]["id"] == new["id"] and new["versionPrecedente"] == old["id"]
    # a TOC dated before the publication lists the old version, labelled as of today (MODIFIE)
    yesterday = corpus.table_matieres_json(code, today - timedelta(days=1))
    assert f'"id":"{published[0].previous_id}","cid":"{published[0].cid}"' in yesterday
    assert published[0].id not in yesterday
    # publishing again the same day still moves lastUpdate (collectors compare it)
    corpus.publish(1, code_id=code, on=today)
    assert corpus.last_update(code) == today + timedelta(days=1)


def test_publish_is_deterministic_and_rejects_bad_requests() -> None:
    a, b = Corpus(200, seed=5), Corpus(200, seed=5)
    assert a.publish(3, on=ON) == b.publish(3, on=ON)
    with pytest.raises(ValueError):
        a.publish(-1)
    with pytest.raises(ValueError):
        a.publish(1, code_id=DEMO_REPEALED_CODES[0])
    with pytest.raises(ValueError):
        a.publish(1, code_id="LEGITEXT000006070721")


def test_large_corpus_is_lazy() -> None:
    corpus = Corpus(100_000, seed=1)
    assert sum(corpus.in_force_count(c) for c in DEMO_MASSIVE_CODES) == 100_000
    code = DEMO_MASSIVE_CODES[-1]
    last = list(corpus.versions(corpus.slot(len(corpus.code_ids) - 2, corpus.slot_count(code) - 1)))[-1]
    article = corpus.article(last.id)
    assert article is not None and article["id"] == last.id
    assert corpus.article("LEGIARTI000099999999") is None
    assert corpus.article("LEGIARTI000006398213") is None
    with pytest.raises(ValueError):
        Corpus(10_000_000)
