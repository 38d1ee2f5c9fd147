"""After a complete walk, run_pass retires the stored rows that left today's TOC (MODIFIE /
ABROGE): the emulator in-process, the real client, real SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from collector.config import Mode
from collector.demo import DEMO_MASSIVE_CODES, DemoConfig, FaultKind, FaultRule, demo_transport
from collector.store.base import StoreError
from collector.store.sqlite import SqliteStore
from tests.test_harvest import Rig


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    store = SqliteStore(tmp_path / "collector.sqlite3")
    yield Rig(demo_transport(DemoConfig(articles=300)), store)
    store.close()


def by_etat(rig: Rig, etat: str) -> set[str]:
    return {r["id"] for r in rig.rows("SELECT id FROM legifrance_articles WHERE etat = ?", etat)}


def cids_in_force_twice(rig: Rig) -> list[str]:
    return [r["cid"] for r in rig.rows(
        "SELECT cid FROM legifrance_articles WHERE etat LIKE 'VIGUEUR%' GROUP BY cid HAVING count(*) > 1"
    )]


def in_force_rows(rig: Rig) -> set[str]:
    return {r["id"] for r in rig.rows("SELECT id FROM legifrance_articles WHERE etat LIKE 'VIGUEUR%'")}


@pytest.mark.parametrize("mode", [Mode.MAINTENANCE, Mode.MASSIVE])
def test_published_versions_supersede_exactly_the_old_rows(rig: Rig, mode: Mode) -> None:
    first = rig.pass_(min_chars=0)  # every in-force article stored: the counts are exact
    assert (first.superseded, first.repealed) == (0, 0)
    stored = rig.stored_ids()
    k = 7
    published = rig.server.publish(k)

    with capture_logs() as logs:
        summary = rig.pass_(mode, min_chars=0)
    assert summary.stored == k and (summary.superseded, summary.repealed) == (k, 0)
    assert by_etat(rig, "MODIFIE") == {p.previous_id for p in published}
    assert cids_in_force_twice(rig) == []
    assert in_force_rows(rig) == rig.in_force()  # exactly today's TOC, nothing stale
    assert rig.stored_ids() == stored | {p.id for p in published}  # history kept
    retired = [e for e in logs if e["event"] == "outdated rows retired"]
    assert {e["code_id"] for e in retired} >= {p.code_id for p in published}
    assert all(e["log_level"] == "info" for e in retired)
    assert sum(e["superseded"] for e in retired) == k and sum(e["repealed"] for e in retired) == 0
    assert rig.store.last_runs(1)[0]["summary"]["superseded"] == k

    again = rig.pass_(mode, min_chars=0, clock=lambda: datetime.now(timezone.utc) + timedelta(days=2))
    assert (again.superseded, again.repealed, again.fetched) == (0, 0, 0)


def test_repealed_articles_become_abroge(rig: Rig) -> None:
    rig.pass_()
    repealed = rig.server.repeal(4)
    stored_repealed = {r.id for r in repealed} & rig.stored_ids()
    assert stored_repealed  # the corpus's long articles are the majority

    summary = rig.pass_(Mode.MAINTENANCE)
    assert (summary.superseded, summary.repealed, summary.fetched) == (0, len(stored_repealed), 0)
    assert by_etat(rig, "ABROGE") == stored_repealed
    assert in_force_rows(rig) == rig.expected()
    assert cids_in_force_twice(rig) == []


def test_an_incomplete_walk_retires_nothing_until_it_completes(rig: Rig) -> None:
    codes = DEMO_MASSIVE_CODES[1:2]
    rig.pass_(codes=codes, min_chars=0)
    mark = rig.store.get_code_marks()[codes[0]]
    published = rig.server.publish(5, code_id=codes[0])
    old = {p.previous_id for p in published}

    rig.server.set_faults([FaultRule(FaultKind.NULL_ARTICLE, count=1, endpoint="get_article")])
    failed = rig.pass_(codes=codes, min_chars=0)
    assert (failed.failed, failed.stored, failed.superseded, failed.repealed) == (1, 4, 0, 0)
    assert old <= in_force_rows(rig) and by_etat(rig, "MODIFIE") == set()
    assert rig.store.get_code_marks()[codes[0]] == mark

    rig.server.set_faults([FaultRule(FaultKind.HTTP_500, count=2, endpoint="table_matieres")])
    toc_failed = rig.pass_(codes=codes, min_chars=0, client_kwargs={"max_attempts": 2})
    assert (toc_failed.codes_failed, toc_failed.superseded, toc_failed.repealed) == (1, 0, 0)
    assert old <= in_force_rows(rig)

    done = rig.pass_(codes=codes, min_chars=0)
    assert (done.failed, done.codes_failed, done.fetched, done.superseded) == (0, 0, 1, 5)
    assert by_etat(rig, "MODIFIE") == old and cids_in_force_twice(rig) == []


def test_maintenance_does_not_touch_a_code_skipped_as_unchanged(rig: Rig) -> None:
    code = DEMO_MASSIVE_CODES[0]
    rig.pass_(codes=[code])
    stale = "LEGIARTI000099899999"  # an older version of a stored article, still VIGUEUR
    with sqlite3.connect(rig.store.path) as conn:
        conn.execute(
            "INSERT INTO legifrance_articles SELECT ?, cid, code_id, code_title, num, etat, date_debut, date_fin, "
            "section_path, text, html, nota, content_sha256, collected_at FROM legifrance_articles WHERE id = ?",
            (stale, min(rig.expected([code]))),
        )
    assert len(cids_in_force_twice(rig)) == 1

    skipped = rig.pass_(Mode.MAINTENANCE, codes=[code])
    assert skipped.codes_unchanged == 1 and skipped.toc_requests == 0
    assert skipped.superseded == 0 and len(cids_in_force_twice(rig)) == 1

    later = datetime.now(timezone.utc) + timedelta(hours=25)  # the mark is old: walked again
    rewalk = rig.pass_(Mode.MAINTENANCE, codes=[code], clock=lambda: later)
    assert (rewalk.toc_requests, rewalk.fetched, rewalk.superseded) == (1, 0, 1)  # nothing to fetch
    assert by_etat(rig, "MODIFIE") == {stale} and cids_in_force_twice(rig) == []


def test_a_row_in_force_again_is_restored_without_refetching(rig: Rig) -> None:
    rig.pass_()
    victim = sorted(rig.expected())[3]
    with sqlite3.connect(rig.store.path) as conn:
        conn.execute("UPDATE legifrance_articles SET etat = 'MODIFIE' WHERE id = ?", (victim,))
    served = rig.served("get_article")
    summary = rig.pass_()
    assert rig.served("get_article") == served and summary.fetched == 0
    assert in_force_rows(rig) == rig.expected()


def test_a_failing_retire_is_reported_and_the_mark_not_saved(rig: Rig) -> None:
    class NoRetire(SqliteStore):
        def retire_absent(self, *args: object, **kwargs: object) -> tuple[int, int]:
            raise StoreError("database is busy")

    codes = DEMO_MASSIVE_CODES[:1]
    store = NoRetire(rig.store.path)
    try:
        summary = Rig(rig.transport, store).pass_(codes=codes)
    finally:
        store.close()
    assert any("could not retire" in e and "database is busy" in e for e in summary.errors)
    assert rig.stored_ids() == rig.expected(codes)  # the articles are stored
    assert codes[0] not in rig.store.get_code_marks()  # so the next pass walks it again
    assert rig.pass_(Mode.MAINTENANCE, codes=codes).toc_requests == 1
    assert codes[0] in rig.store.get_code_marks()
