"""Légifrance JSON -> models: the table-of-contents walk and getArticle -> Article | Rejected.

Pure functions (no I/O), so harvest stays a thin orchestration layer and these are tested
against real API responses.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any

from collector.models import Article, CodeToc, Rejected, TocEntry
from collector.text import clean_text, normalize_text, passes_quality, rejection_reason

PATH_SEPARATOR = " > "
NO_END_MS = 32_472_144_000_000  # 2999-01-01T00:00:00Z, the API's "no end" sentinel
_NO_END = date(2999, 1, 1)
_EPOCH = datetime(1970, 1, 1)
_HASH_SEPARATOR = "\x1e"  # ASCII record separator: never in cleaned text


class TocError(ValueError):
    """The tableMatieres response is not a table of contents (not an object, bad lists)."""


class ArticleError(ValueError):
    """A getArticle response cannot be turned into the requested article."""


# ---- dates ----------------------------------------------------------------------------------
def epoch_ms_to_date(ms: int | float | str | None) -> date | None:
    """Epoch milliseconds (UTC midnight in the API) -> date.

    Negative values are dates before 1970. None, the 32472144000000 sentinel and any date on
    or after 2999-01-01 mean "no end" -> None. A "YYYY-MM-DD..." string is accepted too; a value
    that is not a date at all also gives None (the article is kept, the date is unknown).
    """
    if ms is None or isinstance(ms, bool):
        return None
    if isinstance(ms, str):
        raw = ms.strip()
        if raw.lstrip("-").isdigit():
            ms = int(raw)
        else:
            try:
                day = date.fromisoformat(raw[:10])
            except ValueError:
                return None
            return None if day >= _NO_END else day
    if not isinstance(ms, (int, float)):
        return None
    if ms >= NO_END_MS:
        return None
    try:
        day = (_EPOCH + timedelta(milliseconds=ms)).date()
    except (OverflowError, ValueError):
        return None
    return None if day >= _NO_END else day


# ---- table of contents ----------------------------------------------------------------------
def _id_number(article_id: str) -> int:
    digits = article_id[8:]
    return int(digits) if digits.isdigit() else -1


def _ordered(node: Mapping[str, Any]) -> list[tuple[bool, Mapping[str, Any]]]:
    """Children of a TOC node (its articles and sections) in intOrdre order, articles first on
    ties; (is_section, child) pairs."""
    articles = node.get("articles") or []
    sections = node.get("sections") or []
    if not isinstance(articles, list) or not isinstance(sections, list):
        raise TocError("'articles' and 'sections' must be lists in a tableMatieres response")
    children = [(False, a) for a in articles if isinstance(a, Mapping)]
    children += [(True, s) for s in sections if isinstance(s, Mapping)]

    def key(item: tuple[bool, Mapping[str, Any]]) -> tuple[int, bool]:
        order = item[1].get("intOrdre")
        return (order if isinstance(order, int) else 0, item[0])

    children.sort(key=key)
    return children


def walk_toc(toc_json: Mapping[str, Any], code_id: str) -> CodeToc:
    """Reduce a tableMatieres response to the in-force article versions of the code.

    Sections are walked depth-first in intOrdre order with an explicit stack (no recursion
    limit, one path string per section, so multi-MB TOCs stay cheap). An article entry is kept
    when its `etat` starts with "VIGUEUR" (VIGUEUR, VIGUEUR_DIFF) and its id is a LEGIARTI id.
    The same article (cid) can be listed more than once in force; like SocialGouv/legi-data we
    then keep the highest id, which is numerically the latest version, at the position where
    the cid first appeared.
    """
    if not isinstance(toc_json, Mapping):
        raise TocError(f"tableMatieres response for {code_id} is not a JSON object")
    by_cid: dict[str, TocEntry] = {}
    stack: list[tuple[str, Mapping[str, Any]]] = [("", toc_json)]
    while stack:
        path, node = stack.pop()
        pending: list[tuple[str, Mapping[str, Any]]] = []
        for is_section, child in _ordered(node):
            if is_section:
                title = " ".join(str(child.get("title") or "").split())
                child_path = f"{path}{PATH_SEPARATOR}{title}" if path and title else path or title
                pending.append((child_path, child))
                continue
            etat = child.get("etat")
            article_id = child.get("id")
            if not (isinstance(etat, str) and etat.startswith("VIGUEUR")):
                continue
            if not (isinstance(article_id, str) and article_id.startswith("LEGIARTI")):
                continue
            cid = child.get("cid") if isinstance(child.get("cid"), str) else article_id
            num = child.get("num")
            entry = TocEntry(
                id=article_id,
                cid=cid,
                num=str(num) if num is not None else None,
                etat=etat,
                section_path=path,
            )
            seen = by_cid.get(cid)
            if seen is None or _id_number(article_id) > _id_number(seen.id):
                by_cid[cid] = entry
        stack.extend(reversed(pending))
    title = toc_json.get("title")
    modif = toc_json.get("modifDate")
    return CodeToc(
        code_id=code_id,
        title=str(title).strip() if title else code_id,
        modif_date=str(modif)[:10] if modif else None,
        entries=tuple(by_cid.values()),
    )


# ---- articles -------------------------------------------------------------------------------
def content_sha256(text: str, nota: str | None) -> str:
    """sha256 of the cleaned text and the cleaned nota, joined by U+001E (UTF-8)."""
    payload = f"{text}{_HASH_SEPARATOR}{nota or ''}"
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def article_from_api(
    article_json: Mapping[str, Any],
    entry: TocEntry,
    code: CodeToc,
    min_chars: int,
    now: datetime,
) -> Article | Rejected:
    """Turn getArticle's `article` object into an Article, or a Rejected when the cleaned text
    is shorter than `min_chars` (reason "empty" or "too_short", with its length).

    text = clean_text(texteHtml), or the normalised plain `texte` when the HTML gives nothing;
    nota likewise from notaHtml / nota (None when empty); num and etat from the article (the
    TOC's as fallback); dates from epoch ms. The row is keyed by the id we asked for.

    A null article (getArticle answered without one) is NOT handled here: the caller counts it
    as a failure of that id for this pass, so it is retried next pass instead of being
    remembered as rejected. An article whose id is not the requested one raises ArticleError
    (same treatment: a failure, retried next pass).
    """
    if not isinstance(article_json, Mapping):
        raise ArticleError(f"getArticle({entry.id}) returned no article object")
    got_id = article_json.get("id")
    if got_id is not None and got_id != entry.id:
        raise ArticleError(f"getArticle({entry.id}) returned article {str(got_id)[:40]}")

    html = _str_or_none(article_json.get("texteHtml")) or ""
    text = clean_text(html) or normalize_text(_str_or_none(article_json.get("texte")))
    if not passes_quality(text, min_chars):
        return Rejected(
            id=entry.id,
            code_id=code.code_id,
            reason=rejection_reason(text),
            length=len(text),
            rejected_at=now,
        )
    nota = clean_text(_str_or_none(article_json.get("notaHtml"))) or normalize_text(
        _str_or_none(article_json.get("nota"))
    )
    num = article_json.get("num")
    etat = _str_or_none(article_json.get("etat")) or entry.etat
    return Article(
        id=entry.id,
        cid=_str_or_none(article_json.get("cid")) or entry.cid,
        code_id=code.code_id,
        code_title=code.title,
        num=str(num) if num not in (None, "") else entry.num,
        etat=etat,
        date_debut=epoch_ms_to_date(article_json.get("dateDebut")),
        date_fin=epoch_ms_to_date(article_json.get("dateFin")),
        section_path=entry.section_path,
        text=text,
        html=html,
        nota=nota or None,
        content_sha256=content_sha256(text, nota or None),
        collected_at=now,
    )
