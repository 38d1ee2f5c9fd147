"""Store.retire_absent: SqliteStore on real files, SupabaseStore's rpc through respx."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import respx

from collector.models import Article
from collector.store import SqliteStore, StoreError, StoreFatal
from collector.store.supabase import SupabaseStore
from tests.store.fake_postgrest import Fault, FakePostgrest
from tests.store.helpers import article

CODE = "LEGITEXT000099900001"
OTHER = "LEGITEXT000099900002"
URL = "https://abcdefghijklmnop.supabase.co"
KEY = "sb_secret_DO-NOT-LEAK-1a2b3c"


def version(cid: int, v: int, code_id: str = CODE, etat: str = "VIGUEUR") -> Article:
    """Version `v` of article `cid`: ids A<cid>_<v>, cid C<cid> (ids sort by version)."""
    return replace(article(cid * 10 + v, code_id), id=f"LEGIARTI{cid:08d}{v:04d}", cid=f"C{cid}", etat=etat)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "collector.sqlite3")
    yield s
    s.close()


def etats(store: SqliteStore) -> dict[str, str]:
    with sqlite3.connect(store.path) as conn:
        return dict(conn.execute("SELECT id, etat FROM legifrance_articles"))


def vigueur_per_cid(store: SqliteStore, code_id: str = CODE) -> dict[str, int]:
    with sqlite3.connect(store.path) as conn:
        return dict(conn.execute(
            "SELECT cid, count(*) FROM legifrance_articles WHERE code_id = ? AND etat LIKE 'VIGUEUR%' GROUP BY cid",
            (code_id,),
        ))


# ---- SQLite ---------------------------------------------------------------------------------------

def test_superseded_and_repealed_rows_are_retired_once(store: SqliteStore) -> None:
    old1, new1, a2, a3 = version(1, 1), version(1, 2), version(2, 1), version(3, 1)
    elsewhere = version(9, 1, OTHER)
    store.commit_batch([old1, a2, a3, elsewhere])
    # A database written before the change log could hold two "in force" rows of one cid.
    with sqlite3.connect(store.path) as conn:
        conn.execute(
            "INSERT INTO legifrance_articles SELECT ?, cid, code_id, code_title, num, etat, date_debut, date_fin, "
            "section_path, text, html, nota, content_sha256, collected_at FROM legifrance_articles WHERE id = ?",
            (new1.id, old1.id),
        )
    assert vigueur_per_cid(store)["C1"] == 2  # the defect: two "in force" texts for one article

    assert store.retire_absent(CODE, [new1.id, a2.id]) == (1, 1)
    assert etats(store) == {old1.id: "MODIFIE", new1.id: "VIGUEUR", a2.id: "VIGUEUR",
                            a3.id: "ABROGE", elsewhere.id: "VIGUEUR"}  # other codes untouched
    assert vigueur_per_cid(store) == {"C1": 1, "C2": 1}
    assert store.count_articles() == 5  # history kept
    assert store.retire_absent(CODE, [new1.id, a2.id]) == (0, 0)  # replay: nothing left to retire


def test_given_cids_label_a_row_whose_new_version_is_not_stored(store: SqliteStore) -> None:
    """The new version may be rejected (too short): its cid is only known from the TOC."""
    old1, a2 = version(1, 1), version(2, 1)
    store.commit_batch([old1, a2])
    new1 = version(1, 2)
    assert store.retire_absent(CODE, [new1.id, a2.id], [new1.cid, a2.cid]) == (1, 0)
    assert etats(store)[old1.id] == "MODIFIE"


def test_without_cids_an_unknown_new_version_reads_as_repealed(store: SqliteStore) -> None:
    old1 = version(1, 1)
    store.commit_batch([old1])
    assert store.retire_absent(CODE, [version(1, 2).id]) == (0, 1)
    assert etats(store)[old1.id] == "ABROGE"


def test_rows_already_retired_keep_their_etat_and_are_not_counted(store: SqliteStore) -> None:
    gone, old, current = version(1, 1, etat="ABROGE"), version(2, 1, etat="MODIFIE"), version(2, 2)
    store.commit_batch([gone, old, current])
    # gone's cid is "in force" per the given cids, but a row already not VIGUEUR is left alone.
    assert store.retire_absent(CODE, [current.id], ["C1", "C2"]) == (0, 0)
    assert etats(store) == {gone.id: "ABROGE", old.id: "MODIFIE", current.id: "VIGUEUR"}


def test_vigueur_diff_counts_as_in_force(store: SqliteStore) -> None:
    listed, unlisted = version(1, 1, etat="VIGUEUR_DIFF"), version(2, 1, etat="VIGUEUR_DIFF")
    store.commit_batch([listed, unlisted])
    assert store.retire_absent(CODE, [listed.id]) == (0, 1)
    assert etats(store) == {listed.id: "VIGUEUR_DIFF", unlisted.id: "ABROGE"}


def test_an_id_in_force_again_is_restored(store: SqliteStore) -> None:
    """A rolled-back change: the old id is listed again; it is known, so never refetched."""
    old, new = version(1, 1), version(1, 2)
    store.commit_batch([old, new])  # new retires old as it is stored
    assert store.retire_absent(CODE, [new.id]) == (0, 0)
    assert store.retire_absent(CODE, [old.id]) == (1, 0)  # rolled back: new superseded, old restored
    assert etats(store) == {old.id: "VIGUEUR", new.id: "MODIFIE"}
    assert vigueur_per_cid(store) == {"C1": 1}
    store.retire_absent(OTHER, [new.id])  # another code's TOC does not restore this code's rows
    assert etats(store)[new.id] == "MODIFIE"


def test_an_empty_toc_repeals_every_row_of_the_code_and_a_good_one_restores_them(store: SqliteStore) -> None:
    rows = [version(n, 1) for n in range(1, 6)]
    store.commit_batch(rows)
    assert store.retire_absent(CODE, []) == (0, 5)
    assert set(etats(store).values()) == {"ABROGE"}
    assert store.retire_absent(CODE, [r.id for r in rows]) == (0, 0)
    assert set(etats(store).values()) == {"VIGUEUR"}


def test_twelve_thousand_ids(store: SqliteStore) -> None:
    rows = [version(n, 1) for n in range(12_000)]
    store.commit_batch(rows)
    listed = [r.id for r in rows[:-10]]
    assert store.retire_absent(CODE, listed, [r.cid for r in rows[:-15]]) == (0, 10)
    assert store.retire_absent(CODE, set(listed)) == (0, 0)
    assert sum(1 for e in etats(store).values() if e == "VIGUEUR") == 11_990


@pytest.mark.parametrize(
    ("code_id", "ids", "cids", "error"),
    [
        (CODE, "LEGIARTI000000010001", None, TypeError),  # a bare string is a Collection[str] too
        (CODE, [1, 2], None, TypeError),
        (CODE, ["LEGIARTI000000010001"], "C1", TypeError),
        ("", ["LEGIARTI000000010001"], None, ValueError),
    ],
)
def test_bad_arguments_are_refused_and_change_nothing(
    store: SqliteStore, code_id: str, ids: object, cids: object, error: type[Exception]
) -> None:
    store.commit_batch([version(1, 1), version(2, 1)])
    with pytest.raises(error, match="retire_absent"):
        store.retire_absent(code_id, ids, cids)  # type: ignore[arg-type]
    assert set(etats(store).values()) == {"VIGUEUR"}


def test_locked_database_is_a_store_error_and_nothing_changes(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "locked.sqlite3", busy_timeout_s=0.05)
    try:
        store.commit_batch([version(1, 1), version(2, 1)])
        blocker = sqlite3.connect(store.path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreError, match="locked"):
                store.retire_absent(CODE, [])
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert set(etats(store).values()) == {"VIGUEUR"}
    finally:
        store.close()


# ---- Supabase (respx + fake PostgREST) ------------------------------------------------------------

@pytest.fixture
def fake() -> FakePostgrest:
    return FakePostgrest(KEY)


@pytest.fixture
def supabase(fake: FakePostgrest) -> Iterator[SupabaseStore]:
    with respx.mock(base_url=URL, assert_all_called=False) as router:
        router.route(path__startswith="/rest/v1/").mock(side_effect=fake.handle)
        s = SupabaseStore(URL, KEY, backoff=lambda attempt: 0.0)
        yield s
        s.close()


def rpc_calls(fake: FakePostgrest) -> list[httpx.Request]:
    return [r for r in fake.requests if r.url.path == "/rest/v1/rpc/collector_retire_absent_logged"]


def test_supabase_calls_the_function_with_the_ids_and_cids(supabase: SupabaseStore, fake: FakePostgrest) -> None:
    old1, new1, a2 = version(1, 1), version(1, 2), version(2, 1)
    supabase.commit_batch([old1, new1, a2])  # new1 retires old1 as it is stored
    result = supabase.retire_absent(CODE, [new1.id, new1.id], [new1.cid], tag="4")  # duplicates sent once
    assert result == (0, 1) and result.events == {"added": 0, "modified": 0, "repealed": 1, "corrected": 0}
    (call,) = rpc_calls(fake)
    assert call.method == "POST" and call.headers["authorization"] == f"Bearer {KEY}"
    assert json.loads(call.content) == {"p_code_id": CODE, "p_ids": [new1.id], "p_cids": [new1.cid], "p_tag": "4"}
    assert {r["id"]: r["etat"] for r in fake.rows("legifrance_articles")} == {
        old1.id: "MODIFIE", new1.id: "VIGUEUR", a2.id: "ABROGE",
    }
    supabase.retire_absent(CODE, [])
    assert json.loads(rpc_calls(fake)[-1].content) == {"p_code_id": CODE, "p_ids": [], "p_cids": [], "p_tag": None}
    assert [(c["kind"], c["id"], c["run_id"]) for c in supabase.read_changes()][-2:] == [
        ("repealed", a2.id, "4"), ("repealed", new1.id, None)]


def test_supabase_retries_the_call_and_reports_failures(supabase: SupabaseStore, fake: FakePostgrest) -> None:
    supabase.commit_batch([version(1, 1)])
    fake.fail_next(Fault(status=503, body="<html>Service Unavailable</html>", path_contains="retire"),
                   Fault(timeout=True, after=True, path_contains="retire"))  # done, answer lost
    assert supabase.retire_absent(CODE, []) == (0, 0)  # the replay finds nothing left to retire
    assert len(rpc_calls(fake)) == 3
    assert fake.rows("legifrance_articles")[0]["etat"] == "ABROGE"

    fake.fail_next(*[Fault(status=502, body="<html>Bad Gateway</html>", path_contains="retire")] * 5)
    with pytest.raises(StoreError, match="retiring") as caught:
        supabase.retire_absent(CODE, [])
    assert not isinstance(caught.value, StoreFatal) and KEY not in str(caught.value)


def test_supabase_missing_function_says_to_run_the_migration(supabase: SupabaseStore, fake: FakePostgrest) -> None:
    fake.fail_next(Fault(status=404, body={"code": "PGRST202", "message": "Could not find the function"}))
    with pytest.raises(StoreFatal, match="0001_collector.sql"):
        supabase.retire_absent(CODE, [])


def test_supabase_refuses_bad_arguments_without_a_request(supabase: SupabaseStore, fake: FakePostgrest) -> None:
    with pytest.raises(TypeError):
        supabase.retire_absent(CODE, "LEGIARTI000000010001")
    assert not rpc_calls(fake)


# ---- count_in_force: the guard's denominator --------------------------------------------------------

def test_count_in_force_counts_the_codes_vigueur_rows_only(store: SqliteStore) -> None:
    store.commit_batch([
        version(1, 1), version(1, 2), version(2, 1, etat="VIGUEUR_DIFF"), version(3, 1, etat="ABROGE"),
        version(4, 1, etat="MODIFIE"), version(9, 1, OTHER),
    ])
    # version(1, 2) retired version(1, 1) as it was stored
    assert (store.count_in_force(CODE), store.count_in_force(OTHER), store.count_in_force("LEGITEXT0")) == (2, 1, 0)
    store.retire_absent(CODE, [version(1, 2).id])
    assert store.count_in_force(CODE) == 1


def test_supabase_count_in_force_is_one_head_request_filtered_by_code_and_etat(
    supabase: SupabaseStore, fake: FakePostgrest
) -> None:
    supabase.commit_batch([
        version(1, 1), version(1, 2), version(2, 1, etat="VIGUEUR_DIFF"), version(3, 1, etat="ABROGE"),
        version(9, 1, OTHER),
    ])
    before = len(fake.requests)
    assert supabase.count_in_force(CODE) == 2  # version(1, 2) retired version(1, 1) as it was stored
    (call,) = fake.requests[before:]
    assert call.method == "HEAD" and call.headers["prefer"] == "count=exact"  # a count, no rows sent back
    assert dict(call.url.params) == {"select": "id", "code_id": f"eq.{CODE}", "etat": "like.VIGUEUR*"}
    assert (supabase.count_in_force(OTHER), supabase.count_in_force("LEGITEXT0")) == (1, 0)
    supabase.retire_absent(CODE, [version(1, 2).id])
    assert supabase.count_in_force(CODE) == 1

    fake.fail_next(*[Fault(status=502, body="<html>Bad Gateway</html>")] * 5)
    with pytest.raises(StoreError, match="counting the in-force articles") as caught:
        supabase.count_in_force(CODE)
    assert KEY not in str(caught.value)

