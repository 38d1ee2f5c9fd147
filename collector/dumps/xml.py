"""One DILA ARTICLE / TEXTE_VERSION file -> the same row the API path builds.

Identity with `collector.parse.article_from_api` for the same version (checked on the real pair
LEGIARTI000006398122): id, cid (the first version's id, the smallest of VERSIONS), code_id,
code_title (the current TITRE_TXT, the API's table-of-contents title), num, etat, dates
("2999-01-01" = no end -> None, "2222-02-22" kept as that date, like the API's epoch values),
section_path (the CONTEXTE TM chain joined by " > ", current title at each level), text (the
same clean_text of the same HTML), html, nota, content_sha256.

The HTML: Légifrance's API serves BLOC_TEXTUEL/CONTENU re-serialised: the file's line breaks
between tags dropped and every `<br/>` written `<p></p>` (the real pair: `<br/>   La
fabrication …<br/>\\n<br/>` in the dump is `<p></p>   La fabrication …<p></p><p></p>` in the API;
none of the 29 real API texts holds a `<br` or a newline). `api_html` does the same, so text and
hash match too (two `<br/>` would otherwise make a blank line where the API has a line break).
What cannot match: the API writes attributes with single quotes (`<a href='…'>`) and leaves `&`
raw in them, lxml writes `href="…&amp;…"`; only `html` differs then, never text or hash.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from xml.sax.saxutils import escape

from lxml import etree

from collector.models import Article, Rejected
from collector.parse import PATH_SEPARATOR, content_sha256, epoch_ms_to_date
from collector.text import clean_text, passes_quality, rejection_reason

PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)
_NO_END = "2999-01-01"
_NEWLINE_BETWEEN_TAGS = re.compile(r">[ \t\r]*\n\s*<")
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)


class DumpXmlError(ValueError):
    """A member is not the XML file its path says (bad XML, another root element)."""


@dataclass(frozen=True, slots=True)
class ArticleXml:
    """What an ARTICLE file says, before the quality filter."""

    id: str
    cid: str
    code_id: str | None  # CONTEXTE/TEXTE/@cid (missing on some 2025+ files: the path wins)
    code_title: str | None
    num: str | None
    etat: str
    date_debut: date | None
    date_fin: date | None
    section_path: str
    html: str
    nota_html: str


def parse_xml(data: bytes, root_tag: str) -> etree._Element:
    """Parse a whole member; DumpXmlError when it is not well-formed or not a `root_tag`."""
    try:
        root = etree.fromstring(data, PARSER)
    except etree.XMLSyntaxError as exc:
        raise DumpXmlError(f"bad XML: {str(exc)[:160]}") from None
    if root.tag != root_tag:
        raise DumpXmlError(f"root element {str(root.tag)[:40]!r}, expected {root_tag}")
    return root


def _text(el: etree._Element | None) -> str:
    return "" if el is None else " ".join((el.text or "").split())


def _children(el: etree._Element | None) -> dict[str, etree._Element]:
    """An element's children by tag (the last of a tag wins: DILA repeats none of those read
    this way). One pass in C; lxml's `find` goes through its Python ElementPath each call."""
    return {} if el is None else {child.tag: child for child in el}


def _child(el: etree._Element | None, *tags: str) -> etree._Element | None:
    """The element down a chain of child tags (None when one is missing)."""
    for tag in tags:
        el = _children(el).get(tag)
    return el


def _id_number(value: str) -> int:
    return int(value[8:]) if value[8:].isdigit() else 1 << 62


def _later(el: etree._Element, best: etree._Element | None) -> bool:
    """True when title `el` is in force after `best`: latest `fin`, then `debut`, then the last."""
    if best is None:
        return True
    return (el.get("fin") or _NO_END, el.get("debut") or "") >= (best.get("fin") or _NO_END, best.get("debut") or "")


def _title_and_next(level: etree._Element, title_tag: str) -> tuple[str, etree._Element | None]:
    """The current `title_tag` child's text and the nested TM of a CONTEXTE/TEXTE or TM level."""
    best = nested = None
    for child in level:
        tag = child.tag
        if tag == title_tag:
            if _later(child, best):
                best = child
        elif tag == "TM":
            nested = child
    return _text(best), nested


def inner_html(contenu: etree._Element | None) -> str:
    """The markup inside a CONTENU element, as HTML (lxml's html serialiser)."""
    if contenu is None or (not len(contenu) and not contenu.text):
        return ""
    if not len(contenu):
        return escape(contenu.text or "")
    whole = etree.tostring(contenu, method="html", encoding="unicode", with_tail=False)
    return whole[whole.index(">") + 1 : whole.rindex("</")]


def api_html(markup: str) -> str:
    """A CONTENU's HTML written the way the API serves it: the file's line breaks at its edges
    and between tags dropped, `<br/>` as `<p></p>` (see the module docstring)."""
    if "\n" in markup:
        head = markup.lstrip(" \t\r")
        if head.startswith("\n"):
            markup = head.lstrip()
        tail = markup.rstrip(" \t\r")
        if tail.endswith("\n"):
            markup = tail.rstrip()
        if "\n" in markup:
            markup = _NEWLINE_BETWEEN_TAGS.sub("><", markup)
    if "<br" in markup or "<BR" in markup:
        markup = _BR.sub("<p></p>", markup)
    return markup


def section_path(texte: etree._Element | None) -> str:
    """The CONTEXTE/TEXTE TM chain: at each level the current TITRE_TM, titles whitespace
    collapsed, joined by PATH_SEPARATOR (as the API path joins the TOC's section titles)."""
    titles: list[str] = []
    level = _children(texte).get("TM")
    while level is not None:
        title, level = _title_and_next(level, "TITRE_TM")
        if title:
            titles.append(title)
    return PATH_SEPARATOR.join(titles)


def article_head(root: etree._Element, article_id: str | None = None) -> tuple[str, str, str]:
    """(id, cid, etat) of a parsed ARTICLE: what a loader needs of a version it only retires.
    `article_id` (from the member's path) wins over META/ID; cid = the smallest LEGIARTI id of
    VERSIONS (the first version's); etat from META_ARTICLE, else its own VERSIONS entry."""
    top = _children(root)
    head = _children(top.get("META"))
    own_id = article_id or _text(_children(head.get("META_COMMUN")).get("ID"))
    if not own_id:
        raise DumpXmlError("ARTICLE without an id")
    listed = top.get("VERSIONS")
    versions = [] if listed is None else [
        lien for version in listed.iterchildren("VERSION") for lien in version.iterchildren("LIEN_ART")]
    ids = [v.get("id") or "" for v in versions]
    cid = min((i for i in ids + [own_id] if i.startswith("LEGIARTI")), key=_id_number, default=own_id)
    meta = _children(_children(head.get("META_SPEC")).get("META_ARTICLE"))
    etat = _text(meta.get("ETAT"))
    if not etat:
        etat = next((v.get("etat") or "" for v in versions if v.get("id") == own_id), "")
    return own_id, cid, etat


def read_article(root: etree._Element, article_id: str | None = None,
                 head: tuple[str, str, str] | None = None) -> ArticleXml:
    """The fields of a parsed ARTICLE (see article_head for id, cid and etat; `head` is its
    result when the caller has it already)."""
    own_id, cid, etat = head or article_head(root, article_id)
    top = _children(root)
    meta = _children(_children(_children(top.get("META")).get("META_SPEC")).get("META_ARTICLE"))
    texte = _children(top.get("CONTEXTE")).get("TEXTE")
    title, _ = _title_and_next(texte, "TITRE_TXT") if texte is not None else ("", None)
    num = _text(meta.get("NUM"))
    return ArticleXml(
        id=own_id,
        cid=cid,
        code_id=(texte.get("cid") or None) if texte is not None else None,
        code_title=title or None,
        num=num or None,
        etat=etat,
        date_debut=epoch_ms_to_date(_text(meta.get("DATE_DEBUT"))),
        date_fin=epoch_ms_to_date(_text(meta.get("DATE_FIN"))),
        section_path=section_path(texte),
        html=api_html(inner_html(_children(top.get("BLOC_TEXTUEL")).get("CONTENU"))),
        nota_html=api_html(inner_html(_children(top.get("NOTA")).get("CONTENU"))),
    )


def article_row(
    fields: ArticleXml, *, code_id: str, min_chars: int, now: datetime, code_title: str | None = None
) -> Article | Rejected:
    """The row the API path would store for this version, or the Rejected the quality filter
    gives (same rule as `article_from_api`). `code_id` comes from the member's path."""
    text = clean_text(fields.html)
    if not passes_quality(text, min_chars):
        return Rejected(id=fields.id, code_id=code_id, reason=rejection_reason(text), length=len(text),
                        rejected_at=now)
    nota = clean_text(fields.nota_html) or None
    return Article(
        id=fields.id,
        cid=fields.cid,
        code_id=code_id,
        code_title=code_title or fields.code_title or code_id,
        num=fields.num,
        etat=fields.etat,
        date_debut=fields.date_debut,
        date_fin=fields.date_fin,
        section_path=fields.section_path,
        text=text,
        html=fields.html,
        nota=nota,
        content_sha256=content_sha256(text, nota),
        collected_at=now,
    )


def article_from_xml(
    data: bytes,
    *,
    min_chars: int,
    now: datetime,
    article_id: str | None = None,
    code_id: str | None = None,
    code_title: str | None = None,
) -> Article | Rejected:
    """An ARTICLE file's bytes -> Article | Rejected, identical to `article_from_api` for the
    same version. `article_id` / `code_id` (from the member's path) win over the file's
    attributes; without them the file's ID and CONTEXTE/TEXTE/@cid are used. DumpXmlError for
    bad XML, another root, or no code id at all."""
    fields = read_article(parse_xml(data, "ARTICLE"), article_id)
    code = code_id or fields.code_id
    if not code:
        raise DumpXmlError(f"{fields.id}: no text cid (neither the path nor CONTEXTE/TEXTE/@cid)")
    return article_row(fields, code_id=code, min_chars=min_chars, now=now, code_title=code_title)


@dataclass(frozen=True, slots=True)
class TextXml:
    """What a TEXTE_VERSION file says: the text's title (a code's title is here) and its state."""

    title: str | None
    etat: str | None
    date_debut: date | None
    date_fin: date | None
    nature: str | None


def read_text_version(root: etree._Element) -> TextXml:
    meta = _child(root, "META", "META_SPEC", "META_TEXTE_VERSION")
    nature = _text(_child(root, "META", "META_COMMUN", "NATURE"))

    def field(tag: str) -> str:
        return _text(_child(meta, tag))

    return TextXml(
        title=field("TITRE") or field("TITREFULL") or None,
        etat=field("ETAT") or None,
        date_debut=epoch_ms_to_date(field("DATE_DEBUT")),
        date_fin=epoch_ms_to_date(field("DATE_FIN")),
        nature=nature or None,
    )
