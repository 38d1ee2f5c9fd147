"""Search on a real PostgreSQL with every migration applied (0005_search.sql: french + unaccent),
through collector_search() directly and through SupabaseStore.search, whose rpc call is
answered by running it on that database (the JSON PostgREST would send back)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import date

import httpx
import pytest
import respx

from collector.models import Article
from collector.search import HIGHLIGHT, SearchQueryError
from collector.store.rows import ARTICLE_COLUMNS, article_row
from collector.store.supabase import SupabaseStore
from tests.store.fake_postgrest import FakePostgrest, supabase_over
from tests.store.helpers import article
from tests.store.test_postgres import apply_migrations, database, db  # noqa: F401 - fixtures

psycopg = pytest.importorskip("psycopg")
from psycopg import sql  # noqa: E402

pytestmark = pytest.mark.postgres

CODE = "LEGITEXT000099900001"
OTHER = "LEGITEXT000099900002"
URL = "https://proj.supabase.co"


def doc(n: int, text: str, code_id: str = CODE, etat: str = "VIGUEUR") -> Article:
    return replace(article(n, code_id, text=text), etat=etat)


def insert(conn: psycopg.Connection, *articles: Article) -> None:
    names = sql.SQL(", ").join(sql.Identifier(c) for c in ARTICLE_COLUMNS)
    marks = sql.SQL(", ").join(sql.Placeholder() for _ in ARTICLE_COLUMNS)
    for a in articles:
        row = article_row(a)
        conn.execute(sql.SQL("INSERT INTO legifrance_articles ({}) VALUES ({})").format(names, marks),
                     [row[c] for c in ARTICLE_COLUMNS])


@pytest.fixture
def store(db: psycopg.Connection) -> Iterator[SupabaseStore]:  # noqa: F811
    """A SupabaseStore whose /rpc/collector_search runs on the real database."""

    def rpc(request: httpx.Request) -> httpx.Response:
        args = json.loads(request.content)
        call = sql.SQL("SELECT * FROM collector_search({})").format(
            sql.SQL(", ").join(sql.SQL("{} := %s").format(sql.Identifier(k)) for k in args)
        )
        cur = db.execute(call, list(args.values()))
        names = [d.name for d in cur.description or ()]
        return httpx.Response(200, json=[dict(zip(names, row, strict=True)) for row in cur.fetchall()])

    with respx.mock(base_url=URL, assert_all_called=False) as router:
        router.post("/rest/v1/rpc/collector_search").mock(side_effect=rpc)
        s = SupabaseStore(URL, "service-key", backoff=lambda n: 0.0)
        yield s
        s.close()


def ids(hits: list[dict]) -> list[str]:
    return [h["id"] for h in hits]


def test_french_accent_and_case_insensitive_with_stemming(db: psycopg.Connection, store: SupabaseStore) -> None:  # noqa: F811
    insert(db,
           doc(1, "La délibération du Conseil d'État est publiée au recueil."),
           doc(2, "DELIBERATIONS DU CONSEIL MUNICIPAL, SANS ACCENT."),
           doc(3, "Un texte sans rapport avec la question."))
    for query in ("deliberation", "Délibérations", "DÉLIBÉRATION"):
        assert sorted(ids(store.search(query))) == [article(1).id, article(2).id], query
    assert ids(store.search("etat")) == [article(1).id]
    assert ids(store.search("conseil municipal")) == [article(2).id]  # every word must match
    (hit,) = store.search("ÉTAT")
    assert set(hit) == {"id", "code_id", "code_title", "num", "etat", "section_path", "snippet", "rank"}
    assert f"{HIGHLIGHT[0]}État{HIGHLIGHT[1]}" in hit["snippet"]  # accents kept, word marked
    assert (hit["code_id"], hit["num"], hit["section_path"]) == (CODE, "L1", "Partie législative > Livre Ier")
    assert isinstance(hit["rank"], float) and hit["rank"] > 0


def test_filters_rank_limit_and_stop_words(db: psycopg.Connection, store: SupabaseStore) -> None:  # noqa: F811
    insert(db,
           doc(1, "Taxe foncière en vigueur. " + "Autre chose. " * 20, CODE, "VIGUEUR"),
           doc(2, "Taxe foncière différée, taxe, taxe.", CODE, "VIGUEUR_DIFF"),
           doc(3, "Taxe foncière ancienne.", CODE, "MODIFIE"),
           doc(4, "Taxe foncière abrogée.", OTHER, "ABROGE"))
    hits = store.search("taxe")
    assert len(hits) == 4 and ids(hits)[0] == article(2).id
    assert [h["rank"] for h in hits] == sorted((h["rank"] for h in hits), reverse=True)
    assert sorted(ids(store.search("taxe", code_id=CODE))) == [article(n).id for n in (1, 2, 3)]
    assert sorted(ids(store.search("taxe", etat="vigueur"))) == [article(1).id, article(2).id]
    assert ids(store.search("taxe", code_id=OTHER, etat="ABROGE")) == [article(4).id]
    assert len(store.search("taxe", limit=2)) == 2
    assert store.search("le la les du") == []  # French stop words only: nothing to match


def test_hostile_text_is_plain_words_for_the_sql_function_too(db: psycopg.Connection, store: SupabaseStore) -> None:  # noqa: F811
    insert(db, doc(1, "Le permis de construire."))
    for text in ("permis & !", "permis | (", ":* permis", "'permis'", "permis <-> construire", "\\", ""):
        db.execute("SELECT * FROM collector_search(%s)", (text,)).fetchall()  # never a syntax error
    assert ids(store.search("permis & construire")) == [article(1).id]
    with pytest.raises(SearchQueryError, match="no word"):
        store.search("&|!()")


def test_the_stored_vector_follows_the_text_and_its_index_serves_the_search(db: psycopg.Connection) -> None:  # noqa: F811
    insert(db, *(doc(n, f"Article numéro {n} sur la voirie communale.") for n in range(1, 50)))
    apply_migrations(db)  # again: idempotent, the rows stay searchable
    db.execute("SET enable_seqscan = off")
    plan = "\n".join(r[0] for r in db.execute(
        "EXPLAIN SELECT id FROM legifrance_articles "
        "WHERE search_tsv @@ plainto_tsquery('public.collector_french'::regconfig, 'voirie')"
    ))
    db.execute("RESET enable_seqscan")
    assert "legifrance_articles_search_idx" in plan
    assert len(db.execute("SELECT * FROM collector_search('voiries communales', NULL, NULL, 500)").fetchall()) == 49
    db.execute("UPDATE legifrance_articles SET text = 'Les chemins ruraux.' WHERE id = %s", (article(7).id,))
    assert [r[0] for r in db.execute("SELECT id FROM collector_search('chemin')")] == [article(7).id]
    assert len(db.execute("SELECT * FROM collector_search('voirie', NULL, NULL, 500)").fetchall()) == 48


def test_article_and_versions_through_postgrest() -> None:
    fake = FakePostgrest("service-key")
    with supabase_over(fake, URL) as s:
        old = replace(doc(1, "Première rédaction.", etat="MODIFIE"), cid="C9", date_debut=date(2001, 1, 1))
        new = replace(doc(2, "Deuxième rédaction."), cid="C9", date_debut=date(2020, 1, 1))
        s.commit_batch([old, new, doc(3, "Autre.")])
        row = s.get_article(new.id)
        assert row is not None and row["text"] == "Deuxième rédaction." and set(row) == set(ARTICLE_COLUMNS)
        assert s.get_article("LEGIARTI999999999999") is None
        assert [v["id"] for v in s.article_versions("C9")] == [new.id, old.id]
