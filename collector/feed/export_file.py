"""What the export writes for one stored article: its bucket path and its JSON (pure functions).

The JSON has the keys of the API's getArticle `article` object that the store keeps, built
from the stored row (the store keeps cleaned columns, not the raw answer), plus context keys.
"""

from __future__ import annotations

import json
import posixpath
import re
import unicodedata
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from collector.parse import NO_END_MS

_NOT_SLUG = re.compile(r"[^a-z0-9]+")


def category_slug(title: str | None) -> str:
    """A code title as a folder name: "Code de l'urbanisme" -> "code_de_l_urbanisme"
    (accents dropped, every run of other characters -> "_"); "sans_titre" when empty."""
    ascii_title = unicodedata.normalize("NFKD", title or "").encode("ascii", "ignore").decode()
    return _NOT_SLUG.sub("_", ascii_title.lower()).strip("_") or "sans_titre"


def file_path(template: str, row: Mapping[str, Any]) -> str:
    """The bucket path of a stored row (template checked by config.check_path_template)."""
    return template.format(
        category=category_slug(row.get("code_title")),
        code_id=row["code_id"],
        cid=row["cid"],
        id=row["id"],
    )


def split_path(path: str) -> tuple[str, str]:
    """(folder, file name) as Storage's list API sees them."""
    return posixpath.dirname(path), posixpath.basename(path)


def epoch_ms(day: str | date | None, *, no_end: bool = False) -> int | None:
    """A stored date ("YYYY-MM-DD") as the API's epoch milliseconds (UTC midnight);
    None is the API's "no end" sentinel for an end date, None otherwise."""
    if day is None or day == "":
        return NO_END_MS if no_end else None
    value = day if isinstance(day, date) else date.fromisoformat(str(day)[:10])
    return int(datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp() * 1000)


def article_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """The exported object for a stored row (see the module doc)."""
    return {
        "id": row["id"],
        "cid": row["cid"],
        "num": row.get("num"),
        "etat": row.get("etat"),
        "texte": row.get("text") or "",
        "texteHtml": row.get("html") or "",
        "nota": row.get("nota") or "",
        "dateDebut": epoch_ms(row.get("date_debut")),
        "dateFin": epoch_ms(row.get("date_fin"), no_end=True),
        "code_id": row["code_id"],
        "code_title": row.get("code_title"),
        "section_path": row.get("section_path") or "",
    }


def article_bytes(row: Mapping[str, Any]) -> bytes:
    """article_json as UTF-8 JSON bytes (accents kept as such, like the API's answers)."""
    return json.dumps(article_json(row), ensure_ascii=False).encode("utf-8")
