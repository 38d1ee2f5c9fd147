"""The export's two outputs through supabase-py's client: the Storage bucket and `files_queue`.

One HTTP call per method, no retry here (the export worker retries with backoff and shows the
error); every failure becomes an ExportError whose message never contains the key.
`files_queue` is the downstream workers' table: `file_path` unique, `bucket_id`, `status`.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
from postgrest.exceptions import APIError
from storage3.exceptions import StorageApiError
from storage3.utils import StorageException
from supabase import Client, ClientOptions, SupabaseException, create_client

from collector.config import SecretMask

T = TypeVar("T")

QUEUE_TABLE = "files_queue"
QUEUE_MIGRATION = "supabase/migrations/0004_files_queue.sql"
PAGE_SIZE = 1000  # Storage list and PostgREST reads, per request


class ExportError(RuntimeError):
    """A Storage or files_queue call failed (the message names what, never the key)."""


def _hint(status: str, code: str, message: str) -> str:
    lowered = f"{code} {message}".lower()
    if status in {"401", "403"} or any(w in lowered for w in ("jwt", "jws", "unauthorized", "api key")):
        return " (check SUPABASE_SERVICE_ROLE_KEY: the service_role key can write to Storage)"
    if "bucket not found" in lowered:
        return " (create the bucket named by EXPORT_BUCKET in Supabase Storage)"
    if code in {"42P01", "PGRST205"}:
        return f" (create files_queue: run {QUEUE_MIGRATION})"
    if code == "42P10":
        return " (files_queue needs a unique constraint on file_path)"
    return ""


class BucketQueue:
    """Upload article files to one bucket and upsert their `files_queue` rows."""

    def __init__(self, client: Client, bucket: str, *, key: str | None = None, page_size: int = PAGE_SIZE) -> None:
        self.bucket = bucket
        self._client = client
        self._mask = SecretMask([key or ""])
        self._page_size = page_size
        self._on_close: Callable[[], None] = lambda: None

    def _call(self, what: str, request: Callable[[], T]) -> T:
        try:
            return request()
        except StorageApiError as exc:
            status, code, message = str(exc.status), str(exc.code), str(exc.message)
        except APIError as exc:
            status, code, message = "", str(exc.code or ""), str(exc.message or "")
        except (StorageException, httpx.HTTPError) as exc:
            status, code, message = "", type(exc).__name__, str(exc)
        message = self._mask(message)[:300]  # masked before it is cut: no piece of the key either
        detail = " ".join(p for p in (f"HTTP {status}" if status else "", self._mask(code), message) if p)
        raise ExportError(f"{what}: {detail}{_hint(status, code, message)}") from None

    def upload(self, path: str, data: bytes) -> None:
        """Write (or overwrite) one JSON file."""
        options: Any = {"upsert": "true", "content-type": "application/json"}
        self._call(f"uploading {path}", lambda: self._client.storage.from_(self.bucket).upload(path, data, options))

    def queue(self, path: str, status: str) -> None:
        """Upsert the file's queue row on file_path (a conflict resets its status)."""
        row = {"file_path": path, "bucket_id": self.bucket, "status": status}
        self._call(
            f"setting {QUEUE_TABLE} {path} to {status}",
            lambda: self._client.table(QUEUE_TABLE).upsert(row, on_conflict="file_path", returning="minimal").execute(),
        )

    def list_names(self, folder: str) -> set[str]:
        """The file names directly in `folder`, paged until an empty page (a short page is not
        taken as the end: a server capping the page size cannot hide files)."""
        bucket = self._client.storage.from_(self.bucket)
        names: set[str] = set()
        offset = 0
        while True:
            options: Any = {"limit": self._page_size, "offset": offset, "sortBy": {"column": "name", "order": "asc"}}
            page = self._call(f"listing {folder}/", lambda o=options: bucket.list(folder, o))
            if not page:
                return names
            names.update(item["name"] for item in page if item.get("id") is not None)  # id null: a folder
            offset += len(page)

    def queued_paths(self, folder: str) -> set[str]:
        """The file paths this bucket's queue rows hold directly under `folder`, keyset-paged on
        file_path (LIKE's `_` matches any character: the superset is filtered here)."""
        paths: set[str] = set()
        last: str | None = None
        while True:
            def page(after: str | None = last) -> Any:
                query = (
                    self._client.table(QUEUE_TABLE)
                    .select("file_path")
                    .eq("bucket_id", self.bucket)
                    .like("file_path", f"{folder}/*")
                )
                if after is not None:
                    query = query.gt("file_path", after)
                return query.order("file_path").limit(self._page_size).execute()

            rows = self._call(f"reading {QUEUE_TABLE} under {folder}/", page).data
            if not rows:
                return paths
            paths.update(r["file_path"] for r in rows if posixpath.dirname(r["file_path"]) == folder)
            last = rows[-1]["file_path"]

    def close(self) -> None:
        self._on_close()

    @classmethod
    def connect(
        cls, url: str, key: str, bucket: str, *, timeout_s: float = 30.0, page_size: int = PAGE_SIZE
    ) -> BucketQueue:
        """A client of its own (HTTP/1.1, no token refresh, no PostgREST retry: the worker retries)."""
        http = httpx.Client(http2=False, timeout=httpx.Timeout(timeout_s, connect=10.0))
        options = ClientOptions(
            httpx_client=http, auto_refresh_token=False, persist_session=False, postgrest_client_retry=False
        )
        try:
            client = create_client(url, key, options=options)
        except SupabaseException as exc:
            http.close()
            raise ExportError(f"cannot create the Supabase client for the export: {exc.message}") from None
        out = cls(client, bucket, key=key, page_size=page_size)
        out._on_close = http.close
        return out
