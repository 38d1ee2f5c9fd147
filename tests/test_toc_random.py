"""TocParser against a plain reference (json.loads, then a walk of the tree) on random tables of
contents: odd values, unknown keys holding decoys, repeated keys, deep sections, any chunking."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from typing import Any

import pytest

from collector.models import CodeToc, TocEntry
from collector.parse import PATH_SEPARATOR, TocBodyError, TocError, TocParser

CODE = "LEGITEXT000099900042"
DOCUMENTS = 300


class Obj(list):
    """A JSON object as (key, value) pairs, so a key can repeat (json.loads keeps the last)."""


def dump(value: Any, escape: bool) -> str:
    """JSON text; `escape` writes non-ASCII characters as \\uXXXX, else they are UTF-8."""
    if isinstance(value, Obj):
        return "{" + ",".join(f"{json.dumps(k)}:{dump(v, escape)}" for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump(v, escape) for v in value) + "]"
    return json.dumps(value, ensure_ascii=escape)


# ---- the reference: the rules of collector.parse.TocParser, on the whole tree ----------------
def _order(child: Mapping[str, Any]) -> int:
    order = child.get("intOrdre")
    return order if isinstance(order, int) else 0  # true sorts as 1, like json's own reading


def _id_number(article_id: str) -> int:
    digits = article_id[8:]
    return int(digits) if digits.isdigit() else -1


def reference(tree: Any) -> CodeToc:
    if not isinstance(tree, dict):
        raise TocBodyError(CODE, "JSON body is not an object")
    by_cid: dict[str, TocEntry] = {}

    def walk(node: dict[str, Any], path: str) -> None:
        articles, sections = node.get("articles") or [], node.get("sections") or []
        if not isinstance(articles, list) or not isinstance(sections, list):
            raise TocError("'articles' and 'sections' must be lists")
        children = [(_order(a), False, a) for a in articles if isinstance(a, dict)]
        children += [(_order(s), True, s) for s in sections if isinstance(s, dict)]
        children.sort(key=lambda c: (c[0], c[1]))
        for _, is_section, child in children:
            if is_section:
                title = " ".join(str(child.get("title") or "").split())
                walk(child, f"{path}{PATH_SEPARATOR}{title}" if path and title else path or title)
                continue
            etat, article_id = child.get("etat"), child.get("id")
            if not (isinstance(etat, str) and etat.startswith("VIGUEUR")):
                continue
            if not (isinstance(article_id, str) and article_id.startswith("LEGIARTI")):
                continue
            cid = child.get("cid") if isinstance(child.get("cid"), str) else article_id
            num = child.get("num")
            seen = by_cid.get(cid)
            if seen is None or _id_number(article_id) > _id_number(seen.id):
                by_cid[cid] = TocEntry(article_id, cid, None if num is None else str(num), etat, path)

    # Bad lists anywhere fail the whole TOC, even under a section that comes later.
    walk(tree, "")
    title, modif = tree.get("title"), tree.get("modifDate")
    return CodeToc(
        code_id=CODE,
        title=str(title).strip() if title else CODE,
        modif_date=str(modif)[:10] if modif else None,
        entries=tuple(by_cid.values()),
    )


# ---- random documents ------------------------------------------------------------------------
def odd(rng: random.Random, depth: int = 0) -> Any:
    """Any JSON value, now and then a container holding TOC-looking keys (decoys)."""
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False, 0, -3, 12345678901234567890123, 1.5, 1e2, -0.0])
    if kind in (2, 3, 4):
        return rng.choice(["", " ", "VIGUEUR", "LEGIARTI000000000001", "Titre  \n I", "é\u00e0\u2019\"\\"])
    if kind == 5:
        return []
    if kind == 6:
        return [odd(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 7:
        return Obj((rng.choice(["id", "etat", "articles", "sections", "x"]), odd(rng, depth + 1))
                   for _ in range(rng.randrange(4)))
    return Obj([("articles", [article(rng, depth + 1)]), ("sections", [node(rng, depth + 1)])])


def article(rng: random.Random, depth: int) -> Any:
    """An articles item: mostly an article entry with odd values now and then."""
    if rng.random() < 0.05:
        return odd(rng, depth)  # a list item that is no object
    pairs = Obj()
    fields = {
        "id": lambda: (f"LEGIARTI{rng.randrange(1, 40):012d}" if rng.random() < 0.85
                       else rng.choice(["LEGISCTA000000000001", None, 7, ["LEGIARTI000000000001"]])),
        "cid": lambda: (f"LEGIARTI{rng.randrange(1, 20):012d}" if rng.random() < 0.8 else odd(rng, depth + 1)),
        "etat": lambda: (rng.choice(["VIGUEUR", "VIGUEUR_DIFF", "ABROGE", "MODIFIE", "TRANSFERE"])
                         if rng.random() < 0.9 else odd(rng, depth + 1)),
        "num": lambda: rng.choice(["1", "L. 2", "3 bis", None, 12]) if rng.random() < 0.9 else odd(rng, depth + 1),
        "intOrdre": lambda: rng.randrange(5) if rng.random() < 0.85 else rng.choice([None, "2", 1.0, True]),
    }
    keys = [k for k in fields if rng.random() < 0.9]
    keys += rng.sample(["lstLienModification", "context", "historique", "path", "content"], rng.randrange(3))
    rng.shuffle(keys)
    for key in keys:
        pairs.append((key, fields[key]() if key in fields else odd(rng, depth + 1)))
        if key in fields and rng.random() < 0.05:
            pairs.append((key, fields[key]()))  # repeated: the last counts
    return pairs


def node_value(rng: random.Random, depth: int, key: str) -> Any:
    """The value of a node's key; now and then "articles"/"sections" that are not lists."""
    if key in ("articles", "sections") and rng.random() < 0.004:
        return rng.choice(["nope", 1, True, Obj([("0", Obj())]), None, Obj(), "", 0, False])
    if key == "articles":
        return [article(rng, depth) for _ in range(rng.randrange(6))]
    if key == "sections":
        return [node(rng, depth + 1) for _ in range(rng.randrange(4 if depth < 4 else 1))]
    if key == "title":
        return rng.choice([" Titre  I ", "Chapitre\tunique", "", None, 3, ["a", 1]])
    if key == "intOrdre":
        return rng.randrange(4)
    if key == "modifDate":
        return rng.choice(["2026-01-02T10:00:00", "2026-03-04", None, 0, 2.5])
    return odd(rng, depth)


def node(rng: random.Random, depth: int, top: bool = False) -> Any:
    """The text (top) or a sections item: mostly a section, its keys in any order."""
    if not top and rng.random() < 0.05:
        return odd(rng, depth)  # a sections item that is no object
    keys = [k for k in ("title", "intOrdre", "articles", "sections") if rng.random() < 0.9]
    keys += [k for k in ("notaSectionsAafficher", "etat", "id") if rng.random() < 0.3]
    if top:
        keys += ["modifDate", "liens"]
    rng.shuffle(keys)
    pairs = Obj()
    for key in keys:
        pairs.append((key, node_value(rng, depth, key)))
        if rng.random() < 0.03:
            pairs.append((key, node_value(rng, depth, key)))  # repeated: the last counts
    return pairs


def parsed(text: bytes, rng: random.Random) -> CodeToc | Exception:
    """TocParser fed in random pieces (splitting tokens and UTF-8 sequences)."""
    parser = TocParser(CODE)
    try:
        start = 0
        while start < len(text):
            size = rng.choice([1, 2, 7, 64, 4096, len(text)])
            parser.feed(text[start : start + size])
            start += size
        return parser.close()
    except TocError as exc:
        return exc


def expected(text: bytes) -> CodeToc | Exception:
    """What the reference makes of the whole body."""
    try:
        return reference(json.loads(text))
    except TocError as exc:
        return exc


def outcome(result: CodeToc | Exception) -> Any:
    """Comparable: the CodeToc itself, or the class of the error."""
    return type(result) if isinstance(result, Exception) else result


@pytest.mark.parametrize("seed", range(0, DOCUMENTS, 50))
def test_random_tocs_match_the_reference(seed: int) -> None:
    kinds: dict[str, int] = {}
    for doc in range(seed, seed + 50):
        rng = random.Random(doc)
        text = dump(node(rng, 0, top=True), escape=doc % 2 == 0).encode()
        got, want = parsed(text, rng), expected(text)
        assert outcome(got) == outcome(want), f"document {doc}: {text[:300]!r}"
        kind = type(got).__name__ if isinstance(got, Exception) else ("entries" if got.entries else "empty")
        kinds[kind] = kinds.get(kind, 0) + 1
    assert kinds.get("entries", 0) >= 25, kinds  # the documents are not all trivial


def test_random_tocs_cut_short_are_body_errors() -> None:
    for doc in range(100):
        rng = random.Random(doc)
        text = dump(node(rng, 0, top=True), escape=doc % 2 == 0).encode()
        cut = text[: rng.randrange(len(text))]
        assert isinstance(parsed(cut, rng), TocBodyError), f"document {doc} cut at {len(cut)}"


def test_random_tocs_as_other_json_values_are_body_errors() -> None:
    rng = random.Random(7)
    for _ in range(50):
        value = odd(rng)
        if isinstance(value, Obj):
            continue
        result = parsed(dump(value, escape=False).encode(), rng)
        assert isinstance(result, TocBodyError) and "not an object" in str(result)
