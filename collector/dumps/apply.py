"""Apply DILA LEGI archives to the store: the newest global not applied yet, then each delta.

One archive at a time, in plan order (names.plan), each in three steps:

1. verify: the whole file is decompressed once (zlib: gzip CRC and length), in a thread
   alongside step 2, and the first write of the archive waits for it: a truncated or corrupt
   archive stops the load with CorruptArchive and applies nothing of it (the archives before it
   stay applied; none after it is tried).
2. stream: one pass of the reader; in-force article versions of the codes in scope are
   committed in batches (Store.apply_dump_batch), each with the archive's progress (members
   read, compressed bytes), so the page shows it and a kill loses at most a batch.
3. final transaction, with the archive's stamp: the stored rows of the archive's versions no
   longer in force (MODIFIE, ABROGE...) and of the deletion lists are retired (after every file
   of the archive, as legi.py does; an id the archive also holds in force stays); a global
   also reconciles each code it holds with the store (rows of the code it does not list in
   force are retired, as the API path's retire_absent), behind the same guard as harvest's.

Kill at any point, then rerun: the stamp is written only by the final transaction, so the
archive is replayed from its start. Members up to the progress already committed are read
again (their ids feed the reconcile and the deletions) but not written again; later batches
are idempotent upserts that log no event for an unchanged row. The end state and the change
log equal those of an uninterrupted load (tests/dumps/test_kill.py). "Nothing of a corrupt
archive" rests on step 1: a cut or damaged download is found before the first batch. A tar
broken inside an intact gzip (no download cut produces one) is found by the reader when it
reaches it: the batches before it are in the store, the stamp is not, and every rerun stops
at the same place. A bad XML member is not corruption: it is counted and named, and the rest
of the archive loads. The summary's counts cover what this run wrote: after a resume, the rows
a killed run committed count in neither.
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import structlog

from collector.clock import utcnow
from collector.config import Settings, is_code_id
from collector.dumps.fetch import DownloadError, SourceArchive, SourceError, list_local
from collector.dumps.names import ArchiveName, PlanError, plan
from collector.dumps.parallel import ParallelReader, ReaderFailed, default_readers
from collector.dumps.reader import (
    ArchiveReader,
    ArticleVersion,
    BadMember,
    Deletion,
    DumpArchiveError,
    member_path,
)
from collector.models import Article, DumpBatch, DumpState, Rejected
from collector.retire_guard import retiring_looks_wrong
from collector.store.base import Store

log = structlog.get_logger(__name__)

CODE_PARTITIONS = ("code_en_vigueur", "code_non_vigueur")
IN_FORCE_PARTITION = "code_en_vigueur"
BAD_NAMES = 1000  # bad files named per archive (all are counted)


class DumpLoadError(RuntimeError):
    """The load stopped: the message says which archive and why (nothing of it was stamped)."""


class CorruptArchive(DumpLoadError):
    """A truncated or corrupt archive: nothing of it was applied."""


class DumpInterrupted(DumpLoadError):
    """Stopped on request between two batches (the rerun resumes)."""


@dataclass(frozen=True, slots=True)
class CodeScope:
    """Which codes a load writes: `all` (every code of the code_en_vigueur partition) or a set
    of LEGITEXT ids. Non-code texts (TNC partitions) are never loaded as codes."""

    ids: frozenset[str] | None  # None = all

    @classmethod
    def parse(cls, value: str, configured: Sequence[str]) -> CodeScope:
        """`configured`, `all`, or `ID,ID,...` (ValueError naming the bad id)."""
        value = value.strip()
        if value == "configured":
            return cls(frozenset(configured))
        if value == "all":
            return cls(None)
        ids = [c.strip() for c in value.split(",") if c.strip()]
        bad = [c for c in ids if not is_code_id(c)]
        if bad or not ids:
            raise ValueError(f"--codes must be configured, all or comma-separated LEGITEXT ids; bad: {bad[:3]}")
        return cls(frozenset(ids))

    @property
    def label(self) -> str:
        return "all" if self.ids is None else ",".join(sorted(self.ids))

    def covers(self, partition: str, code_id: str) -> bool:
        if partition not in CODE_PARTITIONS:
            return False
        return code_id in self.ids if self.ids is not None else True


@dataclass(slots=True)
class ArchiveReport:
    """What one archive did."""

    archive: str
    stamp: str
    kind: str
    members: int = 0
    stored: int = 0  # rows that entered force (events added / modified)
    updated: int = 0  # stored rows whose text changed under the same id (corrected)
    unchanged: int = 0  # in-force rows already stored as they are
    retired: int = 0  # stored rows taken out of force (old versions, deletions, reconcile)
    deleted: int = 0  # ids listed by the deletion lists that were stored in force
    rejected: int = 0  # in-force ids under the quality filter
    bad_files: list[str] = field(default_factory=list)  # the first BAD_NAMES, "member: reason"
    bad_count: int = 0
    seconds: float = 0.0


@dataclass(slots=True)
class LoadSummary:
    """The JSON summary of `load-dump` (last line of its output)."""

    codes: str
    archives: list[ArchiveReport] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict[str, Any]:
        total = lambda name: sum(getattr(a, name) for a in self.archives)  # noqa: E731
        bad = [f for a in self.archives for f in a.bad_files]
        bad_count = sum(a.bad_count for a in self.archives)
        return {
            "ok": self.ok,
            "codes": self.codes,
            "archives": [{"archive": a.archive, "stamp": a.stamp, "kind": a.kind, "members": a.members,
                          "stored": a.stored, "updated": a.updated, "retired": a.retired,
                          "deleted": a.deleted, "rejected": a.rejected, "bad_files": a.bad_count,
                          "seconds": round(a.seconds, 3)} for a in self.archives],
            "stamp": self.archives[-1].stamp if self.archives else None,
            "stored": total("stored"),
            "updated": total("updated"),
            "unchanged": total("unchanged"),
            "retired": total("retired"),
            "rejected": total("rejected"),
            "deleted": total("deleted"),
            "bad_files": bad_count,
            "bad_file_names": bad[:50],
            "errors": self.errors,
            "warnings": self.warnings,
            "seconds": round(self.seconds, 3),
        }


Progress = Callable[[str, int, int, int], None]  # (archive, bytes read, total bytes, articles)


@dataclass(frozen=True, slots=True)
class DumpOptions:
    min_chars: int = 100
    batch_size: int = 500  # in-force rows per transaction (bounded memory, bounded replay)
    clock: Callable[[], datetime] = utcnow
    readers: int = 1  # readers of a global: this process and readers-1 reader processes (dumps/parallel.py)
    parallel_min_bytes: int = 1 << 20  # a smaller global is read here: processes cost ~0.3 s to start

    @classmethod
    def for_settings(cls, settings: Settings, clock: Callable[[], datetime] = utcnow) -> DumpOptions:
        """MIN_ARTICLE_CHARS; on Supabase 100 rows per batch: one batch is one RPC call (one
        transaction), which must stay well inside the request size and statement time limits."""
        return cls(min_chars=settings.min_article_chars, batch_size=100 if settings.uses_supabase else 500,
                   clock=clock, readers=settings.dump_readers or default_readers())


class _ArchivePass:
    """One archive: stream, commit batches with progress, then the final transaction."""

    def __init__(self, archive: ArchiveName, path: Path, store: Store, scope: CodeScope,
                 options: DumpOptions, state: DumpState, progress: Progress | None,
                 should_stop: Callable[[], bool]) -> None:
        self.archive, self.path, self.store, self.scope = archive, path, store, scope
        self.verified = _Verification(path)
        self.opt, self.progress, self.should_stop = options, progress, should_stop
        # Members whose rows a killed earlier run of this archive committed: read, not rewritten.
        self.committed = state.members if state.archive == archive.name else 0
        self.report = ArchiveReport(archive=archive.name, stamp=archive.stamp, kind=archive.kind)
        self.total_bytes = path.stat().st_size
        self.pending: dict[str, Article | Rejected] = {}  # cid -> row of the next batch
        self.retire: dict[str, str] = {}  # id -> new etat, versions of the archive not in force
        # code -> {cid: id}: the version of each cid the archive holds in force; of several
        # (VIGUEUR and VIGUEUR_DIFF), the highest id, as the API path keeps.
        self.in_force: dict[str, dict[str, str]] = {}
        self.deleted_ids: set[str] = set()
        self.deleted_codes: set[str] = set()
        self.members = 0
        self.bytes_read = 0
        self.warnings: list[str] = []

    def batch(self, *, final: bool = False, **parts: Any) -> DumpBatch:
        return DumpBatch(archive=self.archive.name, stamp=self.archive.stamp, is_global=self.archive.is_global,
                         codes=self.scope.label, members=self.members, bytes_read=self.bytes_read,
                         final=final, **parts)

    def commit(self, batch: DumpBatch) -> None:
        self.verified.wait()  # nothing of an archive is written before it is known whole
        try:
            counts = self.store.apply_dump_batch(batch)
        except ValueError as exc:  # its stamp was applied meanwhile (another loader)
            raise DumpLoadError(str(exc)) from None
        self.report.stored += counts.get("added", 0) + counts.get("modified", 0)
        self.report.updated += counts.get("corrected", 0)
        self.report.retired += counts.get("superseded", 0) + counts.get("retired", 0)
        self.report.rejected += len(batch.rejected)
        written = counts.get("added", 0) + counts.get("modified", 0) + counts.get("corrected", 0)
        self.report.unchanged += len(batch.articles) - written

    def flush(self) -> None:
        if self.pending:
            rows = self.pending.values()
            self.commit(self.batch(articles=tuple(r for r in rows if isinstance(r, Article)),
                                   rejected=tuple(r for r in rows if isinstance(r, Rejected))))
            self.pending.clear()

    # ---- the streaming pass ------------------------------------------------------------------
    def run(self) -> ArchiveReport:
        started = time.monotonic()
        reader = self.reader()
        self.stats = reader.stats
        items = iter(reader)
        try:
            for item in items:
                self.members, self.bytes_read = reader.stats.members, reader.stats.bytes_read
                if isinstance(item, ArticleVersion):
                    self.version(item)
                elif isinstance(item, Deletion):
                    self.deletion(item)
                elif isinstance(item, BadMember):
                    self.report.bad_count += 1
                    if len(self.report.bad_files) < BAD_NAMES:
                        self.report.bad_files.append(f"{item.member}: {item.reason}"[:300])
                    log.warning("bad file in archive", archive=self.archive.name, member=item.member,
                                error=item.reason)
                if len(self.pending) >= self.opt.batch_size:
                    self.flush()
                if self.should_stop():  # what was read is committed first: the rerun skips it
                    self.flush()
                    raise DumpInterrupted(f"stopped during {self.archive.name}; the next run resumes it")
        except DumpArchiveError as exc:
            self.verified.wait()  # its message names the damage when it found one
            raise CorruptArchive(str(exc)) from None
        except ReaderFailed as exc:
            raise DumpLoadError(f"{self.archive.name}: {exc}; nothing of it was stamped") from None
        finally:
            items.close()  # a ParallelReader's processes end with it
        self.members = self.report.members = reader.stats.members
        self.flush()
        self.finish()
        self.tick()
        self.report.seconds = time.monotonic() - started
        return self.report

    def reader(self) -> ArchiveReader | ParallelReader:
        """A global is read by `readers` readers (it needs only its versions in force, in any
        order of reading); a small global and a delta in this process alone."""
        common: dict[str, Any] = dict(min_chars=self.opt.min_chars, now=self.opt.clock(), codes=self.scope.ids,
                                      on_progress=lambda _stats: self.tick(), in_force_only=self.archive.is_global)
        if self.archive.is_global and self.opt.readers > 1 and self.total_bytes >= self.opt.parallel_min_bytes:
            return ParallelReader(self.path, readers=self.opt.readers, **common)
        return ArchiveReader(self.path, **common)

    def tick(self) -> None:
        if self.progress is not None:
            r = self.report
            self.progress(self.archive.name, self.stats.bytes_read, self.total_bytes,
                          r.stored + r.updated + r.unchanged + r.rejected + len(self.pending))

    def version(self, item: ArticleVersion) -> None:
        if not self.scope.covers(item.partition, item.code_id):
            return
        if item.in_force and item.partition == IN_FORCE_PARTITION:
            kept = self.in_force.setdefault(item.code_id, {})
            if kept.get(item.cid, "") >= item.id:
                return  # a lower version of a cid whose higher one is in force too
            kept[item.cid] = item.id
            self.retire.pop(item.id, None)
            if self.members > self.committed:  # else a killed run of this archive committed it
                self.pending[item.cid] = item.row  # replaces a lower version not written yet
        elif not self.archive.is_global and self.in_force.get(item.code_id, {}).get(item.cid) != item.id:
            # A global's old versions are many; its reconcile retires what they would.
            self.retire[item.id] = item.etat

    def deletion(self, item: Deletion) -> None:
        if not self.scope.covers(item.partition, item.code_id):
            return
        if item.kind == "article":
            self.deleted_ids.add(item.id)
        elif item.kind == "text":
            self.deleted_codes.add(item.code_id)

    # ---- the final transaction ---------------------------------------------------------------
    def finish(self) -> None:
        touched = {c: p for c, p in self.stats.touched.items() if self.scope.covers(p, c)}
        bad_codes = {_code_of(line) for line in self.report.bad_files}
        with_articles = self.stats.articles_by_code  # article files read, of the codes in scope
        empty = sorted(c for c in touched if c not in with_articles
                       and (self.archive.is_global or c in bad_codes))
        if empty or (self.members and self.report.bad_count >= self.members):
            raise DumpLoadError(
                f"{self.archive.name}: no article could be read for {', '.join(empty[:5]) or 'any text'} "
                f"although the archive holds its files ({self.report.bad_count} bad files, first: "
                f"{self.report.bad_files[:1]}): unknown layout or unreadable files; nothing of the "
                "archive was stamped")
        if self.archive.is_global and self.scope.ids is not None:
            absent = sorted(self.scope.ids - set(self.stats.touched))
            if absent:
                self.warnings.append(f"{self.archive.name} holds no file of {', '.join(absent[:10])}")
        in_force_ids = {i for kept in self.in_force.values() for i in kept.values()}
        retire = dict(self.retire)
        # Deletions come after every file of the archive; an id the archive also holds in force
        # (moved to another text or partition) stays.
        deleted = [i for i in sorted(self.deleted_ids) if i not in in_force_ids]
        for rid in deleted:
            retire[rid] = "ABROGE"
        reconcile: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        if self.archive.is_global:
            for code_id, partition in touched.items():
                kept = self.in_force.get(code_id, {})
                if partition == IN_FORCE_PARTITION or not kept:
                    reconcile[code_id] = (tuple(kept.values()), tuple(kept))
        for code_id in sorted(self.deleted_codes):
            kept = self.in_force.get(code_id, {})
            reconcile.setdefault(code_id, (tuple(kept.values()), tuple(kept)))
        for code_id, (ids, _) in sorted(reconcile.items()):
            self.guard(code_id, len(ids), repealed=touched.get(code_id) == "code_non_vigueur")
        before_deleted = self.count_stored_in_force(deleted)
        counts_before = self.report.retired
        self.commit(self.batch(
            final=True,
            retire=tuple(sorted(retire.items())),
            reconcile=tuple((c, ids, cids) for c, (ids, cids) in sorted(reconcile.items())),
        ))
        self.report.deleted = before_deleted
        log.info("archive applied", archive=self.archive.name, stamp=self.archive.stamp,
                 retired=self.report.retired - counts_before, deleted=before_deleted)

    def count_stored_in_force(self, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        rows = self.store.get_articles(ids)
        return sum(1 for row in rows.values() if str(row.get("etat", "")).startswith("VIGUEUR"))

    def guard(self, code_id: str, listed: int, *, repealed: bool) -> None:
        """The API path's guard: an archive that would take most of a code's stored rows out of
        force is refused (DumpLoadError, nothing stamped) unless it shows the code repealed."""
        if repealed:
            return
        in_force = self.store.count_in_force(code_id)
        if retiring_looks_wrong(listed, in_force):
            at_least = in_force - listed
            raise DumpLoadError(
                f"{self.archive.name} lists {listed} articles of {code_id} in force while the store "
                f"holds {in_force}: applying it would take at least {at_least} of them out of force; "
                "nothing of the archive was stamped (check the archive, or retire those rows by hand)")


class Archives(Protocol):
    """Where archives come from: fetch.DumpFetcher (any SOURCE), or LocalArchives."""

    def list_all(self, sources: Iterable[str]) -> list[SourceArchive]: ...

    def fetch(self, archive: SourceArchive,
              on_bytes: Callable[[int, int | None], None] | None = None) -> Path: ...


class LocalArchives:
    """Local SOURCEs only (files, folders): no HTTP client built (its TLS set-up costs more
    than applying a delta)."""

    def list_all(self, sources: Iterable[str]) -> list[SourceArchive]:
        found: dict[str, SourceArchive] = {}
        for source in sources:
            for archive in list_local(source):
                found.setdefault(archive.name.name.lower(), archive)
        return list(found.values())

    def fetch(self, archive: SourceArchive,
              on_bytes: Callable[[int, int | None], None] | None = None) -> Path:
        return Path(archive.location)


class _Verification:
    """verify_archive in a thread, alongside the streaming pass (zlib releases the GIL, and
    decompressing runs ~15x faster than parsing, so the first commit barely waits)."""

    def __init__(self, path: Path) -> None:
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(path,), name="dump-verify", daemon=True)
        self._thread.start()

    def _run(self, path: Path) -> None:
        try:
            verify_archive(path)
        except BaseException as exc:  # noqa: BLE001 - raised in the applier's thread by wait()
            self._error = exc

    def wait(self) -> None:
        """Return once the archive is verified whole; CorruptArchive otherwise."""
        self._thread.join()
        if self._error is not None:
            raise self._error


def verify_archive(path: Path) -> None:
    """Decompress the whole archive once (zlib, in C: a few percent of a load): CorruptArchive
    when it is truncated or its gzip CRC or length is wrong, before anything of it is written.
    A broken tar inside an intact gzip (which no download cut produces) is found by the reader
    instead, when it reaches it: batches before it are then in, the stamp is not."""
    try:
        with gzip.open(path, "rb") as gz:
            while gz.read(1 << 22):
                pass
    except (OSError, EOFError, zlib.error) as exc:
        raise CorruptArchive(
            f"{path.name} is truncated or corrupt ({type(exc).__name__}: {exc}); nothing of it was "
            "applied (delete it from the cache folder to download it again)") from None


def load_dumps(
    sources: Sequence[str],
    scope: CodeScope,
    store: Store,
    fetcher: Archives,
    *,
    options: DumpOptions = DumpOptions(),
    progress: Progress | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> LoadSummary:
    """Apply, in plan order, the archives of `sources` the store has not applied yet (only
    those are downloaded). An error ends the load (in `summary.errors`; the archives applied
    before it stay applied); `should_stop` is polled between members (what was read is
    committed, then DumpInterrupted)."""
    started = time.monotonic()
    summary = LoadSummary(codes=scope.label)
    try:
        state = store.get_dump_state()
        if state.codes is not None and state.codes != scope.label:
            raise DumpLoadError(
                f"the store was loaded with --codes {_short(state.codes)}; loading {_short(scope.label)} "
                "on top would leave the other codes behind: use the same --codes, or a new store")
        available = {a.name.name: a for a in fetcher.list_all(sources)}
        todo = plan([a.name for a in available.values()], state.last_stamp)
        if not todo:
            summary.warnings.append(f"nothing to apply: the store is at {state.last_stamp or 'nothing'}")
        for archive in todo:
            if should_stop():
                raise DumpInterrupted(f"stopped before {archive.name}")
            path = fetcher.fetch(available[archive.name],
                                 on_bytes=_download_progress(archive.name, progress))
            log.info("archive start", archive=archive.name, bytes=path.stat().st_size)
            one = _ArchivePass(archive, path, store, scope, options, state, progress, should_stop)
            summary.archives.append(one.run())
            summary.warnings.extend(one.warnings)
            state = store.get_dump_state()
    except (DumpLoadError, PlanError, SourceError, DownloadError) as exc:
        summary.errors.append(str(exc))
        log.error("dump load stopped", error=str(exc))
    summary.seconds = time.monotonic() - started
    return summary


def _download_progress(name: str, progress: Progress | None) -> Callable[[int, int | None], None] | None:
    if progress is None:
        return None
    return lambda done, total: progress(f"downloading {name}", done, total or 0, 0)


def _code_of(bad_file: str) -> str | None:
    """The text cid of a bad file's member path ("member: reason"), if its path says it."""
    try:
        return member_path(bad_file.split(": ", 1)[0]).code_id
    except ValueError:
        return None


def _short(codes: str) -> str:
    return codes if len(codes) <= 60 else f"{codes[:57]}..."
