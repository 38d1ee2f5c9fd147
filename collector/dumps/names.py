"""DILA LEGI archive names -> ArchiveName, and the plan of archives to apply (pure functions)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

# legi.py's pattern (legi/download.py), case-insensitive: lowercase `legi_` before June 2018.
ARCHIVE_RE = re.compile(r"(.+_)?legi(?P<global>_global)?_(?P<date>[0-9]{8}-[0-9]{6})\..+", re.IGNORECASE)
_ARCHIVE_SUFFIX = ".tar.gz"


class PlanError(ValueError):
    """The archives at hand cannot bring the store up to date (deltas without a global)."""


@dataclass(frozen=True, slots=True)
class ArchiveName:
    """One archive recognised by its file name. `stamp` is "YYYYMMDD-HHMMSS" (sorts as text)."""

    stamp: str
    is_global: bool
    name: str  # the file name as published (no folder)

    @property
    def kind(self) -> str:
        return "global" if self.is_global else "delta"


def parse_archive_name(name: str) -> ArchiveName | None:
    """The ArchiveName of `Freemium_legi_global_YYYYMMDD-HHMMSS.tar.gz` or
    `LEGI_YYYYMMDD-HHMMSS.tar.gz` (any case); None for any other file (a PDF, a listing).
    A folder part of `name` is dropped."""
    base = name.rsplit("/", 1)[-1]
    if not base.lower().endswith(_ARCHIVE_SUFFIX):
        return None
    match = ARCHIVE_RE.fullmatch(base)
    if match is None:
        return None
    return ArchiveName(stamp=match["date"], is_global=match["global"] is not None, name=base)


def plan(available: Iterable[ArchiveName], last_stamp: str | None) -> list[ArchiveName]:
    """The archives to apply, in order, to a store whose last applied stamp is `last_stamp`
    (None: nothing applied yet).

    The newest global newer than `last_stamp`, if there is one, then every delta strictly after
    the newer of `last_stamp` and that global's stamp, oldest first. Two archives of one kind
    and stamp (`LEGI_` and `legi_`) count once. PlanError when nothing was applied yet and no
    global is available: a delta carries changed files only and is never applied alone.
    """
    by_key: dict[tuple[bool, str], ArchiveName] = {}
    for archive in available:
        by_key.setdefault((archive.is_global, archive.stamp), archive)
    globals_ = sorted((a for a in by_key.values() if a.is_global), key=lambda a: a.stamp)
    newer = [g for g in globals_ if last_stamp is None or g.stamp > last_stamp]
    chosen = newer[-1] if newer else None
    if chosen is None and last_stamp is None:
        raise PlanError("no global archive (Freemium_legi_global_*.tar.gz) and nothing applied yet: "
                        "deltas are never applied alone")
    after = chosen.stamp if chosen is not None else last_stamp
    assert after is not None
    deltas = sorted((a for a in by_key.values() if not a.is_global and a.stamp > after),
                    key=lambda a: a.stamp)
    return ([chosen] if chosen is not None else []) + deltas
