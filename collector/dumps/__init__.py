"""DILA LEGI open-data archives: find, download, read (the reading side of issue 11).

Facts about the archives: ../shared/reference/legi-dumps.md. The applying side (store writes
with the stamp, `load-dump`, the scheduler source) builds on this API:

names.py (pure)
    ArchiveName(stamp, is_global, name)   stamp "YYYYMMDD-HHMMSS" (sorts as text)
    parse_archive_name(name) -> ArchiveName | None
        `Freemium_legi_global_YYYYMMDD-HHMMSS.tar.gz`, `LEGI_…` / `legi_…` deltas; else None
    plan(available, last_stamp) -> list[ArchiveName]
        the newest global newer than last_stamp (if any), then every delta strictly after
        max(last_stamp, that global); PlanError when last_stamp is None and there is no global

fetch.py
    DumpFetcher(cache_dir, *, transport=None, timeout=60.0, attempts=5, retry_wait=1.0)
        a context manager (it owns an httpx.Client)
        .list(source) / .list_all(sources) -> list[SourceArchive(name, location)]
            source: a .tar.gz path, a folder, an HTTP(S) folder index URL or an archive URL
        .fetch(archive, on_bytes=None) -> Path   local file as is; a URL downloaded into
            cache_dir (Settings.dump_cache_dir, DUMP_CACHE_DIR) via `<name>.part`, resumed with
            Range after a cut, renamed when whole. on_bytes(done, total) follows it.
    SourceError (bad SOURCE), DownloadError (incomplete; the .part stays for the next try)

reader.py
    ArchiveReader(path, *, min_chars=100, now=None, codes=None, on_progress=None, backend=None,
                  in_force_only=False, share=(0, 1))
        backend: "libarchive" (default when libarchive.so.13 loads) or "tarfile"; TAR_BACKENDS
        iterate it once: items in archive order, then the deletions of both lists:
        ArticleVersion(id, cid, code_id, etat, partition, in_force, member, root, …)
            .row: the Article the API path stores for that version, or the quality filter's
            Rejected (same rule), built on first use and kept; .fields: all the file says.
            Both come from the parsed file the item holds (versions only retired cost no
            cleaning): drop items once used.
            in_force: an `*_en_vigueur` partition and ETAT VIGUEUR*.
            Several versions of one cid can be in force (VIGUEUR + VIGUEUR_DIFF): the API path
            keeps the highest id per cid. is_code: partition code_* (TNC texts are never codes).
        TextVersion(code_id, id, title, etat, date_debut, date_fin, partition, member)
            a texte/version file (a code's title).
        Deletion(kind, id, code_id, partition, path, source, line)
            kind article | section_ta | texte | text (a whole text folder, from the _dossier
            list). Apply each only to the copy in that partition and text: a code moving to
            code_non_vigueur brings its new files AND deletes its code_en_vigueur folder.
        BadMember(member, reason)
            bad XML, unknown layout, a malformed deletion line ("list:line"): skipped, the
            rest goes on; also in reader.stats.bad.
        .stats: ReadStats(bytes_read, total_bytes, members, kinds, skipped, articles_by_code,
            touched {text cid: partition, any file kind}, deletions, bad_count, bad (the
            first 1000)): live while reading;
            on_progress(stats) about every MiB and at the end.
        codes: text cids to read (None = all); files of other texts are skipped unparsed.
        Raises DumpArchiveError for a truncated/corrupt gzip or tar, or an archive with no
        file (even after items were yielded: apply nothing of that archive).
    member_path(name) -> MemberPath(partition, code_id, kind, id), strip_root(name),
    parse_deletion(line, source, number) -> Deletion

parallel.py
    ParallelReader(path, *, readers, min_chars, now, codes, on_progress, in_force_only)
        ArchiveReader's items, order and stats, from this process and readers-1 reader
        processes, each reading its share of the members; ReaderFailed when one dies.
    usable_cpus(), default_readers() (DUMP_READERS=0)

xml.py
    article_from_xml(data, *, min_chars, now, article_id=None, code_id=None, code_title=None)
        -> Article | Rejected, identical to parse.article_from_api for the same version
    DumpXmlError

The demo's synthetic archives (and their truth) are in collector/demo/dumps.py.
"""

from collector.dumps.fetch import DownloadError, DumpFetcher, SourceArchive, SourceError
from collector.dumps.names import ArchiveName, PlanError, parse_archive_name, plan
from collector.dumps.reader import (
    PARTITIONS,
    TAR_BACKENDS,
    ArchiveReader,
    ArticleVersion,
    BadMember,
    Deletion,
    DumpArchiveError,
    DumpItem,
    MemberPath,
    ReadStats,
    TextVersion,
    member_path,
    parse_deletion,
    read_archive,
    strip_root,
)
from collector.dumps.xml import DumpXmlError, article_from_xml

__all__ = [
    "PARTITIONS",
    "TAR_BACKENDS",
    "ArchiveName",
    "ArchiveReader",
    "ArticleVersion",
    "BadMember",
    "Deletion",
    "DownloadError",
    "DumpArchiveError",
    "DumpFetcher",
    "DumpItem",
    "DumpXmlError",
    "MemberPath",
    "PlanError",
    "ReadStats",
    "SourceArchive",
    "SourceError",
    "TextVersion",
    "article_from_xml",
    "member_path",
    "parse_archive_name",
    "parse_deletion",
    "plan",
    "read_archive",
    "strip_root",
]
