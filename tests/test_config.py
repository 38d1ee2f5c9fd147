"""Settings.from_env: the security checks made at start (secret lengths, code ids, http://)."""

from __future__ import annotations

import pytest

from collector.config import ConfigError, Settings, is_code_id, is_loopback_host

OK_SECRET = "twelve-chars"  # exactly 12


@pytest.mark.parametrize("name", ["DASHBOARD_PASSWORD", "COLLECTOR_API_TOKEN"])
def test_short_password_or_token_is_a_configuration_error(name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({name: "eleven-char"})
    message = str(caught.value)
    assert name in message and "too short" in message and "at least 12" in message
    assert "eleven-char" not in message, "the value itself is never echoed"
    field = "dashboard_password" if name == "DASHBOARD_PASSWORD" else "api_token"
    assert getattr(Settings.from_env({name: OK_SECRET}), field) == OK_SECRET
    assert getattr(Settings.from_env({name: "   "}), field) is None, "blank means unset"


def test_code_ids_accept_ascii_digits_only() -> None:
    ids = "LEGITEXT000006070721, LEGITEXT000006070719"
    assert Settings.from_env({"MASSIVE_CODES": ids}).massive_codes == ("LEGITEXT000006070721", "LEGITEXT000006070719")
    assert not is_code_id("LEGITEXT000006070721\n")
    for bad in ("LEGITEXT٠٠٠٠٠٦٠٧٠٧٢١", "LEGITEXT00000607072１", "LEGITEXT00000607072²", "LEGITEXT00000607072",
                "legitext000006070721"):
        assert not is_code_id(bad), bad
        with pytest.raises(ConfigError, match="MAINTENANCE_CODES"):
            Settings.from_env({"MAINTENANCE_CODES": f"LEGITEXT000006070721,{bad}"})


@pytest.mark.parametrize("name", ["LEGIFRANCE_OAUTH_URL", "LEGIFRANCE_API_BASE_URL", "SUPABASE_URL"])
def test_plain_http_is_refused_for_remote_hosts_unless_allowed(name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({name: "http://api.example.org/x"})
    assert name in str(caught.value) and "ALLOW_INSECURE_HTTP" in str(caught.value)
    for local in ("http://127.0.0.1:8765/x", "http://localhost:8765/x", "http://[::1]:8765/x", "https://api.example.org/x"):
        Settings.from_env({name: local})
    allowed = Settings.from_env({name: "http://api.example.org/x", "ALLOW_INSECURE_HTTP": "true"})
    assert allowed.allow_insecure_http is True


def test_a_url_that_is_not_http_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError, match="SUPABASE_URL must be an https:// URL") as caught:
        Settings.from_env({"SUPABASE_URL": "postgresql://postgres:s3cret-pw@db.example.co:5432/postgres"})
    assert "s3cret-pw" not in str(caught.value)


def test_loopback_hosts() -> None:
    assert [is_loopback_host(h) for h in ("localhost", "127.0.0.1", "127.9.9.9", "::1")] == [True] * 4
    assert [is_loopback_host(h) for h in ("10.0.0.1", "example.org", "127.0.0.1.nip.io", "", None)] == [False] * 5


@pytest.mark.parametrize(
    ("present", "missing"),
    [("LEGIFRANCE_CLIENT_ID", "LEGIFRANCE_CLIENT_SECRET"), ("LEGIFRANCE_CLIENT_SECRET", "LEGIFRANCE_CLIENT_ID")],
)
def test_half_a_credential_is_a_configuration_error_not_the_demo(present: str, missing: str) -> None:
    value = "half-credential-4e7a9c"
    for env in ({present: value}, {present: value, missing: "   "}):
        with pytest.raises(ConfigError) as caught:
            Settings.from_env(env)
        message = str(caught.value)
        assert present in message and missing in message and "neither for the offline demo" in message
        assert value not in message
    both = Settings.from_env({"LEGIFRANCE_CLIENT_ID": "my-app", "LEGIFRANCE_CLIENT_SECRET": value})
    assert not both.is_demo
    assert Settings.from_env({}).is_demo


@pytest.mark.parametrize("text", ["massive", " Massive ", "MASSIVE"])
def test_mode_is_read_as_typed(text: str) -> None:
    from collector.config import InvalidMode, Mode, mode_from_text

    assert mode_from_text(text) is Mode.MASSIVE
    assert Settings.from_env({"SIPHONNAGE_MODE": text}).default_mode is Mode.MASSIVE
    for bad in ("turbo", "", None, 1, "MASSIVE!"):
        with pytest.raises(InvalidMode):
            mode_from_text(bad)
