"""Model <-> row conversions shared by both backends (same columns, JSON-safe values)."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from enum import Enum
from typing import Any

from collector.config import parse_mode
from collector.models import CHANGE_KINDS, Article, CodeMark, DumpBatch, DumpState, Rejected

ARTICLE_COLUMNS: tuple[str, ...] = (
    "id",
    "cid",
    "code_id",
    "code_title",
    "num",
    "etat",
    "date_debut",
    "date_fin",
    "section_path",
    "text",
    "html",
    "nota",
    "content_sha256",
    "collected_at",
)
REJECTED_COLUMNS: tuple[str, ...] = ("id", "code_id", "reason", "length", "rejected_at")
MARK_COLUMNS: tuple[str, ...] = ("code_id", "title", "modif_date", "last_update", "walked_at")
STATE_FIELDS: tuple[str, ...] = ("running", "mode", "updated_at", "pid", "host")
# legifrance_changes as readers see it (Store.read_changes); previous_text stays in the table.
CHANGE_KEYS: tuple[str, ...] = (
    "seq",
    "kind",
    "code_id",
    "cid",
    "id",
    "previous_id",
    "num",
    "etat",
    "content_sha256",
    "run_id",
    "at",
)

def iso_ts(value: datetime | None) -> str | None:
    """A timestamp as ISO 8601 in UTC with microseconds (naive values are taken as UTC)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def parse_ts(value: str | datetime | None) -> datetime | None:
    """Parse an ISO timestamp from either backend (PostgreSQL prints '+00:00' or 'Z')."""
    if value is None or isinstance(value, datetime):
        return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def norm_ts(value: str | datetime | None) -> str | None:
    """Normalise a stored timestamp to iso_ts() form, so both backends return the same text."""
    return iso_ts(parse_ts(value))


def iso_date(value: date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return iso_ts(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def to_json(value: Any) -> str:
    """Compact JSON (datetimes as ISO, enums as values), as sent over the wire."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_json_default)


def json_safe(value: Any) -> Any:
    """The same value made of plain JSON types (for jsonb columns over REST)."""
    return json.loads(to_json(value))


def article_row(a: Article) -> dict[str, Any]:
    return {
        "id": a.id,
        "cid": a.cid,
        "code_id": a.code_id,
        "code_title": a.code_title,
        "num": a.num,
        "etat": a.etat,
        "date_debut": iso_date(a.date_debut),
        "date_fin": iso_date(a.date_fin),
        "section_path": a.section_path,
        "text": a.text,
        "html": a.html,
        "nota": a.nota,
        "content_sha256": a.content_sha256,
        "collected_at": iso_ts(a.collected_at),
    }


def rejected_row(r: Rejected) -> dict[str, Any]:
    return {
        "id": r.id,
        "code_id": r.code_id,
        "reason": r.reason,
        "length": int(r.length),
        "rejected_at": iso_ts(r.rejected_at),
    }


def mark_row(m: CodeMark) -> dict[str, Any]:
    return {
        "code_id": m.code_id,
        "title": m.title,
        "modif_date": m.modif_date,
        "last_update": m.last_update,
        "walked_at": iso_ts(m.walked_at),
    }


def mark_from_row(row: Mapping[str, Any]) -> CodeMark:
    return CodeMark(
        code_id=row["code_id"],
        title=row.get("title"),
        modif_date=row.get("modif_date"),
        last_update=row.get("last_update"),
        walked_at=parse_ts(row.get("walked_at")),
    )


def dedup(rows: Iterable[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """One row per key (the last one wins): PostgreSQL refuses an upsert touching a row twice."""
    return list({row[key]: row for row in rows}.values())


def split_articles_rejected(
    articles: Sequence[Article], rejected: Sequence[Rejected]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows to write; an id both stored and rejected in one batch is stored (not rejected)."""
    article_rows = dedup((article_row(a) for a in articles), "id")
    stored = {row["id"] for row in article_rows}
    rejected_rows = dedup((rejected_row(r) for r in rejected if r.id not in stored), "id")
    return article_rows, rejected_rows


def retire_args(
    code_id: str, in_force_ids: Collection[str], in_force_cids: Collection[str] | None
) -> tuple[str, list[str], list[str]]:
    """Checked arguments of Store.retire_absent: a bare string is refused (it is a
    Collection[str] too, and would retire every row whose id is not one of its letters)."""
    if not isinstance(code_id, str) or not code_id:
        raise ValueError(f"retire_absent: code_id must be a non-empty string, got {code_id!r}")
    lists = []
    for name, ids in (("in_force_ids", in_force_ids), ("in_force_cids", in_force_cids or ())):
        items = [] if isinstance(ids, str | bytes) else list(ids)
        if isinstance(ids, str | bytes) or not all(isinstance(i, str) for i in items):
            raise TypeError(f"retire_absent: {name} must be a collection of id strings")
        lists.append(list(dict.fromkeys(items)))
    return code_id, lists[0], lists[1]


def in_force(etat: str | None) -> bool:
    """VIGUEUR and VIGUEUR_DIFF alike (the readers' rule)."""
    return bool(etat) and str(etat).startswith("VIGUEUR")


def no_change_counts() -> dict[str, int]:
    return dict.fromkeys(CHANGE_KINDS, 0)


def event_tag(tag: str | None, run_id: int | None) -> str | None:
    """The run_id written on commit_batch's events: the tag, else the run id as text."""
    return tag if tag is not None else (str(run_id) if run_id is not None else None)


def change_from_row(row: Mapping[str, Any], *, previous_text: bool = False) -> dict[str, Any]:
    """A legifrance_changes row as read_changes returns it (same text from both backends)."""
    change = {key: row.get(key) for key in CHANGE_KEYS}
    change["seq"] = int(row["seq"])
    change["at"] = norm_ts(row.get("at"))
    if previous_text:
        change["previous_text"] = row.get("previous_text")
    return change


MAX_SEQ = 2**63 - 1  # seq is a signed 64-bit integer in both databases


def change_args(since: int, limit: int) -> tuple[int, int]:
    """Checked read_changes arguments: 0 <= since <= MAX_SEQ, 1 <= limit."""
    if isinstance(since, bool) or not isinstance(since, int) or not 0 <= since <= MAX_SEQ:
        raise ValueError(f"read_changes: since must be an integer from 0 to {MAX_SEQ}, got {since!r}"[:200])
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"read_changes: limit must be an integer >= 1, got {limit!r}"[:200])
    return since, min(limit, MAX_SEQ)


def cursor_args(consumer: str, seq: int) -> tuple[str, int]:
    """Checked set_cursor arguments."""
    if not isinstance(consumer, str) or not consumer:
        raise ValueError("set_cursor: consumer must be a non-empty string")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= MAX_SEQ:
        raise ValueError(f"set_cursor: seq must be an integer from 0 to {MAX_SEQ}, got {seq!r}"[:200])
    return consumer, seq


def article_from_rest(row: Mapping[str, Any]) -> dict[str, Any]:
    """A legifrance_articles row read back, in article_row() form (timestamps as iso_ts)."""
    return {**{c: row.get(c) for c in ARTICLE_COLUMNS}, "collected_at": norm_ts(row.get("collected_at"))}


def version_pairs(versions: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Checked retire_versions argument: (id, new_etat) pairs, new_etat not in force; one per id."""
    pairs: dict[str, str] = {}
    for pair in versions:
        if not (isinstance(pair, tuple | list) and len(pair) == 2 and all(isinstance(v, str) and v for v in pair)):
            raise TypeError(f"retire_versions: expected (id, new_etat) string pairs, got {pair!r}")
        if in_force(pair[1]):
            raise ValueError(f"retire_versions: {pair[0]} cannot be retired to {pair[1]!r} (in force)")
        pairs[pair[0]] = pair[1]
    return list(pairs.items())


def state_row(state: Mapping[str, Any]) -> dict[str, Any]:
    """Split a state-file dict into the collector_state columns (+ `extra` for the rest)."""
    if "running" not in state or "mode" not in state:
        raise ValueError("scheduler state needs at least 'running' and 'mode'")
    mode = parse_mode(state["mode"])
    updated_at = state.get("updated_at")
    if isinstance(updated_at, str):
        updated_at = parse_ts(updated_at)
    pid = state.get("pid")
    return {
        "running": bool(state["running"]),
        "mode": mode.value,
        "updated_at": iso_ts(updated_at),
        "pid": int(pid) if pid is not None else None,
        "host": state.get("host"),
        "extra": json_safe({k: v for k, v in state.items() if k not in STATE_FIELDS}),
    }


def state_from_row(row: Mapping[str, Any]) -> dict[str, Any]:
    extra = row.get("extra") or {}
    if isinstance(extra, str):
        extra = json.loads(extra)
    return {
        **extra,
        "running": bool(row["running"]),
        "mode": row["mode"],
        "updated_at": norm_ts(row.get("updated_at")),
        "pid": row.get("pid"),
        "host": row.get("host"),
    }


def run_from_row(row: Mapping[str, Any]) -> dict[str, Any]:
    def load(value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    return {
        "id": int(row["id"]),
        "mode": row["mode"],
        "codes": load(row.get("codes")) or [],
        "started_at": norm_ts(row.get("started_at")),
        "finished_at": norm_ts(row.get("finished_at")),
        "summary": load(row.get("summary")),
        "progress": load(row.get("progress")),
    }


DUMP_STATE_COLUMNS: tuple[str, ...] = (
    "last_stamp", "last_archive", "global_stamp", "codes", "archive", "members", "bytes_read", "updated_at",
)


def dump_state_from_row(row: Mapping[str, Any] | None) -> DumpState:
    """The stored dump state (an empty DumpState when nothing was ever applied)."""
    if row is None:
        return DumpState()
    return DumpState(
        last_stamp=row.get("last_stamp"),
        last_archive=row.get("last_archive"),
        global_stamp=row.get("global_stamp"),
        codes=row.get("codes"),
        archive=row.get("archive"),
        members=int(row.get("members") or 0),
        bytes_read=int(row.get("bytes_read") or 0),
        updated_at=parse_ts(row.get("updated_at")),
    )


def next_dump_state(state: DumpState, batch: DumpBatch, now: datetime) -> DumpState:
    """The dump state once `batch` is committed. A final batch stamps its archive as applied
    and refuses (ValueError) a stamp not after the last one: an archive is applied once, even
    by two loaders racing on one store (the loser's transaction rolls back)."""
    if batch.final:
        if state.last_stamp is not None and batch.stamp <= state.last_stamp:
            raise ValueError(
                f"dump {batch.archive} (stamp {batch.stamp}) is not after the last one applied "
                f"({state.last_archive}, {state.last_stamp}): already applied, or applied out of order"
            )
        return DumpState(
            last_stamp=batch.stamp,
            last_archive=batch.archive,
            global_stamp=batch.stamp if batch.is_global else state.global_stamp,
            codes=batch.codes,
            archive=None,
            updated_at=now,
        )
    return DumpState(
        last_stamp=state.last_stamp,
        last_archive=state.last_archive,
        global_stamp=state.global_stamp,
        codes=state.codes,
        archive=batch.archive,
        members=batch.members,
        bytes_read=batch.bytes_read,
        updated_at=now,
    )


def dump_state_row(state: DumpState) -> dict[str, Any]:
    return {
        "last_stamp": state.last_stamp,
        "last_archive": state.last_archive,
        "global_stamp": state.global_stamp,
        "codes": state.codes,
        "archive": state.archive,
        "members": int(state.members),
        "bytes_read": int(state.bytes_read),
        "updated_at": iso_ts(state.updated_at),
    }


def dump_counts(events: Mapping[str, int], retired: Iterable[tuple[int, int]]) -> dict[str, int]:
    """Store.apply_dump_batch's result: the events by kind (of the upsert and the retirements)
    plus `superseded` and `retired` (rows taken out of force)."""
    counts = dict(events)
    superseded = repealed = 0
    for one in retired:
        superseded, repealed = superseded + one[0], repealed + one[1]
        for kind, n in getattr(one, "events", {}).items():
            counts[kind] = counts.get(kind, 0) + n
    counts["superseded"], counts["retired"] = superseded, repealed
    return counts
