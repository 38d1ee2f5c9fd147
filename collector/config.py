"""Settings: one frozen dataclass read from the environment; secrets masked in repr."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from urllib.parse import urlparse


class Mode(str, Enum):
    """Collection mode."""

    MASSIVE = "MASSIVE"
    MAINTENANCE = "MAINTENANCE"

    def __str__(self) -> str:
        return self.value


class ConfigError(ValueError):
    """A configuration value is missing or malformed (message names the variable)."""


class InvalidMode(ValueError):
    """A mode that is neither MASSIVE nor MAINTENANCE."""


def parse_mode(value: object) -> Mode:
    """Strictly parse a mode: exactly "MASSIVE" or "MAINTENANCE", else InvalidMode."""
    if isinstance(value, Mode):
        return value
    if isinstance(value, str) and value in Mode.__members__:
        return Mode(value)
    shown = repr(value)[:40]
    raise InvalidMode(f"invalid mode {shown}: expected one of 'MASSIVE', 'MAINTENANCE'")


def is_code_id(value: str) -> bool:
    """A LEGITEXT id: LEGITEXT + 12 digits."""
    return value.startswith("LEGITEXT") and len(value) == 20 and value[8:].isdigit()


PRODUCTION_OAUTH_URL = "https://oauth.piste.gouv.fr/api/oauth/token"
PRODUCTION_API_BASE_URL = "https://api.piste.gouv.fr/dila/legifrance/lf-engine-app"
DEMO_OAUTH_URL = "http://demo.invalid/api/oauth/token"
DEMO_API_BASE_URL = "http://demo.invalid/dila/legifrance/lf-engine-app"
DILA_DUMP_URL = "https://echanges.dila.gouv.fr/OPENDATA/LEGI/"
DEMO_DUMP_URL = "http://demo.invalid/OPENDATA/LEGI/"  # the in-process emulator's dump folder

# The original service's five priority codes, by intent (titles always come from the API).
MAINTENANCE_CODES: tuple[str, ...] = (
    "LEGITEXT000006074075",  # urbanisme
    "LEGITEXT000006074096",  # construction et habitation
    "LEGITEXT000006074220",  # environnement
    "LEGITEXT000006074236",  # patrimoine
    "LEGITEXT000006070633",  # collectivités territoriales
)
MASSIVE_CODES: tuple[str, ...] = MAINTENANCE_CODES + (
    "LEGITEXT000006070721",  # civil
    "LEGITEXT000006070719",  # pénal
    "LEGITEXT000005634379",  # commerce
    "LEGITEXT000006072050",  # travail
    "LEGITEXT000006070716",  # procédure civile
    "LEGITEXT000006071154",  # procédure pénale
    "LEGITEXT000006070933",  # justice administrative
    "LEGITEXT000006072665",  # santé publique
    "LEGITEXT000006071191",  # éducation
    "LEGITEXT000006073189",  # sécurité sociale
    "LEGITEXT000006071367",  # rural
    "LEGITEXT000006073984",  # assurances
    "LEGITEXT000006069565",  # consommation
    "LEGITEXT000006069577",  # général des impôts
    "LEGITEXT000006072026",  # monétaire et financier
)

_SECRET_FIELDS = frozenset(
    {"client_secret", "supabase_key", "dashboard_password", "api_token"}
)


def _secret() -> str | None:
    return field(default=None, repr=False)


@dataclass(frozen=True)
class Settings:
    """Everything the collector reads from the environment."""

    state_file: Path = Path("/tmp/scheduler_state.json")
    enable_scheduler: bool = False
    default_mode: Mode = Mode.MAINTENANCE
    client_id: str | None = None
    client_secret: str | None = _secret()
    oauth_url: str = PRODUCTION_OAUTH_URL
    api_base_url: str = PRODUCTION_API_BASE_URL
    max_requests_per_second: int = 15
    max_requests_per_hour: int = 24_000
    max_daily_requests: int = 280_000
    max_in_flight: int = 8
    supabase_url: str | None = None
    supabase_key: str | None = _secret()
    db_path: Path = Path("data/collector.sqlite3")
    dump_cache_dir: Path = Path("data/dumps")  # downloaded DILA LEGI archives
    source: str = "api"  # COLLECTOR_SOURCE: "api" (PISTE / the demo API) or "dumps" (DILA archives)
    dump_url: str | None = None  # DUMP_URL: the dump folder; None = DILA's (the emulator's in demo)
    maintenance_codes: tuple[str, ...] = MAINTENANCE_CODES
    massive_codes: tuple[str, ...] = MASSIVE_CODES
    maintenance_interval_minutes: float = 120.0
    massive_interval_minutes: float = 10.0
    min_article_chars: int = 100
    lease_ttl_seconds: float = 30.0  # how long a crashed collector's lease blocks a successor
    dashboard_password: str | None = _secret()
    api_token: str | None = _secret()
    log_level: str = "INFO"
    log_format: str | None = None  # None = console on a TTY, json otherwise
    on_render: bool = False

    # ---- derived -------------------------------------------------------------------------
    @property
    def is_demo(self) -> bool:
        """No PISTE credentials: the in-process emulator is the source."""
        return not (self.client_id and self.client_secret)

    @property
    def source_label(self) -> str:
        """DEMO, PISTE sandbox, PISTE production, or the custom API host."""
        if self.is_demo:
            return "DEMO"
        host = urlparse(self.api_base_url).hostname or ""
        if host.startswith("sandbox-"):
            return "PISTE sandbox"
        if host == "api.piste.gouv.fr":
            return "PISTE production"
        return f"custom API ({host})"

    @property
    def dump_folder(self) -> str:
        """Where MAINTENANCE / MASSIVE look for archives when COLLECTOR_SOURCE=dumps."""
        if self.dump_url:
            return self.dump_url
        return DEMO_DUMP_URL if self.is_demo else DILA_DUMP_URL

    @property
    def uses_supabase(self) -> bool:
        return bool(self.supabase_url and self.supabase_key)

    @property
    def store_label(self) -> str:
        if self.uses_supabase:
            return f"Supabase ({urlparse(self.supabase_url or '').hostname})"
        return f"SQLite ({self.db_path})"

    def secrets(self) -> tuple[str, ...]:
        """The secret values set, for log and error masking."""
        values = (getattr(self, name) for name in _SECRET_FIELDS)
        return tuple(v for v in values if v)

    def codes_for(self, mode: Mode) -> tuple[str, ...]:
        return self.massive_codes if mode is Mode.MASSIVE else self.maintenance_codes

    def interval_seconds(self, mode: Mode) -> float:
        minutes = (
            self.massive_interval_minutes
            if mode is Mode.MASSIVE
            else self.maintenance_interval_minutes
        )
        return minutes * 60.0

    # ---- construction --------------------------------------------------------------------
    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the environment; raise ConfigError naming the bad variable."""
        e = dict(os.environ if env is None else env)

        def get(name: str) -> str | None:
            value = e.get(name)
            return value.strip() if value and value.strip() else None

        def number(name: str, default: float, kind: type, minimum: float) -> float:
            raw = get(name)
            if raw is None:
                return default
            try:
                value = kind(raw)
            except ValueError:
                raise ConfigError(f"{name} must be a {kind.__name__}, got {raw[:20]!r}") from None
            if value < minimum:
                raise ConfigError(f"{name} must be >= {minimum}, got {value}")
            return value

        def flag(name: str, default: bool) -> bool:
            raw = get(name)
            if raw is None:
                return default
            if raw.lower() in {"1", "true", "yes", "on"}:
                return True
            if raw.lower() in {"0", "false", "no", "off"}:
                return False
            raise ConfigError(f"{name} must be true or false, got {raw[:20]!r}")

        def codes(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
            raw = get(name)
            if raw is None:
                return default
            items = tuple(dict.fromkeys(c.strip() for c in raw.split(",") if c.strip()))
            bad = [c for c in items if not is_code_id(c)]
            if bad or not items:
                raise ConfigError(
                    f"{name} must be comma-separated LEGITEXT ids (LEGITEXT + 12 digits); bad: {bad[:3]}"
                )
            return items

        mode_raw = get("SIPHONNAGE_MODE")
        try:
            mode = parse_mode(mode_raw.upper()) if mode_raw else Mode.MAINTENANCE
        except InvalidMode as exc:
            raise ConfigError(f"SIPHONNAGE_MODE: {exc}") from None

        source = (get("COLLECTOR_SOURCE") or "api").lower()
        if source not in {"api", "dumps"}:
            raise ConfigError(f"COLLECTOR_SOURCE must be api or dumps, got {source[:20]!r}")

        log_format = get("LOG_FORMAT")
        if log_format is not None and log_format.lower() not in {"json", "console"}:
            raise ConfigError(f"LOG_FORMAT must be json or console, got {log_format[:20]!r}")

        return cls(
            state_file=Path(get("SCHEDULER_STATE_FILE") or "/tmp/scheduler_state.json"),
            enable_scheduler=flag("ENABLE_SCHEDULER", False),
            default_mode=mode,
            client_id=get("LEGIFRANCE_CLIENT_ID"),
            client_secret=get("LEGIFRANCE_CLIENT_SECRET"),
            oauth_url=get("LEGIFRANCE_OAUTH_URL") or PRODUCTION_OAUTH_URL,
            api_base_url=(get("LEGIFRANCE_API_BASE_URL") or PRODUCTION_API_BASE_URL).rstrip("/"),
            max_requests_per_second=int(number("LEGIFRANCE_MAX_REQUESTS_PER_SECOND", 15, int, 1)),
            max_requests_per_hour=int(number("LEGIFRANCE_MAX_REQUESTS_PER_HOUR", 24_000, int, 1)),
            max_daily_requests=int(number("MAX_DAILY_REQUESTS", 280_000, int, 1)),
            max_in_flight=int(number("LEGIFRANCE_MAX_IN_FLIGHT", 8, int, 1)),
            supabase_url=get("SUPABASE_URL"),
            supabase_key=get("SUPABASE_SERVICE_ROLE_KEY"),
            db_path=Path(get("COLLECTOR_DB") or "data/collector.sqlite3"),
            dump_cache_dir=Path(get("DUMP_CACHE_DIR") or "data/dumps"),
            source=source,
            dump_url=get("DUMP_URL"),
            maintenance_codes=codes("MAINTENANCE_CODES", MAINTENANCE_CODES),
            massive_codes=codes("MASSIVE_CODES", MASSIVE_CODES),
            maintenance_interval_minutes=float(number("MAINTENANCE_INTERVAL_MINUTES", 120.0, float, 0)),
            massive_interval_minutes=float(number("MASSIVE_INTERVAL_MINUTES", 10.0, float, 0)),
            min_article_chars=int(number("MIN_ARTICLE_CHARS", 100, int, 0)),
            lease_ttl_seconds=float(number("COLLECTOR_LEASE_TTL_SECONDS", 30.0, float, 1)),
            dashboard_password=get("DASHBOARD_PASSWORD"),
            api_token=get("COLLECTOR_API_TOKEN"),
            log_level=(get("LOG_LEVEL") or "INFO").upper(),
            log_format=log_format.lower() if log_format else None,
            on_render=bool(get("RENDER")),
        )
