"""Store.apply_dump_batch on a real SQLite file: rows, retirements, events and the dump state
commit together; a stamp already applied is refused with nothing written; a replay logs nothing."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from collector.models import DumpBatch
from collector.store.sqlite import SqliteStore
from tests.store.helpers import article, rejected

DELTA = "LEGI_20260102-210000.tar.gz"


def batch(**fields: object) -> DumpBatch:
    base = dict(archive=DELTA, stamp="20260102-210000", is_global=False, codes="all", members=10, bytes_read=1000)
    return DumpBatch(**{**base, **fields})  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    s = SqliteStore(tmp_path / "c.sqlite3")
    yield s
    s.close()


def test_progress_then_final_stamp(store: SqliteStore) -> None:
    assert store.get_dump_state().last_stamp is None
    counts = store.apply_dump_batch(batch(articles=(article(1), article(2)), rejected=(rejected(3, 5),)))
    assert counts["added"] == 2 and counts["retired"] == 0
    state = store.get_dump_state()
    assert (state.archive, state.members, state.bytes_read, state.last_stamp) == (DELTA, 10, 1000, None)
    assert store.count_articles() == 2 and store.count_rejected() == 1

    counts = store.apply_dump_batch(batch(final=True, members=12, retire=((article(1).id, "MODIFIE"),)))
    assert counts["retired"] + counts["superseded"] == 1 and counts["repealed"] == 1
    state = store.get_dump_state()
    assert (state.last_stamp, state.last_archive, state.archive, state.codes) == (
        "20260102-210000", DELTA, None, "all")
    assert state.global_stamp is None
    assert store.get_articles([article(1).id])[article(1).id]["etat"] == "MODIFIE"
    kinds = [c["kind"] for c in store.read_changes()]
    assert kinds == ["added", "added", "repealed"]
    assert {c["run_id"] for c in store.read_changes()} == {"LEGI_20260102-210000"}


def test_replay_logs_nothing_and_applied_stamp_is_refused_whole(store: SqliteStore) -> None:
    rows = (article(1), article(2))
    store.apply_dump_batch(batch(articles=rows))
    again = store.apply_dump_batch(batch(articles=rows))
    assert sum(again[k] for k in ("added", "modified", "corrected", "repealed")) == 0
    store.apply_dump_batch(batch(final=True))
    before = store.read_changes()
    with pytest.raises(ValueError, match="already applied"):
        store.apply_dump_batch(batch(final=True, articles=(article(7),), retire=((article(2).id, "ABROGE"),)))
    assert store.read_changes() == before  # the refused transaction wrote nothing
    assert article(7).id not in store.get_articles([article(7).id])
    assert store.get_articles([article(2).id])[article(2).id]["etat"] == "VIGUEUR"


def test_global_reconcile_retires_rows_not_in_force(store: SqliteStore) -> None:
    code = article(1).code_id
    store.commit_batch([article(1), article(2), article(3)])
    newer = dataclasses.replace(article(4), cid=article(2).cid)
    store.apply_dump_batch(batch(archive="Freemium_legi_global_20260101-120000.tar.gz", stamp="20260101-120000",
                                 is_global=True, articles=(article(1), newer)))
    counts = store.apply_dump_batch(batch(
        archive="Freemium_legi_global_20260101-120000.tar.gz", stamp="20260101-120000", is_global=True,
        final=True, reconcile=((code, (article(1).id, newer.id), (article(1).cid, newer.cid)),)))
    etats = {i: r["etat"] for i, r in store.get_articles([a.id for a in (article(1), article(2), article(3), newer)]).items()}
    assert etats == {article(1).id: "VIGUEUR", article(2).id: "MODIFIE", article(3).id: "ABROGE", newer.id: "VIGUEUR"}
    assert counts["retired"] == 1
    assert store.get_dump_state().global_stamp == "20260101-120000"
