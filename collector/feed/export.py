"""The original service's output, fed from the change log: bucket files + `files_queue` rows.

For each event after its cursor (consumer `export:<bucket>`), in seq order:
- `added` / `modified` / `corrected`: upload the version's JSON (export_file.py) with upsert,
  then upsert its queue row `{file_path, bucket_id, status: "pending"}` on file_path;
- `repealed` (its id), and the version a `modified` retires (its previous_id): upsert that
  file's queue row with the retired status, so the workers drop its chunks.
(What decides between the two is the version's stored etat when the event is exported: see
_export_event.)
The cursor moves past an event only once all of its writes succeeded. A failed call is retried
in place with backoff and jitter (the status shows the error and the next retry), so an outage
delays the export and loses nothing; a process killed mid-event redoes that event at its next
start (the same upserts again). Unchanged articles make no event, hence no write.

At start-up, `reconcile` replays the log up to the cursor to learn which versions should be
live, lists their folders in the bucket and their queue rows, and re-uploads / re-queues what
is missing (the original's check_queue_coherence).
"""

from __future__ import annotations

import random
import sys
import threading
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar

import structlog

from collector.clock import utcnow
from collector.feed.bucket import BucketQueue, ExportError
from collector.feed.export_file import article_bytes, file_path, split_path
from collector.retry import backoff_delay, retry_call
from collector.store.base import Store, StoreError

T = TypeVar("T")
log = structlog.get_logger("collector.export")

LIVE_KINDS = frozenset({"added", "modified", "corrected"})
READ_BATCH = 500  # events per change-log read
ROW_BATCH = 100  # article rows per read


def export_backoff(attempt: int, rng: Callable[[], float] = random.random) -> float:
    """Seconds before retry number `attempt` (1, 2, ...): 1, 2, 4 ... capped at 300, each
    jittered down to half (equal jitter: never 0, so an outage is never hammered)."""
    return backoff_delay(attempt, 1.0, 300.0, lambda: 0.5 + rng() / 2)


class _Stopped(Exception):
    """Shutdown was asked while waiting: leave the loop, the cursor where it is."""


class ExportWorker:
    """Exports the change log to one bucket + files_queue, in a small thread of its own
    (`start` / `wake` / `shutdown`), or synchronously (`reconcile`, `export_pending`)."""

    def __init__(
        self,
        store: Store,
        bucket: BucketQueue,
        *,
        path_template: str,
        retired_status: str = "retired",
        poll_seconds: float = 5.0,
        backoff: Callable[[int], float] = export_backoff,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._bucket = bucket
        self._template = path_template
        self._retired = retired_status
        self.consumer = f"export:{bucket.bucket}"
        self._poll = poll_seconds
        self._backoff = backoff
        self._clock = clock
        self._wake = threading.Event()  # the one event the loop waits on (wake-ups and shutdown)
        self._stopping = False
        self._cursor = 0  # the last seq fully exported (stored in the store's consumer cursors)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._status: dict[str, Any] = {
            "bucket": bucket.bucket,
            "consumer": self.consumer,
            "alive": False,
            "phase": "idle",
            "last_exported_seq": None,
            "pending": None,
            "exported": 0,
            "uploads": 0,
            "queue_writes": 0,
            "skipped": 0,
            "last_error": None,
            "last_error_at": None,
            "next_retry_at": None,
            "reconcile": None,
        }

    # ---- thread ------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the export worker runs once; build another to restart it")
        self._thread = threading.Thread(target=self._run, name="collector-export", daemon=True)
        self._set(alive=True)
        self._thread.start()

    def wake(self) -> None:
        """Look at the change log now (e.g. at the end of a pass) instead of at the next poll."""
        self._wake.set()

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Stop between two calls (the cursor stays on the last event fully exported);
        True when the thread is gone."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Shut down, then close the bucket's HTTP client."""
        self.shutdown(timeout)
        self._bucket.close()

    def status(self) -> dict[str, Any]:
        """A copy of the status (timestamps as ISO text): for the status payload's `export`."""
        with self._lock:
            out = dict(self._status)
        out["reconcile"] = dict(out["reconcile"]) if out["reconcile"] else None
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in out.items()}

    def _run(self) -> None:
        try:
            self.reconcile()
            while True:
                self._wake.clear()
                if self._stopping:
                    break
                if self.export_pending() < READ_BATCH:  # caught up: wait for a wake-up or the poll
                    self._set(phase="idle")
                    self._wake.wait(self._poll)
        except _Stopped:
            pass
        except Exception as exc:  # a bug, not an outage (those are retried): say so, then stop
            log.exception("export worker died")
            self._set(last_error=f"export worker died: {type(exc).__name__}: {exc}"[:500], last_error_at=self._clock())
        finally:
            self._set(alive=False, phase="stopped", next_retry_at=None)

    # ---- retries -----------------------------------------------------------------------------
    def _set(self, **values: Any) -> None:
        with self._lock:
            self._status.update(values)

    def _add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._status[name] += n

    def _attempt(self, what: str, call: Callable[[], T]) -> T:
        """`call()`, retried with backoff until it succeeds or shutdown is asked."""
        failures = 0

        def attempt() -> T:
            if self._stopping:
                raise _Stopped
            return call()

        def retrying(failure: int, exc: BaseException, delay: float) -> None:
            nonlocal failures
            failures = failure
            now = self._clock()
            error = (str(exc) if isinstance(exc, ExportError) else f"{what}: {exc}")[:500]
            self._set(last_error=error, last_error_at=now, next_retry_at=now + timedelta(seconds=delay))
            log.warning("export call failed, will retry", error=error, attempt=failure, retry_in_s=round(delay, 1))

        # no last attempt: only success or shutdown (_Stopped, never retried) ends it
        result = retry_call(attempt, attempts=sys.maxsize, retry_on=(ExportError, StoreError), delay=self._backoff,
                            on_retry=retrying, sleep=self._pause)
        if failures:
            self._set(next_retry_at=None)
            log.info("export call succeeded after retries", what=what, attempts=failures + 1)
        return result

    def _pause(self, seconds: float) -> None:
        """Wait `seconds`, or less when shutdown is asked."""
        self._wake.clear()  # a wake-up during an outage must not turn the backoff into a busy loop
        if not self._stopping:
            self._wake.wait(seconds)

    # ---- export ------------------------------------------------------------------------------
    def export_pending(self) -> int:
        """Export the next events after the cursor (at most READ_BATCH); returns how many."""
        # Another instance (a deploy's overlap) may have moved the stored cursor further.
        stored = self._attempt("reading the export cursor", lambda: self._store.get_cursor(self.consumer))
        cursor = self._cursor = max(stored, self._cursor)
        latest = self._attempt("reading the change log", self._store.latest_change_seq)
        self._set(last_exported_seq=cursor, pending=max(0, latest - cursor))
        events = self._attempt("reading the change log", lambda: self._store.read_changes(cursor, READ_BATCH))
        if events:
            self._set(phase="exporting")
        for start in range(0, len(events), ROW_BATCH):
            chunk = events[start : start + ROW_BATCH]
            rows = self._attempt("reading the articles to export", lambda: self._store.get_articles(ids_of(chunk)))
            for event in chunk:
                self._export_event(event, rows)
                seq = int(event["seq"])
                self._attempt("saving the export cursor", lambda: self._store.set_cursor(self.consumer, seq))
                self._cursor = seq
                self._set(last_exported_seq=seq, pending=max(0, latest - seq))
                self._add("exported")
        if events:
            log.info("export: events exported", events=len(events), last_seq=events[-1]["seq"])
        return len(events)

    def _export_event(self, event: Mapping[str, Any], rows: Mapping[str, Mapping[str, Any]]) -> None:
        """Each version the event names ends in the state its stored row has NOW: in force ->
        uploaded + `pending`, not in force -> `retired`. So a backlog exported late uploads no
        version a later event retires, and two exporters interleaving cannot leave a retired
        version `pending`. A retiring reference to a version back in force is left to the
        later event that brought it back."""
        kind = event["kind"]
        if kind in LIVE_KINDS:
            row = self._row(event, event["id"], rows)
            if row is not None and in_force(row):
                self._publish(row)
            elif row is not None:
                self._retire(row)
        retired = event.get("previous_id") if kind == "modified" else event["id"] if kind == "repealed" else None
        if retired:
            row = self._row(event, retired, rows)
            if row is not None and not in_force(row):
                self._retire(row)

    def _row(self, event: Mapping[str, Any], article_id: str, rows: Mapping[str, Mapping[str, Any]]) -> Mapping[str, Any] | None:
        """The stored row, or None (counted, logged): rows are never deleted, so a missing one
        is a damaged store, and there is nothing to export for it."""
        row = rows.get(article_id)
        if row is None:
            self._add("skipped")
            log.warning("export: article row not found, skipped", seq=event["seq"], kind=event["kind"], id=article_id)
        return row

    def _retire(self, row: Mapping[str, Any]) -> None:
        path = file_path(self._template, row)
        self._attempt(f"retiring {path}", lambda: self._bucket.queue(path, self._retired))
        self._add("queue_writes")

    def _publish(self, row: Mapping[str, Any]) -> None:
        path, data = file_path(self._template, row), article_bytes(row)
        self._attempt(f"uploading {path}", lambda: self._bucket.upload(path, data))
        self._add("uploads")
        self._attempt(f"queueing {path}", lambda: self._bucket.queue(path, "pending"))
        self._add("queue_writes")

    # ---- reconcile ---------------------------------------------------------------------------
    def reconcile(self) -> dict[str, int]:
        """Re-upload / re-queue what the log says was exported (live versions up to the
        cursor) but the bucket or files_queue lacks. Returns counts (also in the status)."""
        self._set(phase="reconciling")
        cursor = self._attempt("reading the export cursor", lambda: self._store.get_cursor(self.consumer))
        live = self._live_versions(cursor)
        expected = self._expected_paths(live)
        counts = {"checked": len(live), "folders": len(expected), "uploaded": 0, "requeued": 0}
        listed: dict[str, set[str]] = {}

        def names_in(folder: str) -> set[str]:
            if folder not in listed:
                listed[folder] = self._attempt(f"listing {folder}/", lambda: self._bucket.list_names(folder))
            return listed[folder]

        for folder, by_id in sorted(expected.items()):
            queued = self._attempt(f"reading files_queue under {folder}/", lambda: self._bucket.queued_paths(folder))
            absent = [i for i, path in by_id.items() if split_path(path)[1] not in names_in(folder)]
            reuploaded = set(absent)
            for start in range(0, len(absent), ROW_BATCH):
                chunk = absent[start : start + ROW_BATCH]
                rows = self._attempt("reading the articles to re-upload", lambda: self._store.get_articles(chunk))
                for row in rows.values():
                    if not in_force(row):
                        continue  # no longer in force: its retiring event writes its queue row
                    real_folder, name = split_path(file_path(self._template, row))
                    if real_folder != folder and name in names_in(real_folder):
                        continue  # an older title's folder holds it (the code was renamed)
                    self._publish(row)
                    counts["uploaded"] += 1
            for article_id, path in by_id.items():
                if article_id not in reuploaded and path not in queued:
                    self._attempt(f"queueing {path}", lambda: self._bucket.queue(path, "pending"))
                    self._add("queue_writes")
                    counts["requeued"] += 1
            listed.pop(folder, None)  # one folder's names held at a time (a renamed code's aside)
        self._set(reconcile={**counts, "cursor": cursor, "at": self._clock().isoformat()})
        log.info("export: reconciled with the bucket", **counts)
        return counts

    def _live_versions(self, cursor: int) -> dict[str, tuple[str, str]]:
        """Versions in force per the log up to `cursor`: id -> (code_id, cid) of its last live
        event (two short strings per version: ~100 MB of whole events at 100,000 articles)."""
        live: dict[str, tuple[str, str]] = {}
        since = 0
        while since < cursor:
            events = self._attempt("reading the change log", lambda: self._store.read_changes(since, 1000))
            for event in events:
                if event["seq"] > cursor:
                    return live
                if event["kind"] in LIVE_KINDS:
                    live.pop(event["id"], None)  # re-inserted last: dict order follows the latest events
                    live[event["id"]] = (event["code_id"], event["cid"])
                if event["kind"] == "modified" and event.get("previous_id"):
                    live.pop(event["previous_id"], None)
                elif event["kind"] == "repealed":
                    live.pop(event["id"], None)
            if not events:
                break
            since = int(events[-1]["seq"])
        return live

    def _expected_paths(self, live: Mapping[str, tuple[str, str]]) -> dict[str, dict[str, str]]:
        """folder -> {id: path}. The category comes from the code's title, read from the row of
        the code's latest live version (one row per code, not the whole corpus)."""
        latest: dict[str, str] = {}
        for article_id, (code_id, _cid) in live.items():  # dicts keep insertion order: later events last
            latest[code_id] = article_id
        titles: dict[str, Any] = {}
        ids = list(latest.values())
        for start in range(0, len(ids), ROW_BATCH):
            chunk = ids[start : start + ROW_BATCH]
            rows = self._attempt("reading the codes' titles", lambda: self._store.get_articles(chunk))
            titles.update({row["code_id"]: row.get("code_title") for row in rows.values()})
        expected: dict[str, dict[str, str]] = defaultdict(dict)
        for article_id, (code_id, cid) in live.items():
            row = {"code_title": titles.get(code_id), "code_id": code_id, "cid": cid, "id": article_id}
            path = file_path(self._template, row)
            expected[split_path(path)[0]][article_id] = path
        return expected


def in_force(row: Mapping[str, Any]) -> bool:
    """The stored etat says in force (VIGUEUR, VIGUEUR_DIFF)."""
    return str(row.get("etat") or "").startswith("VIGUEUR")


def ids_of(events: Collection[Mapping[str, Any]]) -> set[str]:
    """Every article id an event list names (id and previous_id)."""
    return {e["id"] for e in events} | {e["previous_id"] for e in events if e.get("previous_id")}
