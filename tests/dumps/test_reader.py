"""ArchiveReader on real-layout archives: the demo's global and deltas, and broken ones."""

from __future__ import annotations

import gzip
import io
import tarfile
from collections import Counter
from pathlib import Path

import pytest

from collector.demo.dumps import CORRECTION_MARK, EXTRA_CODE, TNC_CID, DemoDumps, article_path, text_folder
from collector.dumps.reader import (
    TAR_BACKENDS,
    ArchiveReader,
    ArticleVersion,
    BadMember,
    Deletion,
    DumpArchiveError,
    TextVersion,
    member_path,
    parse_deletion,
    strip_root,
)
from collector.models import Article
from tests.conftest import require

MONNAIES = "LEGITEXT000006070666"
FOLDER = text_folder("code_en_vigueur", MONNAIES)


class Applier:
    """The smallest correct application of the items, to check what the reader yields against
    the generator's truth: the last copy of an id wins; a deletion removes the copy of ITS
    partition and text only."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.rows: dict[str, tuple[str, str, bool, Article | None]] = {}  # id -> code, partition, in force, row

    def apply(self, path: Path) -> list[ArticleVersion | TextVersion | Deletion | BadMember]:
        reader = ArchiveReader(path, min_chars=0, backend=self.backend)
        items = list(reader)
        self.stats = reader.stats
        deletions_started = False
        for item in items:
            if isinstance(item, ArticleVersion):
                assert not deletions_started, "deletions come after every file"
                row = item.row if isinstance(item.row, Article) else None
                self.rows[item.id] = (item.code_id, item.partition, item.in_force, row)
            elif isinstance(item, Deletion):
                deletions_started = True
                for article_id, (code, partition, _, _) in list(self.rows.items()):
                    same_copy = code == item.code_id and partition == item.partition
                    if same_copy and (item.kind == "text" or article_id == item.id):
                        del self.rows[article_id]
        return items

    def in_force(self) -> dict[str, str]:
        return {i: code for i, (code, partition, force, _) in self.rows.items()
                if force and partition == "code_en_vigueur"}


def test_global_then_deltas_give_the_generators_truth(demo_dumps: DemoDumps, demo_archives: list[Path],
                                                      backend: str) -> None:
    applier = Applier(backend)
    seen: list[Counter[str]] = []
    skipped: list[int] = []
    for k, path in enumerate(demo_archives):
        items = applier.apply(path)
        skipped.append(applier.stats.skipped)
        assert applier.in_force() == demo_dumps.truth(k), path.name
        kinds: Counter[str] = Counter()
        for item in items:
            assert not isinstance(item, BadMember), item
            if isinstance(item, ArticleVersion):
                kinds[f"{item.partition} {item.etat}"] += 1
            elif isinstance(item, Deletion):
                kinds[f"deletion {item.kind} {item.source}"] += 1
            else:
                kinds[f"text {item.partition}"] += 1
        seen.append(kinds)
    global_, new, removed, moved = seen
    assert global_["code_en_vigueur VIGUEUR"] == len(demo_dumps.truth(0)) > 500
    assert global_["code_en_vigueur MODIFIE"] and global_["code_en_vigueur ABROGE"]
    assert global_["code_non_vigueur ABROGE"] and global_["text code_en_vigueur"] == 6
    n = demo_dumps.changes_per_kind
    assert new["code_en_vigueur MODIFIE"] == n  # the old versions of the new ones
    assert len(demo_dumps.truth(1)) == len(demo_dumps.truth(0)) + n  # new articles
    assert removed["code_en_vigueur ABROGE"] == n
    assert removed["deletion article liste_suppression_legi.dat"] == n
    # the TNC text's 3 articles, its version and struct files: recognised by their path, never parsed nor yielded
    assert not any(k.startswith("TNC_") or k.startswith("text TNC") for k in removed)
    assert skipped[2] == 5 and applier.stats.touched.get(TNC_CID) is None  # (stats of the last archive)
    assert moved["code_non_vigueur ABROGE"] == 6
    assert moved["deletion text liste_suppression_legi_dossier.dat"] == 1
    assert not set(demo_dumps.truth(3).values()) & {EXTRA_CODE.id, TNC_CID}
    assert EXTRA_CODE.id in demo_dumps.truth(2).values()

    corrected = demo_dumps.corrected_ids(3)
    assert len(corrected) == n
    for article_id in corrected:  # same id, new text: the row carries it
        row = applier.rows[article_id][3]
        assert row is not None and row.text.endswith(CORRECTION_MARK)


def test_reader_counts_and_progress(demo_archives: list[Path], backend: str) -> None:
    calls: list[int] = []
    reader = ArchiveReader(demo_archives[0], min_chars=100, on_progress=lambda s: calls.append(s.bytes_read),
                           backend=backend)
    items = list(reader)
    stats = reader.stats
    assert stats.bytes_read == stats.total_bytes == demo_archives[0].stat().st_size
    assert calls and calls[-1] == stats.bytes_read
    assert stats.kinds["article"] == sum(isinstance(i, ArticleVersion) for i in items)
    assert stats.kinds["section_ta"] > 50 and stats.kinds["texte/struct"] == stats.kinds["texte/version"] == 7
    assert set(stats.touched.values()) == {"code_en_vigueur", "code_non_vigueur"}
    first = next(i for i in items if isinstance(i, ArticleVersion))
    assert first.row is first.row  # built once, then kept
    rejected = [i for i in items if isinstance(i, ArticleVersion) and not isinstance(i.row, Article)]
    assert rejected and all(i.row.reason in ("too_short", "empty") for i in rejected)  # type: ignore[union-attr]


def test_codes_filter_skips_other_texts_unparsed(demo_dumps: DemoDumps, demo_archives: list[Path]) -> None:
    wanted = next(iter(demo_dumps.truth(0).values()))
    reader = ArchiveReader(demo_archives[0], min_chars=0, codes={wanted})
    items = list(reader)
    assert {i.code_id for i in items if isinstance(i, (ArticleVersion, TextVersion))} == {wanted}
    assert reader.stats.skipped > 0 and len(reader.stats.touched) == 7



def test_in_force_only_yields_the_versions_in_force_and_counts_the_rest(demo_archives: list[Path]) -> None:
    everything = [i for i in ArchiveReader(demo_archives[0], min_chars=0) if isinstance(i, ArticleVersion)]
    reader = ArchiveReader(demo_archives[0], min_chars=0, in_force_only=True)
    kept = [i for i in reader if isinstance(i, ArticleVersion)]
    assert [i.id for i in kept] == [i.id for i in everything if i.in_force]
    assert all(i.in_force for i in kept) and len(kept) < len(everything)
    assert reader.stats.not_in_force == len(everything) - len(kept)
    assert reader.stats.articles_by_code == Counter(i.code_id for i in everything)  # unparsed files count too


# ---- archives built by hand ---------------------------------------------------------------------
def build(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def real_members(legi_xml: Path, root: str = "20250714-213000/") -> list[tuple[str, bytes]]:
    base = legi_xml / "code-6070666"
    return [
        (root + article_path(FOLDER, "LEGIARTI000006398122"), (base / "article" / "LEGIARTI000006398122.xml").read_bytes()),
        (root + f"{FOLDER}/section_ta/LEGI/SCTA/00/00/06/13/55/LEGISCTA000006135575.xml",
         (base / "section_ta" / "LEGISCTA000006135575.xml").read_bytes()),
        (root + f"{FOLDER}/texte/struct/{MONNAIES}.xml", (base / "texte" / "struct" / f"{MONNAIES}.xml").read_bytes()),
        (root + f"{FOLDER}/texte/version/{MONNAIES}.xml", (base / "texte" / "version" / f"{MONNAIES}.xml").read_bytes()),
    ]


def test_real_files_in_a_delta_and_bad_members_named(legi_xml: Path, tmp_path: Path, backend: str) -> None:
    root = "20250714-213000/"
    bad_xml = root + article_path(FOLDER, "LEGIARTI000006398123")
    wrong_root = root + article_path(FOLDER, "LEGIARTI000006398124")
    stray = root + "legi/global/code_et_TNC_en_vigueur/code_en_vigueur/LEGI/TEXT/README.txt"
    path = build(tmp_path / "LEGI_20250714-213000.tar.gz", [
        (bad_xml, b"<ARTICLE><META>"),
        *real_members(legi_xml, root),
        (wrong_root, b"<SECTION_TA/>"),
        (stray, b"hello"),
    ])
    reader = ArchiveReader(path, min_chars=0, backend=backend)
    items = list(reader)
    bad = {b.member: b.reason for b in items if isinstance(b, BadMember)}
    assert set(bad) == {strip_root(bad_xml), strip_root(wrong_root), strip_root(stray)}
    assert bad[strip_root(bad_xml)].startswith("bad XML")
    assert "root element 'SECTION_TA'" in bad[strip_root(wrong_root)]
    assert bad[strip_root(stray)].startswith("unknown layout")
    assert reader.stats.bad == [b for b in items if isinstance(b, BadMember)]
    assert reader.stats.bad_count == 3
    (art,) = [i for i in items if isinstance(i, ArticleVersion)]
    assert (art.id, art.code_id, art.partition, art.etat, art.in_force) == (
        "LEGIARTI000006398122", MONNAIES, "code_en_vigueur", "ABROGE", False)
    assert art.member == strip_root(real_members(legi_xml, root)[0][0])
    (text,) = [i for i in items if isinstance(i, TextVersion)]
    assert (text.code_id, text.title, text.etat) == (MONNAIES, "Code des instruments monétaires et des médailles", "VIGUEUR")



def test_in_force_only_still_parses_and_names_a_cut_file(legi_xml: Path, tmp_path: Path) -> None:
    root = "20250714-213000/"
    real = real_members(legi_xml, root)
    cut = root + article_path(FOLDER, "LEGIARTI000006398123")
    path = build(tmp_path / "LEGI_20250714-213000.tar.gz", [*real, (cut, real[0][1][:-200])])
    reader = ArchiveReader(path, min_chars=0, in_force_only=True)
    items = list(reader)
    # The real file is ABROGE: counted, unparsed; its cut copy is parsed and named.
    assert not [i for i in items if isinstance(i, ArticleVersion)]
    assert [(b.member, b.reason[:7]) for b in items if isinstance(b, BadMember)] == [(strip_root(cut), "bad XML")]
    assert reader.stats.not_in_force == 1 and reader.stats.articles_by_code == Counter({MONNAIES: 1})


def test_the_path_wins_over_a_missing_cid_attribute(legi_xml: Path, tmp_path: Path) -> None:
    data = (legi_xml / "code-6070666" / "article" / "LEGIARTI000006398122.xml").read_bytes()
    data = data.replace(b'cid="LEGITEXT000006070666" ', b"")
    other = text_folder("code_non_vigueur", "LEGITEXT000006070667")
    path = build(tmp_path / "a.tar.gz", [(article_path(other, "LEGIARTI000006398122"), data)])
    (item,) = list(ArchiveReader(path, min_chars=0))
    assert isinstance(item, ArticleVersion)
    assert (item.code_id, item.partition) == ("LEGITEXT000006070667", "code_non_vigueur")
    assert isinstance(item.row, Article) and item.row.code_id == "LEGITEXT000006070667"


def test_deletion_lines_malformed_are_reported_and_skipped(tmp_path: Path, backend: str) -> None:
    good = article_path(FOLDER, "LEGIARTI000045597403")[:-4]
    missing_slash = text_folder("code_non_vigueur", "LEGITEXT000006070667").replace("code_non_vigueur/LEGI", "code_non_vigueurLEGI")
    lines = [good, "", "garbage without ids", "legi/global/code_et_TNC_en_vigueur/code_en_vigueur/LEGI/TEXT/00/00",
             f"{FOLDER}/section_ta/LEGI/SCTA/00/00/06/13/55/LEGISCTA000006135575", "\ufffd\x00",
             f"{FOLDER}/texte/struct/{MONNAIES}"]
    path = build(tmp_path / "LEGI_20250714-213000.tar.gz", [
        ("20250714-213000/liste_suppression_legi.dat", "\n".join(lines).encode() + b"\n\xff\n"),
        ("20250714-213000/liste_suppression_legi_dossier.dat",
         f"{missing_slash} D\r\n{text_folder('TNC_en_vigueur', 'JORFTEXT000045592863')}/ D\n".encode()),
    ])
    reader = ArchiveReader(path, backend=backend)
    items = list(reader)
    deletions = [i for i in items if isinstance(i, Deletion)]
    assert [(d.kind, d.id, d.code_id, d.partition, d.line) for d in deletions] == [
        ("article", "LEGIARTI000045597403", MONNAIES, "code_en_vigueur", 1),
        ("section_ta", "LEGISCTA000006135575", MONNAIES, "code_en_vigueur", 5),
        ("texte", MONNAIES, MONNAIES, "code_en_vigueur", 7),
        ("text", "LEGITEXT000006070667", "LEGITEXT000006070667", "code_non_vigueur", 1),
        ("text", "JORFTEXT000045592863", "JORFTEXT000045592863", "TNC_en_vigueur", 2),
    ]
    bad = [i.member for i in items if isinstance(i, BadMember)]
    assert bad == ["liste_suppression_legi.dat:3", "liste_suppression_legi.dat:4",
                   "liste_suppression_legi.dat:6", "liste_suppression_legi.dat:8"]
    assert reader.stats.deletions == 5


@pytest.mark.parametrize("cut", ["half", "last_bytes", "garbage", "not_gzip", "empty", "empty_tar", "gzip_of_text"])
def test_truncated_or_corrupt_archive_raises(demo_archives: list[Path], tmp_path: Path, cut: str, backend: str) -> None:
    data = demo_archives[1].read_bytes()
    broken = {
        "half": data[: len(data) // 2],
        "last_bytes": data[:-4],  # the gzip trailer's length: every member was readable
        "garbage": data[:200] + bytes(b ^ 0x5A for b in data[200:400]) + data[400:],
        "not_gzip": b"PK\x03\x04 a zip file",
        "empty": b"",
        "empty_tar": gzip.compress(b"\0" * 10240),  # a tar with no file at all
        "gzip_of_text": gzip.compress(b"not a tar archive\n" * 100),
    }[cut]
    path = tmp_path / demo_archives[1].name
    path.write_bytes(broken)
    with pytest.raises(DumpArchiveError, match="nothing of it may be applied"):
        list(ArchiveReader(path, backend=backend))


def test_missing_archive_raises(tmp_path: Path) -> None:
    with pytest.raises(DumpArchiveError, match="cannot open"):
        list(ArchiveReader(tmp_path / "LEGI_20250714-213000.tar.gz"))


def test_a_tar_not_gzipped_is_refused(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "LEGI_20250714-213000.tar.gz"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("x")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(DumpArchiveError):
        list(ArchiveReader(path, backend=backend))


def test_member_paths() -> None:
    assert strip_root("./20250714-213000/legi/global/x") == "legi/global/x"
    assert strip_root("legi/global/x") == "legi/global/x"
    where = member_path(article_path(FOLDER, "LEGIARTI000006398122"))
    assert (where.partition, where.code_id, where.kind, where.id) == (
        "code_en_vigueur", MONNAIES, "article", "LEGIARTI000006398122")
    tnc = member_path(f"{text_folder('TNC_non_vigueur', 'JORFTEXT000000511672')}/texte/version/LEGITEXT000006070667.xml")
    assert (tnc.partition, tnc.code_id, tnc.kind) == ("TNC_non_vigueur", "JORFTEXT000000511672", "texte/version")
    for bad in ["legi/global/code_et_TNC_en_vigueur/TNC_non_vigueur/LEGI/TEXT/00/00/06/07/06/LEGITEXT000006070666/texte/version/LEGITEXT000006070666.xml",
                f"{FOLDER}/article/LEGI/ARTI/00/00/06/39/81/LEGISCTA000006398122.xml",
                f"{FOLDER}/autre/LEGI/ARTI/00/00/06/39/81/LEGIARTI000006398122.xml",
                "liste_suppression_jorf.dat"]:
        with pytest.raises(ValueError, match="unknown layout"):
            member_path(bad)
    with pytest.raises(ValueError):
        parse_deletion("legi/global/LEGIARTI000006398122", "liste_suppression_legi.dat", 1)


def test_both_tar_walks_give_the_same_items(demo_archives: list[Path]) -> None:
    require(len(TAR_BACKENDS) == 2, "libarchive (libarchive-c + libarchive.so.13) is not available")
    for path in demo_archives:
        walks = [[(type(i).__name__, getattr(i, "member", None) or getattr(i, "path", None)) for i in
                  ArchiveReader(path, min_chars=0, backend=b)] for b in TAR_BACKENDS]
        assert walks[0] == walks[1] and walks[0]
    with pytest.raises(ValueError, match="not available"):
        ArchiveReader(demo_archives[0], backend="7z")
