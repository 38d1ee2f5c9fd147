"""run_pass end to end: the real emulator in-process, the real client and budget, real SQLite."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import pytest

from collector.config import DEMO_API_BASE_URL, DEMO_OAUTH_URL, Mode
from collector.demo import (
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    DEMO_MASSIVE_CODES,
    DemoConfig,
    DemoServer,
    FaultKind,
    FaultRule,
    demo_transport,
)
from collector.demo.transport import DemoTransport
from collector.harvest import HarvestOptions, run_pass
from collector.legifrance import LegifranceAuthError, LegifranceClient
from collector.models import Article, PassSummary
from collector.ratelimit import RequestBudget
from collector.status import StatusBoard
from collector.store.sqlite import SqliteStore

T = TypeVar("T")
UNKNOWN_CODE = "LEGITEXT000099900099"  # demo range, not a demo code
TAG = re.compile(r"</?[a-zA-Z][^>]*>")


@dataclass
class Rig:
    """One emulator, one SQLite store, one status board shared by successive passes."""

    transport: DemoTransport
    store: SqliteStore
    status: StatusBoard = field(default_factory=StatusBoard)

    @property
    def server(self) -> DemoServer:
        return self.transport.server

    def served(self, endpoint: str) -> int:
        return int(self.server.stats()["requests"].get(endpoint, 0))

    def api_requests(self) -> int:
        return int(self.server.stats()["api_requests"])

    def expected(self, codes: Sequence[str] = DEMO_MASSIVE_CODES, min_chars: int = 100) -> set[str]:
        return self.server.expected_ids(codes, min_chars=min_chars)

    def in_force(self, codes: Sequence[str] = DEMO_MASSIVE_CODES) -> set[str]:
        return self.server.expected_ids(codes, min_chars=0)

    def stored_ids(self) -> set[str]:
        return set(self.store.iter_article_ids())

    def rows(self, sql: str, *params: Any) -> list[sqlite3.Row]:
        conn = sqlite3.connect(self.store.path)
        conn.row_factory = sqlite3.Row
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    async def client(self, **kwargs: Any) -> LegifranceClient:
        budget = RequestBudget(per_second=10_000, per_hour=10_000_000, per_day=100_000_000, max_in_flight=16)
        return LegifranceClient(
            client_id=DEMO_CLIENT_ID,
            client_secret=DEMO_CLIENT_SECRET,
            oauth_url=DEMO_OAUTH_URL,
            api_base_url=DEMO_API_BASE_URL,
            budget=budget,
            transport=self.transport,
            **{"backoff_base": 0.001, "backoff_cap": 0.01, **kwargs},
        )

    async def run(
        self,
        mode: Mode = Mode.MASSIVE,
        codes: Sequence[str] = DEMO_MASSIVE_CODES,
        interrupt: asyncio.Event | None = None,
        client_kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> PassSummary:
        client = await self.client(**(client_kwargs or {}))
        try:
            return await run_pass(
                mode,
                codes,
                client=client,
                store=self.store,
                status=self.status,
                options=HarvestOptions(**{"batch_size": 40, "max_in_flight": 6, **options}),
                interrupt=interrupt or asyncio.Event(),
            )
        finally:
            await client.aclose()

    def pass_(self, mode: Mode = Mode.MASSIVE, codes: Sequence[str] = DEMO_MASSIVE_CODES, **options: Any) -> PassSummary:
        return run_sync(self.run(mode, codes, **options))


def run_sync(coro: Awaitable[T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout=120))  # type: ignore[arg-type]


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    store = SqliteStore(tmp_path / "collector.sqlite3")
    yield Rig(demo_transport(DemoConfig(articles=300)), store)  # type: ignore[misc]
    store.close()


async def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


# ---- full passes ------------------------------------------------------------------------------
def test_first_pass_stores_every_expected_article_second_pass_fetches_nothing(rig: Rig) -> None:
    expected, in_force = rig.expected(), rig.in_force()
    assert 0 < len(expected) < len(in_force)  # the corpus has short articles to reject

    first = rig.pass_()
    assert rig.stored_ids() == expected
    assert rig.store.count_rejected() == len(in_force - expected)
    assert (first.fetched, first.stored, first.skipped, first.failed) == (
        len(in_force), len(expected), len(in_force - expected), 0
    )
    # Exactly one getArticle per in-force cid, despite the TOC repeating entries.
    assert rig.served("get_article") == len(in_force) == first.article_requests
    assert rig.served("table_matieres") == len(DEMO_MASSIVE_CODES) == first.toc_requests
    assert first.requests == rig.api_requests()
    assert rig.server.stats()["max_in_flight"] <= 6  # the worker pool's size

    snap = rig.status.snapshot()
    assert [p.state for p in snap.codes] == ["done"] * len(DEMO_MASSIVE_CODES)
    assert sum(p.stored for p in snap.codes) == snap.pass_stored == len(expected)
    assert snap.stored_total == len(expected) and snap.rejected_total == len(in_force - expected)
    assert snap.throughput and snap.throughput[-1][1] == len(expected)
    assert all(p.title and p.title.endswith("(DÉMO)") for p in snap.codes)  # titles from the API

    served_before = rig.served("get_article")
    second = rig.pass_()
    assert rig.served("get_article") == served_before
    assert (second.fetched, second.article_requests, second.requests) == (0, 0, len(DEMO_MASSIVE_CODES))
    assert rig.stored_ids() == expected

    runs = rig.store.last_runs(2)
    assert [r["summary"]["fetched"] for r in runs] == [0, len(in_force)]


def test_stored_rows_are_clean_and_complete(rig: Rig) -> None:
    rig.pass_(codes=DEMO_MASSIVE_CODES[:2])
    rows = rig.rows("SELECT * FROM legifrance_articles")
    assert rows
    titles = {DEMO_MASSIVE_CODES[0], DEMO_MASSIVE_CODES[1]}
    for row in rows:
        assert row["code_id"] in titles
        assert row["code_title"].endswith("(DÉMO)")
        assert row["etat"].startswith("VIGUEUR")
        assert row["section_path"] and " > " in row["section_path"]
        assert row["text"] and not TAG.search(row["text"]) and "&#" not in row["text"]
        assert len(row["text"]) >= 100
        assert row["html"].startswith("<") and len(row["content_sha256"]) == 64
        assert row["date_debut"]
    tables = [r for r in rows if "<table>" in r["html"]]
    assert tables, "the demo corpus has articles with tables"
    assert all("Catégorie | Montant (€)" in r["text"].split("\n") for r in tables)


def test_replayed_batches_change_nothing(rig: Rig, tmp_path: Path) -> None:
    class ForgetfulStore(SqliteStore):
        """Forgets what it holds, so the pass fetches and commits every article again."""

        def known_ids(self, code_id: str, min_chars: int) -> set[str]:
            return set()

    rig.pass_()
    columns = "id, cid, code_id, code_title, num, etat, date_debut, date_fin, section_path, text, html, nota, content_sha256"
    before = rig.rows(f"SELECT {columns} FROM legifrance_articles ORDER BY id")
    rejected_before = rig.store.count_rejected()
    forgetful = ForgetfulStore(rig.store.path)
    try:
        replay = Rig(rig.transport, forgetful).pass_()
    finally:
        forgetful.close()
    assert replay.stored == len(before)
    assert [tuple(r) for r in rig.rows(f"SELECT {columns} FROM legifrance_articles ORDER BY id")] == [
        tuple(r) for r in before
    ]
    assert rig.store.count_rejected() == rejected_before


def test_lowering_the_threshold_refetches_only_rejected_ids(rig: Rig) -> None:
    rig.pass_(min_chars=100)
    rejected = rig.in_force() - rig.expected()
    assert rejected
    served = rig.served("get_article")

    lowered = rig.pass_(min_chars=0)
    assert rig.served("get_article") - served == len(rejected) == lowered.fetched
    assert rig.stored_ids() == rig.in_force()
    assert rig.store.count_rejected() == 0  # stored articles leave the rejected ids

    served = rig.served("get_article")
    rig.pass_(min_chars=100)
    assert rig.served("get_article") == served


# ---- failures -------------------------------------------------------------------------------------
def test_unknown_code_fails_that_code_and_the_pass_goes_on(rig: Rig) -> None:
    good = DEMO_MASSIVE_CODES[0]
    summary = rig.pass_(codes=[UNKNOWN_CODE, good])
    assert summary.codes_failed == 1
    assert any(UNKNOWN_CODE in e for e in summary.errors)
    assert rig.stored_ids() == rig.expected([good])
    snap = rig.status.snapshot()
    failed = next(p for p in snap.codes if p.code_id == UNKNOWN_CODE)
    assert failed.state == "failed" and failed.error and UNKNOWN_CODE in failed.error
    assert snap.last_error and UNKNOWN_CODE in snap.last_error
    assert next(p for p in snap.codes if p.code_id == good).state == "done"
    assert UNKNOWN_CODE not in rig.store.get_code_marks()


def test_failed_articles_are_retried_next_pass(rig: Rig) -> None:
    codes = DEMO_MASSIVE_CODES[:1]
    rig.server.set_faults([FaultRule(FaultKind.NULL_ARTICLE, count=3, endpoint="get_article")])
    first = rig.pass_(codes=codes)
    assert first.failed == 3
    assert len(rig.stored_ids()) + rig.store.count_rejected() == len(rig.in_force(codes)) - 3
    assert codes[0] not in rig.store.get_code_marks()  # not a complete walk
    served = rig.served("get_article")

    second = rig.pass_(codes=codes)
    assert (second.failed, second.fetched) == (0, 3)
    assert rig.served("get_article") - served == 3
    assert rig.stored_ids() == rig.expected(codes)
    assert codes[0] in rig.store.get_code_marks()


def test_article_failing_after_retries_is_counted_not_stored(rig: Rig) -> None:
    codes = DEMO_MASSIVE_CODES[:1]
    rig.server.set_faults([FaultRule(FaultKind.HTTP_500, count=2, endpoint="get_article")])
    summary = rig.pass_(codes=codes, max_in_flight=1, client_kwargs={"max_attempts": 2})
    assert summary.failed == 1
    assert len(rig.stored_ids()) + rig.store.count_rejected() == len(rig.in_force(codes)) - 1
    assert rig.status.snapshot().pass_failed == 1


def test_auth_error_ends_the_pass_after_committing(rig: Rig) -> None:
    rig.server.update(forbidden=True)
    with pytest.raises(LegifranceAuthError):
        rig.pass_()
    run = rig.store.last_runs(1)[0]
    assert run["finished_at"] is not None
    assert any("LegifranceAuthError" in e for e in run["summary"]["errors"])


def test_auth_error_mid_code_commits_what_was_fetched(rig: Rig) -> None:
    codes = DEMO_MASSIVE_CODES[:1]

    async def scenario() -> int:
        task = asyncio.create_task(rig.run(codes=codes, batch_size=1000, max_in_flight=2))
        await wait_until(lambda: rig.status.snapshot().pass_fetched >= 10)
        rig.server.update(forbidden=True)
        with pytest.raises(LegifranceAuthError):
            await task
        return rig.status.snapshot().pass_fetched

    fetched = run_sync(scenario())
    assert fetched >= 10
    assert len(rig.stored_ids()) + rig.store.count_rejected() == fetched  # batch of 1000 never filled


# ---- interrupt and cancellation ------------------------------------------------------------------
def test_interrupt_mid_pass_commits_fetched_and_next_pass_completes(rig: Rig) -> None:
    async def scenario() -> PassSummary:
        interrupt = asyncio.Event()
        task = asyncio.create_task(rig.run(interrupt=interrupt, batch_size=1000))
        await wait_until(lambda: rig.status.snapshot().pass_fetched >= 40)
        rig.server.update(latency_ms=60_000)  # requests now hang: the interrupt must cut them
        await asyncio.sleep(0.05)
        interrupt.set()
        return await asyncio.wait_for(task, timeout=30)

    summary = run_sync(scenario())
    assert summary.interrupted
    assert summary.fetched >= 40
    assert len(rig.stored_ids()) + rig.store.count_rejected() == summary.fetched
    assert summary.stored == len(rig.stored_ids())
    assert rig.store.last_runs(1)[0]["summary"]["interrupted"] is True

    rig.server.update(latency_ms=0)
    served = rig.served("get_article")
    second = rig.pass_()
    assert not second.interrupted
    assert second.fetched == len(rig.in_force()) - summary.fetched  # nothing fetched twice
    assert rig.served("get_article") - served == second.fetched
    assert rig.stored_ids() == rig.expected()
    count = rig.rows("SELECT count(*) AS n, count(DISTINCT cid) AS cids FROM legifrance_articles")[0]
    assert count["n"] == count["cids"] == len(rig.expected())


def test_interrupt_before_start_makes_no_request(rig: Rig) -> None:
    async def scenario() -> PassSummary:
        interrupt = asyncio.Event()
        interrupt.set()
        return await rig.run(interrupt=interrupt)

    summary = run_sync(scenario())
    assert summary.interrupted and summary.fetched == 0
    assert rig.api_requests() == 0


def test_cancelled_pass_commits_what_it_fetched(rig: Rig) -> None:
    async def scenario() -> int:
        task = asyncio.create_task(rig.run(batch_size=1000))
        await wait_until(lambda: rig.status.snapshot().pass_fetched >= 25)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return rig.status.snapshot().pass_fetched

    fetched = run_sync(scenario())
    assert len(rig.stored_ids()) + rig.store.count_rejected() == fetched


def test_a_slow_batch_is_committed_on_time_not_only_when_full(rig: Rig) -> None:
    """A process killed more often than a batch takes to fill must still make progress."""

    async def scenario() -> tuple[int, int]:
        rig.server.update(latency_ms=200)  # ~30 articles/s with 6 in flight: a code takes seconds
        task = asyncio.create_task(rig.run(batch_size=1000, commit_every_s=0.2))
        try:
            await wait_until(lambda: bool(rig.stored_ids()), timeout=30)
            first = rig.status.snapshot().codes[0]
            return first.fetched, first.total
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    fetched, total = run_sync(scenario())
    assert 0 < fetched < total  # committed while the first code was still being fetched


class BatchRecordingStore(SqliteStore):
    """The real SQLite store, remembering the characters of html + text of each committed article,
    batch by batch."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.batches: list[list[int]] = []

    def commit_batch(self, articles: Sequence[Article], *args: Any, **kwargs: Any) -> dict[str, int]:
        events = super().commit_batch(articles, *args, **kwargs)
        if articles:
            self.batches.append([len(a.html) + len(a.text) for a in articles])
        return events


def test_a_batch_of_big_articles_is_committed_before_it_is_full(tmp_path: Path) -> None:
    """Up to batch_size answers of up to LEGIFRANCE_MAX_BODY_BYTES each would be held at once:
    the batch is also cut at batch_chars characters of html + text."""
    store = BatchRecordingStore(tmp_path / "collector.sqlite3")
    rig = Rig(demo_transport(DemoConfig(articles=300)), store)  # type: ignore[arg-type]
    try:
        summary = rig.pass_(batch_size=1000, commit_every_s=60, batch_chars=5_000)
    finally:
        store.close()
    assert summary.stored == len(rig.expected()) and summary.failed == 0
    assert len(store.batches) > len(DEMO_MASSIVE_CODES)  # more than the one batch per code
    assert all(sum(sizes[:-1]) < 5_000 for sizes in store.batches)  # cut by the article crossing it


def test_commit_every_must_be_positive() -> None:
    with pytest.raises(ValueError, match="commit_every_s"):
        HarvestOptions(commit_every_s=0)


# ---- MAINTENANCE: pay only for what changed --------------------------------------------------------
def test_maintenance_on_an_unchanged_corpus_only_lists_codes(rig: Rig) -> None:
    rig.pass_(Mode.MASSIVE)
    before = rig.server.stats()["requests"]

    summary = rig.pass_(Mode.MAINTENANCE)
    after = rig.server.stats()["requests"]
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert delta.get("list_code") == 1
    assert delta.get("table_matieres", 0) == 0 and delta.get("get_article", 0) == 0
    assert summary.codes_unchanged == len(DEMO_MASSIVE_CODES)
    assert {p.state for p in rig.status.snapshot().codes} == {"unchanged"}


def test_maintenance_rewalks_codes_older_than_a_day_without_getarticle(rig: Rig) -> None:
    rig.pass_(Mode.MASSIVE)
    later = datetime.now(timezone.utc) + timedelta(hours=25)
    before = rig.server.stats()["requests"]

    summary = rig.pass_(Mode.MAINTENANCE, clock=lambda: later)
    after = rig.server.stats()["requests"]
    assert after["table_matieres"] - before["table_matieres"] == len(DEMO_MASSIVE_CODES)
    assert after.get("get_article", 0) == before.get("get_article", 0)
    assert summary.requests == 1 + len(DEMO_MASSIVE_CODES)  # the list call + one TOC per code
    marks = rig.store.get_code_marks()
    assert all(marks[c].walked_at == later and marks[c].last_update for c in DEMO_MASSIVE_CODES)


def test_maintenance_fetches_exactly_the_published_versions(rig: Rig) -> None:
    rig.pass_(Mode.MASSIVE)
    k = 7
    published = rig.server.publish(k)
    changed_codes = {p.code_id for p in published}
    before = rig.server.stats()["requests"]

    summary = rig.pass_(Mode.MAINTENANCE)
    after = rig.server.stats()["requests"]
    assert after["get_article"] - before["get_article"] == k == summary.fetched
    # Only the codes whose lastUpdate moved had their TOC fetched.
    assert after["table_matieres"] - before["table_matieres"] == len(changed_codes)
    assert summary.codes_unchanged == len(DEMO_MASSIVE_CODES) - len(changed_codes)
    assert rig.expected() <= rig.stored_ids()
    new_ids = {p.id for p in published}
    assert new_ids & rig.expected() <= rig.stored_ids()

    # And once more: nothing new, nothing fetched.
    again = rig.pass_(Mode.MAINTENANCE)
    assert again.fetched == 0 and again.codes_unchanged == len(DEMO_MASSIVE_CODES)


def test_maintenance_falls_back_to_every_toc_when_list_code_fails(rig: Rig) -> None:
    rig.pass_(Mode.MASSIVE)
    rig.server.set_faults([FaultRule(FaultKind.HTTP_503, count=2, endpoint="list_code")])
    before = rig.served("table_matieres")
    summary = rig.pass_(Mode.MAINTENANCE, client_kwargs={"max_attempts": 2})
    assert rig.served("table_matieres") - before == len(DEMO_MASSIVE_CODES)
    assert summary.fetched == 0 and summary.codes_unchanged == 0
    assert any("/list/code" in e for e in summary.errors)


def test_random_faults_converge_to_the_expected_set(rig: Rig) -> None:
    rig.server.set_faults(rate=0.3)  # 500, 503, dropped connections, truncated JSON, null articles
    failed_total = 0
    for _ in range(15):
        summary = rig.pass_(client_kwargs={"max_attempts": 2})
        failed_total += summary.failed + summary.codes_failed
        if summary.failed == 0 and summary.codes_failed == 0:
            break
    assert failed_total > 0  # the faults did hit
    assert rig.stored_ids() == rig.expected()
    assert rig.store.count_rejected() == len(rig.in_force() - rig.expected())


def test_locked_database_commit_is_retried(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "locked.sqlite3", busy_timeout_s=0.05)
    rig = Rig(demo_transport(DemoConfig(articles=300, latency_ms=5)), store)
    codes = DEMO_MASSIVE_CODES[:1]

    async def scenario() -> tuple[PassSummary, int, int]:
        task = asyncio.create_task(rig.run(codes=codes, batch_size=10, commit_attempts=6, commit_backoff_s=0.2))
        await wait_until(lambda: rig.status.snapshot().pass_fetched >= 2)
        blocker = sqlite3.connect(store.path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")  # another writer holds the database for a while
        await asyncio.sleep(1.0)
        snap = rig.status.snapshot()
        blocker.execute("ROLLBACK")
        blocker.close()
        return await task, snap.pass_fetched, snap.pass_stored

    try:
        summary, fetched_while_locked, stored_while_locked = run_sync(scenario())
        assert stored_while_locked == 0  # the first batch of 10 waited for the lock...
        # ...while the pool kept at most batch_size + max_in_flight articles in memory.
        assert 10 <= fetched_while_locked <= 10 + 6
        assert summary.failed == 0
        assert rig.stored_ids() == rig.expected(codes)
    finally:
        store.close()
