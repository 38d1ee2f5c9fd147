"""article_from_xml gives the API path's row for the same version."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from collector.demo.corpus import DEMO_MASSIVE_CODES
from collector.demo.dumps import DemoDumps
from collector.dumps.reader import member_path
from collector.dumps.xml import DumpXmlError, api_html, article_from_xml
from collector.models import Article, CodeToc, Rejected, TocEntry
from collector.parse import PATH_SEPARATOR, article_from_api, parse_toc

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
MONNAIES = "LEGITEXT000006070666"
ARTICLE = "LEGIARTI000006398122"


def toc_path(node: dict[str, Any], article_id: str, path: tuple[str, ...] = ()) -> str | None:
    """The section path of an article in a raw TOC (in force or not), as TocParser joins it."""
    if any(a.get("id") == article_id for a in node.get("articles") or []):
        return PATH_SEPARATOR.join(path)
    for section in node.get("sections") or []:
        found = toc_path(section, article_id, (*path, " ".join(section["title"].split())))
        if found is not None:
            return found
    return None


def test_real_dump_xml_and_api_json_give_the_same_row(legi_xml: Path, real_fixtures: Path) -> None:
    """The two real files of LEGIARTI000006398122: the dump's XML and getArticleByCid's JSON."""
    raw_toc = (real_fixtures / "codes" / f"{MONNAIES}.json").read_bytes()
    toc = parse_toc(raw_toc, MONNAIES)
    article = json.loads((real_fixtures / "articles" / f"{ARTICLE}.json").read_text())["listArticle"][0]
    path = toc_path(json.loads(raw_toc), ARTICLE)
    assert path is not None
    entry = TocEntry(id=ARTICLE, cid=article["cid"], num=article["num"], etat=article["etat"], section_path=path)
    from_api = article_from_api(article, entry, toc, 0, NOW)

    data = (legi_xml / "code-6070666" / "article" / f"{ARTICLE}.xml").read_bytes()
    from_dump = article_from_xml(data, min_chars=0, now=NOW)

    assert isinstance(from_api, Article) and isinstance(from_dump, Article)
    assert from_dump == from_api  # every field, collected_at included (same clock)
    assert from_dump.html == "<p></p>   La fabrication des monnaies est exécutée par voie de régie administrative, " \
        "sous l'autorité du ministre de l'économie et des finances.<p></p><p></p>"
    assert from_dump.date_fin == date(2001, 1, 1) and from_dump.etat == "ABROGE"
    # the path (what the reader passes) wins; the same quality filter applies
    assert article_from_xml(data, min_chars=0, now=NOW, code_id=MONNAIES, article_id=ARTICLE) == from_api
    rejected = article_from_xml(data, min_chars=1000, now=NOW)
    assert rejected == article_from_api(article, entry, toc, 1000, NOW)
    assert isinstance(rejected, Rejected) and rejected.reason == "too_short"


def test_code_title_matches_the_text_version_title(legi_xml: Path) -> None:
    row = article_from_xml((legi_xml / "code-6070666" / "article" / f"{ARTICLE}.xml").read_bytes(),
                           min_chars=0, now=NOW)
    version = (legi_xml / "code-6070666" / "texte" / "version" / f"{MONNAIES}.xml").read_text()
    assert isinstance(row, Article)
    assert f"<TITRE>{row.code_title}</TITRE>" in version


def test_raw_article_with_two_versions(legi_xml: Path) -> None:
    """The untouched raw format: no indentation, blank lines, ~150 KB of <p align> HTML."""
    row = article_from_xml((legi_xml / "raw" / "LEGIARTI000019325262.xml").read_bytes(), min_chars=100, now=NOW)
    assert isinstance(row, Article)
    assert (row.id, row.cid, row.code_id, row.num, row.etat) == (
        "LEGIARTI000019325262", "LEGIARTI000019325262", "LEGITEXT000006074069", "Annexe 2-4", "MODIFIE")
    assert row.code_title == "Code de l'action sociale et des familles"
    assert row.section_path == "Annexe"  # "Annexe " whitespace collapsed, as the TOC titles
    assert (row.date_debut, row.date_fin) == (date(2004, 10, 26), date(2007, 11, 9))
    assert row.text.startswith("GUIDE-BARÈME POUR L'ÉVALUATION DES DÉFICIENCES ET INCAPACITÉS DES PERSONNES HANDICAPÉES\n"
                               "Le chapitre Ier comprend :\n")
    assert "\n" not in row.html and row.html.startswith('<p align="center">GUIDE-BARÈME')
    assert row.nota is None


def article(body: str, *, etat: str = "VIGUEUR", debut: str = "2020-01-01", fin: str = "2999-01-01",
            contexte: str | None = None, versions: str = "", nota: str = "<CONTENU/>") -> bytes:
    if contexte is None:
        contexte = ('<TEXTE cid="LEGITEXT000099900001"><TITRE_TXT debut="1958-10-04" fin="2999-01-01">Code X</TITRE_TXT>'
                    '<TM><TITRE_TM debut="1958-10-04" fin="2999-01-01" id="S1">Livre Ier</TITRE_TM></TM></TEXTE>')
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<ARTICLE><META><META_COMMUN><ID>LEGIARTI000099000003</ID>'
            f'</META_COMMUN><META_SPEC><META_ARTICLE><NUM>L1</NUM>\n\n<ETAT>{etat}</ETAT>\n\n<DATE_DEBUT>{debut}'
            f'</DATE_DEBUT><DATE_FIN>{fin}</DATE_FIN></META_ARTICLE></META_SPEC></META><CONTEXTE>{contexte}</CONTEXTE>'
            f'<VERSIONS>{versions}</VERSIONS><NOTA>{nota}</NOTA><BLOC_TEXTUEL><CONTENU>{body}</CONTENU></BLOC_TEXTUEL>'
            '</ARTICLE>').encode()


def row_of(data: bytes, **kw: Any) -> Article:
    row = article_from_xml(data, min_chars=0, now=NOW, **kw)
    assert isinstance(row, Article)
    return row


def test_date_sentinels_as_the_api_path_encodes_them() -> None:
    deferred = row_of(article("<p>x</p>", etat="VIGUEUR_DIFF", debut="2222-02-22"))
    assert (deferred.date_debut, deferred.date_fin) == (date(2222, 2, 22), None)


def test_cid_is_the_first_version_and_the_path_wins_over_missing_attributes() -> None:
    versions = ''.join(f'<VERSION><LIEN_ART id="LEGIARTI0000990000{n:02d}" etat="MODIFIE"/></VERSION>' for n in (7, 2, 3))
    untitled = '<TEXTE><TM><TITRE_TM id="S1">A</TITRE_TM><TM><TITRE_TM id="S2">B</TITRE_TM></TM></TM></TEXTE>'
    row = row_of(article("<p>x</p>", versions=versions, contexte=untitled), code_id="LEGITEXT000099900002",
                 article_id="LEGIARTI000099000003")
    assert (row.cid, row.code_id, row.code_title, row.section_path) == (
        "LEGIARTI000099000002", "LEGITEXT000099900002", "LEGITEXT000099900002", "A > B")
    with pytest.raises(DumpXmlError, match="no text cid"):
        article_from_xml(article("<p>x</p>", contexte=untitled), min_chars=0, now=NOW)


def test_current_titles_win_when_a_code_or_section_was_renamed() -> None:
    contexte = ('<TEXTE cid="LEGITEXT000099900001">'
                '<TITRE_TXT debut="1958-10-04" fin="2001-01-01">Ancien titre</TITRE_TXT>'
                '<TITRE_TXT debut="2001-01-01" fin="2999-01-01">Nouveau titre</TITRE_TXT>'
                '<TM><TITRE_TM debut="2001-01-01" fin="2999-01-01" id="S2">Livre  II </TITRE_TM>'
                '<TITRE_TM debut="1958-10-04" fin="2001-01-01" id="S1">Livre I</TITRE_TM></TM></TEXTE>')
    row = row_of(article("<p>x</p>", contexte=contexte))
    assert (row.code_title, row.section_path) == ("Nouveau titre", "Livre II")


def test_html_as_the_api_serves_it_and_the_same_text() -> None:
    row = row_of(article("\n<br/>   Premier alinéa.<br/>\n<br/>   Second &amp; dernier.<br/>\n",
                         nota="<CONTENU>\n<p>Note.</p>\n</CONTENU>"))
    assert row.html == "<p></p>   Premier alinéa.<p></p><p></p>   Second &amp; dernier.<p></p>"
    assert row.text == "Premier alinéa.\nSecond & dernier."  # the API's single line break, not a blank line
    assert row.nota == "Note."
    assert api_html('<p align="left">a</p>\n<p align="left">b</p>') == '<p align="left">a</p><p align="left">b</p>'


@pytest.mark.parametrize("data, message", [
    (b"<ARTICLE><META>", "bad XML"),
    (b"", "bad XML"),
    (b"<SECTION_TA/>", "root element 'SECTION_TA'"),
])
def test_bad_files_raise_a_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(DumpXmlError, match=message):
        article_from_xml(data, min_chars=0, now=NOW, code_id="LEGITEXT000099900001")


def demo_articles(dumps: DemoDumps) -> Iterator[tuple[str, str, bytes]]:
    for name, data in dumps.files(0):
        if "/article/" in name:
            where = member_path(name)
            yield where.id, where.code_id, data


def test_every_demo_article_gives_the_emulators_api_row(demo_dumps: DemoDumps) -> None:
    """The generator's files against the emulator's getArticle for the same corpus: the same
    row for each in-force article but the html (the dump holds characters where the emulator's
    HTML has entities), so the text and the hash agree."""
    today = date(2026, 12, 1)
    tocs: dict[str, CodeToc] = {c: parse_toc(demo_dumps.corpus.table_matieres_json(c, today).encode(), c)
                                for c in DEMO_MASSIVE_CODES}
    entries = {e.id: (e, toc) for toc in tocs.values() for e in toc.entries}
    compared = 0
    for article_id, code_id, data in demo_articles(demo_dumps):
        if article_id not in entries:
            continue
        entry, toc = entries[article_id]
        from_api = article_from_api(demo_dumps.corpus.article(article_id) or {}, entry, toc, 100, NOW)
        from_dump = article_from_xml(data, min_chars=100, now=NOW, article_id=article_id, code_id=code_id)
        if isinstance(from_api, Article):
            assert isinstance(from_dump, Article)
            assert replace(from_dump, html=from_api.html) == from_api, article_id
        else:
            assert from_dump == from_api
        compared += 1
    assert compared == sum(len(t.entries) for t in tocs.values()) > 500
