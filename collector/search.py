"""Full-text search over the collected articles: what a query may be, shared by both stores.

A query is user text. It is reduced to plain word terms (letters and digits, NFC), which every
backend ANDs together, accent- and case-insensitively; operators and quotes of the underlying
full-text syntax (FTS5, tsquery) are never passed through, so no input can break a query.
Matches in snippets are marked with plain brackets, never HTML or Markdown.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

MAX_TERMS = 16
MAX_TERM_CHARS = 64
MAX_LIMIT = 200
HIGHLIGHT = ("[", "]")  # around each matched term in a snippet
ELLIPSIS = "…"
IN_FORCE = "VIGUEUR"  # etat filter: VIGUEUR and VIGUEUR_DIFF alike
ETATS = (IN_FORCE, "MODIFIE", "ABROGE")
VERSION_COLUMNS = ("id", "cid", "num", "etat", "date_debut", "date_fin", "collected_at")  # article_versions
_TERM = re.compile(r"[^\W_]+")
_ARTICLE_ID = re.compile(r"LEGIARTI\d{12}")


class SearchQueryError(ValueError):
    """A query that cannot be searched (no word in it, a bad filter): the message says why."""


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A validated query: its terms (ANDed), filters and row limit."""

    terms: tuple[str, ...]
    code_id: str | None = None
    etat: str | None = None
    limit: int = 20

    @property
    def text(self) -> str:
        """The terms as plain words (what PostgreSQL's plainto_tsquery receives)."""
        return " ".join(self.terms)

    def fts5_match(self) -> str:
        """An FTS5 MATCH expression: every term as a quoted string (implicit AND). Terms hold
        letters and digits only, so no quote, operator or column filter can slip in."""
        return " ".join(f'"{term}"' for term in self.terms)


def parse_query(text: str, code_id: str | None = None, etat: str | None = None, limit: int = 20) -> SearchQuery:
    """Validate user input; SearchQueryError with a clear message when nothing can be searched."""
    words = _TERM.findall(unicodedata.normalize("NFC", text or ""))
    terms = tuple(dict.fromkeys(w[:MAX_TERM_CHARS] for w in words))[:MAX_TERMS]
    if not terms:
        raise SearchQueryError("the query has no word to search for: type at least one word or number")
    code = (code_id or "").strip() or None
    if code is not None and not re.fullmatch(r"[A-Z0-9]{1,40}", code):
        raise SearchQueryError(f"unknown code id {code!r}: expected an id like LEGITEXT000006074075")
    state = (etat or "").strip().upper() or None
    if state is not None and state not in ETATS:
        raise SearchQueryError(f"unknown state {etat!r}: expected one of {', '.join(ETATS)}")
    if not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise SearchQueryError(f"limit must be a whole number from 1 to {MAX_LIMIT}, got {limit!r}")
    return SearchQuery(terms, code, state, limit)


def legifrance_url(article_id: str) -> str | None:
    """The article's page on legifrance.gouv.fr, or None for an id that is not a LEGIARTI id."""
    if not _ARTICLE_ID.fullmatch(article_id or ""):
        return None
    return f"https://www.legifrance.gouv.fr/codes/article_lc/{article_id}"
