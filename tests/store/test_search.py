"""Store.search on SqliteStore (real files): accent/case folding, filters, snippets, the index
kept in step by triggers, backfill of an existing database, and hostile query text."""

from __future__ import annotations

import random
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from collector.models import Article
from collector.search import HIGHLIGHT, MAX_LIMIT, SearchQueryError, legifrance_url, parse_query
from collector.store import SqliteStore
from collector.store.sqlite_search import FTS_TABLE
from tests.store.helpers import article

CODE = "LEGITEXT000099900001"
OTHER = "LEGITEXT000099900002"


def doc(n: int, text: str, code_id: str = CODE, etat: str = "VIGUEUR", cid: int | None = None) -> Article:
    a = replace(article(n, code_id, text=text), etat=etat)
    return a if cid is None else replace(a, cid=f"LEGIARTI{cid:012d}")


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    s = SqliteStore(tmp_path / "collector.sqlite3")
    yield s
    s.close()


def ids(hits: list[dict]) -> list[str]:
    return [h["id"] for h in hits]


def test_accent_and_case_insensitive_in_both_directions(store: SqliteStore) -> None:
    store.commit_batch([
        doc(1, "La délibération du Conseil d'État est publiée au recueil."),
        doc(2, "DELIBERATION DU CONSEIL MUNICIPAL, SANS ACCENT."),
        doc(3, "Un texte sans rapport avec la question."),
    ])
    for query in ("deliberation", "Délibération", "DÉLIBÉRATION", "délibèration"):
        assert sorted(ids(store.search(query))) == [article(1).id, article(2).id], query
    assert ids(store.search("etat")) == [article(1).id]  # "État" folded
    assert ids(store.search("Conseil   municipal")) == [article(2).id]  # every word must match
    assert store.search("délibération absente") == []


def test_hits_carry_the_fields_a_snippet_with_plain_brackets_and_a_rank(store: SqliteStore) -> None:
    store.commit_batch([doc(1, "Le maire délivre le permis. " + "Texte de remplissage. " * 30 + "Le permis est affiché.")])
    (hit,) = store.search("PERMIS")
    assert set(hit) == {"id", "code_id", "code_title", "num", "etat", "section_path", "snippet", "rank"}
    assert (hit["code_id"], hit["num"], hit["etat"]) == (CODE, "L1", "VIGUEUR")
    assert hit["section_path"] == "Partie législative > Livre Ier"
    assert f"{HIGHLIGHT[0]}permis{HIGHLIGHT[1]}" in hit["snippet"]
    assert "<" not in hit["snippet"] and "**" not in hit["snippet"]
    assert "…" in hit["snippet"]  # a long text is cut around the match
    assert isinstance(hit["rank"], float)


def test_best_match_first_and_limit(store: SqliteStore) -> None:
    store.commit_batch([
        doc(1, "redevance " + "autre chose, " * 40),
        doc(2, "redevance redevance redevance, la redevance est due."),
        doc(3, "une redevance " + "et encore du texte " * 10),
    ])
    hits = store.search("redevance")
    assert ids(hits)[0] == article(2).id
    assert [h["rank"] for h in hits] == sorted((h["rank"] for h in hits), reverse=True)
    assert len(store.search("redevance", limit=2)) == 2


def test_filters_by_code_and_state(store: SqliteStore) -> None:
    store.commit_batch([
        doc(1, "Taxe foncière en vigueur.", CODE, "VIGUEUR"),
        doc(2, "Taxe foncière différée.", CODE, "VIGUEUR_DIFF"),
        doc(3, "Taxe foncière ancienne.", CODE, "MODIFIE"),
        doc(4, "Taxe foncière abrogée.", OTHER, "ABROGE"),
    ])
    assert len(store.search("taxe")) == 4
    assert sorted(ids(store.search("taxe", code_id=CODE))) == [article(n).id for n in (1, 2, 3)]
    assert sorted(ids(store.search("taxe", etat="VIGUEUR"))) == [article(1).id, article(2).id]
    assert ids(store.search("taxe", etat="modifie")) == [article(3).id]
    assert ids(store.search("taxe", code_id=OTHER, etat="ABROGE")) == [article(4).id]
    assert store.search("taxe", code_id=OTHER, etat="VIGUEUR") == []


def test_index_follows_updates_deletes_and_retirement(store: SqliteStore) -> None:
    store.commit_batch([doc(1, "Ancienne rédaction sur les chemins ruraux."), doc(2, "Les chemins ruraux.")])
    store.commit_batch([doc(1, "Nouvelle rédaction sur les sentiers.")])  # upsert: text replaced
    assert ids(store.search("chemins")) == [article(2).id]
    assert ids(store.search("sentiers")) == [article(1).id]
    store.commit_batch([doc(1, "Nouvelle rédaction sur les sentiers.")])  # replay: unchanged
    assert ids(store.search("sentiers")) == [article(1).id]

    store.retire_absent(CODE, [article(1).id])  # article 2 leaves the TOC: ABROGE
    assert store.search("chemins", etat="VIGUEUR") == []
    assert ids(store.search("chemins", etat="ABROGE")) == [article(2).id]

    with sqlite3.connect(store.path) as conn:
        conn.execute("DELETE FROM legifrance_articles WHERE id = ?", (article(2).id,))
    assert store.search("chemins") == []
    with sqlite3.connect(store.path) as conn:  # FTS5's own consistency check of the index
        conn.execute(f"INSERT INTO {FTS_TABLE} ({FTS_TABLE}, rank) VALUES ('integrity-check', 1)")


def test_an_existing_database_is_indexed_once_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    SqliteStore(path).close()
    with sqlite3.connect(path) as conn:  # back to a database from before the search index
        conn.execute(f"DROP TABLE {FTS_TABLE}")
        for name in ("ins", "del", "upd"):
            conn.execute(f"DROP TRIGGER legifrance_articles_fts_{name}")
        conn.execute(
            "INSERT INTO legifrance_articles (id, cid, code_id, etat, text, content_sha256, collected_at) "
            "VALUES ('LEGIARTI000000000077', 'LEGIARTI000000000077', ?, 'VIGUEUR', "
            "'Les servitudes d''utilité publique.', 'h', '2026-11-28')",
            (CODE,),
        )
    for _ in range(2):  # opening again neither re-indexes nor duplicates
        reopened = SqliteStore(path)
        assert ids(reopened.search("utilite publique")) == ["LEGIARTI000000000077"]
        reopened.close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"INSERT INTO {FTS_TABLE} ({FTS_TABLE}, rank) VALUES ('integrity-check', 1)")
        triggers = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name LIKE '%fts%'")
        assert triggers.fetchone() == (3,)


HOSTILE = [
    '"', '""', "'", "*", "^", ":", "(", ")", "()", "-", "+", "NEAR", "NEAR(a b)", "AND", "OR", "NOT",
    "a AND", "OR b", "text:permis", "code_id:x", '"unterminated', "permis*", "^permis", "{text}: permis",
    "permis -taxe", "a + b", "col : (a", "\x00", "permis\x00taxe", "😀", "%", "_", "\\", "' OR 1=1 --",
]


def test_hostile_query_text_never_reaches_fts_syntax(store: SqliteStore) -> None:
    store.commit_batch([doc(1, "Le permis de construire et la taxe NEAR la commune.")])
    for query in HOSTILE:
        try:
            hits = store.search(query)
        except SearchQueryError as exc:
            assert "no word" in str(exc)
        else:
            assert isinstance(hits, list)
    assert ids(store.search("permis:taxe")) == [article(1).id]  # two words, not a column filter
    assert store.search("text:permis") == []  # "text" is a word the article lacks
    assert ids(store.search("NEAR(permis taxe)")) == [article(1).id]
    rng = random.Random(5)
    alphabet = '"\'*^:()-+{}[]%_\\ ,.;éÉaZ0\x00\t\n' + "NEARORNOTAND"
    for _ in range(500):
        query = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 24)))
        try:
            store.search(query)
        except SearchQueryError:
            pass


def test_empty_and_bad_inputs_get_clear_errors(store: SqliteStore) -> None:
    for query in ("", "   ", '"*"', "()"):
        with pytest.raises(SearchQueryError, match="no word to search for"):
            store.search(query)
    with pytest.raises(SearchQueryError, match="limit"):
        store.search("permis", limit=0)
    with pytest.raises(SearchQueryError, match="limit"):
        store.search("permis", limit=MAX_LIMIT + 1)
    with pytest.raises(SearchQueryError, match="unknown state"):
        store.search("permis", etat="EN COURS")
    with pytest.raises(SearchQueryError, match="unknown code id"):
        store.search("permis", code_id='LEGITEXT" OR x')
    assert isinstance(SearchQueryError("x"), ValueError)


def test_parse_query_keeps_words_and_numbers_only() -> None:
    q = parse_query("  L. 123-4 : «permis» de construire, permis ", code_id=" LEGITEXT1 ", etat="vigueur")
    assert q.terms == ("L", "123", "4", "permis", "de", "construire")
    assert (q.code_id, q.etat, q.fts5_match()) == ("LEGITEXT1", "VIGUEUR", '"L" "123" "4" "permis" "de" "construire"')
    assert parse_query("e\u0301te\u0301").terms == ("été",)  # NFC: combining accents stay in the word
    assert len(parse_query(" ".join(f"w{i}" for i in range(40))).terms) == 16


def test_article_and_the_versions_we_hold(store: SqliteStore) -> None:
    v1 = replace(doc(1, "Première rédaction.", etat="MODIFIE", cid=900), date_debut=article(1).date_debut)
    v2 = replace(doc(2, "Deuxième rédaction.", cid=900), date_debut=article(5).date_debut)
    store.commit_batch([v1, v2, doc(3, "Autre article.")])
    row = store.get_article(v2.id)
    assert row is not None and row["text"] == "Deuxième rédaction." and row["cid"] == v2.cid
    assert row["date_debut"] == v2.date_debut.isoformat()
    assert store.get_article("LEGIARTI999999999999") is None
    versions = store.article_versions(v2.cid)
    assert [v["id"] for v in versions] == [v2.id, v1.id]  # newest first
    assert [v["etat"] for v in versions] == ["VIGUEUR", "MODIFIE"]
    assert set(versions[0]) == {"id", "cid", "num", "etat", "date_debut", "date_fin", "collected_at"}


def test_legifrance_url_only_for_article_ids() -> None:
    assert legifrance_url("LEGIARTI000006419280") == "https://www.legifrance.gouv.fr/codes/article_lc/LEGIARTI000006419280"
    assert legifrance_url("javascript:alert(1)") is None
    assert legifrance_url("LEGIARTI000006419280/../x") is None
