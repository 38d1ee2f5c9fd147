"""Plain data shared by harvest, the stores and the status (no behaviour, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import date, datetime
from operator import attrgetter
from typing import Any, TypeVar

_T = TypeVar("_T")


def pickled_as_call(cls: type[_T]) -> type[_T]:
    """Pickle a frozen slots dataclass as its constructor call: about half the time of the
    default (a state dict set field by field), which counts for the rows a dump reader process
    sends (dumps/parallel.py)."""
    values = attrgetter(*(f.name for f in fields(cls)))  # type: ignore[arg-type]

    def reduce(self: Any) -> tuple[Any, ...]:
        return cls, values(self)

    cls.__reduce__ = reduce  # type: ignore[assignment,method-assign]
    return cls

# The change log's event kinds (legifrance_changes.kind), in the order counts are shown.
CHANGE_KINDS: tuple[str, ...] = ("added", "modified", "repealed", "corrected")


@dataclass(frozen=True, slots=True)
class TocEntry:
    """One in-force article version listed in a code's table of contents."""

    id: str  # LEGIARTI version id (the one to fetch)
    cid: str  # LEGIARTI id of the article's first version
    num: str | None
    etat: str
    section_path: str  # "Partie législative > Livre Ier > Titre II"


@dataclass(frozen=True, slots=True)
class CodeToc:
    """A code's table of contents reduced to what a pass needs."""

    code_id: str  # LEGITEXT cid
    title: str  # from the API, never hand-written
    modif_date: str | None  # top-level modifDate ("YYYY-MM-DD")
    entries: tuple[TocEntry, ...]


@pickled_as_call
@dataclass(frozen=True, slots=True)
class Article:
    """One row of legifrance_articles (keyed by the LEGIARTI version id)."""

    id: str
    cid: str
    code_id: str
    code_title: str
    num: str | None
    etat: str
    date_debut: date | None
    date_fin: date | None  # None = no end (32472144000000 sentinel)
    section_path: str
    text: str
    html: str
    nota: str | None
    content_sha256: str
    collected_at: datetime


@pickled_as_call
@dataclass(frozen=True, slots=True)
class Rejected:
    """An in-force id the quality filter (or the API) turned down; remembered so it is not refetched."""

    id: str
    code_id: str
    reason: str  # "too_short" | "empty" | "null_article" | "not_in_force" ...
    length: int  # characters of cleaned text (0 when there is none)
    rejected_at: datetime


@dataclass(frozen=True, slots=True)
class CodeMark:
    """What the store remembers of a code between passes (MAINTENANCE uses it to skip work)."""

    code_id: str
    title: str | None
    modif_date: str | None  # TOC modifDate at the last complete walk
    last_update: str | None  # /list/code lastUpdate at the last complete walk
    walked_at: datetime | None  # last complete TOC walk


@dataclass(slots=True)
class CodeProgress:
    """Per-code progress of the current pass (mutable; copied into status snapshots)."""

    code_id: str
    title: str | None = None
    total: int = 0  # in-force ids in the TOC
    known: int = 0  # already in the store (stored or rejected)
    fetched: int = 0
    stored: int = 0
    skipped: int = 0  # rejected by the quality filter / null article
    failed: int = 0
    state: str = "pending"  # pending | walking | fetching | done | unchanged | failed
    error: str | None = None


@dataclass(slots=True)
class PassSummary:
    """Outcome of one pass; the CLI prints it as JSON."""

    mode: str
    codes: int = 0
    requests: int = 0  # HTTP attempts to the API
    toc_requests: int = 0
    article_requests: int = 0
    token_requests: int = 0  # to the token endpoint; with `requests`, what the budget counted
    fetched: int = 0
    stored: int = 0
    skipped: int = 0
    failed: int = 0
    codes_failed: int = 0
    codes_unchanged: int = 0
    superseded: int = 0  # stored rows set to MODIFIE: a newer version of their cid is in force
    repealed: int = 0  # stored rows set to ABROGE: their cid is no longer in force
    # change-log events this pass wrote, by kind (added / modified / repealed / corrected)
    events: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CHANGE_KINDS, 0))
    interrupted: bool = False
    started_at: datetime | None = None
    finished_at: datetime | None = None
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class DumpState:
    """What the store remembers of the DILA archives applied (one row; see store.base)."""

    last_stamp: str | None = None  # "YYYYMMDD-HHMMSS" of the last archive applied completely
    last_archive: str | None = None  # its file name
    global_stamp: str | None = None  # the global the store was built on
    codes: str | None = None  # the code scope of the loads ("all" or comma-separated ids)
    archive: str | None = None  # archive being applied (None when none is half-applied)
    members: int = 0  # members of it whose rows are committed
    bytes_read: int = 0  # compressed bytes read at that point
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class DumpBatch:
    """One transaction of a dump load: rows, retirements and the progress that goes with them.

    `retire` are (id, new etat) pairs of versions no longer in force (Store.retire_versions);
    `reconcile` maps a code to the (ids, cids) in force in a global (Store.retire_absent);
    `final` marks the archive's last batch: its stamp becomes the last one applied."""

    archive: str
    stamp: str
    is_global: bool
    codes: str
    members: int
    bytes_read: int
    articles: tuple[Article, ...] = ()
    rejected: tuple[Rejected, ...] = ()
    retire: tuple[tuple[str, str], ...] = ()
    reconcile: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = ()
    final: bool = False

    @property
    def archive_tag(self) -> str:
        """The change log's run_id for this archive's events: its file name without `.tar.gz`."""
        name = self.archive
        for suffix in (".tar.gz", ".tgz"):
            if name.lower().endswith(suffix):
                return name[: -len(suffix)]
        return name
