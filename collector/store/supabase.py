"""Supabase backend through supabase-py (PostgREST over HTTPS).

- Writes are idempotent upserts (`on_conflict`, `return=minimal`, merge-duplicates), batched by
  rows AND bytes, de-duplicated per batch (PostgreSQL refuses to touch a row twice in one
  statement); a batch refused as too large (413) or too slow (57014) is halved and retried.
- supabase-py retries nothing but GET/HEAD, so every call goes through `_call`, which retries
  5xx (the HTTP status is read through an httpx response hook, since APIError does not keep
  it), timeouts and connection errors with backoff. A bad key or a missing table is permanent:
  StoreFatal, with a message that never contains the key.
- Reads use keyset paging (`id > last ORDER BY id LIMIT 1000`) until an EMPTY page: pages stay
  correct while the collector inserts (offsets would shift), each page is an index range scan,
  and a server whose max-rows is below our page size cannot truncate the result silently
  (a short page is not taken as the end).
- commit_batch calls collector_commit_batch() (migration 0002) once per byte/row-bounded chunk:
  each call is one transaction writing its rows with their change-log events, so a row never
  exists without its event nor an event without its row. Articles go first, then rejected
  ids, the run progress with the last call: a crash between two calls leaves progress behind
  the data, never ahead of it, and the next pass skips what is stored.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any, TypeVar
from urllib.parse import urlparse

import httpx
from postgrest.exceptions import APIError
from supabase import Client, ClientOptions, SupabaseException, create_client

from collector.config import SecretMask
from collector.clock import utcnow
from collector.models import Article, CodeMark, DumpBatch, DumpState, Rejected
from collector.retry import backoff_delay, retry_call
from collector.search import VERSION_COLUMNS, parse_query
from collector.store.base import Lease, Retired, StoreError, StoreFatal
from collector.store.rows import (
    ARTICLE_COLUMNS,
    CHANGE_KEYS,
    article_from_rest,
    change_args,
    change_from_row,
    cursor_args,
    dump_state_from_row,
    event_tag,
    iso_ts,
    json_safe,
    mark_from_row,
    mark_row,
    no_change_counts,
    parse_ts,
    retire_args,
    run_from_row,
    split_articles_rejected,
    state_from_row,
    state_row,
    to_json,
    version_pairs,
)

T = TypeVar("T")

PAGE_SIZE = 1000  # hosted Supabase's default max-rows
MIGRATION = "every file of supabase/migrations/, in name order,"

_TRANSIENT_STATUS = {"408", "425", "429", "500", "502", "503", "504", "520", "522", "524"}
_AUTH_CODES = {"PGRST300", "PGRST301", "PGRST302", "PGRST303", "42501", "401", "403"}
_SCHEMA_CODES = {"42P01", "42883", "42703", "PGRST106", "PGRST202", "PGRST204", "PGRST205", "404"}
_TOO_LARGE_CODES = {"413", "57014", "54000"}
# collector_commit_batch's arguments besides the rows: names, [], nulls (progress and tag added)
_COMMIT_ENVELOPE = 128


def default_backoff(attempt: int) -> float:
    """Seconds to wait after failed attempt number `attempt` (1, 2, ...): 0.5, 1, 2, 4 ... <= 30, jittered."""
    return backoff_delay(attempt, 0.5, 30.0, lambda: random.uniform(0.5, 1.0))


class _Transient(Exception):
    """A PostgREST error worth retrying (its description, key masked)."""


class _TooLarge(Exception):
    """A write the server refused for its size or duration: the caller halves the batch."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _is_transient_code(code: str) -> bool:
    # PGRST000-003: database unreachable / schema cache loading / pool timeout (HTTP 503/504);
    # SQLSTATE 08 connection, 40001/40P01 serialization/deadlock, 53 resources, 57P0x shutdown.
    return (
        code in _TRANSIENT_STATUS
        or code in {"PGRST000", "PGRST001", "PGRST002", "PGRST003", "40001", "40P01"}
        or code.startswith(("08", "53", "57P"))
    )


def _is_auth_error(code: str, message: str) -> bool:
    lowered = message.lower()
    return code in _AUTH_CODES or any(
        marker in lowered for marker in ("invalid api key", "no api key", "jwt", "jws", "unauthorized")
    )


class SupabaseStore:
    """The Store protocol over the tables of supabase/migrations/0001_collector.sql."""

    def __init__(
        self,
        url: str,
        key: str,
        *,
        client: Client | None = None,
        http_client: httpx.Client | None = None,
        batch_rows: int = 500,
        batch_bytes: int = 1_500_000,
        max_attempts: int = 5,
        backoff: Callable[[int], float] = default_backoff,
        timeout_s: float = 30.0,
        page_size: int = PAGE_SIZE,
    ) -> None:
        if not key:
            raise StoreFatal("the Supabase key is empty: set SUPABASE_SERVICE_ROLE_KEY")
        host = urlparse(url or "").hostname
        if not host:
            raise StoreFatal(f"SUPABASE_URL {url!r} is not a valid URL (expected https://<project>.supabase.co)")
        if batch_rows < 1 or batch_bytes < 1 or max_attempts < 1 or not 1 <= page_size:
            raise ValueError("batch_rows, batch_bytes, max_attempts and page_size must be >= 1")
        self.label = f"Supabase ({host})"
        self._mask = SecretMask([key])
        self._batch_rows = batch_rows
        self._batch_bytes = batch_bytes
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._page_size = page_size
        self._owned_http: httpx.Client | None = None
        if client is None:
            if http_client is None:
                # HTTP/1.1: supabase-py's default HTTP/2 client misbehaves when shared by threads.
                http_client = httpx.Client(http2=False, timeout=httpx.Timeout(timeout_s, connect=10.0))
                self._owned_http = http_client
            options = ClientOptions(
                httpx_client=http_client,
                auto_refresh_token=False,
                persist_session=False,
                postgrest_client_retry=False,  # we retry every method ourselves (see _call)
            )
            try:
                client = create_client(url, key, options=options)
            except SupabaseException as exc:
                self._close_http()
                raise StoreFatal(f"cannot create the Supabase client for {url!r}: {exc.message}") from None
        self._client = client
        # supabase-py builds its PostgREST client lazily without a lock: build it now, in one thread.
        session = client.postgrest.session
        # APIError keeps PostgREST's code but not the HTTP status, which decides "5xx: retry".
        self._status = threading.local()
        hooks = session.event_hooks
        hooks["response"] = [*hooks.get("response", []), self._record_status]
        session.event_hooks = hooks

    # ---- error handling and retries ----------------------------------------------------------
    def _record_status(self, response: httpx.Response) -> None:
        self._status.value = response.status_code

    def _describe(self, exc: APIError) -> str:
        parts = [f"{exc.code}" if exc.code else "error", exc.message or ""]
        if exc.hint:
            parts.append(f"(hint: {exc.hint})")
        return self._mask(" ".join(p for p in parts if p))[:500]

    def _call(self, what: str, request: Callable[[], T], *, splittable: bool = False) -> T:
        """Run one PostgREST request with retries; map failures to StoreError/StoreFatal."""
        tries = 0

        def attempt() -> T:
            nonlocal tries
            tries += 1
            self._status.value = None
            try:
                return request()
            except APIError as exc:
                raise self._failure(what, exc, splittable, tries) from None

        try:
            return retry_call(attempt, attempts=self._max_attempts, retry_on=(_Transient, httpx.TransportError),
                              delay=self._backoff)
        except _Transient as exc:
            raise StoreError(f"Supabase error while {what} after {tries} attempt(s): {exc}") from None
        except httpx.TransportError as exc:  # timeouts, connection refused/reset, protocol errors
            raise StoreError(
                f"Supabase unreachable while {what} after {tries} attempt(s): "
                f"{type(exc).__name__}: {self._mask(str(exc))[:200]}"
            ) from None

    def _rpc_row(self, what: str, function: str, params: dict[str, Any]) -> dict[str, Any]:
        """The one row a database function returns (one retried call, see _call)."""
        response = self._call(what, lambda: self._client.rpc(function, params).execute())
        if not response.data:
            raise StoreError(f"{function} returned no row")
        return response.data[0]  # type: ignore[no-any-return]

    def _failure(self, what: str, exc: APIError, splittable: bool, tries: int) -> Exception:
        """What a PostgREST error means: StoreFatal (key, schema), _TooLarge (halve the batch),
        _Transient (retry) or StoreError."""
        code = str(exc.code or "")
        message = str(exc.message or "")
        status = getattr(self._status, "value", None)
        if status in (401, 403) or _is_auth_error(code, message):
            return StoreFatal(
                f"Supabase refused the key while {what} ({code or f'HTTP {status}'}): "
                "check that SUPABASE_SERVICE_ROLE_KEY is this project's service_role "
                "(or secret) key, not the anon/publishable one"
            )
        if code in _SCHEMA_CODES:
            return StoreFatal(
                f"Supabase is missing a collector table, column or function while {what} "
                f"({self._describe(exc)}): run {MIGRATION} in the Supabase SQL editor"
            )
        if splittable and code in _TOO_LARGE_CODES:
            return _TooLarge(code)
        if _is_transient_code(code) or code in _TOO_LARGE_CODES or str(status) in _TRANSIENT_STATUS:
            return _Transient(self._describe(exc))
        return StoreError(f"Supabase error while {what} after {tries} attempt(s): {self._describe(exc)}")

    # ---- generic writes and reads ------------------------------------------------------------
    def _batches(self, rows: list[dict[str, Any]], envelope: int = 0) -> Iterator[list[dict[str, Any]]]:
        """Consecutive slices of at most batch_rows rows and batch_bytes bytes of JSON, minus
        `envelope` bytes for what the request body carries besides the rows."""
        batch: list[dict[str, Any]] = []
        size = 2 + envelope  # "[]"
        for row in rows:
            row_size = len(to_json(row).encode()) + 1
            if batch and (len(batch) >= self._batch_rows or size + row_size > self._batch_bytes):
                yield batch
                batch, size = [], 2 + envelope
            batch.append(row)
            size += row_size
        if batch:
            yield batch

    def _upsert(self, table: str, rows: list[dict[str, Any]], on_conflict: str) -> None:
        for batch in self._batches(rows):
            self._upsert_batch(table, batch, on_conflict)

    def _upsert_batch(self, table: str, batch: list[dict[str, Any]], on_conflict: str) -> None:
        what = f"writing {len(batch)} row(s) to {table}"
        try:
            self._call(
                what,
                lambda: self._client.table(table)
                .upsert(batch, on_conflict=on_conflict, returning="minimal")
                .execute(),
                splittable=True,
            )
        except _TooLarge as exc:
            if len(batch) == 1:
                raise StoreError(
                    f"Supabase refused one {table} row ({on_conflict}={batch[0].get(on_conflict)!r}) "
                    f"even alone (code {exc.code}: too large or too slow to write)"
                ) from None
            half = len(batch) // 2
            self._upsert_batch(table, batch[:half], on_conflict)
            self._upsert_batch(table, batch[half:], on_conflict)

    def _select_all(
        self,
        table: str,
        columns: str,
        key: str,
        filters: Callable[[Any], Any] = lambda q: q,
    ) -> Iterator[dict[str, Any]]:
        """Every matching row, keyset-paged on `key` until an empty page (see module doc)."""
        last: str | None = None
        while True:

            def page(after: str | None = last) -> Any:
                query = filters(self._client.table(table).select(columns))
                if after is not None:
                    query = query.gt(key, after)
                return query.order(key).limit(self._page_size).execute()

            rows = self._call(f"reading {table}", page).data
            if not rows:
                return
            yield from rows
            last = rows[-1][key]

    def _count(self, table: str) -> int:
        response = self._call(
            f"counting {table}",
            lambda: self._client.table(table).select("id", count="exact", head=True).execute(),
        )
        return int(response.count or 0)

    # ---- articles ----------------------------------------------------------------------------
    def known_ids(self, code_id: str, min_chars: int) -> set[str]:
        ids = {
            row["id"]
            for row in self._select_all("legifrance_articles", "id", "id", lambda q: q.eq("code_id", code_id))
        }
        ids.update(
            row["id"]
            for row in self._select_all(
                "legifrance_rejected",
                "id",
                "id",
                lambda q: q.eq("code_id", code_id).lt("length", int(min_chars)),
            )
        )
        return ids

    def commit_batch(
        self,
        articles: Sequence[Article],
        rejected: Sequence[Rejected] = (),
        run_id: int | None = None,
        run_progress: dict[str, Any] | None = None,
        *,
        tag: str | None = None,
    ) -> dict[str, int]:
        """See Store.commit_batch: collector_commit_batch() calls, each one transaction that
        writes its rows with their events; articles first, then rejected ids, the progress
        with the last call (a crash between two calls leaves progress behind the data)."""
        article_rows, rejected_rows = split_articles_rejected(articles, rejected)
        run_tag = event_tag(tag, run_id)
        progress = json_safe(run_progress) if run_id is not None and run_progress is not None else None
        envelope = _COMMIT_ENVELOPE + len(to_json(progress)) + len(run_tag or "")
        chunks = [("p_articles", b) for b in self._batches(article_rows, envelope)]
        chunks += [("p_rejected", b) for b in self._batches(rejected_rows, envelope)]
        counts = no_change_counts()
        if not chunks and progress is None:
            return counts
        for n, (param, rows) in enumerate(chunks or [("p_rejected", [])]):
            last = n == max(len(chunks), 1) - 1
            self._commit_chunk(param, rows, run_tag, (run_id, progress) if last else None, counts)
        return counts

    def _commit_chunk(
        self,
        param: str,
        rows: list[dict[str, Any]],
        tag: str | None,
        progress: tuple[int | None, Any] | None,
        counts: dict[str, int],
    ) -> None:
        """One collector_commit_batch call; halved (progress with the second half) when refused
        as too large or too slow."""
        run_id, run_progress = progress if progress is not None else (None, None)
        params = {"p_articles": [], "p_rejected": [], param: rows, "p_run_id": run_id,
                  "p_progress": run_progress, "p_tag": tag}
        table = "legifrance_articles" if param == "p_articles" else "legifrance_rejected"
        try:
            response = self._call(
                f"writing {len(rows)} row(s) to {table}",
                lambda: self._client.rpc("collector_commit_batch", params).execute(),
                splittable=True,
            )
        except _TooLarge as exc:
            if len(rows) <= 1:
                key = rows[0].get("id") if rows else None
                raise StoreError(
                    f"Supabase refused one {table} row (id={key!r}) even alone "
                    f"(code {exc.code}: too large or too slow to write)"
                ) from None
            half = len(rows) // 2
            self._commit_chunk(param, rows[:half], tag, None, counts)
            self._commit_chunk(param, rows[half:], tag, progress, counts)
            return
        written = response.data if isinstance(response.data, dict) else {}
        for kind in counts:
            counts[kind] += int(written.get(kind) or 0)

    def retire_absent(
        self,
        code_id: str,
        in_force_ids: Collection[str],
        in_force_cids: Collection[str] | None = None,
        *,
        tag: str | None = None,
    ) -> Retired:
        """See Store.retire_absent: one call of collector_retire_absent_logged() (one transaction).
        Replaying it after a lost response changes nothing (the rows are already retired),
        though its counts then come back as 0."""
        code, ids, cids = retire_args(code_id, in_force_ids, in_force_cids)
        params = {"p_code_id": code, "p_ids": ids, "p_cids": cids, "p_tag": tag}
        row = self._rpc_row(f"retiring the stored articles of {code} no longer in force",
                            "collector_retire_absent_logged", params)
        return Retired(row["superseded"], row["repealed"], row.get("events"))

    def retire_versions(self, versions: Sequence[tuple[str, str]], *, tag: str | None = None) -> Retired:
        """See Store.retire_versions: one call of collector_retire_versions() (one transaction)."""
        pairs = version_pairs(versions)
        params = {"p_ids": [p[0] for p in pairs], "p_etats": [p[1] for p in pairs], "p_tag": tag}
        row = self._rpc_row("retiring versions no longer in force", "collector_retire_versions", params)
        return Retired(row["superseded"], row["repealed"], row.get("events"))

    # ---- DILA dumps --------------------------------------------------------------------------
    def get_dump_state(self) -> DumpState:
        response = self._call(
            "reading the dump state",
            lambda: self._client.table("collector_dump_state").select("*").eq("id", True).limit(1).execute(),
        )
        return dump_state_from_row(response.data[0] if response.data else None)

    def apply_dump_batch(self, batch: DumpBatch) -> dict[str, int]:
        """See Store.apply_dump_batch: ONE collector_apply_dump_batch() call (0006_dumps.sql),
        so one transaction; a stamp already applied comes back as ValueError."""
        article_rows, rejected_rows = split_articles_rejected(batch.articles, batch.rejected)
        pairs = version_pairs(batch.retire)
        params = {
            "p_archive": batch.archive, "p_stamp": batch.stamp, "p_is_global": batch.is_global,
            "p_codes": batch.codes, "p_members": batch.members, "p_bytes_read": batch.bytes_read,
            "p_final": batch.final, "p_tag": batch.archive_tag,
            "p_articles": article_rows, "p_rejected": rejected_rows,
            "p_retire_ids": [p[0] for p in pairs], "p_retire_etats": [p[1] for p in pairs],
            "p_reconcile": [{"code_id": c, "ids": list(ids), "cids": list(cids)} for c, ids, cids in batch.reconcile],
        }
        try:
            response = self._call(
                f"applying a batch of {batch.archive}",
                lambda: self._client.rpc("collector_apply_dump_batch", params).execute(),
            )
        except StoreError as exc:
            if "already applied" in str(exc):
                raise ValueError(str(exc)) from None
            raise
        counts = response.data if isinstance(response.data, dict) else {}
        return {str(k): int(v) for k, v in counts.items()}

    # ---- change log --------------------------------------------------------------------------
    def read_changes(
        self, since: int = 0, limit: int = 100, code_id: str | None = None, *, previous_text: bool = False
    ) -> list[dict[str, Any]]:
        """Pages of at most PAGE_SIZE rows (hosted max-rows) until `limit` or an empty page."""
        since, limit = change_args(since, limit)
        columns = "*" if previous_text else ",".join(CHANGE_KEYS)
        changes: list[dict[str, Any]] = []
        while len(changes) < limit:

            def page(after: int = since, want: int = min(limit - len(changes), self._page_size)) -> Any:
                query = self._client.table("legifrance_changes").select(columns).gt("seq", after)
                if code_id is not None:
                    query = query.eq("code_id", code_id)
                return query.order("seq").limit(want).execute()

            rows = self._call("reading the change log", page).data
            if not rows:
                break
            changes += [change_from_row(row, previous_text=previous_text) for row in rows]
            since = changes[-1]["seq"]
        return changes

    def latest_change_seq(self) -> int:
        response = self._call(
            "reading the last change",
            lambda: self._client.table("legifrance_changes").select("seq").order("seq", desc=True).limit(1).execute(),
        )
        return int(response.data[0]["seq"]) if response.data else 0

    def get_articles(self, ids: Collection[str]) -> dict[str, dict[str, Any]]:
        keys = list(dict.fromkeys(ids))
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(keys), 100):  # ids go in the URL: keep it short
            chunk = keys[start : start + 100]
            response = self._call(
                "reading articles",
                lambda chunk=chunk: self._client.table("legifrance_articles")
                .select(",".join(ARTICLE_COLUMNS))
                .in_("id", chunk)
                .execute(),
            )
            found.update({row["id"]: article_from_rest(row) for row in response.data})
        return found

    def get_cursor(self, consumer: str) -> int:
        response = self._call(
            f"reading the cursor of {consumer}",
            lambda: self._client.table("legifrance_change_consumers")
            .select("last_seq")
            .eq("consumer", consumer)
            .limit(1)
            .execute(),
        )
        return int(response.data[0]["last_seq"]) if response.data else 0

    def set_cursor(self, consumer: str, seq: int) -> None:
        consumer, seq = cursor_args(consumer, seq)
        self._call(
            f"saving the change-log cursor of {consumer}",
            lambda: self._client.rpc("collector_advance_cursor", {"p_consumer": consumer, "p_seq": seq}).execute(),
        )

    def count_in_force(self, code_id: str) -> int:
        # PostgREST reads `*` in a like pattern as `%` (no percent-encoding to get wrong).
        response = self._call(
            f"counting the in-force articles of {code_id}",
            lambda: self._client.table("legifrance_articles")
            .select("id", count="exact", head=True)
            .eq("code_id", code_id)
            .like("etat", "VIGUEUR*")
            .execute(),
        )
        return int(response.count or 0)

    def count_articles(self) -> int:
        return self._count("legifrance_articles")

    def count_rejected(self) -> int:
        return self._count("legifrance_rejected")

    def iter_article_ids(self) -> Iterator[str]:
        for row in self._select_all("legifrance_articles", "id", "id"):
            yield row["id"]

    # ---- code marks --------------------------------------------------------------------------
    def get_code_marks(self) -> dict[str, CodeMark]:
        rows = self._select_all("collector_code_marks", "*", "code_id")
        return {row["code_id"]: mark_from_row(row) for row in rows}

    def set_code_mark(self, mark: CodeMark) -> None:
        self._upsert("collector_code_marks", [mark_row(mark)], "code_id")

    # ---- runs --------------------------------------------------------------------------------
    def start_run(self, mode: str, codes: Sequence[str]) -> int:
        # An insert is not idempotent: a retry after a lost response can leave one orphan run
        # row (never finished). Harmless, and better than failing the pass.
        row = {"mode": str(getattr(mode, "value", mode)), "codes": list(codes), "started_at": iso_ts(utcnow())}
        response = self._call(
            "recording the start of a run",
            lambda: self._client.table("collector_runs").insert(row, returning="representation").execute(),
        )
        return int(response.data[0]["id"])

    def finish_run(self, run_id: int, summary: dict[str, Any]) -> None:
        values = {"finished_at": iso_ts(utcnow()), "summary": json_safe(summary)}
        self._call(
            f"recording the end of run {run_id}",
            lambda: self._client.table("collector_runs").update(values, returning="minimal").eq("id", run_id).execute(),
        )

    def last_runs(self, limit: int = 10) -> list[dict[str, Any]]:
        response = self._call(
            "reading the last runs",
            lambda: self._client.table("collector_runs")
            .select("*")
            .order("id", desc=True)
            .limit(max(1, min(int(limit), PAGE_SIZE)))
            .execute(),
        )
        return [run_from_row(row) for row in response.data]

    # ---- request counters --------------------------------------------------------------------
    def add_requests(self, window_keys: Sequence[str], n: int) -> None:
        # A retry after a lost response may count twice: over-counting is the safe side of a budget.
        if n < 0:
            raise ValueError(f"add_requests: n must be >= 0, got {n}")
        keys = sorted(set(window_keys))
        if not keys or n == 0:
            return
        self._call(
            "counting requests",
            lambda: self._client.rpc("collector_add_requests", {"p_keys": keys, "p_n": n}).execute(),
        )

    def get_requests(self, window_keys: Sequence[str]) -> dict[str, int]:
        keys = list(dict.fromkeys(window_keys))
        if not keys:
            return {}
        response = self._call(
            "reading request counters",
            lambda: self._client.table("collector_request_counters")
            .select("window_key,count")
            .in_("window_key", keys)
            .execute(),
        )
        found = {row["window_key"]: int(row["count"]) for row in response.data}
        return {key: found.get(key, 0) for key in keys}

    # ---- desired state mirror ----------------------------------------------------------------
    def save_state(self, state: dict[str, Any]) -> None:
        row = {"id": True, **state_row(state)}
        self._upsert("collector_state", [row], "id")

    def load_state(self) -> dict[str, Any] | None:
        response = self._call(
            "reading the scheduler state",
            lambda: self._client.table("collector_state").select("*").eq("id", True).limit(1).execute(),
        )
        return state_from_row(response.data[0]) if response.data else None

    # ---- lease -------------------------------------------------------------------------------
    def acquire_lease(self, owner: str, ttl_seconds: float) -> Lease:
        if not owner:
            raise ValueError("acquire_lease: owner must be a non-empty string")
        if not ttl_seconds > 0:
            raise ValueError(f"acquire_lease: ttl_seconds must be > 0, got {ttl_seconds}")
        params = {"p_owner": owner, "p_ttl_seconds": float(ttl_seconds)}
        row = self._rpc_row("taking the collector lease", "collector_acquire_lease", params)
        expires = parse_ts(row["expires_at"])
        assert expires is not None
        return Lease(owner=row["owner"], expires_at=expires, acquired=bool(row["acquired"]))

    def release_lease(self, owner: str) -> None:
        self._call(
            "releasing the collector lease",
            lambda: self._client.rpc("collector_release_lease", {"p_owner": owner}).execute(),
        )

    # ---- search (collector/search.py; collector_search() in 0005_search.sql) ------------------
    def search(
        self, query: str, code_id: str | None = None, etat: str | None = None, limit: int = 20
    ) -> list[dict[str, Any]]:
        """See Store.search: PostgreSQL full text (french + unaccent) through one rpc call."""
        parsed = parse_query(query, code_id, etat, limit)
        params = {"p_query": parsed.text, "p_code_id": parsed.code_id, "p_etat": parsed.etat, "p_limit": parsed.limit}
        response = self._call(
            "searching the articles",
            lambda: self._client.rpc("collector_search", params).execute(),
        )
        return [{**row, "rank": float(row["rank"] or 0.0)} for row in response.data or []]

    def get_article(self, article_id: str) -> dict[str, Any] | None:
        response = self._call(
            f"reading article {article_id}",
            lambda: self._client.table("legifrance_articles")
            .select(",".join(ARTICLE_COLUMNS))
            .eq("id", article_id)
            .limit(1)
            .execute(),
        )
        return response.data[0] if response.data else None

    def article_versions(self, cid: str) -> list[dict[str, Any]]:
        response = self._call(
            f"reading the versions of {cid}",
            lambda: self._client.table("legifrance_articles")
            .select(",".join(VERSION_COLUMNS))
            .eq("cid", cid)
            .order("date_debut", desc=True, nullsfirst=False)
            .order("id", desc=True)
            .limit(PAGE_SIZE)
            .execute(),
        )
        return list(response.data or [])

    # ---- lifecycle ---------------------------------------------------------------------------
    def _close_http(self) -> None:
        if self._owned_http is not None:
            self._owned_http.close()
            self._owned_http = None

    def close(self) -> None:
        self._close_http()

    def __repr__(self) -> str:
        return f"SupabaseStore({self.label!r})"
