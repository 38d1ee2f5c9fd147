"""One streaming pass over a DILA LEGI archive -> typed items (see the package docstring).

The archive is read once, front to back, each member parsed whole with lxml and dropped:
memory does not grow with the archive. gzip.GzipFile decompresses (rather than a "r|gz" mode)
because it checks the CRC and length of the gzip trailer, which the tar end marker precedes: a
damaged end is an error too, not a silent success. The tar walk over it is libarchive's (through
libarchive-c, as legi.py reads these archives: headers parsed in C, ~20 us per member where
stdlib tarfile's "r|" stream mode takes ~70-90), or tarfile's when libarchive cannot be loaded
(the package or the system's libarchive.so.13 missing); both give the same items.
"""

from __future__ import annotations

import gzip
import re
import tarfile
import zlib
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any, BinaryIO, Union

from lxml import etree

from collector.clock import utcnow
from collector.dumps.xml import (
    ArticleXml,
    DumpXmlError,
    article_head,
    article_row,
    parse_xml,
    read_article,
    read_text_version,
)
from collector.models import Article, Rejected

try:
    import libarchive
    from libarchive.exception import ArchiveError
except (ImportError, OSError):  # the package, or the system library it loads, is missing
    libarchive = None

    class ArchiveError(Exception):  # type: ignore[no-redef]  # never raised without libarchive
        pass

TAR_BACKENDS = ("libarchive", "tarfile") if libarchive is not None else ("tarfile",)

PARTITIONS = ("code_en_vigueur", "code_non_vigueur", "TNC_en_vigueur", "TNC_non_vigueur")
PARTITION_FOLDERS = {  # partition -> its parent folder
    "code_en_vigueur": "code_et_TNC_en_vigueur",
    "TNC_en_vigueur": "code_et_TNC_en_vigueur",
    "code_non_vigueur": "code_et_TNC_non_vigueur",
    "TNC_non_vigueur": "code_et_TNC_non_vigueur",
}
DELETION_LISTS = ("liste_suppression_legi.dat", "liste_suppression_legi_dossier.dat")
_DELTA_ROOT = re.compile(r"[0-9]{8}-[0-9]{6}")
_TEXT_CID = re.compile(r"(?:LEGI|JORF)TEXT[0-9]{12}")
_ARTICLE_ID = re.compile(r"LEGIARTI[0-9]{12}")
_SECTION_ID = re.compile(r"LEGISCTA[0-9]{12}")
_VERSION_ID = re.compile(r"LEGITEXT[0-9]{12}")
_PARTITION_IN_LINE = re.compile(r"(?:^|/)((?:code|TNC)_(?:en|non)_vigueur)(?![_a-z])")
_ID_AT_END = re.compile(r"((?:LEGI|JORF)(?:ARTI|SCTA|TEXT)[0-9]{12})(?:\.xml)?$")
_FLAG_AT_END = re.compile(r"\s+[A-Z]$")  # the dossier list ends each line with " D" (legi.py 0.6)
# META_ARTICLE's ETAT, read off the bytes (VERSIONS writes etat="..." attributes, not elements;
# the text's markup is inside CONTENU, after META).
_ETAT_BYTES = re.compile(rb"<ETAT>\s*([A-Z_]+)\s*</ETAT>")
_PROGRESS_STEP = 1 << 20  # bytes of archive between two progress callbacks
MAX_BAD_NAMED = 1000  # ReadStats.bad keeps this many; bad_count counts them all


class DumpArchiveError(Exception):
    """The archive itself is unreadable (truncated or corrupt gzip, broken tar): apply nothing
    of it, whatever was yielded before."""


# ---- items ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ArticleVersion:
    """An ARTICLE file: one version of one article. `in_force`: a code/TNC partition
    "en_vigueur" and an ETAT starting with VIGUEUR (VIGUEUR, VIGUEUR_DIFF), as the API's TOC.
    It holds its parsed file (`root`) until dropped: `fields` and `row` are read from it when
    asked, so the many versions a loader only retires cost no HTML serialising or cleaning."""

    id: str
    cid: str
    code_id: str  # the text cid of the member's path
    etat: str
    partition: str
    in_force: bool
    member: str  # the path inside the archive, a delta's root stripped
    root: etree._Element | None  # None once detached()
    min_chars: int
    now: datetime
    _row: Article | Rejected | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def fields(self) -> ArticleXml:
        """Everything the file says (xml.read_article)."""
        if self.root is None:
            raise ValueError(f"{self.id}: detached, its file is gone (only .row is kept)")
        return read_article(self.root, self.id, head=(self.id, self.cid, self.etat))

    def detached(self) -> ArticleVersion:
        """A copy with its row built and without the parsed file: what can cross to another
        process (lxml trees do not pickle)."""
        copy = replace(self, root=None)
        object.__setattr__(copy, "_row", self.row)
        return copy

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as a call (half the time of the slots default), its row included."""
        return _version, (self.id, self.cid, self.code_id, self.etat, self.partition, self.in_force, self.member,
                          self.root, self.min_chars, self.now, self._row)

    @property
    def row(self) -> Article | Rejected:
        """What the API path stores for this version (an Article), or the quality filter's
        Rejected (xml.article_row). Built on first use, then kept."""
        if self._row is None:
            row = article_row(self.fields, code_id=self.code_id, min_chars=self.min_chars, now=self.now)
            object.__setattr__(self, "_row", row)  # a cache: the item stays immutable to its users
        return self._row  # type: ignore[return-value]

    @property
    def is_code(self) -> bool:
        return self.partition.startswith("code_")


def _version(*values: Any) -> ArticleVersion:
    version = ArticleVersion(*values[:-1])
    object.__setattr__(version, "_row", values[-1])
    return version


@dataclass(frozen=True, slots=True)
class TextVersion:
    """A texte/version file: a text's title (a code's title lives here) and state."""

    code_id: str
    id: str
    title: str | None
    etat: str | None
    date_debut: date | None
    date_fin: date | None
    partition: str
    member: str

    @property
    def is_code(self) -> bool:
        return self.partition.startswith("code_")


@dataclass(frozen=True, slots=True)
class Deletion:
    """One line of a deletion list, applied after every file of the same archive.

    `kind`: "article", "section_ta", "texte" (one file) or "text" (the whole folder of a text,
    from liste_suppression_legi_dossier.dat). `partition` and `code_id` say WHICH copy goes:
    the same id may have just arrived under another partition (a code moving to
    code_non_vigueur deletes its code_en_vigueur folder)."""

    kind: str
    id: str
    code_id: str
    partition: str
    path: str  # the line as listed
    source: str  # the list file it came from
    line: int


@dataclass(frozen=True, slots=True)
class BadMember:
    """A member (or a deletion-list line, `member` = "list:line") skipped with its reason."""

    member: str
    reason: str


DumpItem = Union[ArticleVersion, TextVersion, Deletion, BadMember]


@dataclass
class ReadStats:
    """Counters of one pass, live while it runs (`bytes_read` of the compressed file)."""

    bytes_read: int = 0
    total_bytes: int | None = None
    members: int = 0  # regular files seen
    kinds: Counter[str] = field(default_factory=Counter)  # article / section_ta / texte/struct / ...
    skipped: int = 0  # files of texts not asked for (`codes`)
    not_in_force: int = 0  # article files left unparsed by `in_force_only`
    articles_by_code: Counter[str] = field(default_factory=Counter)  # article files per text cid
    touched: dict[str, str] = field(default_factory=dict)  # text cid -> partition, any file kind
    touched_at: dict[str, int] = field(default_factory=dict)  # text cid -> member number it was first seen at
    walked: bool = False  # every file walked: what is yielded now comes from the deletion lists
    deletions: int = 0
    bad_count: int = 0
    bad: list[BadMember] = field(default_factory=list)  # the first MAX_BAD_NAMED of them

    def add_bad(self, bad: BadMember) -> None:
        self.bad_count += 1
        if len(self.bad) < MAX_BAD_NAMED:
            self.bad.append(bad)


# ---- paths ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class MemberPath:
    """What a member's path says (legi.py's positional reading, after the delta root)."""

    partition: str
    code_id: str
    kind: str  # article | section_ta | texte/struct | texte/version
    id: str


def strip_root(name: str) -> str:
    """A member name without "./" and without a delta's `YYYYMMDD-HHMMSS/` root."""
    while name.startswith("./"):
        name = name[2:]
    head, sep, rest = name.partition("/")
    return rest if sep and _DELTA_ROOT.fullmatch(head) else name


def member_path(name: str) -> MemberPath:
    """legi/global/<group>/<partition>/<LEGI|JORF>/TEXT/xx/xx/xx/xx/xx/<cid>/<kind>/…/<id>.xml
    -> MemberPath; ValueError("unknown layout: …") for anything else."""
    parts = name.split("/")
    if len(parts) < 15 or parts[0] != "legi" or parts[1] != "global" or not parts[-1].endswith(".xml"):
        raise ValueError("unknown layout")
    partition = parts[3]
    if PARTITION_FOLDERS.get(partition) != parts[2]:
        raise ValueError(f"unknown layout: partition {parts[2][:40]}/{partition[:40]}")
    code_id = parts[11]
    if not _TEXT_CID.fullmatch(code_id):
        raise ValueError(f"unknown layout: text folder {code_id[:40]!r}")
    file_id = parts[-1][:-4]
    top = parts[12]
    if top == "article" and len(parts) == 21 and _ARTICLE_ID.fullmatch(file_id):
        kind = "article"
    elif top == "section_ta" and len(parts) == 21 and _SECTION_ID.fullmatch(file_id):
        kind = "section_ta"
    elif top == "texte" and len(parts) == 15 and parts[13] in ("struct", "version") and _VERSION_ID.fullmatch(file_id):
        kind = f"texte/{parts[13]}"
    else:
        raise ValueError(f"unknown layout: {'/'.join(parts[12:14])[:60]} file {parts[-1][:40]}")
    return MemberPath(partition=partition, code_id=code_id, kind=kind, id=file_id)


def parse_deletion(line: str, source: str, number: int) -> Deletion:
    """One deletion-list line -> Deletion, read by its tokens rather than by position (real
    lists had a line with a missing "/"); the dossier list's " D" after the path is dropped.
    ValueError when it names no partition, text or id."""
    path = strip_root(_FLAG_AT_END.sub("", line.strip()).rstrip("/"))
    partition = _PARTITION_IN_LINE.search(path)
    text = _TEXT_CID.search(path)
    last = _ID_AT_END.search(path)
    if partition is None or text is None or last is None:
        raise ValueError("no partition, text cid and id in it")
    item_id = last.group(1)
    if item_id.startswith(("LEGIARTI", "JORFARTI")):
        kind = "article"
    elif item_id.startswith(("LEGISCTA", "JORFSCTA")):
        kind = "section_ta"
    elif last.start() > text.end():  # a TEXT id below the text's folder: texte/struct|version
        kind = "texte"
    else:
        kind = "text"  # the text's own folder
    return Deletion(kind=kind, id=item_id, code_id=text.group(0), partition=partition.group(1),
                    path=line.strip(), source=source, line=number)


# ---- the pass ------------------------------------------------------------------------------------
class _Counting:
    """A read-only file that counts the bytes read from it."""

    def __init__(self, raw: BinaryIO, stats: ReadStats, tick: Callable[[], None]) -> None:
        self._raw = raw
        self._stats = stats
        self._tick = tick

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._stats.bytes_read += len(data)
        self._tick()
        return data

    def readable(self) -> bool:
        return True


# A walk yields (name, read) for each regular file, in order; read() returns the file's bytes
# and may be called only before the walk goes on. A file not read is skipped in C (libarchive)
# or by tarfile, never copied into a Python object: most of a real global is never read.
Walk = Iterator[tuple[str, Callable[[], bytes]]]


def _tarfile_files(stream: BinaryIO) -> Walk:
    """The files of a tar stream, in order (stdlib tarfile "r|")."""
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        while (info := tar.next()) is not None:
            tar.members.clear()  # tarfile keeps every TarInfo otherwise: memory would grow
            if info.isfile():
                handle = tar.extractfile(info)
                yield info.name, (handle.read if handle is not None else bytes)


class _Feed:
    """A stream as libarchive reads it: never seekable (it reads on, as in "r|"), and an error
    of the stream (a cut or corrupt gzip) kept to be raised: libarchive-c's ctypes callback
    would print it and lose it. -1 tells libarchive the read failed."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.error: Exception | None = None

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer: bytearray) -> int:
        try:
            return self.stream.readinto(buffer)  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - re-raised by _libarchive_files
            self.error = exc
            return -1


def _libarchive_files(stream: BinaryIO) -> Walk:
    """The same through libarchive (format tar only: the gzip layer is GzipFile's)."""
    feed = _Feed(stream)
    try:
        with libarchive.stream_reader(feed, "tar", "none", block_size=1 << 16) as archive:
            for entry in archive:
                if entry.isfile:
                    yield entry.pathname, lambda entry=entry: b"".join(entry.get_blocks())
    except ArchiveError:
        if feed.error is not None:
            raise feed.error from None
        raise


class ArchiveReader:
    """Reads one archive in one pass: `for item in reader:`.

    Yields ArticleVersion, TextVersion and BadMember items in archive order, then the Deletion
    items of both lists (and BadMember for their malformed lines). Raises DumpArchiveError when
    the gzip or tar stream is broken. `stats` is live while it runs; `on_progress(stats)` is
    called about every MiB of compressed input and once at the end.

    `codes`: text cids to read (None: all); files of other texts are counted as skipped
    unparsed, deletions of other texts are not yielded. `min_chars`: the quality filter of the
    rows (MIN_ARTICLE_CHARS). `now`: collected_at / rejected_at of the rows.

    `in_force_only`: article files of a non_vigueur partition, or whose META_ARTICLE ETAT
    (read off the bytes) is not VIGUEUR*, are counted (`stats.articles_by_code`,
    `stats.not_in_force`) but neither parsed nor yielded: a global's loader needs only the
    versions in force (its reconcile retires the rest without reading them), and those others
    are a third of its article files. A file whose ETAT cannot be read that way, or that does
    not end with `</ARTICLE>` (a cut file), is parsed as usual, so named when bad; other damage
    inside a version not in force is not seen (nothing of it would be stored).

    `share` (residues, n): read only the members whose number (1-based) modulo n is one of
    `residues`, and the deletion lists only when 0 is one of them; the others are walked past
    unread (`stats.members` and `bytes_read` still count the whole archive; dumps/parallel.py
    splits an archive between readers this way and adds up their stats).
    """

    def __init__(
        self,
        source: Path | str,
        *,
        min_chars: int = 100,
        now: datetime | None = None,
        codes: Collection[str] | None = None,
        on_progress: Callable[[ReadStats], None] | None = None,
        backend: str | None = None,
        in_force_only: bool = False,
        share: tuple[Collection[int], int] = ((0,), 1),
    ) -> None:
        if backend is not None and backend not in TAR_BACKENDS:
            raise ValueError(f"tar backend {backend!r} not available here (have: {', '.join(TAR_BACKENDS)})")
        self.backend = backend or TAR_BACKENDS[0]
        self.path = Path(source)
        self.min_chars = min_chars
        self.now = now or utcnow()
        self.codes = None if codes is None else frozenset(codes)
        self.on_progress = on_progress
        self.in_force_only = in_force_only
        residues, self.modulus = share
        self.residues = frozenset(residues)
        if not self.residues or not self.residues <= set(range(self.modulus)):
            raise ValueError(f"share {share}: need residues among 0..n-1")
        self.stats = ReadStats()
        self._next_tick = _PROGRESS_STEP

    def __iter__(self) -> Iterator[DumpItem]:
        try:
            raw = self.path.open("rb")
        except OSError as exc:
            raise DumpArchiveError(f"{self.path.name}: cannot open: {exc.strerror or exc}") from None
        with raw:
            self.stats.total_bytes = self.path.stat().st_size
            try:
                yield from self._read(raw)
            except (tarfile.TarError, ArchiveError, EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
                raise DumpArchiveError(
                    f"{self.path.name}: corrupt or truncated archive after {self.stats.bytes_read} bytes "
                    f"({type(exc).__name__}: {str(exc)[:160]}); nothing of it may be applied"
                ) from None
        if self.on_progress is not None:
            self.on_progress(self.stats)

    def _tick(self) -> None:
        if self.on_progress is not None and self.stats.bytes_read >= self._next_tick:
            self._next_tick = self.stats.bytes_read + _PROGRESS_STEP
            self.on_progress(self.stats)

    def _read(self, raw: BinaryIO) -> Iterator[DumpItem]:
        lists: list[tuple[str, bytes]] = []
        walk = _libarchive_files if self.backend == "libarchive" else _tarfile_files
        with gzip.GzipFile(fileobj=_Counting(raw, self.stats, self._tick), mode="rb") as unzipped:  # type: ignore[arg-type]
            for member, read in walk(unzipped):
                self.stats.members += 1
                name = strip_root(member)
                if name in DELETION_LISTS:
                    if 0 in self.residues:
                        lists.append((name, read()))
                    continue
                if self.stats.members % self.modulus not in self.residues:
                    continue  # another reader's
                item = self._member(name, read)
                if item is not None:
                    if isinstance(item, BadMember):
                        self.stats.add_bad(item)
                    yield item
            while unzipped.read(1 << 16):  # through the gzip trailer: its CRC and length are checked
                pass
        if not self.stats.members:
            raise tarfile.ReadError("no file in the archive")
        self.stats.walked = True
        for source, data in lists:
            yield from self._deletions(source, data)

    def _member(self, name: str, read: Callable[[], bytes]) -> ArticleVersion | TextVersion | BadMember | None:
        try:
            where = member_path(name)
        except ValueError as exc:
            return BadMember(name, str(exc))
        if where.code_id not in self.stats.touched:
            self.stats.touched[where.code_id] = where.partition
            self.stats.touched_at[where.code_id] = self.stats.members
        # Unparsed: another code than those asked for, or a non-code text (TNC partitions are
        # never loaded as codes; most of a real global is such texts).
        if where.partition.startswith("TNC_") or (self.codes is not None and where.code_id not in self.codes):
            self.stats.skipped += 1
            return None
        self.stats.kinds[where.kind] += 1
        data = read()
        try:
            if where.kind == "article":
                if self.in_force_only and not _maybe_in_force(where.partition, data):
                    self.stats.articles_by_code[where.code_id] += 1
                    self.stats.not_in_force += 1
                    return None
                return self._article(where, name, data)
            if where.kind == "texte/version":
                text = read_text_version(parse_xml(data, "TEXTE_VERSION"))
                return TextVersion(code_id=where.code_id, id=where.id, title=text.title, etat=text.etat,
                                   date_debut=text.date_debut, date_fin=text.date_fin,
                                   partition=where.partition, member=name)
            parse_xml(data, "SECTION_TA" if where.kind == "section_ta" else "TEXTELR")  # checked, not used
            return None
        except DumpXmlError as exc:
            return BadMember(name, str(exc))

    def _article(self, where: MemberPath, name: str, data: bytes) -> ArticleVersion:
        root = parse_xml(data, "ARTICLE")
        article_id, cid, etat = article_head(root, where.id)
        self.stats.articles_by_code[where.code_id] += 1
        return ArticleVersion(
            id=article_id,
            cid=cid,
            code_id=where.code_id,
            etat=etat,
            partition=where.partition,
            in_force=where.partition.endswith("_en_vigueur") and etat.startswith("VIGUEUR"),
            member=name,
            root=root,
            min_chars=self.min_chars,
            now=self.now,
        )

    def _deletions(self, source: str, data: bytes) -> Iterator[Deletion | BadMember]:
        text = data.decode("utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                deletion = parse_deletion(line, source, number)
            except ValueError as exc:
                bad = BadMember(f"{source}:{number}", f"malformed deletion line ({exc}): {line.strip()[:120]!r}")
                self.stats.add_bad(bad)
                yield bad
                continue
            if self.codes is not None and deletion.code_id not in self.codes:
                continue
            self.stats.deletions += 1
            yield deletion


def _maybe_in_force(partition: str, data: bytes) -> bool:
    """False when the path or the file's ETAT says the version is not in force (and the file
    is not visibly cut: a cut one is parsed, to be reported)."""
    if not data.rstrip().endswith(b"</ARTICLE>"):
        return True
    if not partition.endswith("_en_vigueur"):
        return False
    etat = _ETAT_BYTES.search(data)
    return etat is None or etat.group(1).startswith(b"VIGUEUR")


def read_archive(path: Path | str, **options: object) -> Iterator[DumpItem]:
    """Shortcut: `iter(ArchiveReader(path, **options))`."""
    return iter(ArchiveReader(path, **options))  # type: ignore[arg-type]
