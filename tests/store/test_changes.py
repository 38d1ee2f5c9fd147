"""The change log on SqliteStore (real files): which writes make which event, once, atomically."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

from collector.models import Article, Rejected
from collector.store import SqliteStore, StoreError
from collector.store.rows import CHANGE_KEYS, article_row
from collector.store.sqlite_changes import retire_versions_logged, upsert_articles_logged
from tests.store.helpers import T0, FakeClock, article

CODE = "LEGITEXT000099900001"
OTHER = "LEGITEXT000099900002"


def version(cid: int, v: int, code_id: str = CODE, etat: str = "VIGUEUR", text: str | None = None) -> Article:
    """Version `v` of article C<cid>: id LEGIARTI<cid><v>, later versions start later."""
    base = article(cid * 10 + v, code_id, text=text)
    return replace(base, id=f"LEGIARTI{cid:08d}{v:04d}", cid=f"C{cid}", etat=etat, date_debut=date(2000 + v, 1, 1))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "collector.sqlite3", clock=FakeClock())
    yield s
    s.close()


def log(store: SqliteStore, **kw: object) -> list[tuple[str, str, str | None, str]]:
    """(kind, id, previous_id, etat) of every event, in seq order."""
    return [(c["kind"], c["id"], c["previous_id"], c["etat"]) for c in store.read_changes(limit=10_000, **kw)]


def etats(store: SqliteStore) -> dict[str, str]:
    with sqlite3.connect(store.path) as conn:
        return dict(conn.execute("SELECT id, etat FROM legifrance_articles"))


# ---- commit_batch ---------------------------------------------------------------------------------

def test_new_articles_are_added_once_and_a_replay_writes_nothing(store: SqliteStore) -> None:
    a, b = version(1, 1), version(2, 1)
    assert store.commit_batch([a, b], run_id=7) == {"added": 2, "modified": 0, "repealed": 0, "corrected": 0}
    assert log(store) == [("added", a.id, None, "VIGUEUR"), ("added", b.id, None, "VIGUEUR")]
    later = replace(a, collected_at=T0.replace(hour=18))
    assert store.commit_batch([later, b], run_id=8) == {"added": 0, "modified": 0, "repealed": 0, "corrected": 0}
    assert len(log(store)) == 2
    first = store.read_changes()[0]
    assert tuple(first) == CHANGE_KEYS
    assert first == {
        "seq": 1, "kind": "added", "code_id": CODE, "cid": "C1", "id": a.id, "previous_id": None,
        "num": a.num, "etat": "VIGUEUR", "content_sha256": a.content_sha256, "run_id": "7",
        "at": "2026-11-28T15:00:00.000000+00:00",
    }


def test_a_new_version_modifies_the_one_in_force_and_retires_it(store: SqliteStore) -> None:
    old, new = version(1, 1), version(1, 2)
    store.commit_batch([old])
    assert store.commit_batch([new], tag="LEGI_20250714-213000")["modified"] == 1
    assert etats(store) == {old.id: "MODIFIE", new.id: "VIGUEUR"}
    assert log(store)[-1] == ("modified", new.id, old.id, "VIGUEUR")
    assert store.read_changes()[-1]["run_id"] == "LEGI_20250714-213000"
    store.commit_batch([new])
    assert len(log(store)) == 2


def test_two_rows_in_force_of_one_cid_are_both_retired_with_one_event(store: SqliteStore) -> None:
    v1, v2, v3 = version(1, 1), version(1, 2), version(1, 3)
    store.commit_batch([v1])
    with sqlite3.connect(store.path) as conn:  # a database written before the change log
        conn.execute("INSERT INTO legifrance_articles SELECT ?, cid, code_id, code_title, num, etat, '2002-01-01', "
                     "date_fin, section_path, text, html, nota, content_sha256, collected_at "
                     "FROM legifrance_articles WHERE id = ?", (v2.id, v1.id))
    store.commit_batch([v3])
    assert etats(store) == {v1.id: "MODIFIE", v2.id: "MODIFIE", v3.id: "VIGUEUR"}
    assert log(store)[-1] == ("modified", v3.id, v2.id, "VIGUEUR")  # the newest by date_debut
    assert len(log(store)) == 2


def test_two_versions_of_one_cid_in_one_batch(store: SqliteStore) -> None:
    v1, v2 = version(1, 1), version(1, 2)
    store.commit_batch([v1, v2])
    assert log(store) == [("added", v1.id, None, "VIGUEUR"), ("modified", v2.id, v1.id, "VIGUEUR")]
    assert etats(store) == {v1.id: "MODIFIE", v2.id: "VIGUEUR"}


def test_a_batch_taking_a_version_out_and_its_successor_in_is_one_modified_event(store: SqliteStore) -> None:
    """As a dump delta brings them: the old version's file (now MODIFIE) may come first."""
    v1, v2 = version(1, 1), version(1, 2)
    store.commit_batch([v1])
    store.commit_batch([replace(v1, etat="MODIFIE"), v2])
    assert log(store)[1:] == [("modified", v2.id, v1.id, "VIGUEUR")]
    assert etats(store) == {v1.id: "MODIFIE", v2.id: "VIGUEUR"}


def test_one_batch_retiring_then_storing_again_the_version_in_force(store: SqliteStore) -> None:
    v1, v4 = version(1, 1), version(1, 4)
    store.commit_batch([v1])
    edited = replace(v1, text=v1.text + " Modifié.", content_sha256="d" * 64)
    store.commit_batch([v4, edited])  # v4 retires v1, then v1 comes back in force: it retires v4
    assert log(store)[1:] == [("modified", v4.id, v1.id, "VIGUEUR"), ("modified", v1.id, v4.id, "VIGUEUR")]
    assert etats(store) == {v1.id: "VIGUEUR", v4.id: "MODIFIE"}


def test_a_text_edited_in_place_is_corrected_with_its_previous_text(store: SqliteStore) -> None:
    before = version(1, 1, text="Ancien texte de l'article, assez long pour être gardé.")
    after = replace(before, text="Nouveau texte de l'article, assez long pour être gardé.", content_sha256="f" * 64)
    store.commit_batch([before])
    assert store.commit_batch([after])["corrected"] == 1
    change = store.read_changes(since=1, previous_text=True)[0]
    assert (change["kind"], change["id"], change["previous_id"], change["content_sha256"]) == (
        "corrected", before.id, None, "f" * 64)
    assert change["previous_text"] == before.text
    assert "previous_text" not in store.read_changes(since=1)[0]
    assert store.get_articles([before.id])[before.id]["text"] == after.text
    store.commit_batch([after])
    assert len(log(store)) == 2


def test_a_retired_row_stored_again_in_force_is_added(store: SqliteStore) -> None:
    row = version(1, 1)
    store.commit_batch([row])
    store.retire_absent(CODE, [])
    store.commit_batch([row])
    assert log(store) == [("added", row.id, None, "VIGUEUR"), ("repealed", row.id, None, "ABROGE"),
                          ("added", row.id, None, "VIGUEUR")]


def test_rows_not_in_force_make_no_event(store: SqliteStore) -> None:
    assert sum(store.commit_batch([version(1, 1, etat="ABROGE"), version(2, 1, etat="MODIFIE")]).values()) == 0
    assert log(store) == []


def test_a_row_in_force_stored_again_out_of_force_is_repealed_unless_succeeded(store: SqliteStore) -> None:
    v1, v2, lone = version(1, 1), version(1, 2), version(2, 1)
    store.commit_batch([v1, lone])
    # a dump's order: the successor first, then the old version as MODIFIE (covered by modified)
    store.commit_batch([v2, replace(v1, etat="MODIFIE"), replace(lone, etat="ABROGE")])
    assert log(store)[2:] == [("modified", v2.id, v1.id, "VIGUEUR"), ("repealed", lone.id, None, "ABROGE")]
    assert etats(store) == {v1.id: "MODIFIE", v2.id: "VIGUEUR", lone.id: "ABROGE"}


def test_a_failed_commit_leaves_neither_rows_nor_events(store: SqliteStore) -> None:
    bad = Rejected(id="LEGIARTI000000000099", code_id=CODE, reason=None, length=0, rejected_at=T0)  # type: ignore[arg-type]
    with pytest.raises(StoreError):
        store.commit_batch([version(1, 1)], [bad])
    assert (store.count_articles(), log(store)) == (0, [])


# ---- retire_absent / retire_versions --------------------------------------------------------------

def test_retire_absent_repeals_and_labels_a_rejected_successor(store: SqliteStore) -> None:
    gone, superseded, kept = version(1, 1), version(2, 1), version(3, 1)
    store.commit_batch([gone, superseded, kept])
    result = store.retire_absent(CODE, [version(2, 2).id, kept.id], ["C2", "C3"], tag="9")
    assert result == (1, 1) and result.events == {"added": 0, "modified": 0, "repealed": 2, "corrected": 0}
    assert log(store, since=3) == [("repealed", gone.id, None, "ABROGE"), ("repealed", superseded.id, None, "MODIFIE")]
    assert {c["run_id"] for c in store.read_changes(since=3)} == {"9"}
    assert store.retire_absent(CODE, [version(2, 2).id, kept.id], ["C2", "C3"]).events["repealed"] == 0


def test_retire_absent_restores_and_rolls_back(store: SqliteStore) -> None:
    old, new, other = version(1, 1), version(1, 2), version(2, 1)
    store.commit_batch([old, other])
    store.retire_absent(CODE, [old.id])  # other leaves the TOC
    store.commit_batch([new])  # a new version of C1
    store.retire_absent(CODE, [old.id, other.id])  # rolled back: old again, other back
    assert log(store, since=2) == [
        ("repealed", other.id, None, "ABROGE"),
        ("modified", new.id, old.id, "VIGUEUR"),
        ("modified", old.id, new.id, "VIGUEUR"),
        ("added", other.id, None, "VIGUEUR"),
    ]
    assert etats(store) == {old.id: "VIGUEUR", new.id: "MODIFIE", other.id: "VIGUEUR"}


def test_retire_versions_repeals_unless_a_successor_is_in_force(store: SqliteStore) -> None:
    old, new, lone, elsewhere = version(1, 1), version(1, 2), version(2, 1), version(3, 1, OTHER)
    store.commit_batch([old, lone, elsewhere])
    with sqlite3.connect(store.path) as conn:  # both versions of C1 in force (a dump's order)
        conn.execute("INSERT INTO legifrance_articles SELECT ?, cid, code_id, code_title, num, etat, date_debut, "
                     "date_fin, section_path, text, html, nota, content_sha256, collected_at "
                     "FROM legifrance_articles WHERE id = ?", (new.id, old.id))
    result = store.retire_versions([(old.id, "MODIFIE"), (lone.id, "ABROGE"), (elsewhere.id, "ABROGE_DIFF"),
                                    ("LEGIARTI999999999999", "ABROGE")], tag="LEGI_20250714-213000")
    assert result == (1, 2) and result.events["repealed"] == 2
    assert log(store, since=3) == [("repealed", lone.id, None, "ABROGE"),
                                   ("repealed", elsewhere.id, None, "ABROGE_DIFF")]
    assert store.retire_versions([(lone.id, "ABROGE")]) == (0, 0)  # replay: nothing in force left
    assert len(log(store)) == 5


@pytest.mark.parametrize("versions", [[("LEGIARTI1", "VIGUEUR")], [("LEGIARTI1",)], ["LEGIARTI1"], [(1, "ABROGE")]])
def test_retire_versions_refuses_bad_pairs(store: SqliteStore, versions: object) -> None:
    store.commit_batch([version(1, 1)])
    with pytest.raises((TypeError, ValueError), match="retire_versions"):
        store.retire_versions(versions)  # type: ignore[arg-type]
    assert len(log(store)) == 1


# ---- readers, cursors, articles ---------------------------------------------------------------------

def test_read_changes_pages_by_seq_and_filters_by_code(store: SqliteStore) -> None:
    store.commit_batch([version(n, 1, CODE if n % 2 else OTHER) for n in range(1, 8)])
    assert [c["seq"] for c in store.read_changes(since=2, limit=3)] == [3, 4, 5]
    assert [c["seq"] for c in store.read_changes(code_id=OTHER)] == [2, 4, 6]
    assert store.read_changes(since=7) == [] and store.latest_change_seq() == 7
    for bad in ({"since": -1}, {"limit": 0}, {"since": "3"}, {"limit": True}):
        with pytest.raises(ValueError, match="read_changes"):
            store.read_changes(**bad)  # type: ignore[arg-type]


def test_cursors_and_get_articles(store: SqliteStore) -> None:
    assert store.get_cursor("export") == 0 and store.latest_change_seq() == 0
    store.set_cursor("export", 12)
    store.set_cursor("export", 15)
    assert (store.get_cursor("export"), store.get_cursor("other")) == (15, 0)
    store.set_cursor("export", 9)  # a late writer (a second exporter) never moves it back
    assert store.get_cursor("export") == 15
    with pytest.raises(ValueError):
        store.set_cursor("export", -1)
    row = version(1, 1)
    store.commit_batch([row])
    assert store.get_articles([row.id, "LEGIARTI404"]) == {row.id: article_row(row)}


# ---- reuse inside another transaction ----------------------------------------------------------------

def test_the_connection_functions_commit_or_roll_back_with_the_callers_transaction(store: SqliteStore) -> None:
    old, new = version(1, 1), version(1, 2)
    store.commit_batch([old])
    conn = sqlite3.connect(store.path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    try:
        conn.execute("BEGIN IMMEDIATE")
        assert upsert_articles_logged(conn, [article_row(new)], "LEGI_X")["modified"] == 1
        assert retire_versions_logged(conn, [(new.id, "ABROGE")], "LEGI_X").events["repealed"] == 1
        conn.execute("ROLLBACK")
        assert (etats(store), len(log(store))) == ({old.id: "VIGUEUR"}, 1)
        conn.execute("BEGIN IMMEDIATE")
        upsert_articles_logged(conn, [article_row(new)], "LEGI_X")
        conn.execute("COMMIT")
    finally:
        conn.close()
    assert log(store)[-1] == ("modified", new.id, old.id, "VIGUEUR")
