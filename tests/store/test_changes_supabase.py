"""SupabaseStore's change-log readers and cursors over REST (real supabase-py, the fake PostgREST)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
import respx

from collector.store.rows import CHANGE_KEYS, article_row
from collector.store.supabase import SupabaseStore
from tests.store.fake_postgrest import FakePostgrest
from tests.store.helpers import article
from tests.store.test_changes import CODE, OTHER

URL = "https://abcdefghijklmnop.supabase.co"
KEY = "sb_secret_changes-3c2b1a"


@pytest.fixture
def fake() -> FakePostgrest:
    return FakePostgrest(KEY, max_rows=1000)


@pytest.fixture
def store(fake: FakePostgrest) -> Iterator[SupabaseStore]:
    with respx.mock(base_url=URL, assert_all_called=False) as router:
        router.route(path__startswith="/rest/v1/").mock(side_effect=fake.handle)
        s = SupabaseStore(URL, KEY, backoff=lambda attempt: 0.0)
        yield s
        s.close()


def test_read_changes_pages_past_the_row_cap_and_filters(store: SupabaseStore, fake: FakePostgrest) -> None:
    rows = [article(n, CODE if n % 2 else OTHER) for n in range(1, 2502)]
    store.commit_batch(rows, run_id=1)
    assert store.latest_change_seq() == 2501
    page = store.read_changes(since=10, limit=2400)
    assert [c["seq"] for c in page] == list(range(11, 2411))  # three requests under a 1000-row cap
    assert all(tuple(c) == CHANGE_KEYS for c in page)
    assert {c["code_id"] for c in store.read_changes(limit=50, code_id=OTHER)} == {OTHER}
    edited = replace(rows[0], text="Autre texte, corrigé sur place.", content_sha256="a" * 64)
    store.commit_batch([edited], tag="LEGI_X")
    (corrected,) = store.read_changes(since=2501, previous_text=True)
    assert (corrected["kind"], corrected["previous_text"], corrected["run_id"]) == ("corrected", rows[0].text, "LEGI_X")
    with pytest.raises(ValueError, match="read_changes"):
        store.read_changes(since=-1)


def test_get_articles_and_cursors(store: SupabaseStore) -> None:
    rows = [article(n) for n in range(1, 251)]
    store.commit_batch(rows)
    found = store.get_articles([r.id for r in rows] + ["LEGIARTI404"])
    assert found == {r.id: article_row(r) for r in rows}  # in chunks of ids, rows.py form
    assert store.get_cursor("export") == 0
    store.set_cursor("export", 120)
    store.set_cursor("export", 130)
    assert (store.get_cursor("export"), store.get_cursor("search")) == (130, 0)
    with pytest.raises(ValueError, match="set_cursor"):
        store.set_cursor("", 1)
