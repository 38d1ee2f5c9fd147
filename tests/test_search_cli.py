"""`python -m collector search` as a real subprocess over a SQLite file filled by the store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from collector.store.sqlite import SqliteStore
from tests.conftest import COLLECTOR_ENV, REPO
from tests.store.helpers import article

CODE = "LEGITEXT000099900001"
OTHER = "LEGITEXT000099900002"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in COLLECTOR_ENV}
    base.update(PYTHONPATH=str(REPO), COLLECTOR_DB=str(tmp_path / "collector.sqlite3"),
                SCHEDULER_STATE_FILE=str(tmp_path / "state.json"), LOG_FORMAT="json")
    store = SqliteStore(tmp_path / "collector.sqlite3")
    store.commit_batch([
        replace(article(1, CODE, text="Le permis de construire est délivré par le maire."), num="L421-1"),
        replace(article(2, OTHER, text="PERMIS DE CONSTRUIRE DELIVRE TACITEMENT."), num="R423-1"),
        article(3, CODE, text="Les servitudes d'utilité publique."),
    ])
    store.close()
    return base


def search(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "collector", "search", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def test_one_json_object_per_match_accent_insensitive(env: dict[str, str]) -> None:
    done = search(env, "délivré", "PERMIS")
    assert done.returncode == 0, done.stderr
    hits = lines(done.stdout)
    assert {h["id"] for h in hits} == {article(1).id, article(2).id}
    for hit in hits:
        assert {"id", "code_id", "num", "snippet", "etat", "section_path", "rank", "url"} <= set(hit)
        assert hit["url"] == f"https://www.legifrance.gouv.fr/codes/article_lc/{hit['id']}"
    first = next(h for h in hits if h["id"] == article(1).id)
    assert (first["code_id"], first["num"]) == (CODE, "L421-1")
    assert "[permis]" in first["snippet"] and "[délivré]" in first["snippet"]


def test_code_filter_and_limit(env: dict[str, str]) -> None:
    assert [h["id"] for h in lines(search(env, "permis", "--code", OTHER).stdout)] == [article(2).id]
    assert len(lines(search(env, "permis", "--limit", "1").stdout)) == 1
    done = search(env, "introuvable")
    assert (done.returncode, done.stdout, done.stderr.strip()) == (0, "", "no match")


@pytest.mark.parametrize("args, message", [
    (['"*"'], "no word to search for"),
    (["permis", "--limit", "0"], "limit must be"),
    (["permis", "--state", "EN-COURS"], "unknown state"),
])
def test_bad_input_is_one_clear_line_and_exit_2(env: dict[str, str], args: list[str], message: str) -> None:
    done = search(env, *args)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: bad search:") and message in done.stderr
    assert "Traceback" not in done.stderr
