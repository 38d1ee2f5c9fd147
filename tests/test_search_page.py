"""The page's search section through AppTest on the real runtime (demo source, SQLite filled
by the store beforehand; the collector stays stopped so the rows are exactly these)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from pathlib import Path

import pandas as pd
from streamlit.testing.v1 import AppTest

from collector.store.sqlite import SqliteStore
from tests.store.helpers import article
from tests.test_dashboard import app, env, rendered_text  # noqa: F401 - fixture

CODE = "LEGITEXT000099900001"
OTHER = "LEGITEXT000099900002"
HOSTILE = "**gras** <b>html</b> <script>alert(1)</script> [lien](javascript:alert(1)) # titre"


def fill(env_dir: Path) -> None:
    store = SqliteStore(env_dir / "collector.sqlite3")
    old = replace(article(1, CODE, text="Ancienne rédaction de la délibération."), etat="MODIFIE",
                  cid="LEGIARTI000000000900", date_debut=date(2001, 1, 1), date_fin=date(2020, 1, 1))
    new = replace(article(2, CODE, text=f"La délibération du conseil municipal. {HOSTILE}"), num="L2121-29",
                  cid="LEGIARTI000000000900", date_debut=date(2020, 1, 1), date_fin=None, nota="Nota de test.")
    other = replace(article(3, OTHER, text="DELIBERATION d'un autre code."), code_title="Autre code (fictif)")
    store.commit_batch([old, new, other])
    store.close()


def results(at: AppTest) -> pd.DataFrame:
    return next(d.value for d in at.dataframe if "Snippet" in d.value.columns)


def search(at: AppTest, words: str) -> AppTest:
    return at.text_input(key="search_query").input(words).run()


def test_search_filters_and_article_view(env: Path) -> None:  # noqa: F811
    fill(env)
    at = app()
    assert not at.exception
    assert "Type one or more words" in rendered_text(at)

    at = search(at, "deliberation")  # unaccented query, accented text; state "In force" by default
    frame = results(at)
    assert sorted(frame["Article"]) == ["L2121-29", "L3"]
    assert set(frame.columns) == {"Code", "Article", "State", "Section", "Snippet"}
    assert any("[délibération]" in s for s in frame["Snippet"])
    assert set(frame["Section"]) == {"Partie législative > Livre Ier"}

    at = at.selectbox(key="search_state").select("Any state").run()
    assert sorted(results(at)["Article"]) == ["L1", "L2121-29", "L3"]
    at = at.selectbox(key="search_code").select(OTHER).run()
    assert list(results(at)["Article"]) == ["L3"]
    at = at.selectbox(key="search_code").select(None).run()

    at = at.selectbox(key="search_open").select(article(2).id).run()
    assert not at.exception
    texts = [t.value for t in at.text]
    assert any(t.startswith("La délibération du conseil municipal.") and HOSTILE in t for t in texts)
    assert any("in force from 2020-01-01 to no end" in t for t in texts)
    assert "Nota: Nota de test." in texts
    versions = next(d.value for d in at.dataframe if "Version" in d.value.columns)
    assert list(versions["Version"]) == [article(2).id, article(1).id]
    assert list(versions["State"]) == ["VIGUEUR", "MODIFIE"]
    page = rendered_text(at)
    assert f"https://www.legifrance.gouv.fr/codes/article_lc/{article(2).id}" in page
    # API text is never Markdown or HTML: none of it reaches a markdown element.
    assert not any("<script>" in m.value or "gras" in m.value for m in at.markdown)


def test_queries_without_words_and_no_match_say_so(env: Path) -> None:  # noqa: F811
    fill(env)
    at = search(app(), '"*" : ( -')
    assert not at.exception
    assert any("no word to search for" in w.value for w in at.warning)
    at = search(at, "introuvable")
    assert any("No stored article" in i.value for i in at.info)
