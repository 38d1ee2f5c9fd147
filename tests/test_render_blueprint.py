"""render.yaml is a valid Render Blueprint and keeps the deployment choices we rely on."""

from __future__ import annotations

import json
import tomllib
from typing import Any

import jsonschema
import pytest
import yaml

from tests.conftest import REPO, SHARED, require

SCHEMA = SHARED / "reference" / "render.schema.json"
SECRETS = {
    "LEGIFRANCE_CLIENT_ID",
    "LEGIFRANCE_CLIENT_SECRET",
    "SUPABASE_URL",
    "SUPABASE_SERVICE_ROLE_KEY",
    "DASHBOARD_PASSWORD",
    "COLLECTOR_API_TOKEN",
}


@pytest.fixture(scope="module")
def blueprint() -> dict[str, Any]:
    return yaml.safe_load((REPO / "render.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def service(blueprint: dict[str, Any]) -> dict[str, Any]:
    services = blueprint["services"]
    assert len(services) == 1, "one web service: the dashboard hosts the collector thread"
    return services[0]


def test_blueprint_matches_render_schema(blueprint: dict[str, Any]) -> None:
    require(SCHEMA.is_file(), f"Render schema not found at {SCHEMA} (../shared is absent)")
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(blueprint), key=str)
    assert not errors, [e.message for e in errors]


def test_web_service_runs_the_dashboard_app(service: dict[str, Any]) -> None:
    assert service["type"] == "web"
    assert service["runtime"] == "python"
    assert service["plan"] == "free"  # explicit: omitted means the paid "starter"
    assert service["buildCommand"] == "pip install -r requirements.txt"
    assert service["startCommand"] == (
        "streamlit run dashboard.py --server.port $PORT --server.address 0.0.0.0 --server.headless true"
    )
    assert service["healthCheckPath"] == "/healthz"  # the collector's own health (collector/health.py)
    # Render rejects a shutdown delay on free services (the schema does not say so).
    assert "maxShutdownDelaySeconds" not in service
    assert "disk" not in service and "preDeployCommand" not in service


def test_health_check_path_is_a_route_of_the_app(service: dict[str, Any]) -> None:
    from collector.health import PATH, health_routes

    assert service["healthCheckPath"] == PATH
    assert [r.path for r in health_routes()] == [PATH]


def test_env_vars_secrets_prompted_plain_values_quoted(service: dict[str, Any]) -> None:
    env = {item["key"]: item for item in service["envVars"]}
    assert env["PYTHON_VERSION"]["value"] == "3.11.7"
    for key in SECRETS:
        assert env[key] == {"key": key, "sync": False}, f"{key} must be a sync: false secret"
    for item in env.values():
        if "value" in item:
            assert isinstance(item["value"], str), f"{item['key']} must be a quoted string"
    assert env["ENABLE_SCHEDULER"]["value"] in {"true", "false"}
    assert "KEEP_AWAKE" not in env, "off unless the operator accepts its cost in free instance hours"


def test_streamlit_config_is_production_safe() -> None:
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    assert config["browser"]["gatherUsageStats"] is False
    assert config["client"]["toolbarMode"] == "viewer"  # no "Clear cache" for visitors
    assert config["server"]["fileWatcherType"] == "none"
    assert config["server"]["headless"] is True
