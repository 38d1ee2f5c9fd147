"""Search benchmark: SqliteStore.search (FTS5) on 100,000 stored articles, against a plain
`text LIKE '%term%'` scan of the same table as the anchor.

    python bench/search.py [--articles 100000] [--queries 240] [--db PATH] [--postgres]

The articles come from the demo corpus (collector/demo/corpus.py: French sentences, notes,
tables, every version of each article, so MODIFIE/ABROGE rows too), each with one extra
sentence drawn from a vocabulary of legal words (Zipf-like frequencies), so that queries range
from very common terms (thousands of matches to rank) to rare ones. Rows go in through
commit_batch, the triggers index them as the collector would.

Queries: one to three words, accented, unaccented, upper case, about a third with a code
filter and some with a state filter. Prints the median and p95 latency of each side and
their ratio (the ratio is what to compare between runs: both share the machine's noise).
The LIKE anchor is weaker than the search it is compared with (case-folding of ASCII only,
no accent folding, no ranking, no snippet) and stops at the 20th hit.

--postgres also copies the articles into a throwaway database on 127.0.0.1:5432 (user
postgres), applies supabase/migrations/ in name order and times collector_search() (the
Supabase store's rpc, without the HTTP hop) over the same queries.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector.demo.corpus import DEMO_MASSIVE_CODES, NO_END_DAY, Corpus, date_of  # noqa: E402
from collector.models import Article  # noqa: E402
from collector.search import parse_query  # noqa: E402
from collector.store.sqlite import SqliteStore  # noqa: E402

VOCABULARY = (
    "urbanisme", "permis", "construire", "déclaration", "préalable", "commune", "préfet", "délai",
    "recours", "contentieux", "amende", "sanction", "pénale", "contravention", "délit", "peine",
    "emprisonnement", "société", "associé", "capital", "dirigeant", "responsabilité", "contrat",
    "bail", "locataire", "propriétaire", "copropriété", "syndic", "assemblée", "délibération",
    "majorité", "héritier", "succession", "donation", "testament", "mariage", "divorce", "enfant",
    "autorité", "parentale", "tutelle", "curatelle", "salarié", "employeur", "licenciement",
    "préavis", "indemnité", "congé", "rémunération", "cotisation", "sécurité", "sociale",
    "assurance", "maladie", "retraite", "pension", "allocation", "impôt", "revenu", "taxe",
    "redevance", "exonération", "déduction", "bénéfice", "exercice", "comptable", "commissaire",
    "compte", "environnement", "pollution", "déchet", "eau", "forêt", "chasse", "pêche",
    "installation", "classée", "autorisation", "enquête", "publique", "expropriation", "utilité",
    "domaine", "patrimoine", "monument", "historique", "archéologie", "musée", "collectivité",
    "département", "région", "maire", "conseil", "municipal", "intercommunalité", "budget",
    "marché", "concession", "délégation", "service", "public", "usager", "consommateur",
    "vendeur", "garantie", "conformité", "vice", "caché", "rétractation", "démarchage", "crédit",
    "prêteur", "emprunteur", "surendettement", "huissier", "saisie", "exécution", "jugement",
    "appel", "cassation", "tribunal", "juridiction", "compétence", "procédure", "nullité",
    "prescription", "forclusion", "notification", "signification", "véhicule", "conducteur",
    "permis de conduire", "vitesse", "stationnement", "fourrière", "aéronef", "aérodrome",
    "navigation", "pilote", "transporteur", "voyageur", "marchandise", "douane", "entrepôt",
    "éducation", "enseignement", "élève", "établissement", "santé", "médecin", "pharmacie",
    "hôpital", "patient", "consentement", "données", "personnelles", "traitement", "fichier",
)


def zipf_word(rng: random.Random) -> str:
    # Rank r drawn with weight ~ 1/r: a few words are everywhere, most are rare.
    return VOCABULARY[min(len(VOCABULARY) - 1, int(len(VOCABULARY) ** rng.random()) - 1)]


def articles(count: int, seed: int = 7) -> Iterator[Article]:
    corpus = Corpus(count, seed=seed)
    rng = random.Random(seed)
    now = datetime.now(UTC)
    made = 0
    for code_id in DEMO_MASSIVE_CODES:
        title = corpus.code_title(code_id)
        for slot in corpus.slots(code_id):
            place = corpus.place(slot)
            section_path = " > ".join(t for _, t in place.sections)
            for version in corpus.versions(slot):
                plain, html = corpus.text(slot, version.number)
                words = [zipf_word(rng) for _ in range(3 + rng.randrange(6))]
                text = f"{plain}\nLe présent article concerne : {', '.join(words)}."
                nota, _ = corpus.nota(slot, version)
                yield Article(
                    id=version.id, cid=corpus.cid_of(slot), code_id=code_id, code_title=title,
                    num=place.num, etat=version.etat, date_debut=date_of(version.start),
                    date_fin=None if version.end == NO_END_DAY else date_of(version.end),
                    section_path=section_path, text=text, html=html, nota=nota or None,
                    content_sha256=hashlib.sha256(text.encode()).hexdigest(), collected_at=now,
                )
                made += 1
                if made >= count:
                    return


def fill(store: SqliteStore, count: int) -> float:
    started = time.perf_counter()
    batch: list[Article] = []
    for article in articles(count):
        batch.append(article)
        if len(batch) == 1000:
            store.commit_batch(batch)
            batch.clear()
    if batch:
        store.commit_batch(batch)
    return time.perf_counter() - started


def unaccented(word: str) -> str:
    import unicodedata

    return "".join(c for c in unicodedata.normalize("NFD", word) if unicodedata.category(c) != "Mn")


def queries(n: int, seed: int = 11) -> list[tuple[str, str | None, str | None]]:
    """(query, code_id, etat) triples: 1-3 words, accent/case variants, some filters."""
    rng = random.Random(seed)
    corpus_words = ("démonstration", "déclaration", "commission", "médiateur", "arrêté", "registre",
                    "gestionnaire", "réception", "agents", "locaux", "amende", "recettes")
    out = []
    for i in range(n):
        pool = VOCABULARY if i % 3 else corpus_words
        words = [rng.choice(pool) if rng.random() < 0.5 else zipf_word(rng) for _ in range(1 + i % 3)]
        variant = i % 4
        if variant == 1:
            words = [unaccented(w) for w in words]
        elif variant == 2:
            words = [w.upper() for w in words]
        code = rng.choice(DEMO_MASSIVE_CODES) if i % 3 == 0 else None
        etat = "VIGUEUR" if i % 5 == 0 else None
        out.append((" ".join(words), code, etat))
    return out


def like_scan(store: SqliteStore, query: str, code_id: str | None, etat: str | None) -> list[str]:
    terms = parse_query(query).terms
    where = " AND ".join("text LIKE ?" for _ in terms)
    params: list[object] = [f"%{t}%" for t in terms]
    if code_id:
        where += " AND code_id = ?"
        params.append(code_id)
    if etat:
        where += " AND etat LIKE 'VIGUEUR%'"
    with store._read() as conn:  # the anchor reads the same file through the same pool
        return [r[0] for r in conn.execute(f"SELECT id FROM legifrance_articles WHERE {where} LIMIT 20", params)]


def postgres_latencies(store: SqliteStore, workload: list[tuple[str, str | None, str | None]]) -> list[float]:
    """collector_search() on a throwaway PostgreSQL database holding the same rows (ms per query)."""
    import uuid

    import psycopg

    from collector.store.rows import ARTICLE_COLUMNS

    admin = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
    name = f"bench_search_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        with psycopg.connect(f"host=127.0.0.1 port=5432 user=postgres dbname={name}", autocommit=True) as pg:
            migrations = sorted((Path(__file__).resolve().parents[1] / "supabase" / "migrations").glob("*.sql"))
            for path in migrations:
                pg.execute(path.read_text())
            started = time.perf_counter()
            columns = ", ".join(ARTICLE_COLUMNS)
            with store._read() as conn, pg.cursor().copy(f"COPY legifrance_articles ({columns}) FROM STDIN") as copy:
                for row in conn.execute(f"SELECT {columns} FROM legifrance_articles"):
                    copy.write_row(tuple(row))
            pg.execute("ANALYZE legifrance_articles")
            print(f"postgres: copied and indexed in {time.perf_counter() - started:.1f} s")
            parsed = [(parse_query(q, code, etat), q) for q, code, etat in workload]
            for query, _ in parsed[:10]:
                pg.execute("SELECT * FROM collector_search(%s, %s, %s, 20)", (query.text, query.code_id, query.etat)).fetchall()
            out = []
            for query, _ in parsed:
                started = time.perf_counter()
                pg.execute("SELECT * FROM collector_search(%s, %s, %s, 20)", (query.text, query.code_id, query.etat)).fetchall()
                out.append((time.perf_counter() - started) * 1000)
            return out
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=240)
    parser.add_argument("--db", type=Path, help="reuse (or create) this database file")
    parser.add_argument("--postgres", action="store_true", help="also time collector_search() on PostgreSQL")
    args = parser.parse_args()
    path = args.db or Path(tempfile.mkdtemp(prefix="bench-search-")) / "search.sqlite3"
    store = SqliteStore(path)
    if store.count_articles() < args.articles:
        print(f"filling {path} with {args.articles:,} articles ...", flush=True)
        print(f"filled in {fill(store, args.articles):.1f} s (commit_batch, triggers indexing)")
    print(f"articles: {store.count_articles():,}; database {path.stat().st_size / 1e6:.0f} MB")

    workload = queries(args.queries)
    for q, code, etat in workload[:10]:  # warm the page cache for both sides
        store.search(q, code, etat)
        like_scan(store, q, code, etat)
    fts, like, hits = [], [], []
    for q, code, etat in workload:
        started = time.perf_counter()
        found = store.search(q, code, etat)
        fts.append((time.perf_counter() - started) * 1000)
        hits.append(len(found))
        started = time.perf_counter()
        like_scan(store, q, code, etat)
        like.append((time.perf_counter() - started) * 1000)
    print(f"queries: {len(workload)} ({sum(1 for h in hits if h == 0)} with no hit, "
          f"{sum(1 for h in hits if h == 20)} with a full page of 20)")
    sides = [("FTS5 search", fts), ("LIKE scan (anchor)", like)]
    if args.postgres:
        sides.append(("PostgreSQL search", postgres_latencies(store, workload)))
    for name, values in sides:
        print(f"{name:20s} median {statistics.median(values):7.2f} ms   p95 {percentile(values, 0.95):7.2f} ms   "
              f"max {max(values):7.2f} ms")
    print(f"ratio search/LIKE: median {statistics.median(fts) / statistics.median(like):.3f}, "
          f"p95 {percentile(fts, 0.95) / percentile(like, 0.95):.3f}")
    store.close()


if __name__ == "__main__":
    main()
