"""HTML of an article (Légifrance `texteHtml`) -> readable plain text, and the quality filter.

lxml because its libxml2 HTML parser is the fastest robust parser available in Python (tens of
microseconds per article), tolerates the broken markup Légifrance serves (`<p></p>   text<p></p>`,
unclosed tags) and decodes every HTML entity for us.

Layout rules: paragraphs, headings, divs, list items and table rows each start a new line (a
"soft" break: consecutive soft breaks collapse into one newline); every `<br>` is a "hard"
newline, so `<br><br>` leaves one blank line; never more than one blank line in a row. Cells of a
row are joined with " | " and stay on one line (breaks inside a cell become spaces). Every run of
whitespace, non-breaking spaces included, becomes one space; lines are stripped.
"""

from __future__ import annotations

import re

from lxml import etree

# Elements that start and end a line.
_BLOCKS = frozenset(
    {
        "p", "div", "li", "ul", "ol", "dl", "dt", "dd", "tr", "table", "thead", "tbody",
        "tfoot", "caption", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre",
        "section", "article", "header", "footer", "address", "center", "hr", "form",
        "fieldset", "figure", "figcaption", "body", "html",
    }
)
_CELLS = frozenset({"td", "th"})
_SKIP = frozenset({"script", "style", "head", "title", "template"})

_CELL_SEP = " | "

_PARSER = etree.HTMLParser(remove_comments=True, remove_pis=True, no_network=True)
# Control characters make libxml2 drop the rest of a document and carry no text.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ZERO_WIDTH = ("\u200b", "\ufeff")


def _tidy_lines(text: str) -> str:
    """Collapse whitespace (nbsp included: str.split() knows every Unicode space) inside each
    line, strip lines, keep at most one blank line in a row, strip the whole."""
    for char in _ZERO_WIDTH:
        if char in text:
            text = text.replace(char, "")
    out: list[str] = []
    blank = True  # drops leading blank lines
    for line in text.split("\n"):
        line = " ".join(line.split())
        if line:
            out.append(line)
            blank = False
        elif not blank:
            out.append("")
            blank = True
    if out and not out[-1]:
        out.pop()
    return "\n".join(out)


def normalize_text(text: str | None) -> str:
    """Normalise plain text (the API's `texte`/`nota`): whitespace and nbsp runs to one space,
    lines stripped, at most one blank line in a row."""
    if not text:
        return ""
    text = _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    return _tidy_lines(text)


def clean_text(html: str | None) -> str:
    """Readable text of an HTML fragment ('' for None, empty or markup-only input)."""
    if not html or html.isspace():
        return ""
    if "<" not in html and "&" not in html:  # no markup: HTML whitespace rules, one line
        return _tidy_lines(" ".join(_CONTROL.sub("", html).split()))
    root = etree.fromstring(f"<div>{_CONTROL.sub('', html)}</div>", _PARSER)
    if root is None:
        return ""
    parts: list[str] = []
    soft = False  # a block boundary is pending
    hard = 0  # <br> pending
    line_start = True  # nothing but whitespace since the last newline
    cells: list[int] = []  # per open <tr>: cells seen so far
    in_cell = 0
    skipping = 0

    for event, el in etree.iterwalk(root, events=("start", "end")):
        tag = el.tag  # libxml2 lower-cases HTML tag names
        if not isinstance(tag, str):  # comments / processing instructions (removed anyway)
            continue
        if event == "start":
            if skipping or tag in _SKIP:
                if tag in _SKIP:
                    skipping += 1
                continue
            chunk = el.text
            if tag == "br":
                if in_cell:
                    parts.append(" ")
                else:
                    hard += 1
            elif tag in _CELLS:
                if cells:
                    if cells[-1]:
                        parts.append(_CELL_SEP)
                    cells[-1] += 1
                in_cell += 1
            elif tag in _BLOCKS:
                if tag == "tr":
                    cells.append(0)
                if in_cell:
                    parts.append(" ")
                else:
                    soft = True
        else:
            if tag in _SKIP:
                skipping -= 1
            elif skipping:
                continue
            elif tag in _CELLS:
                in_cell -= 1
            elif tag in _BLOCKS:
                if tag == "tr" and cells:
                    cells.pop()
                if in_cell:
                    parts.append(" ")
                else:
                    soft = True
            chunk = el.tail
        if not chunk or skipping:
            continue
        if chunk.isspace():
            if not (soft or hard or line_start):
                parts.append(" ")
            continue
        if soft or hard:
            if not line_start:
                parts.append("\n\n" if hard >= 2 else "\n")
            soft, hard = False, 0
        if "\n" in chunk or "\r" in chunk:
            chunk = chunk.replace("\r", " ").replace("\n", " ")
        parts.append(chunk)
        line_start = False
    return _tidy_lines("".join(parts))


def passes_quality(text: str, min_chars: int) -> bool:
    """True when the cleaned text has at least `min_chars` characters. `min_chars <= 0` keeps
    every in-force article, empty ones included (MIN_ARTICLE_CHARS=0 means "keep everything")."""
    return min_chars <= 0 or len(text) >= min_chars


def rejection_reason(text: str) -> str:
    """Why `passes_quality` turned a text down: "empty" or "too_short"."""
    return "empty" if not text else "too_short"
