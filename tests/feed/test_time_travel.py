"""Time travel on real answers: the Code des instruments monétaires et des médailles served as
it stood on 1 June 2000 (older versions in force, articles since repealed, one article left out
as not yet created), then as captured in 2023; `python -m collector run --once` harvests each
over a real socket and `python -m collector changes` prints the change log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.feed.real_api import API_PREFIX, MONNAIES, TOKEN_PATH, RealApi, RealApiServer

BEFORE = date(2000, 6, 1)
NEW_ARTICLE = "LEGIARTI000006398351"  # article 39: left out of the earlier code


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "collector", *args], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def run_once(env: dict[str, str]) -> dict[str, object]:
    return json.loads(cli(env, "run", "--once", "--mode", "MASSIVE").stdout.splitlines()[-1])


def changes(env: dict[str, str], since: int = 0) -> list[dict[str, object]]:
    return [json.loads(line) for line in cli(env, "changes", "--since", str(since)).stdout.splitlines()]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("LEGIFRANCE_", "SUPABASE_", "MAINTENANCE_", "MASSIVE_", "MAX_DAILY"))}
    base.update(PYTHONPATH=str(REPO), COLLECTOR_DB=str(tmp_path / "collector.sqlite3"), LOG_FORMAT="json",
                SCHEDULER_STATE_FILE=str(tmp_path / "state.json"), MASSIVE_CODES=MONNAIES,
                LEGIFRANCE_CLIENT_ID="real-api-client", LEGIFRANCE_CLIENT_SECRET="real-api-secret",
                LEGIFRANCE_MAX_REQUESTS_PER_SECOND="200")
    return base


def test_a_code_that_changed_makes_exactly_its_events(real_fixtures: Path, env: dict[str, str]) -> None:
    api = RealApi(real_fixtures, not_yet_created=frozenset({NEW_ARTICLE}))
    api.as_of = BEFORE
    then = api.in_force_ids()
    with RealApiServer(api) as server:
        env.update(LEGIFRANCE_OAUTH_URL=server.url + TOKEN_PATH, LEGIFRANCE_API_BASE_URL=server.url + API_PREFIX)

        first = run_once(env)
        # every version in force in 2000 is long enough to be stored
        assert (first["stored"], first["failed"], first["events"]) == (
            len(then), 0, {"added": len(then), "modified": 0, "repealed": 0, "corrected": 0})
        added = changes(env)
        assert {c["id"] for c in added} == then and {c["kind"] for c in added} == {"added"}

        api.as_of = None  # the code as captured
        second = run_once(env)
        events = changes(env, since=len(added))
        seen = [(c["kind"], c["id"], c["previous_id"], c["etat"]) for c in events]
        # as the fetched articles are committed (in the order their answers came back): the
        # versions that came into force, each retiring the one it replaces, and the new article
        assert sorted(seen[:3]) == [
            ("added", NEW_ARTICLE, None, "VIGUEUR"),
            ("modified", "LEGIARTI000006398192", "LEGIARTI000006398191", "VIGUEUR"),
            ("modified", "LEGIARTI000006398239", "LEGIARTI000006398238", "VIGUEUR"),
        ]
        assert seen[3:] == [
            # after the complete walk, in id order: what left the TOC
            ("repealed", "LEGIARTI000006398122", None, "ABROGE"),
            ("repealed", "LEGIARTI000006398166", None, "ABROGE"),
            # its successor LEGIARTI000020630534 has 98 characters: rejected, not stored
            ("repealed", "LEGIARTI000006398214", None, "MODIFIE"),
            ("repealed", "LEGIARTI000006398290", None, "ABROGE"),
            ("repealed", "LEGIARTI000006398298", None, "ABROGE"),
            ("repealed", "LEGIARTI000006398332", None, "ABROGE"),
            ("repealed", "LEGIARTI000006398335", None, "ABROGE"),
            ("repealed", "LEGIARTI000006398341", None, "ABROGE"),
            ("repealed", "LEGIARTI000006398344", None, "ABROGE"),
            ("repealed", "LEGIARTI000006398348", None, "ABROGE"),
            ("repealed", "LEGIARTI000006398349", None, "ABROGE"),
            ("repealed", "LEGIARTI000006398350", None, "ABROGE"),
        ]
        assert second["events"] == {"added": 1, "modified": 2, "repealed": 12, "corrected": 0}
        assert {c["run_id"] for c in events} == {str(int(added[0]["run_id"]) + 1)}
        assert all(c["code_id"] == MONNAIES and c["cid"] for c in events)
        by_id = {c["id"]: c for c in events}
        assert by_id[NEW_ARTICLE]["num"] == "39"
        assert by_id["LEGIARTI000006398192"]["cid"] == "LEGIARTI000006398191"

        served = len(api.served)
        third = run_once(env)
        assert third["events"] == {"added": 0, "modified": 0, "repealed": 0, "corrected": 0}
        assert changes(env, since=len(added) + len(events)) == []
        assert api.served[served:] == ["toc"]  # nothing refetched, the rejected short version neither
