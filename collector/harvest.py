"""One pass over a list of codes: TOC -> in-force ids -> drop known -> fetch -> clean -> store.

Per code: tableMatieres (today), reduced to its in-force entries as the body streams in (the
client's TocParser) -> ids minus `store.known_ids` -> a fixed pool of `max_in_flight` worker
coroutines pulls the remaining entries from one iterator and calls getArticle -> the pass turns
each answer into an Article / Rejected -> commits in batches of `batch_size`. At most
batch_size + max_in_flight articles are held at any time.

Failure policy:
* unknown code (LegifranceNotFound) or a TOC that fails after the client's retries: that code
  fails (status, summary, log) and the pass goes on;
* an article that fails after retries (an answer over the client's time or size bounds or one
  that cannot be decoded included), a null article, an article whose id is not the one asked
  for, or one whose fields cannot be read: counted `failed`, not stored, not remembered ->
  retried next pass;
* LegifranceAuthError, LegifranceTokenError (no token within the client's retry window: every
  other code would wait the same), StoreFatal, or a StoreError still failing after
  `commit_attempts`: the pass commits what it fetched (where the store still can) and raises.

Interrupt: when `interrupt` is set the in-flight requests (and budget waits) are cancelled at
once, what was fetched is committed (shielded from cancellation) and the summary comes back
with interrupted=True. A cancelled pass also commits what it fetched before re-raising.

MAINTENANCE pays only for what changed: one /list/code call, then a code whose `lastUpdate`
has not moved since its last complete walk (less than `mark_max_age` ago) is skipped without
any request. Any other code has its TOC fetched and diffed against the store (no getArticle
for known ids). A new version retires the one in force as it is stored (the store's commit,
with its `modified` event). After a complete, failure-free walk the code's stored rows that
left today's TOC are retired (MODIFIE / ABROGE, never deleted: one VIGUEUR row per cid), then
its mark is saved; a failed or interrupted walk retires nothing. A TOC that would retire most of the
code (retire_guard.py: none in force while rows are, or over half of them and more than 20) is
taken for an API glitch: nothing is retired, the code is reported
and its mark is not saved, so the next pass walks it again.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

import structlog

from collector.clock import as_utc, utcnow
from collector.config import Mode, parse_mode
from collector.jsonable import jsonable
from collector.legifrance import (
    LegifranceAuthError,
    LegifranceClient,
    LegifranceError,
    LegifranceNotFound,
    LegifranceTokenError,
)
from collector.models import Article, CodeMark, CodeProgress, CodeToc, PassSummary, Rejected, TocEntry
from collector.parse import ArticleError, TocError, article_from_api
from collector.retire_guard import retiring_looks_wrong
from collector.retry import backoff_delay, retry_async
from collector.status import StatusBoard
from collector.store.base import Store, StoreError, StoreFatal

log = structlog.get_logger(__name__)

T = TypeVar("T")

# API errors that end the pass (raised) instead of failing one code or one article.
PASS_ENDING = (LegifranceAuthError, LegifranceTokenError)


@dataclass(frozen=True, slots=True)
class HarvestOptions:
    min_chars: int = 100
    batch_size: int = 100  # articles per commit (bounded memory, bounded loss on kill)
    # ... or fewer, once the uncommitted articles hold this many characters of html + text: a
    # batch of big answers (each up to LEGIFRANCE_MAX_BODY_BYTES) stays small in memory too.
    batch_chars: int = 16_000_000
    # ... or fewer, once the oldest uncommitted article is this old: on a slow API a batch can
    # take many seconds to fill, and a process killed more often than that would never progress.
    commit_every_s: float = 2.0
    max_in_flight: int = 8  # concurrent getArticle requests (the budget caps them too)
    commit_attempts: int = 4  # tries of a commit failing with a transient StoreError
    commit_backoff_s: float = 0.5  # pause before the 2nd try, doubled for each next one
    mark_max_age: timedelta = timedelta(hours=24)  # MAINTENANCE re-walks a code at least this often
    clock: Callable[[], datetime] = field(default=utcnow)  # aware UTC datetimes

    def __post_init__(self) -> None:
        for name in ("batch_size", "batch_chars", "max_in_flight", "commit_attempts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"HarvestOptions.{name} must be an integer >= 1, got {value!r}")
        if self.min_chars < 0:
            raise ValueError(f"HarvestOptions.min_chars must be >= 0, got {self.min_chars!r}")
        if not self.commit_every_s > 0:
            raise ValueError(f"HarvestOptions.commit_every_s must be > 0, got {self.commit_every_s!r}")


class _Interrupted(Exception):
    """The interrupt event was set while waiting for a request."""


@dataclass(frozen=True, slots=True)
class _Failed:
    """An id that failed for this pass (retried next pass)."""

    entry: TocEntry
    reason: str


@dataclass(frozen=True, slots=True)
class _Fatal:
    """An error that ends the pass, raised by the consumer."""

    error: BaseException


_STOP = object()  # put in the result queue when the interrupt fires


def summary_as_dict(summary: PassSummary) -> dict[str, Any]:
    """PassSummary as a JSON-ready dict (datetimes as ISO strings)."""
    return jsonable(asdict(summary))  # type: ignore[no-any-return]


async def _shielded(awaitable: Awaitable[T]) -> T:
    """Await to completion even if the caller is cancelled meanwhile; the cancellation is
    re-raised afterwards (a failure of the awaited work is then logged, not lost)."""
    task = asyncio.ensure_future(awaitable)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():
                raise
            cancelled = True
        except BaseException:  # noqa: BLE001 - task.result() below re-raises it
            break
    if cancelled:
        if not task.cancelled() and task.exception() is not None:
            log.error("work finished during cancellation failed", error=str(task.exception()))
        raise asyncio.CancelledError
    return task.result()


def _day(value: Any) -> str | None:
    """'YYYY-MM-DD' of a date-ish API string ('2023-05-21T00:00:00.000+0000' -> '2023-05-21')."""
    return value[:10] if isinstance(value, str) and len(value) >= 10 else None


class _Pass:
    """State of one run_pass call."""

    def __init__(
        self,
        mode: Mode,
        codes: Sequence[str],
        client: LegifranceClient,
        store: Store,
        status: StatusBoard,
        options: HarvestOptions,
        interrupt: asyncio.Event,
    ) -> None:
        self.mode = parse_mode(mode)
        self.codes = list(dict.fromkeys(codes))
        self.client = client
        self.store = store
        self.status = status
        self.opt = options
        self.interrupt = interrupt
        self.summary = PassSummary(mode=str(self.mode), codes=len(self.codes), started_at=options.clock())
        self.today = self.summary.started_at.date()  # type: ignore[union-attr]  # the TOC's date (UTC)
        self.run_id: int | None = None
        self.listing: dict[str, dict[str, Any]] | None = None
        self.marks: dict[str, CodeMark] = {}

    # ---- pass --------------------------------------------------------------------------------
    async def run(self) -> None:
        self.run_id = await asyncio.to_thread(self.store.start_run, str(self.mode), self.codes)
        with self.status.update() as s:
            s.codes = [CodeProgress(code_id=c) for c in self.codes]
            s.pass_fetched = s.pass_stored = s.pass_skipped = s.pass_failed = 0
        log.info("pass start", mode=str(self.mode), codes=len(self.codes), run_id=self.run_id)
        try:
            self.marks = await asyncio.to_thread(self.store.get_code_marks)
            if self.mode is Mode.MAINTENANCE:
                self.listing = await self._list_codes()
            for code_id in self.codes:
                if self.interrupt.is_set():
                    raise _Interrupted
                await self._code(code_id)
        except _Interrupted:
            self.summary.interrupted = True
            log.info("pass interrupted", mode=str(self.mode))
            with self.status.update() as s:
                if s.current_code is not None:
                    p = self.status.progress(s.current_code)
                    if p.state in ("walking", "fetching"):
                        p.state = "interrupted"
        finally:
            with self.status.update() as s:
                s.current_code = None

    async def _interruptible(self, request: Callable[[], Awaitable[T]]) -> T:
        """Await a request, giving up (and cancelling it) as soon as the interrupt is set;
        not even started when it already is."""
        if self.interrupt.is_set():
            raise _Interrupted
        task = asyncio.ensure_future(request())
        waiter = asyncio.ensure_future(self.interrupt.wait())
        try:
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if task.cancelled():
            raise _Interrupted
        return task.result()

    async def _list_codes(self) -> dict[str, dict[str, Any]] | None:
        """cid/id -> /list/code item; None (walk every TOC) when the call fails."""
        try:
            items = await self._interruptible(self.client.list_codes)
        except PASS_ENDING:
            raise
        except LegifranceError as exc:
            message = f"/list/code failed, walking every table of contents instead: {exc}"
            log.warning("list_codes failed; walking every TOC", error=str(exc))
            self.summary.errors.append(message)
            return None
        listing: dict[str, dict[str, Any]] = {}
        for item in items:
            for key in (item.get("id"), item.get("cid")):
                if isinstance(key, str):
                    listing.setdefault(key, item)
        return listing

    # ---- one code ----------------------------------------------------------------------------
    def _unchanged(self, mark: CodeMark | None, last_update: str | None) -> bool:
        """lastUpdate has not moved since the last complete walk, which is recent enough."""
        if mark is None or mark.walked_at is None or last_update is None:
            return False
        if self.opt.clock() - as_utc(mark.walked_at) >= self.opt.mark_max_age:
            return False
        if mark.last_update is not None:
            return mark.last_update == last_update
        # Marks from a MASSIVE walk hold the TOC modifDate, which equals /list/code lastUpdate.
        return mark.modif_date is not None and _day(last_update) == mark.modif_date

    async def _code(self, code_id: str) -> None:
        item = self.listing.get(code_id) if self.listing is not None else None
        last_update = item.get("lastUpdate") if item else None
        last_update = last_update if isinstance(last_update, str) else None
        listed_title = item.get("titre") if item else None
        mark = self.marks.get(code_id)
        with self.status.update() as s:
            s.current_code = code_id
            p = self.status.progress(code_id)
            p.state = "walking"
            p.title = listed_title if isinstance(listed_title, str) else (mark.title if mark else None)

        if self.mode is Mode.MAINTENANCE and self._unchanged(mark, last_update):
            self.summary.codes_unchanged += 1
            with self.status.update():
                self.status.progress(code_id).state = "unchanged"
            log.info("code unchanged", code_id=code_id, title=mark.title if mark else None,
                     last_update=last_update)
            return

        toc = await self._toc(code_id)
        if toc is None:
            return

        known = await asyncio.to_thread(self.store.known_ids, code_id, self.opt.min_chars)
        to_fetch = [e for e in toc.entries if e.id not in known]
        with self.status.update():
            p = self.status.progress(code_id)
            p.title, p.total = toc.title, len(toc.entries)
            p.known, p.state = len(toc.entries) - len(to_fetch), "fetching"
        log.info(
            "code walked",
            code_id=code_id,
            title=toc.title,
            total=len(toc.entries),
            known=len(toc.entries) - len(to_fetch),
            to_fetch=len(to_fetch),
            toc_unchanged=bool(mark and mark.modif_date == toc.modif_date),
        )
        try:
            complete = await self._fetch_all(toc, to_fetch)
        except PASS_ENDING as exc:
            self._code_failed(code_id, f"getArticle for {code_id} ended the pass: {exc}")
            raise
        if self.interrupt.is_set() and not complete:
            raise _Interrupted
        with self.status.update():
            self.status.progress(code_id).state = "done"
        title, modif_date = toc.title, toc.modif_date
        ids, cids = [e.id for e in toc.entries], [e.cid for e in toc.entries]
        del toc, to_fetch, known  # the entries go before the retire's own work: flat memory
        if complete and await self._retire(code_id, ids, cids):
            if last_update is None and mark is not None and mark.modif_date == modif_date:
                last_update = mark.last_update  # still true: the TOC did not change
            new_mark = CodeMark(code_id=code_id, title=title, modif_date=modif_date,
                                last_update=last_update, walked_at=self.opt.clock())
            await asyncio.to_thread(self.store.set_code_mark, new_mark)

    async def _toc(self, code_id: str) -> CodeToc | None:
        """The code's table of contents, or None once its failure is recorded; a refused
        token raises."""
        try:
            return await self._interruptible(lambda: self.client.table_matieres(code_id, self.today))
        except PASS_ENDING as exc:
            self._code_failed(code_id, f"table of contents of {code_id}: {exc}")
            raise
        except LegifranceNotFound as exc:
            self._code_failed(code_id, f"unknown code {code_id}: {exc}")
        except (LegifranceError, TocError) as exc:
            self._code_failed(code_id, f"table of contents of {code_id} failed: {exc}")
        return None

    async def _retire(self, code_id: str, ids: list[str], cids: list[str]) -> bool:
        """After a complete walk, retire the code's stored rows that left today's TOC (see
        Store.retire_absent). False when the store failed or the TOC looks wrong (`_suspicious`):
        the code's mark is then not saved, so the next pass walks it again and retries."""
        try:
            in_force = await asyncio.to_thread(self.store.count_in_force, code_id)
            if self._suspicious(code_id, len(ids), in_force):
                return False
            retired = await asyncio.to_thread(self.store.retire_absent, code_id, ids, cids, tag=self._tag())
        except StoreFatal:
            raise
        except StoreError as exc:
            message = f"could not retire the outdated rows of {code_id}: {exc}"
            self.summary.errors.append(message)
            self.status.error(message)
            log.error("retire failed", code_id=code_id, error=str(exc))
            return False
        superseded, repealed = retired
        self.summary.superseded += superseded
        self.summary.repealed += repealed
        self._count_events(retired.events)
        log.info("outdated rows retired", code_id=code_id, superseded=superseded, repealed=repealed,
                 events=retired.events)
        return True

    def _suspicious(self, code_id: str, listed: int, in_force: int) -> bool:
        """True (reported) when a TOC of `listed` entries would retire most of the code's
        `in_force` rows. Each entry keeps at most one row in force, so at least
        `in_force - listed` would go."""
        if not retiring_looks_wrong(listed, in_force):
            return False
        at_least = in_force - listed
        message = (
            f"table of contents of {code_id} looks wrong: it lists {listed} articles in force "
            f"while the store holds {in_force}; retiring would take at least {at_least} of them out "
            "of force, so nothing was retired and the code will be walked again next pass"
        )
        self.summary.errors.append(message)
        self.status.error(message)
        with self.status.update():
            self.status.progress(code_id).error = message
        log.warning("retire skipped: suspicious table of contents", code_id=code_id,
                    toc_in_force=listed, stored_in_force=in_force, would_retire_at_least=at_least)
        return True

    def _code_failed(self, code_id: str, message: str) -> None:
        self.summary.codes_failed += 1
        self.summary.errors.append(message)
        log.error("code failed", code_id=code_id, error=message)
        self.status.error(message)
        with self.status.update():
            p = self.status.progress(code_id)
            p.state, p.error = "failed", message

    # ---- fetching ----------------------------------------------------------------------------
    async def _fetch_all(self, toc: CodeToc, to_fetch: list[TocEntry]) -> bool:
        """Fetch and store `to_fetch`; True when every id ended stored or rejected."""
        if not to_fetch:
            return True
        queue: asyncio.Queue[Any] = asyncio.Queue()
        room = asyncio.Semaphore(self.opt.max_in_flight)  # in flight + queued results
        entries = iter(to_fetch)
        workers = [
            asyncio.create_task(self._worker(entries, room, queue))
            for _ in range(min(self.opt.max_in_flight, len(to_fetch)))
        ]
        watcher = asyncio.create_task(self._watch(workers, queue))
        articles: list[Article] = []
        rejected: list[Rejected] = []
        received = failures = held = 0  # held: characters of the uncommitted articles
        loop = asyncio.get_running_loop()
        due: float | None = None  # when the oldest uncommitted result must be committed
        try:
            while received < len(to_fetch):
                try:
                    # asyncio.timeout_at, not wait_for: 3.11's wait_for can swallow a cancel.
                    async with asyncio.timeout_at(due):
                        item = await queue.get()
                except TimeoutError:
                    item = None
                if item is _STOP:
                    break
                if item is not None:
                    room.release()
                    if isinstance(item, _Fatal):
                        raise item.error
                    received += 1
                    before = len(articles)
                    failures += self._absorb(toc, item, articles, rejected)
                    if len(articles) > before:
                        held += len(articles[-1].html) + len(articles[-1].text)
                    if due is None and (articles or rejected):
                        due = loop.time() + self.opt.commit_every_s
                pending = len(articles) + len(rejected)
                full = pending >= self.opt.batch_size or held >= self.opt.batch_chars
                if pending and (full or loop.time() >= (due or 0.0)):
                    batch_a, batch_r = articles[:], rejected[:]
                    articles.clear()
                    rejected.clear()
                    due, held = None, 0
                    await _shielded(self._commit(toc.code_id, batch_a, batch_r))
        finally:
            # Runs on success, interrupt, fatal error and cancellation alike.
            await _shielded(self._wind_down(toc, workers, watcher, queue, articles, rejected))
        return received == len(to_fetch) and failures == 0

    async def _worker(
        self, entries: Iterator[TocEntry], room: asyncio.Semaphore, queue: asyncio.Queue[Any]
    ) -> None:
        while not self.interrupt.is_set():
            await room.acquire()
            entry = next(entries, None)
            if entry is None:
                room.release()
                return
            try:
                data = await self.client.get_article(entry.id)
            except PASS_ENDING as exc:
                queue.put_nowait(_Fatal(exc))
                return
            except LegifranceError as exc:
                queue.put_nowait(_Failed(entry, str(exc)))
                continue
            except Exception as exc:  # noqa: BLE001 - a bug or an unwrapped error ends the pass
                queue.put_nowait(_Fatal(exc))
                return
            if data is None:
                queue.put_nowait(_Failed(entry, f"getArticle({entry.id}) returned no article"))
            else:
                queue.put_nowait((entry, data))

    async def _watch(self, workers: list[asyncio.Task[None]], queue: asyncio.Queue[Any]) -> None:
        await self.interrupt.wait()
        for worker in workers:
            worker.cancel()  # cancels in-flight requests and budget waits at once
        queue.put_nowait(_STOP)

    def _absorb(
        self, toc: CodeToc, item: Any, articles: list[Article], rejected: list[Rejected]
    ) -> int:
        """Turn one worker result into an Article / Rejected; 1 when it is a failure."""
        if isinstance(item, tuple):
            entry, data = item
            try:
                result = article_from_api(data, entry, toc, self.opt.min_chars, self.opt.clock())
            except ArticleError as exc:
                item = _Failed(entry, str(exc))
            except (RecursionError, MemoryError) as exc:  # a hostile body: that article's failure
                item = _Failed(entry, f"getArticle({entry.id}) answer could not be read: {type(exc).__name__}")
            else:
                (articles if isinstance(result, Article) else rejected).append(result)  # type: ignore[arg-type]
                self.summary.fetched += 1
                with self.status.update() as s:
                    s.pass_fetched += 1
                    self.status.progress(toc.code_id).fetched += 1
                log.debug("article fetched", id=entry.id, kept=isinstance(result, Article))
                return 0
        assert isinstance(item, _Failed)
        self.summary.failed += 1
        if len(self.summary.errors) < 50:
            self.summary.errors.append(item.reason)
        log.warning("article failed", code_id=toc.code_id, id=item.entry.id, error=item.reason)
        self.status.error(item.reason)
        with self.status.update() as s:
            s.pass_failed += 1
            self.status.progress(toc.code_id).failed += 1
        return 1

    async def _wind_down(
        self,
        toc: CodeToc,
        workers: list[asyncio.Task[None]],
        watcher: asyncio.Task[None],
        queue: asyncio.Queue[Any],
        articles: list[Article],
        rejected: list[Rejected],
    ) -> None:
        """Stop the workers, keep every result already received, commit the rest."""
        watcher.cancel()
        for worker in workers:
            worker.cancel()
        await asyncio.gather(watcher, *workers, return_exceptions=True)
        while not queue.empty():
            item = queue.get_nowait()
            if item is not _STOP and not isinstance(item, _Fatal):
                self._absorb(toc, item, articles, rejected)
        await self._commit(toc.code_id, articles, rejected)

    # ---- storing -----------------------------------------------------------------------------
    def _progress_dict(self, code_id: str) -> dict[str, Any]:
        s = self.summary
        return {"code_id": code_id, "fetched": s.fetched, "stored": s.stored,
                "skipped": s.skipped, "failed": s.failed}

    def _commit_sync(
        self, articles: list[Article], rejected: list[Rejected], progress: dict[str, Any]
    ) -> tuple[dict[str, int], tuple[int, int] | None]:
        """The batch's events by kind, and the store's totals (None when unavailable)."""
        events = self.store.commit_batch(articles, rejected, self.run_id, progress, tag=self._tag())
        try:
            return events, (self.store.count_articles(), self.store.count_rejected())
        except StoreError as exc:  # the batch is in; the totals can wait for the next commit
            log.warning("store counters unavailable", error=str(exc))
            return events, None

    def _tag(self) -> str | None:
        """The change log's run_id for this pass's events."""
        return str(self.run_id) if self.run_id is not None else None

    def _count_events(self, events: dict[str, int]) -> None:
        for kind, n in events.items():
            self.summary.events[kind] = self.summary.events.get(kind, 0) + n

    async def _commit(self, code_id: str, articles: list[Article], rejected: list[Rejected]) -> None:
        """Commit one batch, retrying transient store errors with exponential backoff."""
        if not articles and not rejected:
            return
        progress = self._progress_dict(code_id)
        progress["stored"] += len(articles)
        progress["skipped"] += len(rejected)

        def retrying(failure: int, exc: BaseException, delay: float) -> None:
            log.warning("commit failed, retrying", code_id=code_id, attempt=failure, delay=delay, error=str(exc))

        try:
            events, totals = await retry_async(
                lambda: asyncio.to_thread(self._commit_sync, articles, rejected, progress),
                attempts=self.opt.commit_attempts, retry_on=(StoreError,), give_up=(StoreFatal,),
                delay=lambda n: backoff_delay(n, self.opt.commit_backoff_s, math.inf), on_retry=retrying)
        except StoreFatal:
            raise
        except StoreError as exc:
            log.error("commit failed for good", code_id=code_id, attempts=self.opt.commit_attempts, error=str(exc))
            raise
        self.summary.stored += len(articles)
        self.summary.skipped += len(rejected)
        self.summary.superseded += events.get("modified", 0)  # each retired the version it replaced
        self._count_events(events)
        budget = self._budget()
        with self.status.update() as s:
            s.pass_stored += len(articles)
            s.pass_skipped += len(rejected)
            p = self.status.progress(code_id)
            p.stored += len(articles)
            p.skipped += len(rejected)
            if totals is not None:
                s.stored_total, s.rejected_total = totals
            if budget is not None:
                s.budget = budget
        self.status.sample_throughput()
        log.debug("batch committed", code_id=code_id, stored=len(articles), rejected=len(rejected))

    def _budget(self) -> dict[str, Any] | None:
        try:
            return asdict(self.client.budget.snapshot())
        except Exception as exc:  # noqa: BLE001 - the status is best effort
            log.debug("budget snapshot unavailable", error=str(exc))
            return None


def _request_counts(client: LegifranceClient) -> tuple[int, int, int, int]:
    """(HTTP attempts to the API, tableMatieres calls, getArticle calls, token requests) from
    the client's stats. Attempts and token requests each took a budget slot."""
    stats = client.stats
    return (
        stats.attempts,
        stats.requests["table_matieres"],
        stats.requests["get_article"],
        stats.token_requests,
    )


async def run_pass(
    mode: Mode,
    codes: Sequence[str],
    *,
    client: LegifranceClient,
    store: Store,
    status: StatusBoard,
    options: HarvestOptions,
    interrupt: asyncio.Event,
) -> PassSummary:
    """Run one pass. When `interrupt` is set (stop or mode change) the pass stops starting
    requests within 0.5 s (also during a request or a budget wait), commits every article
    already fetched, and returns with `interrupted=True`. A failing code (unknown id, API
    error after retries) is counted and the pass goes on; an auth or store fatal error ends
    the pass by raising."""
    before = _request_counts(client)
    run = _Pass(mode, codes, client, store, status, options, interrupt)
    summary = run.summary
    try:
        await run.run()
    except BaseException as exc:
        if not isinstance(exc, asyncio.CancelledError):
            message = f"pass aborted: {type(exc).__name__}: {exc}"
            summary.errors.append(message)
            status.error(message)
            log.error("pass aborted", mode=str(mode), error=f"{type(exc).__name__}: {exc}")
        else:
            summary.interrupted = True
        raise
    finally:
        after = _request_counts(client)
        summary.requests = after[0] - before[0]
        summary.toc_requests = after[1] - before[1]
        summary.article_requests = after[2] - before[2]
        summary.token_requests = after[3] - before[3]
        summary.finished_at = options.clock()
        if run.run_id is not None:
            await _finish_run(store, run.run_id, summary)
        log.info("pass end", **{k: v for k, v in summary_as_dict(summary).items() if k != "errors"},
                 errors=len(summary.errors))
    return summary


async def _finish_run(store: Store, run_id: int, summary: PassSummary) -> None:
    """Record the run's summary; a failure here is logged, never raised (the work is stored)."""
    try:
        await _shielded(asyncio.to_thread(store.finish_run, run_id, summary_as_dict(summary)))
    except StoreError as exc:
        log.error("could not record the end of the run", run_id=run_id, error=str(exc))
