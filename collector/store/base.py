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
    ) -> None:
        """Upsert articles (by id) and rejections (by id) together with the run's progress,
        in one transaction where the backend allows it. Replaying a batch changes nothing
        but collected_at; a stored article is removed from the rejected ids."""
        ...

    def retire_absent(
        self,
        code_id: str,
        in_force_ids: Collection[str],
        in_force_cids: Collection[str] | None = None,
    ) -> tuple[int, int]:
        """Align the code's stored rows with its table of contents of today, in one transaction.
        Call it only after a COMPLETE walk: `in_force_ids` are the in-force version ids the TOC
        lists (one per cid), `in_force_cids` their cids (when None, the cids of the stored rows
        of those ids; passing them also labels a row whose newer version was rejected).

        Of the code's rows still `etat LIKE 'VIGUEUR%'` and whose id is not in force:
        cid in force -> 'MODIFIE' (superseded), otherwise -> 'ABROGE' (repealed). Rows are never
        deleted; rows already not VIGUEUR keep their etat. The reverse: a row whose id IS in
        force but whose etat is not VIGUEUR% (a rolled-back change, or a bad TOC that retired
        it earlier) is set back to 'VIGUEUR' (readers treat VIGUEUR and VIGUEUR_DIFF alike),
        since a known id is never fetched again. Returns (superseded, repealed)."""
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
