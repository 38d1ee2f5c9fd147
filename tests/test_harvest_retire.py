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
    # each new version retired the old one as it was stored; the walk's retire had nothing left
    assert sum(e["superseded"] for e in retired) == 0 and sum(e["repealed"] for e in retired) == 0
    assert summary.events == {"added": 0, "modified": k, "repealed": 0, "corrected": 0}
    run = rig.store.last_runs(1)[0]
    assert run["summary"]["superseded"] == k and run["summary"]["events"] == summary.events
    changes = rig.store.read_changes(since=len(stored), limit=100)
    assert {(c["kind"], c["id"], c["previous_id"], c["run_id"]) for c in changes} == {
        ("modified", p.id, p.previous_id, str(run["id"])) for p in published
    }

    again = rig.pass_(mode, min_chars=0, clock=lambda: datetime.now(timezone.utc) + timedelta(days=2))
    assert (again.superseded, again.repealed, again.fetched) == (0, 0, 0)
    assert sum(again.events.values()) == 0 and rig.store.latest_change_seq() == len(stored) + k


def test_repealed_articles_become_abroge(rig: Rig) -> None:
    rig.pass_()
    repealed = rig.server.repeal(4)
    stored_repealed = {r.id for r in repealed} & rig.stored_ids()
    assert stored_repealed  # the corpus's long articles are the majority

    summary = rig.pass_(Mode.MAINTENANCE)
    assert (summary.superseded, summary.repealed, summary.fetched) == (0, len(stored_repealed), 0)
    assert summary.events["repealed"] == len(stored_repealed) and sum(summary.events.values()) == len(stored_repealed)
    assert {c["id"] for c in rig.store.read_changes(limit=1000) if c["kind"] == "repealed"} == stored_repealed
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
    # the 4 new versions stored retired theirs at once; the walk itself retires nothing
    assert (failed.failed, failed.stored, failed.superseded, failed.repealed) == (1, 4, 4, 0)
    assert len(old & in_force_rows(rig)) == 1 and len(by_etat(rig, "MODIFIE")) == 4
    assert rig.store.get_code_marks()[codes[0]] == mark

    rig.server.set_faults([FaultRule(FaultKind.HTTP_500, count=2, endpoint="table_matieres")])
    toc_failed = rig.pass_(codes=codes, min_chars=0, client_kwargs={"max_attempts": 2})
    assert (toc_failed.codes_failed, toc_failed.superseded, toc_failed.repealed) == (1, 0, 0)
    assert len(old & in_force_rows(rig)) == 1

    done = rig.pass_(codes=codes, min_chars=0)
    assert (done.failed, done.codes_failed, done.fetched, done.superseded) == (0, 0, 1, 1)
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


# ---- the guard against a table of contents that would retire most of a code --------------------
def guard_warnings(logs: list[dict[str, object]]) -> list[dict[str, object]]:
    return [e for e in logs if e["event"] == "retire skipped: suspicious table of contents"]


def test_an_empty_toc_retires_nothing_and_the_code_is_walked_again(rig: Rig) -> None:
    code = DEMO_MASSIVE_CODES[2]
    rig.pass_(min_chars=0)
    mark = rig.store.get_code_marks()[code]
    before = in_force_rows(rig)
    published = rig.server.publish(3, code_id=code)  # lastUpdate moves: MAINTENANCE walks it

    rig.server.set_faults([FaultRule(FaultKind.EMPTY_TOC, count=1, endpoint="table_matieres")])
    with capture_logs() as logs:
        glitch = rig.pass_(Mode.MAINTENANCE, min_chars=0)
    assert (glitch.toc_requests, glitch.fetched, glitch.superseded, glitch.repealed) == (1, 0, 0, 0)
    assert in_force_rows(rig) == before  # nothing retired
    (warning,) = guard_warnings(logs)
    assert warning["log_level"] == "warning" and warning["code_id"] == code
    stored = rig.rows("SELECT count(*) AS n FROM legifrance_articles WHERE code_id = ? AND etat = 'VIGUEUR'", code)
    assert (warning["toc_in_force"], warning["stored_in_force"]) == (0, stored[0]["n"]) and stored[0]["n"] > 0
    (error,) = glitch.errors
    assert f"table of contents of {code} looks wrong: it lists 0 articles in force" in error
    assert rig.status.snapshot().last_error == error
    assert rig.store.last_runs(1)[0]["summary"]["errors"] == [error]
    assert rig.store.get_code_marks()[code] == mark  # not saved: lastUpdate still differs

    good = rig.pass_(Mode.MAINTENANCE, min_chars=0)
    assert (good.toc_requests, good.fetched, good.superseded, good.errors) == (1, 3, 3, [])
    assert by_etat(rig, "MODIFIE") == {p.previous_id for p in published}
    assert in_force_rows(rig) == rig.in_force()
    assert rig.store.get_code_marks()[code] != mark


def test_a_toc_missing_most_of_a_code_retires_nothing_but_a_small_code_or_share_retires(rig: Rig) -> None:
    big, small = DEMO_MASSIVE_CODES[4], DEMO_MASSIVE_CODES[0]
    rig.pass_(min_chars=0)
    in_force_big, in_force_small = len(rig.in_force([big])), len(rig.in_force([small]))
    assert in_force_big > 2 * 21 and in_force_small < 2 * 21

    gone_big = {r.id for r in rig.server.repeal(in_force_big // 2 + 1, code_id=big)}  # > 50 % and > 20 rows
    gone_small = {r.id for r in rig.server.repeal(in_force_small // 2 + 1, code_id=small)}  # > 50 %, < 20 rows
    with capture_logs() as logs:
        summary = rig.pass_(Mode.MAINTENANCE, min_chars=0)
    (warning,) = guard_warnings(logs)
    assert (warning["code_id"], warning["stored_in_force"]) == (big, in_force_big)
    assert warning["would_retire_at_least"] == len(gone_big)
    assert summary.repealed == len(gone_small) and by_etat(rig, "ABROGE") == gone_small
    assert gone_big <= in_force_rows(rig)
    assert any(e.startswith(f"table of contents of {big} looks wrong") for e in summary.errors)
    marks = rig.store.get_code_marks()
    assert marks[big].last_update is None  # still the first (MASSIVE) walk's mark: walked again next pass
    assert marks[small].last_update is not None
