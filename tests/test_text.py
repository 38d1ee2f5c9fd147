"""collector.text: HTML -> readable text, the quality filter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from collector.text import clean_text, normalize_text, passes_quality, rejection_reason

# Shaped like Légifrance texteHtml for tariff articles (attributes, nbsp thousands, <p> and <br/>
# inside cells, a header row).
TABLE_HTML = (
    "<p>Les droits sont fixés conformément au tableau suivant :</p>"
    "<p></p><table border='1' width='100%'><tbody>"
    "<tr><th><p align='center'>Catégorie</p></th><th><p align='center'>Montant (en&nbsp;euros)</p></th></tr>"
    "<tr><td><p>Première catégorie</p></td><td align='right'><p>1&nbsp;500</p></td></tr>"
    "<tr><td>Deuxième<br/>catégorie</td><td align='right'>3&nbsp;000</td></tr>"
    "</tbody></table><p></p>"
    "<p>Ces montants sont révisés chaque année.</p>"
)


def test_table_rows_on_their_own_lines_with_cells_separated() -> None:
    assert clean_text(TABLE_HTML) == (
        "Les droits sont fixés conformément au tableau suivant :\n"
        "Catégorie | Montant (en euros)\n"
        "Première catégorie | 1 500\n"
        "Deuxième catégorie | 3 000\n"
        "Ces montants sont révisés chaque année."
    )


def test_paragraphs_breaks_and_blank_lines() -> None:
    html = "<p>Premier.</p>\n\n<p>Second<br/>suite</p><p>a<br/><br/><br/><br/>b</p><p>c<br/></p><p>d</p>"
    assert clean_text(html) == "Premier.\nSecond\nsuite\na\n\nb\nc\nd"


def test_list_items_kept_apart() -> None:
    html = "<p>Sont applicables :</p><ul><li>1° les règles A ;</li><li>2° les règles B.</li></ul>"
    assert clean_text(html) == "Sont applicables :\n1° les règles A ;\n2° les règles B."


def test_entities_nbsp_and_whitespace() -> None:
    html = "<p>  L&#39;article&nbsp;&nbsp;L.&nbsp;110-1 &eacute;tait \u202f: &amp;  \n  &lt;b&gt;</p>"
    assert clean_text(html) == "L'article L. 110-1 était : & <b>"


def test_inline_markup_does_not_split_words_or_lines() -> None:
    assert clean_text("<p>Voir <a href='/x'>l'article 9</a>, <b>al.</b> <i>2</i>.</p>") == (
        "Voir l'article 9, al. 2."
    )


def test_empty_and_markup_only_inputs() -> None:
    for html in (None, "", "   ", "<p></p>", "<p></p><p></p><br/>", "<!-- rien -->"):
        assert clean_text(html) == ""


def test_scripts_styles_and_control_characters_dropped() -> None:
    html = "<style>p{}</style><p>un\x00\x01</p><script>alert(1)</script>deux"
    assert clean_text(html) == "un\ndeux"


def test_plain_text_passes_through() -> None:
    assert clean_text("a < b et c > d") == "a < b et c > d"
    assert clean_text("sans\nbalise") == "sans balise"  # HTML: a newline is whitespace


def test_normalize_text_keeps_lines_and_collapses_blank_runs() -> None:
    assert normalize_text("  a \u00a0 b \r\n\n\n\n c  \n") == "a b\n\nc"
    assert normalize_text(None) == ""


def test_real_article_legifrance_markup(real_fixtures: Path) -> None:
    # "<p></p>   text<p></p><p></p>" paragraphs with an <a> link, as served by the API.
    data = json.loads((real_fixtures / "articles" / "LEGIARTI000006398351.json").read_text())
    article = data["listArticle"][0]
    text = clean_text(article["texteHtml"])
    lines = text.split("\n")
    assert lines[0].startswith("Le présent code se substitue, dans les conditions prévues par la loi n° 51-1087")
    assert "Décret des 3 et 20 septembre 1792." in lines
    assert lines[-1].startswith("La loi n° 58-346 du 3 avril 1958")
    assert "<" not in text and "  " not in text and "\n\n" not in text
    # Same characters as the API's own plain `texte` (which adds a space after each link).
    assert "".join(text.split()) == "".join(article["texte"].split())


def test_every_real_article_matches_its_plain_text(real_fixtures: Path) -> None:
    for path in sorted((real_fixtures / "articles").glob("*.json")):
        for article in json.loads(path.read_text())["listArticle"]:
            cleaned = clean_text(article["texteHtml"])
            assert "".join(cleaned.split()) == "".join(article["texte"].split()), article["id"]


@pytest.mark.parametrize(
    ("text", "min_chars", "ok"),
    [("x" * 100, 100, True), ("x" * 99, 100, False), ("", 100, False), ("", 0, True), ("x", 0, True)],
)
def test_quality_filter(text: str, min_chars: int, ok: bool) -> None:
    assert passes_quality(text, min_chars) is ok


def test_rejection_reason() -> None:
    assert rejection_reason("") == "empty"
    assert rejection_reason("court") == "too_short"


def test_demo_emulator_table_articles() -> None:
    from collector.demo.corpus import DEMO_MASSIVE_CODES, Corpus

    corpus = Corpus(300)
    tables = [
        corpus.text(slot, version.number)
        for code in DEMO_MASSIVE_CODES
        for slot, version in corpus.in_force_entries(code)
        if slot.table
    ]
    assert tables
    for plain, html in tables:
        lines = clean_text(html).split("\n")
        header = lines.index("Catégorie | Montant (€)")
        rows = lines[header:]
        assert all(line.count(" | ") == 1 for line in rows)
        # Same rows as the emulator's plain text, whose cells are separated by a space.
        assert [line.replace(" | ", " ") for line in rows] == plain.split("\n")[-len(rows):]
