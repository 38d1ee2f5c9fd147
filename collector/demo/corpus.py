"""Synthetic, deterministic corpus of visibly fake codes for the emulator.

Nothing is stored per article: every property (versions, dates, text, place in the TOC) is
derived from the article's slot number and the seed, so N=100,000 costs almost no memory.
Only published versions (``publish``) are kept, in a small overlay.

Id ranges (no real Légifrance id uses them):
  codes     LEGITEXT0000999000NN
  sections  LEGISCTA0000999xxxxx
  articles  LEGIARTI000099xxxxxx  (one slot = one cid = 3 ids; published versions from 000099900000)

Article texts are either short (<= 80 characters of plain text) or long (>= 150), so the
expected set is the same for any quality threshold in 81..150 whatever the HTML cleaner does.
"""

from __future__ import annotations

import functools
import json
import random
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, NamedTuple

DAY_MS = 86_400_000
NO_END_MS = 32_472_144_000_000  # 2999-01-01, the API's "no end" sentinel
EPOCH = date(1970, 1, 1)
NO_END_DAY = NO_END_MS // DAY_MS
_HISTORY_LIMIT_DAY = (date(2024, 1, 1) - EPOCH).days  # base versions all start/end before this

SLOTS_PER_CHAPTER = 8
_ABROGATED_EVERY = 10  # one repealed article per block of 10 slots
_ID_STRIDE = 3  # ids reserved per slot (at most 3 base versions)
_ARTICLE_ID_BASE = 99_000_000
_ARTICLES_PER_CODE_RANGE = 150_000
_PUBLISHED_BASE = 900_000
_PUBLISHED_MAX = 100_000
_SECTION_ID_BASE = 99_900_000
_SECTIONS_PER_CODE = 16_000
MAX_SLOTS_PER_CODE = _ARTICLES_PER_CODE_RANGE // _ID_STRIDE
_LONG_MIN = 150  # plain text of a non-short article is at least this long
_SHORT_MAX = 80


class CodeSpec(NamedTuple):
    id: str
    title: str
    start: date
    weight: float  # share of the in-force articles
    repealed_on: date | None = None


def _code_id(n: int) -> str:
    return f"LEGITEXT{_SECTION_ID_BASE + n:012d}"


CODES: tuple[CodeSpec, ...] = (
    CodeSpec(_code_id(1), "Code de démonstration des jardins partagés (DÉMO)", date(1958, 10, 4), 0.10),
    CodeSpec(_code_id(2), "Code de démonstration des phares et balises (DÉMO)", date(1912, 6, 1), 0.15),
    CodeSpec(_code_id(3), "Code de démonstration de la boulangerie artisanale (DÉMO)", date(1977, 3, 15), 0.20),
    CodeSpec(_code_id(4), "Code de démonstration des téléphériques (DÉMO)", date(1965, 1, 1), 0.25),
    CodeSpec(_code_id(5), "Code de démonstration des bibliothèques municipales (DÉMO)", date(2000, 9, 21), 0.30),
    # Listed by /list/code with etat ABROGE; its TOC holds only repealed articles.
    CodeSpec(_code_id(6), "Code de démonstration des diligences (DÉMO, abrogé)", date(1850, 1, 1), 0.0, date(1990, 1, 1)),
)
DEMO_MAINTENANCE_CODES: tuple[str, ...] = tuple(c.id for c in CODES[:2])
DEMO_MASSIVE_CODES: tuple[str, ...] = tuple(c.id for c in CODES if c.repealed_on is None)
DEMO_REPEALED_CODES: tuple[str, ...] = tuple(c.id for c in CODES if c.repealed_on is not None)
_REPEALED_SLOTS = 12
_DEMO_ID_PREFIXES = ("LEGITEXT0000999", "LEGISCTA0000999", "LEGIARTI000099")


def is_demo_id(value: str) -> bool:
    """True for ids of the demo ranges (never used by real Légifrance objects)."""
    return len(value) == 20 and value[8:].isdigit() and value.startswith(_DEMO_ID_PREFIXES)


def _mix(x: int) -> int:
    """splitmix64 finaliser: a fast, well-spread 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def day_of(d: date) -> int:
    return (d - EPOCH).days


def date_of(day: int) -> date:
    return EPOCH + timedelta(days=day)


def utc_today() -> date:
    return datetime.now(timezone.utc).date()


@functools.lru_cache(maxsize=4096)
def _roman(n: int) -> str:
    if n == 1:
        return "Ier"
    out = []
    for value, sym in ((1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"),
                       (50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I")):
        count, n = divmod(n, value)
        out.append(sym * count)
    return "".join(out)


# ---- text material (fictional, French-looking; entities only in the HTML form) ----------
# (plain, html) pairs; each plain sentence is 75..140 characters.
_SENTENCES: tuple[tuple[str, str], ...] = tuple(
    (p, h)
    for p, h in (
        ("Les installations de démonstration sont soumises à une déclaration préalable auprès du maire de la commune fictive.",
         "Les installations de d&#233;monstration sont soumises &#224; une d&#233;claration pr&#233;alable aupr&#232;s du maire de la commune fictive."),
        ("Le gestionnaire tient un registre des opérations, consultable sans frais par toute personne intéressée.",
         "Le gestionnaire tient un registre des op&eacute;rations, consultable sans frais par toute personne int&eacute;ress&eacute;e."),
        ("La société « Démo & Fils » est réputée exploitant au sens du présent article, sauf stipulation contraire.",
         "La soci&#233;t&#233; &#171;&#160;D&#233;mo &amp; Fils&#160;&#187; est r&#233;put&#233;e exploitant au sens du pr&#233;sent article, sauf stipulation contraire."),
        ("Un arrêté du ministre chargé des démonstrations précise les conditions d'application du présent chapitre.",
         "Un arr&#234;t&#233; du ministre charg&#233; des d&#233;monstrations pr&#233;cise les conditions d&#8217;application du pr&#233;sent chapitre."),
        ("Les manquements aux obligations prévues ci-dessus sont punis d'une amende de démonstration de 150 €.",
         "Les manquements aux obligations pr&#233;vues ci-dessus sont punis d&#8217;une amende de d&#233;monstration de 150&#160;&#8364;."),
        ("Le délai mentionné au premier alinéa court à compter de la réception de la demande complète.",
         "Le d&#233;lai mentionn&#233; au premier alin&#233;a court &#224; compter de la r&#233;ception de la demande compl&#232;te."),
        ("Lorsque la surface excède 10 < 20 mètres carrés, l'avis conforme de la commission fictive est requis.",
         "Lorsque la surface exc&#232;de 10 &lt; 20 m&#232;tres carr&#233;s, l&#8217;avis conforme de la commission fictive est requis."),
        ("Les dispositions du présent titre ne sont applicables qu'à titre d'exemple et n'ont aucune valeur juridique.",
         "Les dispositions du pr&#233;sent titre ne sont applicables qu&#8217;&#224; titre d&#8217;exemple et n&#8217;ont aucune valeur juridique."),
        ("Toute personne peut saisir le médiateur de démonstration, qui rend son avis dans un délai de deux mois.",
         "Toute personne peut saisir le m&#233;diateur de d&#233;monstration, qui rend son avis dans un d&#233;lai de deux mois."),
        ("Les agents habilités peuvent accéder aux locaux entre 8 heures et 20 heures, sur présentation de leur carte.",
         "Les agents habilit&#233;s peuvent acc&#233;der aux locaux entre 8&#160;heures et 20&#160;heures, sur pr&#233;sentation de leur carte."),
        ("Le conseil d'administration fictif délibère valablement lorsque la moitié au moins de ses membres est présente.",
         "Le conseil d&#8217;administration fictif d&#233;lib&#232;re valablement lorsque la moiti&#233; au moins de ses membres est pr&#233;sente."),
        ("Les recettes et les dépenses sont retracées dans un compte spécial intitulé « Fonds de démonstration ».",
         "Les recettes et les d&#233;penses sont retrac&#233;es dans un compte sp&#233;cial intitul&#233; &quot;Fonds de d&#233;monstration&quot;."),
    )
)
_SHORT: tuple[tuple[str, str], ...] = (
    ("Les dispositions du présent article sont abrogées.", "Les dispositions du pr&#233;sent article sont abrog&#233;es."),
    ("Néant (article de démonstration).", "N&#233;ant (article de d&#233;monstration)."),
    ("Un décret fictif fixe les modalités d'application.", "Un d&#233;cret fictif fixe les modalit&#233;s d&#8217;application."),
    ("Voir l'article précédent.", "Voir l&#8217;article pr&#233;c&#233;dent."),
)
_THEMES = (
    "Dispositions générales", "Organisation", "Autorisations", "Contrôles et sanctions", "Financement",
    "Dispositions diverses", "Exploitation", "Sécurité", "Usagers", "Agents",
)
_TABLE_ROWS = (("Catégorie A", "12"), ("Catégorie B", "27,50"), ("Catégorie C & D", "40"))


def _table(h: int) -> tuple[str, str]:
    rows = _TABLE_ROWS[: 2 + h % 2]
    plain = "\n".join(["Catégorie Montant (€)"] + [f"{a} {b}" for a, b in rows])
    html = "<table><tr><td>Cat&#233;gorie</td><td>Montant (&#8364;)</td></tr>" + "".join(
        f"<tr><td>{a.replace('&', '&amp;')}</td><td>{b}</td></tr>" for a, b in rows
    ) + "</table>"
    return plain, html


@dataclass(frozen=True, slots=True)
class Slot:
    """One article (one cid) of a code, with everything derived from (seed, code, index)."""

    code: int
    index: int
    abrogated: bool
    nversions: int
    short: bool
    table: bool
    nota: bool
    messy_html: bool  # real-looking "<p></p>   text<p></p>" markup
    repeat_previous: bool  # TOC also lists the previous (MODIFIE) version of this cid
    listed_twice: bool  # TOC lists the same entry twice
    first_day: int
    step: int
    hash: int


class Version(NamedTuple):
    id: str
    number: int  # 1-based
    start: int  # day
    end: int  # day (NO_END_DAY = open)
    etat: str  # as of today: VIGUEUR / MODIFIE / ABROGE


class Place(NamedTuple):
    """Where a slot sits: its ancestors (id, title) from the partie down to the chapter."""

    sections: tuple[tuple[str, str], ...]
    num: str
    int_ordre: int


@dataclass(frozen=True, slots=True)
class PublishedVersion:
    id: str
    cid: str
    code_id: str
    previous_id: str


@dataclass(frozen=True, slots=True)
class RepealedArticle:
    id: str  # the version that was in force, now ABROGE
    cid: str
    code_id: str


class _Layout(NamedTuple):
    slots: int
    in_force: int
    blocks: int  # full blocks of _ABROGATED_EVERY slots (one abrogated each)
    abrogated_pos: int
    chapters: int
    chapters_first_part: int


def _split(total: int, weights: Sequence[float]) -> list[int]:
    """Split `total` in-force articles across codes: at least one each, remainder to the last."""
    spare = total - len(weights)
    counts = [1 + int(spare * w) for w in weights]
    counts[-1] += total - sum(counts)
    return counts


class Corpus:
    """The demo corpus. Reads are lock-free; `publish` mutates a small overlay under a lock."""

    def __init__(self, articles: int = 600, seed: int = 0) -> None:
        live = [c for c in CODES if c.repealed_on is None]
        if articles < len(live):
            raise ValueError(f"the demo corpus needs at least {len(live)} articles, got {articles}")
        self.articles = articles
        self.seed = seed
        self._salt = _mix(seed * 0x100000001B3 + 17)
        counts = iter(_split(articles, [c.weight for c in live]))
        self._layouts: list[_Layout] = []
        for index, spec in enumerate(CODES):
            if spec.repealed_on is not None:
                slots, in_force, blocks = _REPEALED_SLOTS, 0, 0
            else:
                in_force = next(counts)
                blocks, rest = divmod(in_force, _ABROGATED_EVERY - 1)
                slots = blocks * _ABROGATED_EVERY + rest
            if slots > MAX_SLOTS_PER_CODE:
                raise ValueError(f"articles={articles} is too large for the demo id ranges")
            chapters = -(-slots // SLOTS_PER_CHAPTER)
            first = chapters if chapters == 1 else -(-chapters // 2)
            pos = _mix(self._salt + 31 * index) % _ABROGATED_EVERY
            self._layouts.append(_Layout(slots, in_force, blocks, pos, chapters, first))
        self._index = {spec.id: i for i, spec in enumerate(CODES)}
        self._last_update = [
            date(2024, 1, 15) + timedelta(days=_mix(self._salt + 101 * i) % 400) if spec.repealed_on is None
            else spec.repealed_on
            for i, spec in enumerate(CODES)
        ]
        self._published: dict[tuple[int, int], list[tuple[int, int]]] = {}  # slot -> [(id number, day)]
        self._published_slot: dict[int, tuple[int, int]] = {}  # id number -> slot
        self._publish_serial = 0
        self._repealed: dict[tuple[int, int], int] = {}  # slot -> day its last version ends
        self._lock = threading.Lock()
        self._text_titles = [self._build_text_titles(i) for i in range(len(CODES))]
        # TOCs and a pass's getArticle calls walk chapters in order: a few hundred cached chapters
        # serve them, and the emulator's memory stays flat with the corpus size.
        self._chapter_sections = functools.lru_cache(maxsize=512)(self._chapter_sections_uncached)

    # ---- codes ---------------------------------------------------------------------------
    @property
    def code_ids(self) -> tuple[str, ...]:
        """Every code of /list/code, the repealed one included."""
        return tuple(c.id for c in CODES)

    def knows_code(self, code_id: str) -> bool:
        return code_id in self._index

    def code_title(self, code_id: str) -> str:
        return CODES[self._code_index(code_id)].title

    def last_update(self, code_id: str) -> date:
        """/list/code lastUpdate = TOC modifDate; moves when versions are published."""
        return self._last_update[self._code_index(code_id)]

    def in_force_count(self, code_id: str) -> int:
        """In-force articles (publishing replaces versions, never adds cids; `repeal` removes some)."""
        code = self._code_index(code_id)
        return self._layouts[code].in_force - sum(1 for c, _ in self._repealed if c == code)

    def slot_count(self, code_id: str) -> int:
        return self._layouts[self._code_index(code_id)].slots

    def _code_index(self, code_id: str) -> int:
        try:
            return self._index[code_id]
        except KeyError:
            raise KeyError(f"unknown demo code {code_id!r}") from None

    def list_code_item(self, code_id: str) -> dict[str, Any]:
        """One /list/code result in the real format."""
        i = self._code_index(code_id)
        spec = CODES[i]
        end = spec.repealed_on or date(2999, 1, 1)
        digits = code_id[8:]
        folders = "/".join(digits[k : k + 2] for k in range(0, 12, 2))
        return {
            "id": code_id,
            "cid": code_id,
            "etat": "ABROGE" if spec.repealed_on else "VIGUEUR",
            "titre": spec.title,
            "dateDebut": f"{spec.start.isoformat()}T00:00:00.000+0000",
            "dateFin": f"{end.isoformat()}T00:00:00.000+0000",
            "lastUpdate": f"{self._last_update[i].isoformat()}T00:00:00.000+0000",
            "pdfFileName": f"{code_id}.pdf",
            "pdfFileSize": f"{max(1, self._layouts[i].slots // 40)},0 Ko",
            "pdfFilePath": f"/LEGI/TEXT/{folders}/{code_id}/{code_id}.pdf",
        }

    # ---- slots -----------------------------------------------------------------------------
    def slot(self, code: int, index: int) -> Slot:
        layout = self._layouts[code]
        spec = CODES[code]
        h = _mix(self._salt + (code << 32) + index)
        if spec.repealed_on is not None:
            abrogated = True
        else:
            block, pos = divmod(index, _ABROGATED_EVERY)
            abrogated = block < layout.blocks and pos == (layout.abrogated_pos + 3 * block) % _ABROGATED_EVERY
        u1, u2, u3, u4, u5 = (h % 1000, (h >> 10) % 1000, (h >> 20) % 1000, (h >> 30) % 1000, (h >> 40) % 1000)
        nversions = 1 if u1 < 700 else 2 if u1 < 900 else 3
        if abrogated:
            nversions = min(nversions, 2)
        start = day_of(spec.start)
        last = day_of(spec.repealed_on) if spec.repealed_on else _HISTORY_LIMIT_DAY
        span = max(last - start - 400, 1)
        first_day = start + (h >> 16) % span
        step = max((last - first_day) // (nversions + 1), 1)
        return Slot(
            code=code,
            index=index,
            abrogated=abrogated,
            nversions=nversions,
            short=u2 < 50,
            table=50 <= u2 < 90,
            nota=u3 < 150,
            messy_html=150 <= u3 < 250,
            repeat_previous=nversions >= 2 and u5 < 300,
            listed_twice=nversions == 1 and not abrogated and u5 < 20,
            first_day=first_day,
            step=step,
            hash=h,
        )

    def slots(self, code_id: str) -> Iterator[Slot]:
        code = self._code_index(code_id)
        for index in range(self._layouts[code].slots):
            yield self.slot(code, index)

    @staticmethod
    def _base_number(code: int, index: int) -> int:
        return code * _ARTICLES_PER_CODE_RANGE + index * _ID_STRIDE

    @staticmethod
    def _article_id(number: int) -> str:
        return f"LEGIARTI{_ARTICLE_ID_BASE + number:012d}"

    def cid_of(self, slot: Slot) -> str:
        return self._article_id(self._base_number(slot.code, slot.index))

    def versions(self, slot: Slot) -> list[Version]:
        """Every version of the slot's article, oldest first, published ones included."""
        base = self._base_number(slot.code, slot.index)
        published = self._published.get((slot.code, slot.index), ())
        repealed_on = self._repealed.get((slot.code, slot.index))
        starts = [slot.first_day + k * slot.step for k in range(slot.nversions)]
        ids = [base + k for k in range(slot.nversions)]
        for number, day in published:
            starts.append(day)
            ids.append(number)
        total = len(starts)
        out = []
        for k in range(total):
            last = k == total - 1
            if not last:
                end, etat = starts[k + 1], "MODIFIE"
            elif slot.abrogated:
                end, etat = slot.first_day + slot.nversions * slot.step, "ABROGE"
            elif repealed_on is not None:
                end, etat = max(repealed_on, starts[k]), "ABROGE"
            else:
                end, etat = NO_END_DAY, "VIGUEUR"
            out.append(Version(self._article_id(ids[k]), k + 1, starts[k], end, etat))
        return out

    @staticmethod
    def version_at(versions: Sequence[Version], day: int) -> Version | None:
        """The version a TOC dated `day` lists: the last one started on or before that day."""
        found = None
        for v in versions:
            if v.start <= day:
                found = v
        return found

    def locate(self, article_id: str) -> tuple[Slot, Version, list[Version]] | None:
        """Slot, version and all versions of an article id; None when the demo has no such id."""
        if not article_id.startswith("LEGIARTI") or len(article_id) != 20 or not article_id[8:].isdigit():
            return None
        number = int(article_id[8:]) - _ARTICLE_ID_BASE
        if number >= _PUBLISHED_BASE:
            where = self._published_slot.get(number)
            if where is None:
                return None
            slot = self.slot(*where)
        elif number >= 0:
            code, rest = divmod(number, _ARTICLES_PER_CODE_RANGE)
            index, k = divmod(rest, _ID_STRIDE)
            if code >= len(CODES) or index >= self._layouts[code].slots:
                return None
            slot = self.slot(code, index)
            if k >= slot.nversions:
                return None
        else:
            return None
        versions = self.versions(slot)
        for v in versions:
            if v.id == article_id:
                return slot, v, versions
        return None

    def place(self, slot: Slot) -> Place:
        chapter, k = divmod(slot.index, SLOTS_PER_CHAPTER)
        sections, prefix = self._chapter_sections(slot.code, chapter)
        return Place(sections, f"{prefix}{k + 1}", (k + 1) << 24)

    def _chapter_sections_uncached(self, code: int, chapter: int) -> tuple[tuple[tuple[str, str], ...], str]:
        layout = self._layouts[code]
        part = 0 if chapter < layout.chapters_first_part else 1
        local = chapter - (0 if part == 0 else layout.chapters_first_part)
        titre, ch_in_t = divmod(local, 3)
        livre, t_in_l = divmod(titre, 3)
        base = code * _SECTIONS_PER_CODE
        sections = (
            (self._section_id(base + part), ("Partie législative", "Partie réglementaire")[part]),
            (self._section_id(base + 10 + part * 490 + livre), f"Livre {_roman(livre + 1)} : {self._theme(code, 1, livre)}"),
            (self._section_id(base + 1000 + part * 1500 + titre), f"Titre {_roman(t_in_l + 1)} : {self._theme(code, 2, titre)}"),
            (self._section_id(base + 4000 + chapter), f"Chapitre {_roman(ch_in_t + 1)} : {self._theme(code, 3, chapter)}"),
        )
        return sections, f"{'LR'[part]}{livre + 1}{t_in_l + 1}{ch_in_t + 1}-"

    @staticmethod
    def _section_id(number: int) -> str:
        return f"LEGISCTA{_SECTION_ID_BASE + number:012d}"

    def _theme(self, code: int, level: int, index: int) -> str:
        return _THEMES[_mix(self._salt + code * 7919 + level * 104729 + index) % len(_THEMES)]

    # ---- text ------------------------------------------------------------------------------
    def text(self, slot: Slot, version: int) -> tuple[str, str]:
        """(plain text, HTML) of one version. Short slots give <= 80 chars, others >= 150."""
        h = _mix(slot.hash + version)
        if slot.short:
            plain, html = _SHORT[h % len(_SHORT)]
            return plain, f"<p>{html}</p>"
        count = 2 + h % 4
        picks = [_SENTENCES[(h >> (4 * j)) % len(_SENTENCES)] for j in range(count)]
        if version > 1:
            note = (f"(Rédaction n° {version} de démonstration.)", f"(R&#233;daction n&#176;&#160;{version} de d&#233;monstration.)")
            picks.append(note)
        half = max(1, len(picks) // 2)
        plain = "\n".join(p for p, _ in picks)
        first = "<br/>".join(x for _, x in picks[:half])
        second = "<br/>".join(x for _, x in picks[half:])
        if slot.messy_html:
            html = f"<p></p>   {first}<p></p><p>{second}</p><p></p>" if second else f"<p></p>   {first}<p></p>"
        else:
            html = f"<p>{first}</p><p>{second}</p>" if second else f"<p>{first}</p>"
        if slot.table:
            table_plain, table_html = _table(h)
            plain = f"{plain}\n{table_plain}"
            html = f"{html}{table_html}"
        return plain, html

    def nota(self, slot: Slot, version: Version) -> tuple[str, str]:
        if not slot.nota:
            return "", ""
        when = date_of(version.start).strftime("%d/%m/%Y")
        serial = slot.hash % 900 + 100
        plain = (f"Conformément à l'article 3 de l'ordonnance de démonstration n° 2099-{serial}, "
                 f"ces dispositions entrent en vigueur le {when}.")
        html = (f"<p>Conform&#233;ment &#224; l&#8217;article 3 de l&#8217;ordonnance de d&#233;monstration "
                f"n&#176;&#160;2099-{serial}, ces dispositions entrent en vigueur le {when}.</p>")
        return plain, html

    # ---- expected content ---------------------------------------------------------------------
    def in_force_entries(self, code_id: str, on: date | None = None) -> Iterator[tuple[Slot, Version]]:
        """(slot, version) of each cid in force on `on` (UTC today by default), once per cid."""
        day = day_of(on or utc_today())
        for slot in self.slots(code_id):
            if slot.abrogated:
                continue
            v = self.version_at(self.versions(slot), day)
            if v is not None and v.etat == "VIGUEUR" and v.start <= day < v.end:
                yield slot, v

    def expected_ids(self, codes: Iterable[str] | None = None, *, min_chars: int = 100,
                     on: date | None = None) -> set[str]:
        """Ids a correct collector stores: in force per the TOC on `on`, one per cid, plain text
        of at least `min_chars` characters. `codes` defaults to DEMO_MASSIVE_CODES."""
        out: set[str] = set()
        for code_id in DEMO_MASSIVE_CODES if codes is None else codes:
            for slot, v in self.in_force_entries(code_id, on):
                if min_chars <= 0 or (not slot.short and min_chars <= _LONG_MIN) \
                        or len(self.text(slot, v.number)[0]) >= min_chars:
                    out.add(v.id)
        return out

    # ---- publishing -----------------------------------------------------------------------------
    def publish(self, count: int, *, code_id: str | None = None, on: date | None = None) -> list[PublishedVersion]:
        """Give `count` distinct in-force articles a new version starting `on` (UTC today).
        The old version becomes MODIFIE; the code's lastUpdate/modifDate moves forward."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        if code_id is not None and (code_id not in self._index or code_id not in DEMO_MASSIVE_CODES):
            raise ValueError(f"cannot publish in {code_id!r}: not an in-force demo code")
        day = day_of(on or utc_today())
        with self._lock:
            if len(self._published_slot) + count > _PUBLISHED_MAX:
                raise ValueError("the demo corpus cannot hold more published versions")
            rng = random.Random(f"demo-publish-{self.seed}-{self._publish_serial}")
            self._publish_serial += 1
            codes = [self._index[code_id]] if code_id else [self._index[c] for c in DEMO_MASSIVE_CODES]
            weights = [self.in_force_count(CODES[c].id) for c in codes]
            if count > sum(weights):
                raise ValueError(f"cannot publish {count} versions: only {sum(weights)} in-force articles")
            chosen: set[tuple[int, int]] = set()
            out: list[PublishedVersion] = []
            while len(out) < count:
                code = rng.choices(codes, weights)[0]
                index = rng.randrange(self._layouts[code].slots)
                if (code, index) in chosen:
                    continue
                slot = self.slot(code, index)
                if slot.abrogated or (code, index) in self._repealed:
                    continue
                chosen.add((code, index))
                previous = self.versions(slot)[-1]
                number = _PUBLISHED_BASE + len(self._published_slot)
                self._published.setdefault((code, index), []).append((number, max(day, previous.start)))
                self._published_slot[number] = (code, index)
                out.append(PublishedVersion(self._article_id(number), self.cid_of(slot), CODES[code].id, previous.id))
            for code in {self._index[p.code_id] for p in out}:
                self._last_update[code] = max(date_of(day), self._last_update[code] + timedelta(days=1))
            return out

    def repeal(self, count: int, *, code_id: str | None = None, on: date | None = None) -> list[RepealedArticle]:
        """Repeal `count` distinct in-force articles `on` (UTC today): the current version of
        each becomes ABROGE (it leaves the TOC's in-force entries and the expected ids); the
        code's lastUpdate/modifDate moves forward, as with `publish`."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        if code_id is not None and (code_id not in self._index or code_id not in DEMO_MASSIVE_CODES):
            raise ValueError(f"cannot repeal in {code_id!r}: not an in-force demo code")
        day = day_of(on or utc_today())
        with self._lock:
            rng = random.Random(f"demo-repeal-{self.seed}-{self._publish_serial}")
            self._publish_serial += 1
            codes = [self._index[code_id]] if code_id else [self._index[c] for c in DEMO_MASSIVE_CODES]
            weights = [self.in_force_count(CODES[c].id) for c in codes]
            if count > sum(weights):
                raise ValueError(f"cannot repeal {count} articles: only {sum(weights)} in-force articles")
            out: list[RepealedArticle] = []
            while len(out) < count:
                code = rng.choices(codes, weights)[0]
                index = rng.randrange(self._layouts[code].slots)
                slot = self.slot(code, index)
                if slot.abrogated or (code, index) in self._repealed:
                    continue
                current = self.versions(slot)[-1]
                self._repealed[(code, index)] = day
                out.append(RepealedArticle(current.id, self.cid_of(slot), CODES[code].id))
            for code in {self._index[r.code_id] for r in out}:
                self._last_update[code] = max(date_of(day), self._last_update[code] + timedelta(days=1))
            return out

    # ---- API payloads -------------------------------------------------------------------------------
    def _build_text_titles(self, code: int) -> list[dict[str, Any]]:
        spec = CODES[code]
        end_ms = day_of(spec.repealed_on) * DAY_MS if spec.repealed_on else NO_END_MS
        return [{
            "id": spec.id, "titre": spec.title, "titreLong": spec.title,
            "etat": "ABROGE" if spec.repealed_on else "VIGUEUR",
            "dateDebut": day_of(spec.start) * DAY_MS, "dateFin": end_ms, "cid": spec.id,
            "datePubli": NO_END_MS, "datePubliComputed": None, "dateTexte": NO_END_MS,
            "dateTexteComputed": None, "nature": "CODE", "nor": "", "num": "", "numParution": "",
            "originePubli": "", "appliGeo": None, "codesNomenclatures": [], "visas": None, "nota": None,
            "notice": None, "travauxPreparatoires": None, "signataires": None, "dossiersLegislatifs": [],
            "ancienId": None, "appellations": None,
        }]

    def article(self, article_id: str) -> dict[str, Any] | None:
        """The getArticle `article` object, or None for an unknown id."""
        found = self.locate(article_id)
        return None if found is None else self._article(*found)

    def articles_by_cid(self, cid: str) -> list[dict[str, Any]]:
        """getArticleByCid's listArticle: every version, newest first (like the real sample)."""
        found = self.locate(cid)
        if found is None or found[1].number != 1:
            return []
        slot, _, versions = found
        return [self._article(slot, v, versions) for v in reversed(versions)]

    def _article(self, slot: Slot, version: Version, versions: Sequence[Version]) -> dict[str, Any]:
        spec = CODES[slot.code]
        place = self.place(slot)
        plain, html = self.text(slot, version.number)
        nota, nota_html = self.nota(slot, version)
        code_debut = spec.start.isoformat()
        code_fin = (spec.repealed_on or date(2999, 1, 1)).isoformat()
        section_etat = "ABROGE" if spec.repealed_on else "VIGUEUR"
        parent_id, parent_title = place.sections[-1]
        titles_tm = [
            {"debut": code_debut, "fin": code_fin, "titre": title,
             "xPath": "/ARTICLE/CONTEXTE/TEXTE/" + "TM/" * (depth + 1) + "TITRE_TM",
             "cid": sid, "id": sid, "etat": section_etat}
            for depth, (sid, title) in enumerate(place.sections)
        ]
        previous = versions[version.number - 2].id if version.number > 1 else None
        links = []
        if version.number > 1:
            serial = (slot.hash >> 8) % 90_000 + version.number
            links.append({
                "textCid": f"JORFTEXT{_SECTION_ID_BASE + serial % 100_000:012d}",
                "textTitle": f"Ordonnance de démonstration n°2099-{serial % 1000} du {date_of(version.start):%d/%m/%Y} - art. {version.number}",
                "linkType": "MODIFIE", "linkOrientation": "cible", "articleNum": str(version.number),
                "articleId": f"JORFARTI{_SECTION_ID_BASE + serial % 100_000:012d}", "natureText": "ORDONNANCE",
                "datePubliTexte": date_of(version.start).isoformat(),
                "dateSignaTexte": date_of(version.start - 1).isoformat(),
                "dateDebutCible": date_of(version.start).isoformat(),
            })
        return {
            "id": version.id, "idTexte": None, "type": "AUTONOME", "texte": plain, "texteHtml": html,
            "num": place.num, "origine": "LEGI", "nature": "Article",
            "versionArticle": f"{version.number}.0", "etat": version.etat,
            "dateDebut": version.start * DAY_MS,
            "dateFin": NO_END_MS if version.end == NO_END_DAY else version.end * DAY_MS,
            "dateDebutExtension": NO_END_MS, "dateFinExtension": NO_END_MS, "inap": None,
            "ordre": place.int_ordre,
            "context": {
                "titresTM": titles_tm, "nombreVersionParent": 1, "longeurChemin": 41,
                "titreTxt": [{"debut": code_debut, "fin": code_fin, "titre": spec.title,
                              "xPath": "/ARTICLE/CONTEXTE/TEXTE/TITRE_TXT", "cid": spec.id, "id": spec.id,
                              "etat": section_etat}],
            },
            "cid": versions[0].id, "cidTexte": None,
            "sectionParentCid": parent_id, "sectionParentId": parent_id, "sectionParentTitre": parent_title,
            "fullSectionsTitre": " &gt; ".join(title for _, title in place.sections),
            "refInjection": "IG-DEMO", "idTechInjection": version.id, "idEli": None, "idEliAlias": None,
            "calipsos": [], "textTitles": self._text_titles[slot.code], "nota": nota, "notaHtml": nota_html,
            "activitePro": [], "numeroBrochure": [], "numeroBo": None, "conteneurs": [],
            "lienModifications": links, "lienCitations": [], "lienConcordes": [], "lienAutres": [],
            "articleVersions": [
                {"id": v.id, "etat": v.etat, "version": f"{v.number}.0", "dateDebut": v.start * DAY_MS,
                 "dateFin": NO_END_MS if v.end == NO_END_DAY else v.end * DAY_MS, "numero": None, "ordre": None}
                for v in versions
            ],
            "computedNums": [place.num, place.num[1:]],
            "versionPrecedente": previous, "conditionDiffere": None, "historique": None, "surtitre": None,
            "renvoi": None, "infosComplementaires": None, "infosComplementairesHtml": None,
            "infosRestructurationBranche": None, "infosRestructurationBrancheHtml": None,
        }

    def table_matieres_json(self, code_id: str, on: date) -> str:
        """The /consult/legi/tableMatieres JSON text of a code at a date."""
        return "".join(self.table_matieres_chunks(code_id, on))

    def table_matieres_chunks(self, code_id: str, on: date, chunk_chars: int = 1 << 16) -> Iterator[str]:
        """The same JSON text in pieces of about `chunk_chars` characters, written chapter by
        chapter as the sections open and close: a 30,000-article TOC never exists whole in
        memory (the previous all-at-once build peaked at four copies of it)."""
        code = self._code_index(code_id)
        spec = CODES[code]
        layout = self._layouts[code]
        day = day_of(on)
        modif = self._last_update[code]
        etat = "ABROGE" if spec.repealed_on else "VIGUEUR"
        debut = spec.start.isoformat()
        fin = (spec.repealed_on or date(2999, 1, 1)).isoformat()
        head = {
            "dereferenced": False, "id": f"{spec.id}_{modif:%d-%m-%Y}", "idConteneur": None, "cid": spec.id,
            "title": spec.title, "nor": None, "eli": None, "alias": None, "jorfText": None,
            "jurisState": "Abrogé" if spec.repealed_on else "Vigueur", "visa": None,
            "modifDate": modif.isoformat(), "jurisDate": modif.isoformat(), "dateDebutVersion": modif.isoformat(),
            "dateFinVersion": fin, "signers": None, "prepWork": None, "dateParution": NO_END_MS,
            "dateTexte": None, "numParution": None, "notice": None, "nota": None, "inap": None,
            "textNumber": None, "textAbroge": spec.repealed_on is not None, "etat": etat,
            "dossiersLegislatifs": [], "nature": "CODE", "resume": None, "rectificatif": None,
            "motsCles": [], "appellations": [], "liens": [], "observations": None, "articles": [],
        }
        tail = {"pagePdf": None, "fileName": f"{spec.id}.pdf",
                "filePath": self.list_code_item(spec.id)["pdfFilePath"]}
        parts: list[str] = [json.dumps(head, ensure_ascii=False, separators=(",", ":"))[:-1], ',"sections":[']
        size = 0
        opened: list[tuple[str, str]] = []  # sections open above the current chapter
        written = [spec.repealed_on is None]  # per open depth: a sibling was written (needs a comma)
        ordinal = [0]  # per open depth: intOrdre rank of the last section opened there
        if spec.repealed_on is None:
            parts.append(_toc_section(
                self._section_id(code * _SECTIONS_PER_CODE + 2),
                "Titre préliminaire : Dispositions abrogées (DÉMO)", 1 << 10, "ABROGE", debut, "1999-12-31", "", "",
            ))

        def open_section(depth: int, section: tuple[str, str], articles: str | None) -> str:
            comma = "," if written[depth] else ""
            written[depth] = True
            ordinal[depth] += 1
            if articles is not None:  # a chapter: written whole
                return comma + _toc_section(*section, ordinal[depth] << 20, etat, debut, fin, "", articles)
            sid, title = section
            return comma + _TOC_SECTION_OPEN % (sid, sid, ordinal[depth] << 20, etat,
                                                json.dumps(title, ensure_ascii=False), debut, fin)

        for first in range(0, layout.slots, SLOTS_PER_CHAPTER):
            entries: list[str] = []
            place: Place | None = None
            for index in range(first, min(first + SLOTS_PER_CHAPTER, layout.slots)):
                slot = self.slot(code, index)
                versions = self.versions(slot)
                current = self.version_at(versions, day)
                if current is None:
                    continue
                place = self.place(slot)
                if slot.repeat_previous and current.number > 1:
                    prev = versions[current.number - 2]
                    entries.append(_toc_article(prev.id, versions[0].id, place.int_ordre, prev.etat, place.num))
                entry = _toc_article(current.id, versions[0].id, place.int_ordre, current.etat, place.num)
                entries.append(entry)
                if slot.listed_twice:
                    entries.append(entry)
            if place is None:
                continue
            *ancestors, chapter = place.sections
            keep = 0
            while keep < min(len(opened), len(ancestors)) and opened[keep] == ancestors[keep]:
                keep += 1
            while len(opened) > keep:  # close the sections this chapter is not in
                opened.pop()
                written.pop()
                ordinal.pop()
                parts.append(_TOC_SECTION_CLOSE)
            for section in ancestors[keep:]:
                parts.append(open_section(len(opened), section, None))
                opened.append(section)
                written.append(False)
                ordinal.append(0)
            chunk = open_section(len(opened), chapter, ",".join(entries))
            parts.append(chunk)
            size += len(chunk)
            if size >= chunk_chars:
                yield "".join(parts)
                parts, size = [], 0
        parts.extend(_TOC_SECTION_CLOSE for _ in opened)
        parts.append("],")
        parts.append(json.dumps(tail, ensure_ascii=False, separators=(",", ":"))[1:])
        yield "".join(parts)


_TOC_ARTICLE = (
    '{"executionTime":0,"dereferenced":false,"id":"%s","cid":"%s","intOrdre":%d,"etat":"%s","num":"%s",'
    '"path":null,"pathTitle":null,"content":null,"nota":null,"comporteLiens":false,"modificatorTitle":null,'
    '"modificatorCid":null,"modificatorDate":null,"articleVersion":null,"type":null,"lstLienModification":[],'
    '"lstLienCitation":[],"conditionDiffere":null,"historique":null,"surtitre":null,"renvoi":null,'
    '"versionLabel":null,"infosComplementaires":null,"infosComplementairesHtml":null,'
    '"infosRestructurationBranche":null,"infosRestructurationBrancheHtml":null,"dateDebut":null,'
    '"dateFin":null,"notaSectionsAafficher":null}'
)
_TOC_SECTION = (
    '{"executionTime":0,"dereferenced":false,"id":"%s","cid":"%s","intOrdre":%d,"etat":"%s","title":%s,'
    '"dateModif":null,"dateDebut":"%s","dateFin":"%s","sectionConsultee":false,"sections":[%s],'
    '"articles":[%s],"commentaire":null,"renvoi":null,"renvoiNum":null,"notaHtml":null,'
    '"notaSectionsAafficher":null}'
)

# A section with children, written as they come: opening (up to its "sections" list), closing.
_TOC_SECTION_OPEN = _TOC_SECTION[: _TOC_SECTION.index('"sections":[') + len('"sections":[')]
_TOC_SECTION_CLOSE = _TOC_SECTION[_TOC_SECTION.index('],"articles":[%s]'):].replace("%s", "", 1)


def _toc_article(article_id: str, cid: str, int_ordre: int, etat: str, num: str) -> str:
    return _TOC_ARTICLE % (article_id, cid, int_ordre, etat, num)


def _toc_section(sid: str, title: str, int_ordre: int, etat: str, debut: str, fin: str,
                 sections: str, articles: str) -> str:
    return _TOC_SECTION % (sid, sid, int_ordre, etat, json.dumps(title, ensure_ascii=False),
                           debut, fin, sections, articles)
