"""Shared test helpers: locating ../shared, skipping (locally) or failing (in CI) on missing tools."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures" / "legifrance-real"
IN_CI = os.environ.get("CI", "").lower() == "true"
# Variables a test environment drops so the demo source and SQLite apply, whatever the shell has.
COLLECTOR_ENV = (
    "LEGIFRANCE_CLIENT_ID",
    "LEGIFRANCE_CLIENT_SECRET",
    "SUPABASE_URL",
    "SUPABASE_SERVICE_ROLE_KEY",
    "DASHBOARD_PASSWORD",
    "COLLECTOR_API_TOKEN",
    "RENDER",
    "ENABLE_SCHEDULER",
    "SIPHONNAGE_MODE",
    "MAINTENANCE_CODES",
    "MASSIVE_CODES",
    "KEEP_AWAKE",
    "RENDER_EXTERNAL_URL",
)


def require(condition: bool, reason: str) -> None:
    """Skip with `reason` on a user's machine; fail in CI, where .ci/run provides everything."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def real_fixtures() -> Path:
    """../shared/fixtures/legifrance-real (real PISTE responses)."""
    require(FIXTURES.is_dir(), f"real API fixtures not found at {FIXTURES} (../shared is absent)")
    return FIXTURES
