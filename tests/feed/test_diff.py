"""collector.feed.diff: word diffs, grouping by pass, links, old/new texts from a real SQLite store."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from collector.feed.diff import article_url, group_by_run, recent_changes, texts_of, word_diff
from collector.store import SqliteStore
from tests.store.test_changes import version


def test_word_diff_marks_removed_and_added_words_and_keeps_the_layout() -> None:
    old = "Le ministre des finances fixe\nle titre des monnaies."
    new = "Le ministre chargé de l'économie fixe\nle titre des monnaies et médailles."
    assert word_diff(old, new) == (
        "Le ministre [-des finances-]{+chargé de l'économie+} fixe\nle titre des [-monnaies.-]{+monnaies et médailles.+}"
    )
    assert word_diff("même texte", "même texte") == "même texte"
    assert word_diff("", "Nouveau.") == "{+Nouveau.+}" and word_diff("Ancien.", "") == "[-Ancien.-]"


def test_article_url_takes_legiarti_ids_only() -> None:
    assert article_url("LEGIARTI000006398192") == "https://www.legifrance.gouv.fr/codes/article_lc/LEGIARTI000006398192"
    for bad in ("", "LEGIARTI1", "javascript:alert(1)", "LEGIARTI000006398192/../x"):
        assert article_url(bad) is None


def test_groups_counts_and_texts_from_the_store(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "c.sqlite3")
    try:
        v1, v2, other = version(1, 1), version(1, 2, text="Nouvelle rédaction de l'article, assez longue."), version(2, 1)
        store.commit_batch([v1, other], run_id=1)
        store.commit_batch([v2], run_id=2)
        edited = replace(other, text=other.text + " Corrigé.", content_sha256="b" * 64)
        store.commit_batch([edited], tag="LEGI_20250714-213000")
        changes = recent_changes(store, limit=2)
        assert [c["seq"] for c in changes] == [3, 4]  # the newest, in seq order
        groups = group_by_run(recent_changes(store))
        assert [(g.run_id, g.summary()) for g in groups] == [
            ("LEGI_20250714-213000", "1 corrected"), ("2", "1 modified"), ("1", "2 added")]
        modified, corrected = changes
        assert texts_of(store, modified) == (v1.text, v2.text)
        assert texts_of(store, corrected) == (other.text, edited.text)
        assert texts_of(store, groups[2].changes[0]) is None  # added: nothing to compare
        again = replace(edited, text=edited.text + " Encore.", content_sha256="e" * 64)
        store.commit_batch([again], tag="LEGI_20250715-213000")
        everything = recent_changes(store)
        first, second = [c for c in everything if c["kind"] == "corrected"]
        assert texts_of(store, first, everything) == (other.text, edited.text)  # as right after it
        assert texts_of(store, second, everything) == (edited.text, again.text)
    finally:
        store.close()
