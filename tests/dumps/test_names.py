"""Archive names and the plan of archives to apply."""

from __future__ import annotations

import pytest

from collector.dumps.names import ArchiveName, PlanError, parse_archive_name, plan


def name(text: str) -> ArchiveName:
    parsed = parse_archive_name(text)
    assert parsed is not None, text
    return parsed


def test_global_and_delta_names_in_both_cases() -> None:
    assert name("Freemium_legi_global_20250713-140000.tar.gz") == ArchiveName(
        "20250713-140000", True, "Freemium_legi_global_20250713-140000.tar.gz")
    assert name("LEGI_20260102-213512.tar.gz") == ArchiveName("20260102-213512", False, "LEGI_20260102-213512.tar.gz")
    assert name("legi_20180530-212110.tar.gz").is_global is False  # before June 2018
    assert name("FREEMIUM_LEGI_GLOBAL_20170101-000000.TAR.GZ").is_global is True
    assert name("https://echanges.dila.gouv.fr/OPENDATA/LEGI/LEGI_20260102-213512.tar.gz").name == \
        "LEGI_20260102-213512.tar.gz"


@pytest.mark.parametrize("other", [
    "Descriptif_LEGI.pdf", "LEGI_20260102-213512.tar", "LEGI_2026012-213512.tar.gz", "JORF_20260102-213512.tar.gz",
    "LEGI_20260102-213512.tar.gz.part", "LEGI_20260102.tar.gz", "", "index.html",
])
def test_other_files_are_not_archives(other: str) -> None:
    assert parse_archive_name(other) is None


G1, G2 = name("Freemium_legi_global_20240101-100000.tar.gz"), name("Freemium_legi_global_20250713-140000.tar.gz")
D = [name(f"LEGI_2025071{d}-213000.tar.gz") for d in range(1, 9)]  # 11th .. 18th July 2025


def test_first_load_takes_the_newest_global_then_the_deltas_after_it() -> None:
    # D[0]..D[1] are before G2 (13th), D[2] is 13th 21:30: after G2's 14:00
    assert plan([D[4], G1, D[0], G2, D[2], D[1], D[3]], None) == [G2, D[2], D[3], D[4]]


def test_up_to_date_store_takes_only_newer_deltas() -> None:
    assert plan([G1, G2, *D], D[4].stamp) == D[5:]
    assert plan([G1, G2, *D], D[7].stamp) == []


def test_a_global_newer_than_the_stamp_comes_first_and_rebases_the_deltas() -> None:
    assert plan([G1, G2, *D], G1.stamp) == [G2, *D[2:]]
    assert plan([G2, *D], "20250101-000000") == [G2, *D[2:]]


def test_a_delta_with_the_stamp_applied_is_not_applied_again() -> None:
    assert plan([G2, D[3], D[4]], D[3].stamp) == [D[4]]


def test_same_stamp_in_two_cases_counts_once() -> None:
    lower = name("legi_20250715-213000.tar.gz")
    upper = name("LEGI_20250715-213000.tar.gz")
    assert plan([G2, lower, upper], G2.stamp) == [lower]


def test_deltas_alone_are_never_a_first_load() -> None:
    with pytest.raises(PlanError, match="no global"):
        plan(D, None)
    assert plan([], G2.stamp) == []
