"""The page's 'What changed' section through Streamlit's AppTest on the real runtime (SQLite)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from collector.store import SqliteStore
from tests.store.test_changes import version
from tests.test_dashboard import app, env, rendered_text  # noqa: F401 - env is a fixture

HOSTILE = "**gras** <script>alert(1)</script> [lien](javascript:alert(1)) :red[rouge]"


def test_what_changed_shows_passes_counts_diff_and_links_as_plain_text(env: Path) -> None:  # noqa: F811
    at = app()
    assert "No change recorded yet" in rendered_text(at)

    store = SqliteStore(env / "collector.sqlite3")
    try:
        old = version(1, 1, text="Le ministre des finances fixe le titre des monnaies. " + HOSTILE)
        new = version(1, 2, text="Le ministre chargé de l'économie fixe le titre des monnaies. " + HOSTILE)
        store.commit_batch([old, version(2, 1)], run_id=1)
        store.commit_batch([new], run_id=2)
    finally:
        store.close()
    at = app()
    assert not at.exception
    texts = [t.value for t in at.text]
    assert "Pass 2: 1 modified" in texts and "Pass 1: 2 added" in texts
    frames = [df.value for df in at.dataframe]
    modified = next(f for f in frames if "kind" in f.columns and list(f["kind"]) == ["modified"])
    assert modified["id"][0] == new.id and modified["previous_id"][0] == old.id
    assert modified["legifrance"][0] == f"https://www.legifrance.gouv.fr/codes/article_lc/{new.id}"
    (diff,) = at.code
    assert diff.value.startswith("Le ministre [-des finances-]{+chargé de l'économie+} fixe")
    assert HOSTILE in diff.value  # the API's text, verbatim, in a code block
    assert all(HOSTILE not in m.value for m in at.markdown)  # never through Markdown
    links = {b.proto.url for b in at.get("link_button")}
    assert {f"https://www.legifrance.gouv.fr/codes/article_lc/{i}" for i in (old.id, new.id)} <= links
