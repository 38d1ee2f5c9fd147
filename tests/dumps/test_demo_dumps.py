"""The demo's synthetic archives: DILA's elements, DILA's raw style, the same bytes every time."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from lxml import etree

from collector.demo.dumps import DemoDumps
from collector.dumps.reader import member_path


def element_paths(data: bytes) -> set[str]:
    """Each element's tag path from the root, nested TM levels as one "TM+" (sections nest
    as deep as the code), the HTML inside CONTENU left out."""
    root = etree.fromstring(data)
    out = set()
    for el in root.iter():
        parts: list[str] = []
        node = el
        while node is not None:
            parts.append(str(node.tag))
            node = node.getparent()
        path = "/".join(reversed(parts))
        while "TM/TM" in path:
            path = path.replace("TM/TM", "TM")
        if "/CONTENU/" not in path:
            out.add(path.replace("/TM", "/TM+"))
    return out


def first_of_each_kind(dumps: DemoDumps, k: int) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for name, data in dumps.files(k):
        if name.endswith(".xml"):
            found.setdefault(member_path(name.split("/", 1)[1] if k else name).kind, data)
    return found


def test_generated_files_use_the_real_files_elements(demo_dumps: DemoDumps, legi_xml: Path) -> None:
    """Every element of a generated file exists at the same place in a real file of its kind,
    and the generated files carry most of what the real ones have."""
    kinds = {"article": "ARTICLE", "section_ta": "SECTION_TA", "texte/struct": "TEXTELR", "texte/version": "TEXTE_VERSION"}
    real: dict[str, set[str]] = {kind: set() for kind in kinds}
    for path in legi_xml.rglob("*.xml"):
        data = path.read_bytes()
        kind = next(k for k, root in kinds.items() if etree.fromstring(data).tag == root)
        real[kind] |= element_paths(data)
    generated = first_of_each_kind(demo_dumps, 0)
    assert set(generated) == set(kinds)
    for kind, data in generated.items():
        ours = element_paths(data)
        assert ours <= real[kind], (kind, sorted(ours - real[kind]))
        assert len(ours) >= 0.8 * len(real[kind]), (kind, sorted(real[kind] - ours))


def test_raw_style_no_indentation(demo_dumps: DemoDumps) -> None:
    article = first_of_each_kind(demo_dumps, 0)["article"].decode()
    assert article.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<ARTICLE>\n<META>\n<META_COMMUN>\n<ID>')
    assert "\n\n<ETAT>" in article and "\n\t" not in article and "\n " not in article


def test_archives_are_the_same_bytes_every_time(tmp_path: Path) -> None:
    """Deterministic for (articles, seed): a download resumed against a restarted demo-server
    appends to the same file, and the truth holds for any copy."""
    digests = []
    for _ in range(2):
        dumps = DemoDumps(articles=60, seed=5)
        out = io.BytesIO()
        dumps.write(3, out)
        digests.append(hashlib.sha256(out.getvalue()).hexdigest())
    assert digests[0] == digests[1]
    assert DemoDumps(articles=60, seed=5).truth(3) == DemoDumps(articles=60, seed=5).truth(3)
    assert DemoDumps(articles=60, seed=6).truth(0) != DemoDumps(articles=60, seed=5).truth(0)
