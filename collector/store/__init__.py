"""Where articles, runs and counters go: one interface (base.Store), two backends."""

from __future__ import annotations

from typing import TYPE_CHECKING

from collector.store.base import Lease, Store, StoreError, StoreFatal
from collector.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from collector.config import Settings

__all__ = ["Lease", "SqliteStore", "Store", "StoreError", "StoreFatal", "open_store"]


def open_store(settings: Settings) -> Store:
    """Supabase when SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY are set, else SQLite at COLLECTOR_DB."""
    if settings.uses_supabase:
        from collector.store.supabase import SupabaseStore  # supabase-py is slow to import

        assert settings.supabase_url and settings.supabase_key
        return SupabaseStore(settings.supabase_url, settings.supabase_key)
    return SqliteStore(settings.db_path)
