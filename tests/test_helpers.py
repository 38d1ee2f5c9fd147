"""The small shared helpers: collector.clock, collector.jsonable, config's secret list and masker."""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import UTC, date, datetime, timedelta, timezone
from enum import Enum
from pathlib import Path

from collector.clock import as_utc, utcnow
from collector.config import MODES, SECRET_SETTINGS, Mode, SecretMask, Settings, mask
from collector.jsonable import jsonable


def test_clock_gives_aware_utc() -> None:
    assert utcnow().tzinfo is UTC
    assert as_utc(datetime(2026, 1, 1, 12)) == datetime(2026, 1, 1, 12, tzinfo=UTC)
    paris = datetime(2026, 1, 1, 13, tzinfo=timezone(timedelta(hours=1)))
    assert as_utc(paris) == datetime(2026, 1, 1, 12, tzinfo=UTC) and as_utc(paris).tzinfo is UTC


def test_jsonable_turns_dates_enums_and_containers_into_json_types() -> None:
    class Colour(Enum):
        RED = "red"

    value = {1: (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), date(2026, 1, 2)), "c": Colour.RED,
             "s": frozenset({Path("/x")}), "n": None, "f": 1.5}
    out = jsonable(value)
    assert out == {"1": ["2026-01-02T03:04:05+00:00", "2026-01-02"], "c": "red", "s": ["/x"], "n": None, "f": 1.5}
    assert json.loads(json.dumps(out)) == out


def test_one_secret_list_feeds_settings_and_the_masker() -> None:
    env = {name: f"value-of-{field}" for field, name in SECRET_SETTINGS.items()}
    settings = Settings.from_env({**env, "LEGIFRANCE_CLIENT_ID": "client", "SUPABASE_URL": "https://x.supabase.co"})
    assert sorted(settings.secrets()) == sorted(f"value-of-{field}" for field in SECRET_SETTINGS)
    shown = repr(settings)
    assert not any(secret in shown for secret in settings.secrets())
    assert {f.name for f in fields(Settings) if not f.repr} == set(SECRET_SETTINGS)  # the same list
    text = "url?key=a%2Bb&other=a+b and a+b"
    assert mask(text, ["a+b"]) == "url?key=***&other=*** and ***"
    assert SecretMask([])("nothing to hide") == "nothing to hide"
    assert MODES == tuple(m.value for m in Mode)
