"""Légifrance JSON -> models: the table of contents (a push parser over the body's bytes) and
getArticle -> Article | Rejected.

No I/O (the client feeds the parser), so harvest stays a thin orchestration layer and these are
tested against real API responses.
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator, Iterator, Mapping
from datetime import date, datetime, timedelta
from decimal import Decimal
from operator import itemgetter
from typing import Any

import ijson
from ijson.common import ObjectBuilder

from collector.models import Article, CodeToc, Rejected, TocEntry
from collector.text import clean_text, normalize_text, passes_quality, rejection_reason

PATH_SEPARATOR = " > "
NO_END_MS = 32_472_144_000_000  # 2999-01-01T00:00:00Z, the API's "no end" sentinel
_NO_END = date(2999, 1, 1)
_EPOCH = datetime(1970, 1, 1)
_HASH_SEPARATOR = "\x1e"  # ASCII record separator: never in cleaned text


class TocError(ValueError):
    """The tableMatieres response is not a table of contents (not an object, bad lists)."""


class TocBodyError(TocError):
    """The tableMatieres body is not a JSON object: invalid or truncated JSON, another JSON
    value, or a body over the parser's bounds (MAX_TOKEN_BYTES, MAX_SECTION_DEPTH,
    MAX_VALUE_DEPTH) (worth asking again, unlike a well-formed object with bad lists)."""

    def __init__(self, code_id: str, reason: str) -> None:
        super().__init__(f"tableMatieres response for {code_id}: {reason}")
        self.reason = reason  # "invalid JSON (parse error: premature EOF)", ...


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
# Events are the ijson basic_parse ones: (event, value).
_Event = tuple[str, Any]
_Kept = tuple[int, str, str, str | None, str]  # an in-force article: (intOrdre, id, cid, num, etat)

_SLICE = 1 << 14  # bytes handed to yajl at once: the events of one slice stay in the CPU cache
# Bounds on what a body may make the parser do (a real TOC stays far below each):
# yajl lexes a token again from its start on every slice it spans, so a string, number or
# run of blanks of L bytes costs O(L**2 / _SLICE); past this many bytes without an event the
# body is refused (1 MiB: ~20 ms).
MAX_TOKEN_BYTES = 1 << 20
MAX_SECTION_DEPTH = 64  # sections within sections (real codes: about 10)
MAX_VALUE_DEPTH = 64  # containers within a value nobody needs deep (a title, an unknown key)
MAX_PATH_CHARS = 2000  # a section path is cut there (real ones: a few hundred characters)
_ARTICLE_KEYS = frozenset({"id", "cid", "num", "etat", "intOrdre"})
_NODE_KEYS = frozenset({"title", "intOrdre", "modifDate", "articles", "sections"})
_LIST = object()  # marks a node's "articles"/"sections" value as a list (its items were read)
_START, _NODE, _ARTICLES, _SECTIONS, _VALUE, _END = range(6)  # consumer states


class _Node:
    """The text or one of its sections, reduced while it is read: its kept articles and its
    subsections, each with its intOrdre rank."""

    __slots__ = ("title", "order", "articles", "sections", "bad")

    def __init__(self) -> None:
        self.title = ""  # whitespace collapsed (sections)
        self.order = 0
        self.articles: list[_Kept] = []
        self.sections: list[_Node] = []
        self.bad = False  # it or a section under it has bad "articles"/"sections" values


def _id_number(article_id: str) -> int:
    digits = article_id[8:]
    return int(digits) if digits.isdigit() else -1


def _int_or_zero(value: Any) -> int:
    return value if isinstance(value, int) else 0


def _plain(value: Any) -> Any:
    """A value as json.loads builds it: ijson gives Decimal for numbers that are not integers
    (its float mode refuses integers beyond 64 bits, which json accepts)."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(_plain(value))


def _ordered(node: _Node) -> list[_Kept | _Node]:
    """Children of a node in intOrdre order, articles first on ties (the sort is stable); the
    node lets go of them."""
    articles, sections = node.articles, node.sections
    node.articles, node.sections = [], []
    if not sections:
        return sorted(articles, key=itemgetter(0))  # type: ignore[return-value]
    children: list[tuple[int, bool, _Kept | _Node]] = [(a[0], False, a) for a in articles]
    children += [(s.order, True, s) for s in sections]
    children.sort(key=itemgetter(0, 1))
    return [child for _, _, child in children]


def _subpath(path: str, title: str) -> str:
    """`path > title`, cut at MAX_PATH_CHARS (with an ellipsis)."""
    sub = f"{path}{PATH_SEPARATOR}{title}" if path and title else path or title
    return sub if len(sub) <= MAX_PATH_CHARS else sub[: MAX_PATH_CHARS - 1] + "…"


def _entries(top: _Node) -> tuple[TocEntry, ...]:
    """Depth-first in intOrdre order (a section's articles come where the section stands among
    its siblings) with an explicit stack: no recursion limit, one path string (at most
    MAX_PATH_CHARS) per section. One entry per cid, the highest id winning at the cid's first
    position. Each node is emptied as it is entered, so the tree shrinks as the entries grow."""
    by_cid: dict[str, TocEntry] = {}
    stack: list[tuple[str, Iterator[_Kept | _Node]]] = [("", iter(_ordered(top)))]
    while stack:
        path, children = stack[-1]
        for child in children:
            if isinstance(child, _Node):
                stack.append((_subpath(path, child.title), iter(_ordered(child))))
                break
            _, article_id, cid, num, etat = child
            seen = by_cid.get(cid)
            if seen is None or _id_number(article_id) > _id_number(seen.id):
                by_cid[cid] = TocEntry(id=article_id, cid=cid, num=num, etat=etat, section_path=path)
        else:
            stack.pop()
    return tuple(by_cid.values())


def _opened(event: str, value: Any, build: bool) -> ObjectBuilder | None:
    """For a container just opened: a builder fed its first event when its value is read,
    None when it is skipped."""
    if not build:
        return None
    builder = ObjectBuilder()
    builder.event(event, value)
    return builder


def _bad_lists(fields: dict[str, Any]) -> bool:
    """True when "articles" or "sections" holds something that is neither a list nor empty
    (null, {}, "", 0 and false count as no children, like a missing key)."""
    return any(fields.get(key) is not _LIST and fields.get(key) for key in ("articles", "sections"))


class TocParser:
    """Push parser of a tableMatieres body: `feed(chunk)` bytes as they arrive, `close()` gives
    the CodeToc. Only the reduced tree is held (kept articles as small tuples, one object per
    section), never the JSON: memory follows the in-force entries, not the body size.

    The rules (the one implementation; `parse_toc` is the whole-body shortcut): sections are
    walked depth-first, each node's children in intOrdre order, articles before sections on
    ties. An article entry is kept when its `etat` starts with "VIGUEUR" (VIGUEUR,
    VIGUEUR_DIFF) and its id is a LEGIARTI id. The same article (cid) can be listed more than
    once in force; like SocialGouv/legi-data we then keep the highest id, which is numerically
    the latest version, at the position where the cid first appeared. A section path is the
    section titles (whitespace collapsed) joined by PATH_SEPARATOR. Every other key is skipped
    without building its value.

    Errors, raised by `feed` or `close`: TocBodyError when the body is not a JSON object
    (invalid or truncated JSON, or another JSON value) or goes past a bound (a token over
    MAX_TOKEN_BYTES, sections nested over MAX_SECTION_DEPTH, a value nested over
    MAX_VALUE_DEPTH): so no body costs quadratic time, deep recursion or one path per level;
    TocError, at `close` and only for valid JSON, when "articles"/"sections" of a node are
    neither lists nor empty.
    """

    def __init__(self, code_id: str) -> None:
        self.code_id = code_id
        self._events: list[_Event] = ijson.sendable_list()
        self._yajl = ijson.basic_parse_coro(self._events)
        self._consumer: Generator[None, list[_Event], None] | None = self._consume()
        next(self._consumer)
        self._top: _Node | None = None
        self._top_fields: dict[str, Any] = {}
        self._not_object = False
        self._bad = False
        self._quiet = 0  # bytes fed since yajl last gave an event

    @property
    def listed(self) -> bool:
        """The body's top level had a list of sections or of articles (after `close`)."""
        return any(self._top_fields.get(key) is _LIST for key in ("sections", "articles"))

    def feed(self, chunk: bytes) -> None:
        """Parse the next bytes of the body (any split, even inside a token)."""
        if len(chunk) <= _SLICE:
            self._push(chunk)
            return
        for start in range(0, len(chunk), _SLICE):
            self._push(chunk[start : start + _SLICE])

    def close(self) -> CodeToc:
        """The end of the body: the CodeToc, or TocBodyError / TocError."""
        try:
            self._yajl.close()
        except ijson.JSONError as exc:
            raise self._invalid(exc) from None
        except Exception as exc:  # noqa: BLE001 - as in _push
            raise TocBodyError(self.code_id, f"undecodable JSON ({type(exc).__name__})") from None
        self._dispatch()
        self._consumer = None  # its frame refers to self: let both go by reference counting
        if self._not_object:
            raise TocBodyError(self.code_id, "JSON body is not an object")
        if self._bad or self._top is None:
            raise TocError(
                f"tableMatieres response for {self.code_id}: 'articles' and 'sections' must be lists"
            )
        title = self._top_fields.get("title")
        modif = self._top_fields.get("modifDate")
        top, self._top = self._top, None
        return CodeToc(
            code_id=self.code_id,
            title=_text(title).strip() if title else self.code_id,
            modif_date=_text(modif)[:10] if modif else None,
            entries=_entries(top),
        )

    def _push(self, data: bytes) -> None:
        if not data:
            return  # an empty send means end of input to ijson
        try:
            self._yajl.send(data)
        except ijson.JSONError as exc:
            raise self._invalid(exc) from None
        except Exception as exc:  # noqa: BLE001 - e.g. an integer over Python's digit limit
            raise TocBodyError(self.code_id, f"undecodable JSON ({type(exc).__name__})") from None
        if self._events:
            self._quiet = 0
            self._dispatch()
        else:
            self._quiet += len(data)
            if self._quiet > MAX_TOKEN_BYTES:
                raise TocBodyError(self.code_id, f"a JSON token over {MAX_TOKEN_BYTES} bytes")

    def _dispatch(self) -> None:
        if self._consumer is not None and self._events:
            try:
                self._consumer.send(self._events)
            except StopIteration:
                self._consumer = None  # not a TOC: the rest is only checked to be JSON
        del self._events[:]

    def _invalid(self, exc: Exception) -> TocBodyError:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return TocBodyError(self.code_id, f"invalid JSON ({detail[:120]})")

    def _consume(self) -> Generator[None, list[_Event], None]:
        """The event consumer: one batch of events per send. Each state is a tight loop over
        the batch; a loop that runs out of events waits for the next batch (`yield`) and
        resumes in the same state. A value is None only for null and the container events."""
        it: Iterator[_Event] = iter(())
        state = back = _START  # `back`: where _VALUE returns
        open_nodes: list[tuple[_Node, dict[str, Any]]] = []  # innermost last, with its fields
        node = _Node()
        fields: dict[str, Any] = {}  # the read keys of the node being read
        article: dict[str, Any] = {}  # the read keys of the article being read
        in_article = False
        key = ""
        depth = 0  # containers open in the value being skipped or built
        builder: ObjectBuilder | None = None  # builds that value when a read key holds it
        article_keys, node_keys = _ARTICLE_KEYS, _NODE_KEYS
        etats: dict[str, str] = {}
        while True:
            if state == _ARTICLES:  # a node's articles list, and its articles: the hot loop
                for event, value in it:
                    if value is None:
                        if event == "null":
                            if key in article_keys:
                                article[key] = None
                        elif event == "end_map":  # an article is read
                            etat, article_id = article.get("etat"), article.get("id")
                            if (
                                isinstance(etat, str)
                                and etat.startswith("VIGUEUR")
                                and isinstance(article_id, str)
                                and article_id.startswith("LEGIARTI")
                            ):
                                cid, num = article.get("cid"), article.get("num")
                                node.articles.append((
                                    _int_or_zero(article.get("intOrdre")),
                                    article_id,
                                    cid if isinstance(cid, str) and cid != article_id else article_id,
                                    _text(num) if num is not None else None,
                                    etats.setdefault(etat, etat),  # one string per etat value
                                ))
                            article.clear()
                            key, in_article = "", False
                        elif event == "start_map" and not in_article:
                            in_article = True
                        else:
                            break  # the list's end, or a container value or item
                    elif event == "map_key":
                        key = value
                    elif key in article_keys:  # "" between articles: scalar items are ignored
                        article[key] = value
                else:
                    it = iter((yield))
                    continue
                if event == "end_array":
                    state = _NODE
                else:
                    builder = _opened(event, value, build=in_article and key in article_keys)
                    state, back, depth = _VALUE, _ARTICLES, 1
            elif state == _NODE:  # the text or a section
                for event, value in it:
                    if value is None and event != "null":
                        break  # end_map, or a container value
                    if event == "map_key":
                        key = value
                    elif key in node_keys:
                        fields[key] = value
                        if key == "articles":
                            node.articles = []  # a repeated key: the last value counts
                        elif key == "sections":
                            node.sections = []
                else:
                    it = iter((yield))
                    continue
                if event == "end_map":
                    # judged when the node is whole: a repeated key replaces the earlier value
                    node.bad = _bad_lists(fields) or any(section.bad for section in node.sections)
                    node.order = _int_or_zero(fields.get("intOrdre"))
                    node.title = " ".join(_text(fields.get("title") or "").split())
                    if not open_nodes:
                        self._top, self._top_fields, state = node, fields, _END
                        self._bad = node.bad
                        continue
                    parent, fields = open_nodes.pop()
                    parent.sections.append(node)
                    node, state = parent, _SECTIONS
                elif event == "start_array" and key == "articles":
                    fields[key], node.articles = _LIST, []
                    key, in_article, state = "", False, _ARTICLES
                elif event == "start_array" and key == "sections":
                    fields[key], node.sections = _LIST, []
                    state = _SECTIONS
                else:  # a container nobody reads; or a read key holds an object, a title a list
                    builder = _opened(event, value, build=key in node_keys)
                    state, back, depth = _VALUE, _NODE, 1
            elif state == _SECTIONS:  # a node's sections list
                for event, value in it:
                    if value is None and event != "null":
                        break  # scalar items are not objects: ignored
                else:
                    it = iter((yield))
                    continue
                if event == "start_map":
                    if len(open_nodes) >= MAX_SECTION_DEPTH:
                        raise TocBodyError(self.code_id, f"sections nested over {MAX_SECTION_DEPTH} deep")
                    open_nodes.append((node, fields))
                    node, fields, key, state = _Node(), {}, "", _NODE
                elif event == "start_array":  # not an object either
                    builder, state, back, depth = None, _VALUE, _SECTIONS, 1
                else:
                    state = _NODE
            elif state == _VALUE:  # a container value: skipped, or built when `builder` is set
                for event, value in it:
                    if builder is not None:
                        builder.event(event, value)
                    if value is None and event != "null":
                        if event == "start_map" or event == "start_array":
                            depth += 1
                            if depth > MAX_VALUE_DEPTH:
                                raise TocBodyError(self.code_id, f"a value nested over {MAX_VALUE_DEPTH} deep")
                        else:
                            depth -= 1
                            if not depth:
                                break
                else:
                    it = iter((yield))
                    continue
                if builder is not None:
                    if back == _ARTICLES:
                        article[key] = builder.value
                    else:
                        fields[key] = builder.value
                        if key == "articles":
                            node.articles = []
                        elif key == "sections":
                            node.sections = []
                    builder = None
                state = back
            elif state == _START:
                for event, value in it:
                    break
                else:
                    it = iter((yield))
                    continue
                if event != "start_map":
                    self._not_object = True
                    return
                state = _NODE
            else:  # _END: yajl lets nothing follow the top-level value
                it = iter((yield))


def parse_toc(data: bytes, code_id: str) -> CodeToc:
    """A whole tableMatieres body -> CodeToc (see TocParser)."""
    parser = TocParser(code_id)
    parser.feed(data)
    return parser.close()


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
        shown = got_id[:40] if isinstance(got_id, str) else f"with a {type(got_id).__name__} id"
        raise ArticleError(f"getArticle({entry.id}) returned article {shown}")

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
    num = num if isinstance(num, (str, int, float)) and not isinstance(num, bool) else None
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
