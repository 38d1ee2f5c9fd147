"""Synthetic DILA LEGI archives of the demo codes, in DILA's real layout and raw XML style.

Modelled on the real files in ../shared/fixtures/legi-xml/ (same elements, no indentation,
blank lines where optional elements were dropped). A global (`Freemium_legi_global_…`) holds
every version of every article of the demo corpus (collector.demo.corpus: the same ids, dates,
places and texts the emulator's API serves), the sections, the texts' struct and version
files; three deltas (`LEGI_…`, rooted in a `YYYYMMDD-HHMMSS/` folder) then bring, in order:

1. new versions (the old file again as MODIFIE, a new id VIGUEUR), in-place corrections
   (same id, the text gains CORRECTION_MARK), new articles;
2. repeals (ABROGE), deletions by `liste_suppression_legi.dat`, a non-code text (TNC);
3. a code repealed: its files move to code_non_vigueur and `liste_suppression_legi_dossier.dat`
   deletes its code_en_vigueur folder; and more new versions.

The deletion lists come FIRST in a delta's tar (DILA does not promise an order; a reader must
apply them after the files anyway). `truth(k)` is the in-force code articles after archive k
(0 = the global): {article id: code id}, before any quality filter. Archives are written as
they are generated (tarfile "w|" over gzip), so ~100,000 article files never sit in memory.

Ids: the corpus's; what the deltas add comes from LEGIARTI000099990000 up (the top of the
emulator's published-version range, which the API emulator fills from the bottom).
"""

from __future__ import annotations

import gzip
import html
import io
import random
import re
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import BinaryIO, NamedTuple
from xml.sax.saxutils import escape, quoteattr

from collector.demo.corpus import (
    CODES,
    DEMO_MASSIVE_CODES,
    NO_END_DAY,
    SLOTS_PER_CHAPTER,
    CodeSpec,
    Corpus,
    Slot,
    date_of,
    day_of,
)
from collector.dumps.names import ArchiveName, parse_archive_name
from collector.dumps.reader import PARTITION_FOLDERS

GLOBAL_STAMP = "20250713-140000"
DELTA_STAMPS = ("20250715-213000", "20250716-213000", "20250717-213000")
NO_END = "2999-01-01"
CORRECTION_MARK = "(Rectificatif de démonstration.)"
EXTRA_CODE = CodeSpec("LEGITEXT000099900007", "Code de démonstration des octrois (DÉMO)", date(1921, 4, 1), 0.0)
TNC_CID = "JORFTEXT000099900001"
TNC_VERSION_ID = "LEGITEXT000099900008"
TNC_TITLE = "Loi n° 2099-1 du 16 juillet 2025 relative aux kiosques de démonstration (DÉMO)"
_EXTRA_ARTICLES = 6
_TNC_ARTICLES = 3
_DUMP_ID_BASE = 99_990_000
_EXTRA_SECTION = "LEGISCTA000099996000"
_NAMED_ENTITY = re.compile(r"&(#?[0-9A-Za-z]+);")
_XML_ENTITIES = frozenset({"lt", "gt", "amp"})
_CODE_INDEX = {spec.id: i for i, spec in enumerate(CODES)}



# ---- paths ---------------------------------------------------------------------------------------
def _pairs(ident: str) -> str:
    digits = ident[8:]
    return "/".join(digits[k : k + 2] for k in range(0, 10, 2))


def text_folder(partition: str, cid: str) -> str:
    """legi/global/<group>/<partition>/<LEGI|JORF>/TEXT/xx/xx/xx/xx/xx/<cid>."""
    return f"legi/global/{PARTITION_FOLDERS[partition]}/{partition}/{cid[:4]}/TEXT/{_pairs(cid)}/{cid}"


def article_path(folder: str, article_id: str) -> str:
    return f"{folder}/article/LEGI/ARTI/{_pairs(article_id)}/{article_id}.xml"


def section_path(folder: str, section_id: str) -> str:
    return f"{folder}/section_ta/LEGI/SCTA/{_pairs(section_id)}/{section_id}.xml"


# ---- XML in DILA's raw style ---------------------------------------------------------------------
def dila_html(api_html: str) -> str:
    """The emulator's HTML as DILA's XML holds it: named entities as characters (XML knows
    only lt/gt/amp), and the `<p></p>` the API shows written `<br/>` as in the files."""

    def char(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in _XML_ENTITIES:
            return match.group(0)
        return escape(html.unescape(match.group(0)))

    return _NAMED_ENTITY.sub(char, api_html).replace("<p></p>", "<br/>")


def _day(day: int) -> str:
    return NO_END if day >= NO_END_DAY else date_of(day).isoformat()


class _V(NamedTuple):
    """One article version as the dump shows it."""

    id: str
    number: int
    start: int
    end: int
    etat: str
    corrected: bool


@dataclass(frozen=True, slots=True)
class _Text:
    """What the CONTEXTE of a file says about its text."""

    cid: str
    title: str
    start: date
    end: str
    nature: str


def _contexte(text: _Text, sections: tuple[tuple[str, str], ...], section_dates: tuple[str, str]) -> str:
    debut, fin = section_dates
    out = [
        f'<CONTEXTE>\n<TEXTE autorite="" cid="{text.cid}" date_publi="2999-01-01" date_signature="2999-01-01" '
        f'ministere="" nature="{text.nature}" nor="" num="">\n'
        f"<TITRE_TXT c_titre_court={quoteattr(text.title)} debut=\"{text.start.isoformat()}\" fin=\"{text.end}\" "
        f'id_txt="{text.cid}">{escape(text.title)}</TITRE_TXT>\n'
    ]
    for sid, title in sections:
        out.append(f'<TM>\n<TITRE_TM debut="{debut}" fin="{fin}" id="{sid}">{escape(title)}</TITRE_TM>\n')
    out.append("</TM>\n" * len(sections))
    out.append("</TEXTE>\n</CONTEXTE>\n")
    return "".join(out)


def article_xml(v: _V, versions: list[_V], num: str, text: _Text, sections: tuple[tuple[str, str], ...],
                body: str, nota: str, section_dates: tuple[str, str]) -> bytes:
    """An ARTICLE file (raw style: no indentation, blank lines where DILA dropped elements)."""
    lien = "".join(
        f'<VERSION etat="{x.etat}">\n<LIEN_ART debut="{_day(x.start)}" etat="{x.etat}" fin="{_day(x.end)}" '
        f'id="{x.id}" num={quoteattr(num)} origine="LEGI"/>\n</VERSION>\n'
        for x in versions
    )
    nota_xml = f"<CONTENU>\n{nota}\n</CONTENU>" if nota else "<CONTENU/>"
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<ARTICLE>\n<META>\n<META_COMMUN>\n'
        f"<ID>{v.id}</ID>\n<ANCIEN_ID/>\n<ORIGINE>LEGI</ORIGINE>\n"
        f"<URL>article/LEGI/ARTI/{_pairs(v.id)}/{v.id}.xml</URL>\n<NATURE>Article</NATURE>\n</META_COMMUN>\n"
        f"<META_SPEC>\n<META_ARTICLE>\n<NUM>{escape(num)}</NUM>\n\n<ETAT>{v.etat}</ETAT>\n\n"
        f"<DATE_DEBUT>{_day(v.start)}</DATE_DEBUT>\n<DATE_FIN>{_day(v.end)}</DATE_FIN>\n\n\n"
        "<TYPE>AUTONOME</TYPE>\n</META_ARTICLE>\n</META_SPEC>\n</META>\n"
        + _contexte(text, sections, section_dates)
        + f"\n<VERSIONS>\n{lien}</VERSIONS>\n<NOTA>\n{nota_xml}\n</NOTA>\n"
        f"<BLOC_TEXTUEL>\n<CONTENU>\n{body}\n</CONTENU>\n</BLOC_TEXTUEL>\n<LIENS>\n</LIENS>\n</ARTICLE>\n"
    ).encode()


def _chronicle(text: _Text, modified: date) -> str:
    return (
        f"<META>\n<META_COMMUN>\n<ID>{{id}}</ID>\n<ANCIEN_ID/>\n<ORIGINE>{text.cid[:4]}</ORIGINE>\n"
        f"<URL>{{url}}</URL>\n<NATURE>{text.nature}</NATURE>\n</META_COMMUN>\n<META_SPEC>\n"
        f"<META_TEXTE_CHRONICLE>\n<CID>{text.cid}</CID>\n<NUM/>\n<NUM_SEQUENCE>0</NUM_SEQUENCE>\n<NOR/>\n"
        "<DATE_PUBLI>2999-01-01</DATE_PUBLI>\n<DATE_TEXTE>2999-01-01</DATE_TEXTE>\n"
        f"<DERNIERE_MODIFICATION>{modified.isoformat()}</DERNIERE_MODIFICATION>\n<VERSIONS_A_VENIR/>\n"
        "<ORIGINE_PUBLI/>\n<PAGE_DEB_PUBLI>0</PAGE_DEB_PUBLI>\n<PAGE_FIN_PUBLI>0</PAGE_FIN_PUBLI>\n"
        "</META_TEXTE_CHRONICLE>\n"
    )


def _lien_section(sid: str, title: str, niv: int, etat: str, debut: str, fin: str) -> str:
    return (f'<LIEN_SECTION_TA cid="{sid}" debut="{debut}" etat="{etat}" fin="{fin}" id="{sid}" niv="{niv}" '
            f'url="/LEGI/SCTA/{_pairs(sid)}/{sid}.xml">{escape(title)}</LIEN_SECTION_TA>\n')


def struct_xml(text: _Text, version_id: str, modified: date, top: list[tuple[str, str]], etat: str) -> bytes:
    """A TEXTELR (texte/struct) file: its top-level sections in order."""
    head = _chronicle(text, modified).format(id=version_id, url=f"texte/struct/LEGI/TEXT/{_pairs(version_id)}/{version_id}.xml")
    links = "".join(_lien_section(sid, title, 1, etat, text.start.isoformat(), text.end) for sid, title in top)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<TEXTELR>\n' + head + "</META_SPEC>\n</META>\n"
        f'<VERSIONS>\n<VERSION etat="{etat}">\n<LIEN_TXT debut="{text.start.isoformat()}" fin="{text.end}" '
        f'id="{version_id}" num=""/>\n</VERSION>\n</VERSIONS>\n<STRUCT>\n{links}</STRUCT>\n</TEXTELR>\n'
    ).encode()


def version_xml(text: _Text, version_id: str, modified: date, etat: str) -> bytes:
    """A TEXTE_VERSION (texte/version) file: the text's TITRE (a code's title is here)."""
    head = _chronicle(text, modified).format(id=version_id, url=f"texte/version/LEGI/TEXT/{_pairs(version_id)}/{version_id}.xml")
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<TEXTE_VERSION>\n' + head
        + f"<META_TEXTE_VERSION>\n\n\n<TITRE>{escape(text.title)}</TITRE>\n<TITREFULL>{escape(text.title)}</TITREFULL>\n\n"
        f"<ETAT>{etat}</ETAT>\n<DATE_DEBUT>{text.start.isoformat()}</DATE_DEBUT>\n<DATE_FIN>{text.end}</DATE_FIN>\n"
        "<AUTORITE/>\n<MINISTERE/>\n\n</META_TEXTE_VERSION>\n</META_SPEC>\n</META>\n"
        "<VISAS>\n<CONTENU/>\n</VISAS>\n<SIGNATAIRES>\n<CONTENU/>\n</SIGNATAIRES>\n<TP>\n<CONTENU/>\n</TP>\n"
        "<NOTA>\n<CONTENU/>\n</NOTA>\n<ABRO>\n<CONTENU/>\n</ABRO>\n<RECT>\n<CONTENU/>\n</RECT>\n\n\n</TEXTE_VERSION>\n"
    ).encode()


def section_xml(text: _Text, sid: str, title: str, children: list[str], ancestors: tuple[tuple[str, str], ...],
                section_dates: tuple[str, str]) -> bytes:
    """A SECTION_TA file: its ordered LIEN_SECTION_TA / LIEN_ART children and its CONTEXTE."""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<SECTION_TA>\n<ID>{sid}</ID>\n<TITRE_TA>{escape(title)}</TITRE_TA>\n'
        f"<STRUCTURE_TA>\n{''.join(children)}</STRUCTURE_TA>\n\n"
        + _contexte(text, ancestors, section_dates) + "\n</SECTION_TA>\n"
    ).encode()


# ---- the scenario --------------------------------------------------------------------------------
@dataclass
class _Change:
    """What the deltas do to one corpus slot, in archive order: (archive, kind, id, day)."""

    events: list[tuple[int, str, str, int]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Added:
    """An article the deltas create (new cid), in a demo code's chapter."""

    archive: int
    id: str
    code: int
    like: tuple[int, int]  # the slot whose chapter it joins
    num: str


class DemoDumps:
    """The demo's global and deltas (see the module docstring). Deterministic for (articles, seed)."""

    def __init__(self, articles: int = 600, seed: int = 0) -> None:
        self.corpus = Corpus(articles, seed)
        self.seed = seed
        self.changes_per_kind = max(3, articles // 200)
        self._next_id = _DUMP_ID_BASE
        self._changes: dict[tuple[int, int], _Change] = {}
        self._added: list[_Added] = []
        self._deleted: dict[int, list[tuple[int, int]]] = {}  # archive -> slots whose current file goes
        self.extra_ids = [self._new_id() for _ in range(_EXTRA_ARTICLES)]
        self.tnc_ids = [self._new_id() for _ in range(_TNC_ARTICLES)]
        self._plan()

    # ---- names -----------------------------------------------------------------------------
    @property
    def names(self) -> list[ArchiveName]:
        """The global then the deltas, in order."""
        out = [parse_archive_name(f"Freemium_legi_global_{GLOBAL_STAMP}.tar.gz")]
        out += [parse_archive_name(f"LEGI_{stamp}.tar.gz") for stamp in DELTA_STAMPS]
        return [n for n in out if n is not None]

    @staticmethod
    def day_of_archive(k: int) -> int:
        stamp = (GLOBAL_STAMP, *DELTA_STAMPS)[k]
        return day_of(date(int(stamp[:4]), int(stamp[4:6]), int(stamp[6:8])))

    # ---- planning ----------------------------------------------------------------------------
    def _new_id(self) -> str:
        number = self._next_id
        self._next_id += 1
        return f"LEGIARTI{number:012d}"

    def _live_slot(self, rng: random.Random, taken: set[tuple[int, int]]) -> tuple[int, int]:
        codes = [_CODE_INDEX[c] for c in DEMO_MASSIVE_CODES]
        while True:
            code = rng.choice(codes)
            index = rng.randrange(self.corpus.slot_count(CODES[code].id))
            if (code, index) not in taken and not self.corpus.slot(code, index).abrogated:
                taken.add((code, index))
                return code, index

    def _plan(self) -> None:
        rng = random.Random(f"demo-dumps-{self.seed}")
        n = self.changes_per_kind
        gone: set[tuple[int, int]] = set()  # repealed or deleted: nothing more happens to them
        changed: set[tuple[int, int]] = set()

        def change(key: tuple[int, int]) -> _Change:
            return self._changes.setdefault(key, _Change())

        for _ in range(n):  # archive 1: new versions, corrections, new articles
            key = self._live_slot(rng, changed)
            change(key).events.append((1, "new", self._new_id(), self.day_of_archive(1)))
        for _ in range(n):
            key = self._live_slot(rng, changed)
            change(key).events.append((1, "correct", "", 0))
        for j in range(n):
            code = _CODE_INDEX[DEMO_MASSIVE_CODES[j % len(DEMO_MASSIVE_CODES)]]
            index = rng.randrange(self.corpus.slot_count(CODES[code].id))
            num = f"{self.corpus.place(self.corpus.slot(code, index)).num}-{j + 1}"
            self._added.append(_Added(1, self._new_id(), code, (code, index), num))
        for kind in ("repeal", "delete"):  # archive 2
            for _ in range(n):
                key = self._live_slot(rng, changed | gone)
                gone.add(key)
                if kind == "repeal":
                    change(key).events.append((2, "repeal", "", self.day_of_archive(2)))
                else:
                    self._deleted.setdefault(2, []).append(key)
        # archive 3: a second new version for slots changed in archive 1, when not gone
        for key in [k for k, c in self._changes.items() if k not in gone and c.events[0][1] == "new"][:n]:
            change(key).events.append((3, "new", self._new_id(), self.day_of_archive(3)))

    # ---- versions as of an archive ------------------------------------------------------------
    def versions(self, slot: Slot, upto: int) -> list[_V]:
        """The slot's versions after archive `upto`, oldest first."""
        out = [_V(v.id, v.number, v.start, v.end, v.etat, False) for v in self.corpus.versions(slot)]
        for archive, kind, new_id, day in self._changes.get((slot.code, slot.index), _Change()).events:
            if archive > upto:
                break
            last = out[-1]
            if kind == "new":
                out[-1] = last._replace(end=day, etat="MODIFIE")
                out.append(_V(new_id, last.number + 1, day, NO_END_DAY, "VIGUEUR", False))
            elif kind == "repeal":
                out[-1] = last._replace(end=day, etat="ABROGE")
            else:
                out[-1] = last._replace(corrected=True)
        return out

    def _deleted_upto(self, upto: int) -> set[tuple[int, int]]:
        return {key for k, keys in self._deleted.items() if k <= upto for key in keys}

    def truth(self, k: int) -> dict[str, str]:
        """In-force code articles after archive k (0 = the global): {article id: code id}."""
        out: dict[str, str] = {}
        deleted = self._deleted_upto(k)
        for code in (_CODE_INDEX[c] for c in DEMO_MASSIVE_CODES):
            code_id = CODES[code].id
            for index in range(self.corpus.slot_count(code_id)):
                slot = self.corpus.slot(code, index)
                if slot.abrogated or (code, index) in deleted:
                    continue
                last = self.versions(slot, k)[-1] if (code, index) in self._changes else None
                if last is None:
                    out[self.corpus.versions(slot)[-1].id] = code_id
                elif last.etat == "VIGUEUR":
                    out[last.id] = code_id
        for added in self._added:
            if added.archive <= k:
                out[added.id] = CODES[added.code].id
        if k < 3:
            out.update(dict.fromkeys(self.extra_ids, EXTRA_CODE.id))
        return out

    def corrected_ids(self, k: int) -> set[str]:
        """Ids whose text gained CORRECTION_MARK in archives up to k."""
        out = set()
        for (code, index), change in self._changes.items():
            if any(a <= k and kind == "correct" for a, kind, _, _ in change.events):
                out.update(v.id for v in self.versions(self.corpus.slot(code, index), k) if v.corrected)
        return out

    # ---- texts ----------------------------------------------------------------------------------
    def _text(self, code: int) -> _Text:
        spec = CODES[code]
        return _Text(spec.id, spec.title, spec.start, (spec.repealed_on or date(2999, 1, 1)).isoformat(), "CODE")

    def _article(self, slot: Slot, v: _V, versions: list[_V], code_text: _Text) -> bytes:
        place = self.corpus.place(slot)
        _, body = self.corpus.text(slot, v.number)
        if v.corrected:
            body = f"{body}<p>{CORRECTION_MARK}</p>"
        _, nota = self.corpus.nota(slot, v)  # type: ignore[arg-type]  # reads .start only
        spec = CODES[slot.code]
        dates = (spec.start.isoformat(), code_text.end)
        return article_xml(v, versions, place.num, code_text, place.sections, dila_html(body), dila_html(nota), dates)

    def _added_xml(self, added: _Added, text: _Text) -> bytes:
        slot = self.corpus.slot(*added.like)
        place = self.corpus.place(slot)
        day = self.day_of_archive(added.archive)
        v = _V(added.id, 1, day, NO_END_DAY, "VIGUEUR", False)
        body = (f"<p>Article {escape(added.num)} (nouveau) : les exploitants de d&#233;monstration d&#233;clarent "
                "chaque ann&#233;e leur activit&#233; au maire de la commune fictive, selon un mod&#232;le fix&#233; "
                "par arr&#234;t&#233; du ministre charg&#233; des d&#233;monstrations.</p>")
        return article_xml(v, [v], added.num, text, place.sections, dila_html(body), "",
                           (CODES[added.code].start.isoformat(), NO_END))

    def _extra_text(self, repealed: bool) -> _Text:
        end = date_of(self.day_of_archive(3)).isoformat() if repealed else NO_END
        return _Text(EXTRA_CODE.id, EXTRA_CODE.title, EXTRA_CODE.start, end, "CODE")

    def _extra_files(self, repealed: bool) -> Iterator[tuple[str, bytes]]:
        """The dump-only code: in force in the global, repealed (moved to code_non_vigueur) by delta 3."""
        text = self._extra_text(repealed)
        partition = "code_non_vigueur" if repealed else "code_en_vigueur"
        folder = text_folder(partition, EXTRA_CODE.id)
        start = day_of(EXTRA_CODE.start)
        end = self.day_of_archive(3) if repealed else NO_END_DAY
        etat = "ABROGE" if repealed else "VIGUEUR"
        sections = ((_EXTRA_SECTION, "Chapitre unique : Des octrois de démonstration"),)
        links = []
        for j, article_id in enumerate(self.extra_ids):
            v = _V(article_id, 1, start, end, etat, False)
            num = str(j + 1)
            links.append(f'<LIEN_ART debut="{_day(start)}" etat="{etat}" fin="{_day(end)}" id="{article_id}" num="{num}" origine="LEGI"/>\n')
            body = (f"<p>Le droit d'octroi de d&#233;monstration n&#176;&#160;{j + 1} est per&#231;u &#224; l'entr&#233;e "
                    "de la commune fictive sur les denr&#233;es d&#233;sign&#233;es par le tarif annex&#233; au pr&#233;sent code.</p>")
            yield article_path(folder, article_id), article_xml(v, [v], num, text, sections, dila_html(body), "",
                                                               (EXTRA_CODE.start.isoformat(), text.end))
        yield section_path(folder, _EXTRA_SECTION), section_xml(text, _EXTRA_SECTION, sections[0][1], links, (),
                                                                (EXTRA_CODE.start.isoformat(), text.end))
        modified = date_of(self.day_of_archive(3 if repealed else 0))
        yield f"{folder}/texte/struct/{EXTRA_CODE.id}.xml", struct_xml(text, EXTRA_CODE.id, modified, list(sections), etat)
        yield f"{folder}/texte/version/{EXTRA_CODE.id}.xml", version_xml(text, EXTRA_CODE.id, modified, etat)

    def _tnc_files(self) -> Iterator[tuple[str, bytes]]:
        start = date_of(self.day_of_archive(2))
        text = _Text(TNC_CID, TNC_TITLE, start, NO_END, "LOI")
        folder = text_folder("TNC_en_vigueur", TNC_CID)
        for j, article_id in enumerate(self.tnc_ids):
            v = _V(article_id, 1, day_of(start), NO_END_DAY, "VIGUEUR", False)
            body = (f"<p>Article {j + 1} de la loi de d&#233;monstration : les kiosques fictifs sont autoris&#233;s "
                    "sur la voie publique dans les conditions fix&#233;es par le maire de la commune fictive.</p>")
            yield article_path(folder, article_id), article_xml(v, [v], str(j + 1), text, (), dila_html(body), "",
                                                               (start.isoformat(), NO_END))
        yield f"{folder}/texte/struct/{TNC_VERSION_ID}.xml", struct_xml(text, TNC_VERSION_ID, start, [], "VIGUEUR")
        yield f"{folder}/texte/version/{TNC_VERSION_ID}.xml", version_xml(text, TNC_VERSION_ID, start, "VIGUEUR")

    # ---- archives --------------------------------------------------------------------------------
    def _global_files(self) -> Iterator[tuple[str, bytes]]:
        for code, spec in enumerate(CODES):
            partition = "code_non_vigueur" if spec.repealed_on else "code_en_vigueur"
            yield from self._code_files(code, partition)
        yield from self._extra_files(repealed=False)

    def _code_files(self, code: int, partition: str) -> Iterator[tuple[str, bytes]]:
        """Every file of one corpus code in the global: articles chapter by chapter, then the
        sections (children in reading order), the struct and version files."""
        spec = CODES[code]
        text = self._text(code)
        folder = text_folder(partition, spec.id)
        etat = "ABROGE" if spec.repealed_on else "VIGUEUR"
        dates = (spec.start.isoformat(), text.end)
        children: dict[str, list[str]] = {}
        titles: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {}
        top: list[tuple[str, str]] = []
        slots = self.corpus.slot_count(spec.id)
        for first in range(0, slots, SLOTS_PER_CHAPTER):
            place = self.corpus.place(self.corpus.slot(code, first))
            *ancestors, chapter = place.sections
            links: list[str] = []
            for index in range(first, min(first + SLOTS_PER_CHAPTER, slots)):
                slot = self.corpus.slot(code, index)
                versions = self.versions(slot, 0)
                num = self.corpus.place(slot).num
                for v in versions:
                    yield article_path(folder, v.id), self._article(slot, v, versions, text)
                    links.append(f'<LIEN_ART debut="{_day(v.start)}" etat="{v.etat}" fin="{_day(v.end)}" '
                                 f'id="{v.id}" num={quoteattr(num)} origine="LEGI"/>\n')
            yield section_path(folder, chapter[0]), section_xml(text, chapter[0], chapter[1], links, tuple(ancestors), dates)
            path = place.sections
            for depth, (sid, title) in enumerate(path):
                if sid in titles:
                    continue
                titles[sid] = (title, path[:depth])
                if depth == 0:
                    top.append((sid, title))
                else:
                    children.setdefault(path[depth - 1][0], []).append(_lien_section(sid, title, depth + 1, etat, *dates))
        for sid, links_of in children.items():
            title, ancestors_of = titles[sid]
            yield section_path(folder, sid), section_xml(text, sid, title, links_of, ancestors_of, dates)
        modified = self.corpus.last_update(spec.id)
        yield f"{folder}/texte/struct/{spec.id}.xml", struct_xml(text, spec.id, modified, top, etat)
        yield f"{folder}/texte/version/{spec.id}.xml", version_xml(text, spec.id, modified, etat)

    def _delta_files(self, k: int) -> Iterator[tuple[str, bytes]]:
        """Delta k's files (its deletion lists first), without the stamp root."""
        deleted = self._deleted.get(k, [])
        if deleted:
            lines = []
            for code, index in deleted:
                slot = self.corpus.slot(code, index)
                current = self.versions(slot, k)[-1]
                lines.append(article_path(text_folder("code_en_vigueur", CODES[code].id), current.id)[:-4])
            yield "liste_suppression_legi.dat", ("\n".join(lines) + "\n").encode()
        if k == 3:
            # each line of the dossier list ends with " D" (as legi.py 0.6 reads it)
            yield "liste_suppression_legi_dossier.dat", (text_folder("code_en_vigueur", EXTRA_CODE.id) + " D\n").encode()
        touched: set[int] = set()
        for (code, index), change in sorted(self._changes.items()):
            if not any(a == k for a, *_ in change.events):
                continue
            slot = self.corpus.slot(code, index)
            versions = self.versions(slot, k)
            folder = text_folder("code_en_vigueur", CODES[code].id)
            ids = {new_id for a, kind, new_id, _ in change.events if a == k and kind == "new"}
            current = versions[-1]
            emit = [v for v in versions if v.id in ids or v is current or (ids and v.number == current.number - 1)]
            for v in emit:
                yield article_path(folder, v.id), self._article(slot, v, versions, self._text(code))
            touched.add(code)
        for added in self._added:
            if added.archive == k:
                folder = text_folder("code_en_vigueur", CODES[added.code].id)
                yield article_path(folder, added.id), self._added_xml(added, self._text(added.code))
                touched.add(added.code)
        touched.update(code for code, _ in deleted)
        for code in sorted(touched):
            text = self._text(code)
            folder = text_folder("code_en_vigueur", CODES[code].id)
            yield f"{folder}/texte/version/{CODES[code].id}.xml", version_xml(text, CODES[code].id, date_of(self.day_of_archive(k)), "VIGUEUR")
        if k == 2:
            yield from self._tnc_files()
        if k == 3:
            yield from self._extra_files(repealed=True)

    def files(self, k: int) -> Iterator[tuple[str, bytes]]:
        """(member name, bytes) of archive k in tar order (a delta's names under its root)."""
        if k == 0:
            yield from self._global_files()
            return
        root = DELTA_STAMPS[k - 1]
        for name, data in self._delta_files(k):
            yield f"{root}/{name}", data

    def write(self, k: int, out: BinaryIO, compresslevel: int = 6) -> None:
        """Archive k as a .tar.gz into `out`, streamed (tarfile "w|" over gzip)."""
        stamp = self.names[k].stamp
        mtime = datetime.strptime(stamp, "%Y%m%d-%H%M%S").replace(tzinfo=timezone.utc).timestamp()
        with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=compresslevel, mtime=int(mtime)) as zipped:
            with tarfile.open(fileobj=zipped, mode="w|", format=tarfile.GNU_FORMAT) as tar:
                for name, data in self.files(k):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    info.mtime = int(mtime)
                    info.mode = 0o644
                    tar.addfile(info, io.BytesIO(data))
                    tar.members.clear()  # tarfile keeps every TarInfo it wrote otherwise

    def write_all(self, folder: Path, compresslevel: int = 6) -> list[Path]:
        """Every archive into `folder` (each through a .part, renamed when whole)."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for k, name in enumerate(self.names):
            path = folder / name.name
            if not path.is_file():
                part = path.with_name(path.name + ".part")
                with part.open("wb") as out:
                    self.write(k, out, compresslevel)
                part.replace(path)
            paths.append(path)
        return paths


class DemoDumpFolder:
    """The demo's archives in a folder, written once on first use (thread-safe): what
    `demo-server` serves under /OPENDATA/LEGI/."""

    def __init__(self, folder: Path, articles: int = 600, seed: int = 0) -> None:
        self.folder = folder
        self.articles = articles
        self.seed = seed
        self._lock = threading.Lock()
        self._paths: list[Path] | None = None

    def paths(self) -> list[Path]:
        with self._lock:
            if self._paths is None:
                self._paths = DemoDumps(self.articles, self.seed).write_all(self.folder)
            return self._paths

    def index_html(self, title: str = "/OPENDATA/LEGI/") -> str:
        """An Apache-style folder index: the archives, plus a PDF as DILA's folder has one."""
        rows = ['<a href="../">../</a>']
        for path in self.paths():
            stat = path.stat()
            when = time.strftime("%d-%b-%Y %H:%M", time.gmtime(stat.st_mtime))
            rows.append(f'<a href="{path.name}">{path.name}</a>{" " * max(1, 52 - len(path.name))}{when}  {stat.st_size}')
        rows.append('<a href="Descriptif_LEGI_DEMO.pdf">Descriptif_LEGI_DEMO.pdf</a>')
        body = "\n".join(rows)
        return (f"<html>\n<head><title>Index of {title}</title></head>\n<body>\n<h1>Index of {title}</h1><hr><pre>"
                f"{body}\n</pre><hr></body>\n</html>\n")
