"""collector.parse against real Légifrance responses (../shared fixtures) and edge shapes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from collector.models import Article, CodeToc, Rejected, TocEntry
from collector.parse import (
    MAX_PATH_CHARS,
    MAX_SECTION_DEPTH,
    MAX_TOKEN_BYTES,
    MAX_VALUE_DEPTH,
    ArticleError,
    TocBodyError,
    TocError,
    TocParser,
    article_from_api,
    content_sha256,
    epoch_ms_to_date,
    parse_toc,
)

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
MONNAIES = "LEGITEXT000006070666"
ARCHITECTES = "LEGITEXT000006074232"


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def toc_of(fixtures: Path, code_id: str) -> CodeToc:
    return parse_toc((fixtures / "codes" / f"{code_id}.json").read_bytes(), code_id)


def fed(data: bytes, code_id: str, size: int) -> CodeToc:
    """The body pushed through a TocParser in pieces of `size` bytes (splitting tokens and
    UTF-8 sequences)."""
    parser = TocParser(code_id)
    for start in range(0, len(data), size):
        parser.feed(data[start : start + size])
    return parser.close()


def toc_from(value: Any, code_id: str = "LEGITEXT000099900001") -> CodeToc:
    """parse_toc of a JSON value, checked to give the same CodeToc fed 1 and 7 bytes at a time."""
    data = json.dumps(value).encode()
    whole = parse_toc(data, code_id)
    assert fed(data, code_id, 1) == fed(data, code_id, 7) == whole
    return whole


def raw_articles(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every article entry of a raw TOC (independent of the parser's implementation)."""
    yield from node.get("articles") or []
    for section in node.get("sections") or []:
        yield from raw_articles(section)


def version(fixtures: Path, cid: str, article_id: str) -> dict[str, Any]:
    """One version (getArticle `article` shape) out of a getArticleByCid fixture."""
    versions = load(fixtures / "articles" / f"{cid}.json")["listArticle"]
    return next(v for v in versions if v["id"] == article_id)


# ---- the TOC parser on real TOCs ------------------------------------------------------------
def test_monnaies_toc_keeps_the_six_in_force_versions(real_fixtures: Path) -> None:
    toc = toc_of(real_fixtures, MONNAIES)
    assert toc.code_id == MONNAIES
    assert toc.title == "Code des instruments monétaires et des médailles"  # from the API
    assert toc.modif_date == "2009-05-14"
    assert [e.id for e in toc.entries] == [
        "LEGIARTI000006398192",
        "LEGIARTI000006398201",
        "LEGIARTI000020630534",
        "LEGIARTI000006398225",
        "LEGIARTI000006398239",
        "LEGIARTI000006398351",
    ]
    by_id = {e.id: e for e in toc.entries}
    # id != cid for modified articles: the in-force version is fetched, the cid kept.
    assert by_id["LEGIARTI000020630534"].cid == "LEGIARTI000006398213"
    assert by_id["LEGIARTI000020630534"].num == "11"
    assert by_id["LEGIARTI000006398192"].section_path == (
        "Chapitre I : Monnaies et médailles > Section I : Fabrication des monnaies et médailles"
        " > Paragraphe II : Frappe des médailles."
    )
    assert by_id["LEGIARTI000006398351"].section_path == "Chapitre IV : Dispositions communes."
    assert all(e.etat == "VIGUEUR" for e in toc.entries)


def test_architectes_toc_counts_match_the_fixture_table(real_fixtures: Path) -> None:
    raw = load(real_fixtures / "codes" / f"{ARCHITECTES}.json")
    toc = toc_of(real_fixtures, ARCHITECTES)
    all_entries = list(raw_articles(raw))
    assert len(all_entries) == 49
    assert len({a["cid"] for a in all_entries}) == 49
    assert len(toc.entries) == 48
    assert len({e.cid for e in toc.entries}) == 48
    assert toc.title == "Code de déontologie des architectes"
    assert toc.modif_date == "1992-09-23"
    first = toc.entries[0]
    assert (first.num, first.section_path) == ("1", "Code de déontologie des architectes.")
    deep = next(e for e in toc.entries if e.num == "10 bis")
    assert deep.section_path == (
        "TITRE II : Devoirs professionnels > CHAPITRE 1er : Règles générales"
        " > Section 1 : Règles personnelles."
    )
    # intOrdre order: article numbers come out in the code's order.
    assert [e.num for e in toc.entries][:12] == [
        "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "10 bis", "11"
    ]


def test_toc_walk_orders_by_intordre_and_dedups_cids() -> None:
    toc = {
        "title": "Code de démonstration",
        "modifDate": "2026-01-02",
        "articles": [],
        "sections": [
            {
                "title": "Titre II",
                "intOrdre": 20,
                "sections": [],
                "articles": [
                    {"id": "LEGIARTI000000000005", "cid": "LEGIARTI000000000005", "etat": "VIGUEUR", "num": "3", "intOrdre": 1},
                ],
            },
            {
                "title": "Titre Ier",
                "intOrdre": 10,
                "sections": [
                    {
                        "title": "  Chapitre   unique ",
                        "intOrdre": 5,
                        "sections": [],
                        "articles": [
                            # Same cid twice in force: keep the highest (latest) id.
                            {"id": "LEGIARTI000000000009", "cid": "LEGIARTI000000000001", "etat": "VIGUEUR", "num": "2", "intOrdre": 2},
                            {"id": "LEGIARTI000000000010", "cid": "LEGIARTI000000000001", "etat": "VIGUEUR", "num": "2", "intOrdre": 3},
                            {"id": "LEGIARTI000000000007", "cid": "LEGIARTI000000000001", "etat": "VIGUEUR", "num": "2", "intOrdre": 4},
                            {"id": "LEGIARTI000000000011", "cid": "LEGIARTI000000000011", "etat": "ABROGE", "num": "2 bis", "intOrdre": 5},
                            {"id": "LEGIARTI000000000012", "cid": "LEGIARTI000000000012", "etat": "MODIFIE", "num": "2 ter", "intOrdre": 6},
                        ],
                    }
                ],
                "articles": [
                    {"id": "LEGIARTI000000000003", "cid": "LEGIARTI000000000003", "etat": "VIGUEUR_DIFF", "num": "1", "intOrdre": 1},
                ],
            },
        ],
    }
    result = toc_from(toc)
    assert [(e.id, e.cid, e.num, e.section_path) for e in result.entries] == [
        ("LEGIARTI000000000003", "LEGIARTI000000000003", "1", "Titre Ier"),
        ("LEGIARTI000000000010", "LEGIARTI000000000001", "2", "Titre Ier > Chapitre unique"),
        ("LEGIARTI000000000005", "LEGIARTI000000000005", "3", "Titre II"),
    ]
    assert result.entries[0].etat == "VIGUEUR_DIFF"


def test_toc_entries_follow_reading_order_across_levels() -> None:
    """A section's articles come where the section stands among its siblings, not after all
    of its parent's own articles."""
    def art(n: int, order: int) -> dict[str, Any]:
        return {"id": f"LEGIARTI{n:012d}", "etat": "VIGUEUR", "num": str(n), "intOrdre": order}

    result = toc_from({
        "articles": [art(4, 3), art(1, 0)],
        "sections": [{"title": "S", "intOrdre": 1, "articles": [art(3, 2), art(2, 1)],
                      "sections": [{"title": "T", "intOrdre": 1, "articles": [art(5, 0)]}]}],
    })
    assert [(e.num, e.section_path) for e in result.entries] == [
        ("1", ""), ("2", "S"), ("5", "S > T"), ("3", "S"), ("4", "")
    ]


def test_real_tocs_give_the_same_result_fed_whole_or_in_tiny_pieces(real_fixtures: Path) -> None:
    for code_id in (MONNAIES, ARCHITECTES):
        data = (real_fixtures / "codes" / f"{code_id}.json").read_bytes()
        whole = parse_toc(data, code_id)
        assert whole.entries and fed(data, code_id, 7) == fed(data, code_id, 1) == whole


def nested_sections(depth: int, title: str = "S{d}") -> bytes:
    """A TOC whose sections are nested `depth` deep, one in-force article in the innermost.
    Built as text: json.dumps itself would hit the recursion limit."""
    article = '{"id":"LEGIARTI000000000001","cid":"LEGIARTI000000000001","etat":"VIGUEUR","num":"1"}'
    text = '{"title":"Profond","sections":['
    text += "".join(f'{{"title":"{title.format(d=d)}","intOrdre":1,"articles":[],"sections":['
                    for d in range(1, depth))
    text += f'{{"title":"{title.format(d=depth)}","intOrdre":1,"sections":[],"articles":[{article}]}}'
    text += "]}" * (depth - 1) + "]}"
    return text.encode()


def test_toc_walk_handles_nesting_up_to_the_bound_without_recursion() -> None:
    data = nested_sections(MAX_SECTION_DEPTH)
    (entry,) = parse_toc(data, "LEGITEXT000099900002").entries
    assert entry.section_path.startswith("S1 > S2 > S3 > ") and entry.section_path.endswith(f" > S{MAX_SECTION_DEPTH}")
    assert fed(data, "LEGITEXT000099900002", 7).entries == (entry,)


@pytest.mark.parametrize("depth", [MAX_SECTION_DEPTH + 1, 20_000])
def test_sections_nested_past_the_bound_are_a_body_error(depth: int) -> None:
    """20,000 nested sections once cost gigabytes (one path string per level): now the parse
    stops at the bound, whole or fed in pieces."""
    data = nested_sections(depth)
    for parse in (lambda: parse_toc(data, "LEGITEXT000099900002"), lambda: fed(data, "LEGITEXT000099900002", 4096)):
        with pytest.raises(TocBodyError, match=f"sections nested over {MAX_SECTION_DEPTH} deep"):
            parse()


def test_long_section_paths_are_cut() -> None:
    data = nested_sections(20, title="S{d} " + "t" * 300)
    (entry,) = parse_toc(data, "LEGITEXT000099900002").entries
    assert len(entry.section_path) == MAX_PATH_CHARS and entry.section_path.endswith("…")
    assert entry.section_path.startswith("S1 tttt")


@pytest.mark.parametrize("where", ["title", "unknown key", "article num"])
def test_a_deeply_nested_value_is_a_body_error(where: str) -> None:
    """A title (or any value) nested 200,000 deep once raised RecursionError out of the pass."""
    deep = "[" * 200_000 + "]" * 200_000
    article = f'{{"id":"LEGIARTI000000000001","etat":"VIGUEUR","num":{deep if where == "article num" else 1}}}'
    body = {
        "title": f'{{"title":{deep},"sections":[]}}',
        "unknown key": f'{{"title":"Code","junk":{deep},"sections":[]}}',
        "article num": f'{{"title":"Code","articles":[{article}]}}',
    }[where].encode()
    with pytest.raises(TocBodyError, match=f"nested over {MAX_VALUE_DEPTH} deep"):
        parse_toc(body, "LEGITEXT000099900002")
    deep_enough = "[" * MAX_VALUE_DEPTH + "]" * MAX_VALUE_DEPTH  # up to the bound: read as before
    assert parse_toc(f'{{"title":"Code","junk":{deep_enough},"sections":[]}}'.encode(), "X").title == "Code"


@pytest.mark.parametrize("token", [b'"' + b"a" * (50 << 20) + b'"', b"9" * (2 << 20), b" " * (2 << 20) + b"1"])
def test_a_token_over_the_bound_is_a_body_error(token: bytes) -> None:
    """yajl lexes a token again from its start on every slice it spans (a 50 MB string once
    took 49 s); past MAX_TOKEN_BYTES without an event the body is refused, fed whole or in
    network-sized pieces."""
    body = b'{"title":"Code","junk":' + token + b',"sections":[]}'
    with pytest.raises(TocBodyError, match=f"token over {MAX_TOKEN_BYTES} bytes"):
        parse_toc(body, "LEGITEXT000099900002")
    with pytest.raises(TocBodyError, match=f"token over {MAX_TOKEN_BYTES} bytes"):
        fed(body, "LEGITEXT000099900002", 65536)


def test_a_token_under_the_bound_is_read() -> None:
    title = "T" * (MAX_TOKEN_BYTES - 1024)
    toc = parse_toc(json.dumps({"title": title, "sections": []}).encode(), "LEGITEXT000099900002")
    assert toc.title == title


def test_an_integer_python_cannot_convert_is_a_body_error() -> None:
    with pytest.raises(TocBodyError, match="undecodable JSON"):
        parse_toc(b'{"intOrdre":' + b"9" * 5000 + b',"sections":[]}', "LEGITEXT000099900002")


def test_unknown_keys_are_skipped_whatever_they_hold() -> None:
    """Objects and lists under other keys, even ones holding "id", "etat", "articles" or
    "sections", never count; nor do list items that are not objects."""
    decoy = {"id": "LEGIARTI000000000666", "cid": "LEGIARTI000000000666", "etat": "VIGUEUR", "num": "X"}
    nested = {"articles": [decoy], "sections": [{"title": "Piège", "articles": [decoy]}], "etat": "ABROGE"}
    result = toc_from({
        "title": "Code", "modifDate": "2026-01-02T10:00:00", "liens": [nested, [nested]], "extra": nested,
        "sections": [
            7, None, "x", [{"title": "not a section", "articles": [decoy]}],
            {
                "title": "Titre Ier", "intOrdre": 1, "notaSectionsAafficher": {"sections": [nested]},
                "articles": [
                    "not an article", [decoy], {},
                    {
                        "id": "LEGIARTI000000000002", "lstLienModification": [decoy, {"sections": [nested]}],
                        "context": {"id": "LEGIARTI000000000999", "etat": "ABROGE", "num": "Z"},
                        "etat": "VIGUEUR", "cid": "LEGIARTI000000000001", "num": "1",
                        "historique": [[[{"etat": "ABROGE"}]]], "intOrdre": 3,
                    },
                ],
            },
        ],
    })
    assert [(e.id, e.cid, e.num, e.etat, e.section_path) for e in result.entries] == [
        ("LEGIARTI000000000002", "LEGIARTI000000000001", "1", "VIGUEUR", "Titre Ier")
    ]
    assert (result.title, result.modif_date) == ("Code", "2026-01-02")


def test_odd_values_of_the_read_keys_follow_the_rules() -> None:
    result = toc_from({
        "title": "  Code  ",
        "articles": [
            # no cid: the id stands for it; a number num becomes text; no intOrdre sorts as 0
            {"id": "LEGIARTI000000000003", "etat": "VIGUEUR", "num": 12, "intOrdre": 2},
            {"id": "LEGIARTI000000000004", "cid": 5, "etat": "VIGUEUR", "num": None},
            {"id": "LEGISCTA000000000005", "etat": "VIGUEUR"},  # not an article id
            {"id": ["LEGIARTI000000000006"], "etat": "VIGUEUR"},
            {"id": "LEGIARTI000000000007", "etat": {"VIGUEUR": True}},
            {"id": "LEGIARTI000000000008", "etat": "VIGUEUR", "num": ["L", 1], "intOrdre": "1"},
        ],
        "sections": [{"title": ["Titre", "liste"], "intOrdre": 2, "articles": [
            {"id": "LEGIARTI000000000009", "etat": "VIGUEUR", "num": "9"}]}],
    })
    assert [(e.id, e.cid, e.num, e.section_path) for e in result.entries] == [
        ("LEGIARTI000000000004", "LEGIARTI000000000004", None, ""),
        ("LEGIARTI000000000008", "LEGIARTI000000000008", "['L', 1]", ""),
        ("LEGIARTI000000000003", "LEGIARTI000000000003", "12", ""),
        ("LEGIARTI000000000009", "LEGIARTI000000000009", "9", "['Titre', 'liste']"),
    ]
    assert result.title == "Code" and result.modif_date is None
    assert toc_from({"sections": []}, "LEGITEXT000099900009").title == "LEGITEXT000099900009"


def test_numbers_read_as_json_would_read_them() -> None:
    """Integers of any size stay integers; other numbers are floats (ijson's Decimals are not
    let through: str(Decimal("1E+2")) would be "1E+2" where the JSON reader gave "100.0")."""
    text = (
        b'{"title":1E2,"modifDate":2.50,"articles":['
        b'{"id":"LEGIARTI000000000001","etat":"VIGUEUR","num":123456789012345678901234567890,'
        b'"intOrdre":99999999999999999999},'
        b'{"id":"LEGIARTI000000000002","etat":"VIGUEUR","num":[1.5,{"n":-0.0}],"intOrdre":1.0}]}'
    )
    result = parse_toc(text, "LEGITEXT000099900005")
    assert (result.title, result.modif_date) == ("100.0", "2.5")
    assert [(e.id, e.num) for e in result.entries] == [
        ("LEGIARTI000000000002", "[1.5, {'n': -0.0}]"),  # intOrdre 1.0 is no integer: 0
        ("LEGIARTI000000000001", "123456789012345678901234567890"),
    ]


def test_a_repeated_key_counts_once_with_its_last_value() -> None:
    article = {"id": "LEGIARTI000000000001", "etat": "VIGUEUR"}
    text = (
        '{"title":"Premier","sections":[{"title":"Perdu","sections":"nope"}],'
        f'"articles":[{json.dumps(article)}],"articles":null,'
        '"sections":[{"title":"Gardé","articles":[{"id":"LEGIARTI000000000002","etat":"ABROGE",'
        '"etat":"VIGUEUR"}]}],"title":"Dernier"}'
    ).encode()
    result = parse_toc(text, "LEGITEXT000099900004")
    assert [(e.id, e.section_path) for e in result.entries] == [("LEGIARTI000000000002", "Gardé")]
    assert result.title == "Dernier" and fed(text, "LEGITEXT000099900004", 3) == result


def test_toc_walk_rejects_what_is_not_a_toc() -> None:
    code = "LEGITEXT000099900003"
    for body in ([], "toc", 3, None):  # not an object
        with pytest.raises(TocBodyError, match="not an object"):
            toc_from(body, code)
    for value in ("nope", 1, True, {"0": {}}):  # neither a list nor empty, at any depth
        for bad in ({"sections": value}, {"articles": value}, {"sections": [{"title": "S", "articles": value}]}):
            with pytest.raises(TocError) as err:
                toc_from({"title": "x", **bad}, code)
            assert not isinstance(err.value, TocBodyError) and "must be lists" in str(err.value)
    for value in (None, {}, "", 0, False):  # empty values: no children, like a missing key
        empty = toc_from({"title": "Vide", "sections": value, "articles": [], "modifDate": value}, code)
        assert empty.entries == () and empty.modif_date is None


@pytest.mark.parametrize(
    "body",
    [b"", b"   ", b'{"title":"x","sections":[{"title":"S"', b'{"title":"x"} {}', b'{"title":"x",}',
     b"{'title':'x'}", b'{"title":"\xff"}', b'{"sections":[], "articles":[]}]'],
)
def test_invalid_or_truncated_json_is_a_body_error(body: bytes) -> None:
    for size in (1, 7, len(body) or 1):
        with pytest.raises(TocBodyError, match="invalid JSON"):
            fed(body, "LEGITEXT000099900003", size)


def test_a_body_error_wins_over_bad_lists_seen_before_it() -> None:
    """Bad lists are judged only once the JSON proved whole: a cut body is worth asking again."""
    body = b'{"sections":"nope","articles":[{"id":"LEGIARTI000000000001","etat":"VIG'
    with pytest.raises(TocBodyError):
        parse_toc(body, "LEGITEXT000099900003")


def test_top_level_lists_are_reported() -> None:
    for value, listed in (({"sections": []}, True), ({"articles": []}, True), ({"title": "x"}, False),
                          ({"sections": None, "articles": {}}, False)):
        parser = TocParser("LEGITEXT000099900003")
        parser.feed(json.dumps(value).encode())
        parser.close()
        assert parser.listed is listed


# ---- dates ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ms", "expected"),
    [
        (None, None),
        (0, date(1970, 1, 1)),
        (-552528000000, date(1952, 6, 29)),  # real dateDebut of the Monnaies code articles
        (-34473600000, date(1968, 11, 28)),  # real dateFin of LEGIARTI000018554818
        (1242259200000, date(2009, 5, 14)),
        (32472144000000, None),  # the "no end" sentinel
        (32472144000000 + 86_400_000, None),
        (32472143999999, date(2998, 12, 31)),
        (-5231606400000, date(1804, 3, 21)),  # Code civil start date
        ("2024-01-31", date(2024, 1, 31)),
        ("2999-01-01", None),
        ("n'importe quoi", None),
        (10**20, None),
        (True, None),
    ],
)
def test_epoch_ms_to_date(ms: Any, expected: date | None) -> None:
    assert epoch_ms_to_date(ms) == expected


def test_real_dates_from_fixtures(real_fixtures: Path) -> None:
    # LEGIARTI000018554818: dateDebut -552528000000, dateFin -34473600000, both before 1970.
    raw = load(real_fixtures / "articles" / "LEGIARTI000018554818.json")["listArticle"][0]
    assert raw["dateDebut"] < 0 and raw["dateFin"] < 0
    assert epoch_ms_to_date(raw["dateDebut"]) == date(1952, 6, 29)
    assert epoch_ms_to_date(raw["dateFin"]) == date(1968, 11, 28)


# ---- article_from_api on real getArticle objects --------------------------------------------
def entry_of(toc: CodeToc, article_id: str) -> TocEntry:
    return next(e for e in toc.entries if e.id == article_id)


def test_real_in_force_article_becomes_an_article(real_fixtures: Path) -> None:
    toc = toc_of(real_fixtures, MONNAIES)
    entry = entry_of(toc, "LEGIARTI000006398192")
    raw = version(real_fixtures, entry.cid, entry.id)
    art = article_from_api(raw, entry, toc, 100, NOW)
    assert isinstance(art, Article)
    assert (art.id, art.cid, art.code_id) == ("LEGIARTI000006398192", "LEGIARTI000006398191", MONNAIES)
    assert art.code_title == "Code des instruments monétaires et des médailles"
    assert (art.num, art.etat) == ("9", "VIGUEUR")
    assert art.date_debut == date(2006, 12, 27)
    assert art.date_fin is None  # 32472144000000
    assert art.section_path == entry.section_path
    assert art.html == raw["texteHtml"]
    assert art.text.startswith("Il est expressément défendu à toutes personnes")
    assert "<" not in art.text and "  " not in art.text
    assert art.nota is None  # "" in the API
    assert art.content_sha256 == hashlib.sha256((art.text + "\x1e").encode()).hexdigest()
    assert art.collected_at == NOW


def test_pre_1970_start_date_of_a_real_article(real_fixtures: Path) -> None:
    toc = toc_of(real_fixtures, MONNAIES)
    entry = entry_of(toc, "LEGIARTI000006398351")
    art = article_from_api(version(real_fixtures, entry.cid, entry.id), entry, toc, 100, NOW)
    assert isinstance(art, Article)
    assert art.date_debut == date(1952, 6, 29) and art.date_fin is None


def test_short_real_article_rejected_at_100_kept_at_0(real_fixtures: Path) -> None:
    toc = toc_of(real_fixtures, MONNAIES)
    entry = entry_of(toc, "LEGIARTI000020630534")  # cid LEGIARTI000006398213
    raw = version(real_fixtures, "LEGIARTI000006398213", entry.id)
    rejected = article_from_api(raw, entry, toc, 100, NOW)
    assert isinstance(rejected, Rejected)
    assert (rejected.id, rejected.code_id, rejected.reason) == (entry.id, MONNAIES, "too_short")
    assert rejected.length == len(
        "Chacun des contrevenants aux dispositions de l'article 9 sera condamné à une amende de 3750 euros."
    ) == 98
    kept = article_from_api(raw, entry, toc, 0, NOW)
    assert isinstance(kept, Article)
    assert kept.text == (
        "Chacun des contrevenants aux dispositions de l'article 9 sera condamné à une amende de 3750 euros."
    )
    assert kept.date_debut == date(2009, 5, 14)


def test_every_in_force_real_article_converts(real_fixtures: Path) -> None:
    toc = toc_of(real_fixtures, MONNAIES)
    results = [article_from_api(version(real_fixtures, e.cid, e.id), e, toc, 100, NOW) for e in toc.entries]
    assert [type(r).__name__ for r in results] == ["Article"] * 2 + ["Rejected"] + ["Article"] * 3


def test_nota_text_fallback_and_hash() -> None:
    toc = CodeToc(code_id="LEGITEXT000099900001", title="Code de démonstration", modif_date=None, entries=())
    entry = TocEntry(id="LEGIARTI000099900001", cid="LEGIARTI000099900000", num="L1", etat="VIGUEUR", section_path="Titre Ier")
    raw = {
        "id": entry.id,
        "etat": "VIGUEUR",
        "num": None,
        "texteHtml": "<p></p>",
        "texte": "Texte brut\u00a0de l'article, assez long pour passer le filtre de qualité appliqué ici.",
        "notaHtml": "<p>Conformément à l'article 3 :</p><p>entrée en vigueur le 1er janvier.</p>",
        "nota": "ignored when notaHtml is usable",
        "dateDebut": 1640995200000,
        "dateFin": 1704067200000,
    }
    art = article_from_api(raw, entry, toc, 50, NOW)
    assert isinstance(art, Article)
    assert art.text == "Texte brut de l'article, assez long pour passer le filtre de qualité appliqué ici."
    assert art.nota == "Conformément à l'article 3 :\nentrée en vigueur le 1er janvier."
    assert art.num == "L1"  # from the TOC when the article has none
    assert art.cid == "LEGIARTI000099900000"
    assert (art.date_debut, art.date_fin) == (date(2022, 1, 1), date(2024, 1, 1))
    assert art.content_sha256 == content_sha256(art.text, art.nota)
    assert art.content_sha256 != content_sha256(art.text, None)
    assert content_sha256("ab", None) != content_sha256("a", "b")


def test_empty_article_reason_and_wrong_id() -> None:
    toc = CodeToc(code_id="LEGITEXT000099900001", title="Code de démonstration", modif_date=None, entries=())
    entry = TocEntry(id="LEGIARTI000099900001", cid="LEGIARTI000099900001", num="1", etat="VIGUEUR", section_path="")
    rejected = article_from_api({"id": entry.id, "texteHtml": "<p></p>", "texte": ""}, entry, toc, 1, NOW)
    assert isinstance(rejected, Rejected)
    assert (rejected.reason, rejected.length) == ("empty", 0)
    kept = article_from_api({"id": entry.id, "texteHtml": None, "texte": None}, entry, toc, 0, NOW)
    assert isinstance(kept, Article) and kept.text == ""  # MIN_ARTICLE_CHARS=0 keeps everything
    with pytest.raises(ArticleError):
        article_from_api({"id": "LEGIARTI000099900002", "texte": "x"}, entry, toc, 0, NOW)
    with pytest.raises(ArticleError):
        article_from_api(None, entry, toc, 0, NOW)  # type: ignore[arg-type]


def test_wrong_types_in_an_article_never_escape_as_anything_but_article_error() -> None:
    """Hostile field values: a nested id names its type, a nested num falls back to the TOC's."""
    toc = CodeToc(code_id="LEGITEXT000099900001", title="Code de démonstration", modif_date=None, entries=())
    entry = TocEntry(id="LEGIARTI000099900001", cid="LEGIARTI000099900001", num="1", etat="VIGUEUR", section_path="")
    deep: Any = []
    for _ in range(5000):  # deeper than str() can recurse
        deep = [deep]
    with pytest.raises(ArticleError, match="with a list id"):
        article_from_api({"id": deep, "texte": "x"}, entry, toc, 0, NOW)
    odd = {"id": entry.id, "texte": "x" * 120, "num": deep, "etat": deep, "cid": deep, "dateDebut": deep,
           "texteHtml": {"a": 1}, "nota": [1]}
    article = article_from_api(odd, entry, toc, 100, NOW)
    assert isinstance(article, Article)
    assert (article.num, article.etat, article.cid, article.date_debut, article.nota) == ("1", "VIGUEUR", entry.cid, None, None)
