"""The store interface: where articles, rejections, runs, counters, state and the lease go.

Two backends implement it (sqlite.py, supabase.py) over the same tables
(supabase/migrations/0001_collector.sql is the reference). The store knows nothing of HTTP
to Légifrance; errors are raised as StoreError (transient) or StoreFatal (permanent).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from collector.models import Article, CodeMark, DumpBatch, DumpState, Rejected


class StoreError(RuntimeError):
    """A store operation failed after its own retries (database down, locked, timeout)."""


class StoreFatal(StoreError):
    """A permanent store failure (bad key, missing table, read-only file): retrying cannot help."""


@dataclass(frozen=True, slots=True)
class Lease:
    """Who holds the collector lease and until when."""

    owner: str
    expires_at: datetime
    acquired: bool  # True when the caller holds it after the call


class Retired(tuple[int, int]):
    """(superseded, repealed) as retire_absent / retire_versions return it (it unpacks as a
    pair); `events` counts the change-log events the same transaction wrote, by kind."""

    events: dict[str, int]

    def __new__(cls, superseded: int, repealed: int, events: dict[str, int] | None = None) -> Retired:
        self = super().__new__(cls, (int(superseded), int(repealed)))
        self.events = dict(events or {})
        return self


@runtime_checkable
class Store(Protocol):
    """One interface, two backends. Every method is safe to call from any thread."""

    label: str  # "SQLite (data/collector.sqlite3)" / "Supabase (xyz.supabase.co)"

    # ---- articles --------------------------------------------------------------------------
    def known_ids(self, code_id: str, min_chars: int) -> set[str]:
        """Ids not worth fetching again: stored articles of the code, plus ids rejected
        with a length below `min_chars` (lowering the threshold makes the rest fetchable)."""
        ...

    def commit_batch(
        self,
        articles: Sequence[Article],
        rejected: Sequence[Rejected] = (),
        run_id: int | None = None,
        run_progress: dict[str, Any] | None = None,
        *,
        tag: str | None = None,
    ) -> dict[str, int]:
        """Upsert articles (by id) and rejections (by id) together with the run's progress
        and the change-log events they make, in ONE transaction (SQLite: one BEGIN IMMEDIATE;
        Supabase: one collector_commit_batch call per byte/row-bounded chunk). Replaying a
        batch changes nothing but collected_at and writes no event; a stored article is
        removed from the rejected ids. Returns the events written, by kind (CHANGE_KINDS).

        Events (decided from what is stored, per article A in force, i.e. etat VIGUEUR*):
        A not in force before (new id, or a retired row) and another row of its cid in force
        -> that row (the newest by date_debut, then id) becomes 'MODIFIE' with one `modified`
        event (id = A.id, previous_id = it; further in-force rows of the cid are retired
        without an event); not in force before and no row of its cid in force -> `added`;
        A in force before with another content_sha256 -> `corrected` (the old text is kept as
        the event's previous_text); A not in force (a dump's MODIFIE / ABROGE row) while its
        stored row was, and no other row of its cid in force -> `repealed`; otherwise nothing.
        Rows are taken in order, each seeing the effects of the previous ones.
        Events' run_id = tag or str(run_id)."""
        ...

    def retire_absent(
        self,
        code_id: str,
        in_force_ids: Collection[str],
        in_force_cids: Collection[str] | None = None,
        *,
        tag: str | None = None,
    ) -> Retired:
        """Align the code's stored rows with its table of contents of today, in one transaction.
        Call it only after a COMPLETE walk: `in_force_ids` are the in-force version ids the TOC
        lists (one per cid), `in_force_cids` their cids (when None, the cids of the stored rows
        of those ids; passing them also labels a row whose newer version was rejected).

        Of the code's rows still `etat LIKE 'VIGUEUR%'` and whose id is not in force:
        cid in force -> 'MODIFIE' (superseded), otherwise -> 'ABROGE' (repealed). Rows are never
        deleted; rows already not VIGUEUR keep their etat. The reverse: a row whose id IS in
        force but whose etat is not VIGUEUR% (a rolled-back change, or a bad TOC that retired
        it earlier) is set back to 'VIGUEUR' (readers treat VIGUEUR and VIGUEUR_DIFF alike),
        since a known id is never fetched again. Returns (superseded, repealed).

        Events (run_id = tag): a retired row -> `repealed` (etat 'ABROGE', or 'MODIFIE' when
        its successor is in force in the TOC but not stored, e.g. rejected), except a
        'MODIFIE' row whose cid keeps another stored row in force (no event); a restored row
        -> `added`, or `modified` (previous_id = the row of its cid this call retires)."""
        ...

    def retire_versions(self, versions: Sequence[tuple[str, str]], *, tag: str | None = None) -> Retired:
        """Dumps: `versions` are (id, new_etat) pairs of versions no longer in force. A stored
        row of that id still in force takes new_etat and makes a `repealed` event, unless
        another stored row of its cid is in force (its `modified` covered it). One
        transaction. Returns (rows set to 'MODIFIE', rows set to any other etat)."""
        ...

    # ---- change log ------------------------------------------------------------------------
    def read_changes(
        self, since: int = 0, limit: int = 100, code_id: str | None = None, *, previous_text: bool = False
    ) -> list[dict[str, Any]]:
        """Events with seq > since, in seq order, at most `limit`; keys exactly CHANGE_KEYS
        (seq, kind, code_id, cid, id, previous_id, num, etat, content_sha256, run_id, at as
        ISO 8601 UTC text), plus previous_text when asked (set on `corrected` events only)."""
        ...

    def latest_change_seq(self) -> int:
        """The highest seq written (0 when the log is empty)."""
        ...

    def get_articles(self, ids: Collection[str]) -> dict[str, dict[str, Any]]:
        """Stored rows (every legifrance_articles column, rows.py form) by id; missing ids absent."""
        ...

    def get_cursor(self, consumer: str) -> int:
        """The last seq a named consumer has handled (legifrance_change_consumers); 0 when unknown."""
        ...

    def set_cursor(self, consumer: str, seq: int) -> None:
        """Move the consumer's cursor to `seq`, never back (a late writer, such as a second
        exporter during a deploy's overlap, cannot make events replay)."""
        ...

    def count_in_force(self, code_id: str) -> int:
        """The code's stored rows with `etat LIKE 'VIGUEUR%'` (a guard against a bad TOC
        retiring most of a code)."""
        ...

    def count_articles(self) -> int: ...

    def count_rejected(self) -> int: ...

    def iter_article_ids(self) -> Iterable[str]:
        """Every stored article id (paged under the hood)."""
        ...

    # ---- per-code marks (MAINTENANCE skips unchanged codes) ---------------------------------
    def get_code_marks(self) -> dict[str, CodeMark]: ...

    def set_code_mark(self, mark: CodeMark) -> None: ...

    # ---- runs ------------------------------------------------------------------------------
    def start_run(self, mode: str, codes: Sequence[str]) -> int: ...

    def finish_run(self, run_id: int, summary: dict[str, Any]) -> None: ...

    def last_runs(self, limit: int = 10) -> list[dict[str, Any]]: ...

    # ---- request counters (shared budget across restarts and processes) ---------------------
    def add_requests(self, window_keys: Sequence[str], n: int) -> None:
        """Add n requests to each window ("h:2026-11-28T15", "d:2026-11-28")."""
        ...

    def get_requests(self, window_keys: Sequence[str]) -> dict[str, int]: ...

    # ---- desired state mirror --------------------------------------------------------------
    def save_state(self, state: dict[str, Any]) -> None:
        """Single-row mirror of the scheduler state file (running, mode, updated_at, ...)."""
        ...

    def load_state(self) -> dict[str, Any] | None: ...

    # ---- one collector per store -----------------------------------------------------------
    def acquire_lease(self, owner: str, ttl_seconds: float) -> Lease:
        """Take the lease if free or expired, renew it if `owner` holds it; atomic."""
        ...

    def release_lease(self, owner: str) -> None: ...

    # ---- search (collector/search.py) -------------------------------------------------------
    def search(
        self, query: str, code_id: str | None = None, etat: str | None = None, limit: int = 20
    ) -> list[dict[str, Any]]:
        """Stored articles whose text holds every word of `query` (accent- and
        case-insensitive), best first: dicts with id, code_id, code_title, num, etat,
        section_path, snippet (matches in [brackets], plain text) and rank (higher is better).
        `etat` "VIGUEUR" also matches VIGUEUR_DIFF. SearchQueryError (a ValueError) when the
        query has no word or a filter is malformed; nothing of the query reaches SQL as syntax."""
        ...

    def get_article(self, article_id: str) -> dict[str, Any] | None:
        """The stored row of one article version (every column), or None."""
        ...

    def article_versions(self, cid: str) -> list[dict[str, Any]]:
        """The versions of one article we hold (id, cid, num, etat, date_debut, date_fin,
        collected_at), newest first."""
        ...

    # ---- DILA dumps (collector/dumps) -------------------------------------------------------
    def get_dump_state(self) -> DumpState:
        """The last archive applied completely, the global it built on, the code scope, and the
        archive half-applied (with how far its committed batches went), if any."""
        ...

    def apply_dump_batch(self, batch: DumpBatch) -> dict[str, int]:
        """In ONE transaction: upsert `articles` with their change-log events (tag =
        batch.archive_tag), upsert `rejected`, retire `retire` versions (as retire_versions),
        reconcile each `reconcile` code with a global's in-force set (as retire_absent), and
        write the dump state: progress (archive, members, bytes_read), or for a `final` batch
        the archive's stamp as the last applied (a stamp not after the last applied raises
        ValueError and writes nothing). Replaying a batch writes no event twice. Returns the
        event counts by kind plus `superseded` and `retired` (rows taken out of force)."""
        ...

    def close(self) -> None: ...
