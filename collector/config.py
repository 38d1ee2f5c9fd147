"""Settings: one frozen dataclass read from the environment; secrets masked in repr."""

from __future__ import annotations

import ipaddress
import math
import os
import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from urllib.parse import quote, quote_plus, urlparse


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


def mode_from_text(value: object) -> Mode:
    """A mode as a person types it (the CLI, SIPHONNAGE_MODE, the mode route): surrounding
    spaces and the case ignored ("massive" is MASSIVE); else InvalidMode."""
    return parse_mode(value.strip().upper() if isinstance(value, str) else value)


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

MIN_SECRET_LENGTH = 12  # DASHBOARD_PASSWORD, COLLECTOR_API_TOKEN
_CODE_ID = re.compile(r"LEGITEXT[0-9]{12}", re.ASCII)


def is_code_id(value: object) -> bool:
    """A LEGITEXT id: `LEGITEXT` + 12 ASCII digits (no other script's digits, no spaces)."""
    return isinstance(value, str) and _CODE_ID.fullmatch(value) is not None


def is_loopback_host(host: str | None) -> bool:
    """localhost, 127.0.0.0/8 or ::1: plain http stays on this machine."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


MODES: tuple[str, ...] = tuple(m.value for m in Mode)

# The secret settings (field -> environment variable): their values never reach a log line, the
# page, an exception message or the repr of Settings.
SECRET_SETTINGS: dict[str, str] = {
    "client_secret": "LEGIFRANCE_CLIENT_SECRET",
    "supabase_key": "SUPABASE_SERVICE_ROLE_KEY",
    "dashboard_password": "DASHBOARD_PASSWORD",
    "api_token": "COLLECTOR_API_TOKEN",
}
MASK = "***"


class SecretMask:
    """Replaces every given secret value, and its URL-encoded forms, with "***"."""

    def __init__(self, secrets: Iterable[str]) -> None:
        variants = {v for s in secrets if s for v in (s, quote(s, safe=""), quote_plus(s))}
        ordered = sorted(variants, key=len, reverse=True)  # longest first: no partial leftovers
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __call__(self, text: str) -> str:
        return self._pattern.sub(MASK, text) if self._pattern else text


def mask(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret value (and its URL-encoded forms) replaced by "***"."""
    return SecretMask(secrets)(text)


DEFAULT_EXPORT_PATH_TEMPLATE = "legifrance/{category}/{id}.json"
EXPORT_PATH_FIELDS = ("category", "code_id", "cid", "id")
_BUCKET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_QUEUE_STATUS = re.compile(r"[A-Za-z0-9_-]{1,40}")


def check_path_template(template: str) -> None:
    """The template of export file paths: only {category}, {code_id}, {cid} and {id}
    (which it must contain: one file per article version), a relative path without
    empty, '.' or '..' segments. ValueError says what is wrong."""
    names: list[str] = []
    for _, name, spec, conversion in string.Formatter().parse(template):  # ValueError on a lone brace
        if name is None:
            continue
        if name not in EXPORT_PATH_FIELDS or spec or conversion:
            allowed = ", ".join(f"{{{f}}}" for f in EXPORT_PATH_FIELDS)
            raise ValueError(f"unknown placeholder {{{name}}} (or a format spec): use only {allowed}")
        names.append(name)
    if "id" not in names:
        raise ValueError("the path must contain {id} (one file per article version)")
    segments = template.split("/")
    if any(s in ("", ".", "..") for s in segments):
        raise ValueError("the path must be relative, without empty, '.' or '..' segments")




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
    # Every API attempt is bounded in total time (body read included) and in bytes (streamed).
    token_timeout_seconds: float = 30.0
    toc_timeout_seconds: float = 300.0
    article_timeout_seconds: float = 60.0  # getArticle, and the other small JSON endpoints
    max_body_bytes: int = 4 << 20  # token, article and error bodies
    max_toc_bytes: int = 64 << 20
    supabase_url: str | None = None
    supabase_key: str | None = _secret()
    db_path: Path = Path("data/collector.sqlite3")
    dump_cache_dir: Path = Path("data/dumps")  # downloaded DILA LEGI archives
    dump_readers: int = 0  # DUMP_READERS: processes reading a global archive; 0 = 2 when 2 CPUs are usable, else 1
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
    allow_insecure_http: bool = False  # plain http:// accepted for non-loopback hosts
    on_render: bool = False
    export_bucket: str | None = None  # Storage bucket of the files_queue export; None = off
    export_path_template: str = DEFAULT_EXPORT_PATH_TEMPLATE
    export_retired_status: str = "retired"
    keep_awake: bool = False  # KEEP_AWAKE: ping external_url + /healthz every 10 min (collector/keepawake.py)
    external_url: str | None = None  # RENDER_EXTERNAL_URL, set by Render: the service's public URL

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
        values = (getattr(self, name) for name in SECRET_SETTINGS)
        return tuple(v for v in values if v)

    @property
    def controls_locked(self) -> bool:
        """On Render without DASHBOARD_PASSWORD the page is public: its controls are disabled."""
        return self.on_render and not self.dashboard_password

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
            if not math.isfinite(value) or value < minimum:  # nan compares False to everything
                raise ConfigError(f"{name} must be a finite number >= {minimum}, got {raw[:20]!r}")
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

        def secret(name: str) -> str | None:
            value = get(name)
            if value is not None and len(value) < MIN_SECRET_LENGTH:
                raise ConfigError(
                    f"{name} is too short ({len(value)} characters): use at least {MIN_SECRET_LENGTH}, "
                    "a short secret on a public URL is guessed by a script"
                )
            return value

        insecure_ok = flag("ALLOW_INSECURE_HTTP", False)

        def url(name: str) -> str | None:
            value = get(name)
            if value is None:
                return None
            parts = urlparse(value)
            if parts.scheme not in {"http", "https"} or not parts.hostname:  # the value may hold a password
                raise ConfigError(f"{name} must be an https:// URL with a host name (got scheme {parts.scheme!r})")
            if parts.scheme == "http" and not insecure_ok and not is_loopback_host(parts.hostname):
                raise ConfigError(
                    f"{name} uses plain http:// to {parts.hostname}: credentials and data would cross "
                    "the network unencrypted; use https:// (or set ALLOW_INSECURE_HTTP=true)"
                )
            return value

        mode_raw = get("SIPHONNAGE_MODE")
        try:
            mode = mode_from_text(mode_raw) if mode_raw else Mode.MAINTENANCE
        except InvalidMode as exc:
            raise ConfigError(f"SIPHONNAGE_MODE: {exc}") from None

        source = (get("COLLECTOR_SOURCE") or "api").lower()
        if source not in {"api", "dumps"}:
            raise ConfigError(f"COLLECTOR_SOURCE must be api or dumps, got {source[:20]!r}")

        log_format = get("LOG_FORMAT")
        if log_format is not None and log_format.lower() not in {"json", "console"}:
            raise ConfigError(f"LOG_FORMAT must be json or console, got {log_format[:20]!r}")

        client_id, client_secret = get("LEGIFRANCE_CLIENT_ID"), get(SECRET_SETTINGS["client_secret"])
        if bool(client_id) != bool(client_secret):  # half a credential is a typo, not a wish for the demo
            present, missing = (
                ("LEGIFRANCE_CLIENT_ID", "LEGIFRANCE_CLIENT_SECRET") if client_id
                else ("LEGIFRANCE_CLIENT_SECRET", "LEGIFRANCE_CLIENT_ID")
            )
            raise ConfigError(
                f"{present} is set but {missing} is not: set both for PISTE, or neither for the offline demo"
            )

        supabase_url, supabase_key = url("SUPABASE_URL"), get(SECRET_SETTINGS["supabase_key"])
        if bool(supabase_url) != bool(supabase_key):  # SQLite on Render's disk would be lost at the next deploy
            present, missing = (
                ("SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY") if supabase_url
                else ("SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_URL")
            )
            raise ConfigError(
                f"{present} is set but {missing} is not: set both for Supabase, or neither for SQLite"
            )
        export_bucket = get("EXPORT_BUCKET")
        if export_bucket is not None:
            if not _BUCKET_NAME.fullmatch(export_bucket):
                raise ConfigError(
                    f"EXPORT_BUCKET must be a Storage bucket name (letters, digits, '.', '_', '-'), "
                    f"got {export_bucket[:40]!r}"
                )
            if not (supabase_url and supabase_key):
                raise ConfigError(
                    "EXPORT_BUCKET needs the Supabase settings: set SUPABASE_URL and "
                    "SUPABASE_SERVICE_ROLE_KEY (the bucket and files_queue live in that project)"
                )
        path_template = get("EXPORT_PATH_TEMPLATE") or DEFAULT_EXPORT_PATH_TEMPLATE
        try:
            check_path_template(path_template)
        except ValueError as exc:
            raise ConfigError(f"EXPORT_PATH_TEMPLATE {path_template[:80]!r}: {exc}") from None
        retired_status = get("EXPORT_RETIRED_STATUS") or "retired"
        if not _QUEUE_STATUS.fullmatch(retired_status) or retired_status == "pending":
            raise ConfigError(
                "EXPORT_RETIRED_STATUS must be 1-40 letters, digits, '_' or '-', and not 'pending', "
                f"got {retired_status[:40]!r}"
            )
        dump_readers = int(number("DUMP_READERS", 0, int, 0))
        if dump_readers > 8:  # each is a process of ~40 MB
            raise ConfigError(f"DUMP_READERS must be 0 (automatic) to 8, got {dump_readers}")
        keep_awake = flag("KEEP_AWAKE", False)
        external_url = get("RENDER_EXTERNAL_URL")
        if keep_awake and external_url is not None:  # only read when there is something to ping
            parsed = urlparse(external_url)
            if parsed.scheme not in {"http", "https"} or not parsed.hostname:
                raise ConfigError(f"RENDER_EXTERNAL_URL must be an http(s) URL, got {external_url[:60]!r}")

        return cls(
            state_file=Path(get("SCHEDULER_STATE_FILE") or "/tmp/scheduler_state.json"),
            enable_scheduler=flag("ENABLE_SCHEDULER", False),
            default_mode=mode,
            client_id=client_id,
            client_secret=client_secret,
            oauth_url=url("LEGIFRANCE_OAUTH_URL") or PRODUCTION_OAUTH_URL,
            api_base_url=(url("LEGIFRANCE_API_BASE_URL") or PRODUCTION_API_BASE_URL).rstrip("/"),
            max_requests_per_second=int(number("LEGIFRANCE_MAX_REQUESTS_PER_SECOND", 15, int, 1)),
            max_requests_per_hour=int(number("LEGIFRANCE_MAX_REQUESTS_PER_HOUR", 24_000, int, 1)),
            max_daily_requests=int(number("MAX_DAILY_REQUESTS", 280_000, int, 1)),
            max_in_flight=int(number("LEGIFRANCE_MAX_IN_FLIGHT", 8, int, 1)),
            token_timeout_seconds=float(number("LEGIFRANCE_TOKEN_TIMEOUT_SECONDS", 30.0, float, 0.1)),
            toc_timeout_seconds=float(number("LEGIFRANCE_TOC_TIMEOUT_SECONDS", 300.0, float, 0.1)),
            article_timeout_seconds=float(number("LEGIFRANCE_ARTICLE_TIMEOUT_SECONDS", 60.0, float, 0.1)),
            max_body_bytes=int(number("LEGIFRANCE_MAX_BODY_BYTES", 4 << 20, int, 1024)),
            max_toc_bytes=int(number("LEGIFRANCE_MAX_TOC_BYTES", 64 << 20, int, 1024)),
            supabase_url=supabase_url,
            supabase_key=supabase_key,
            db_path=Path(get("COLLECTOR_DB") or "data/collector.sqlite3"),
            dump_cache_dir=Path(get("DUMP_CACHE_DIR") or "data/dumps"),
            dump_readers=dump_readers,
            source=source,
            dump_url=get("DUMP_URL"),
            maintenance_codes=codes("MAINTENANCE_CODES", MAINTENANCE_CODES),
            massive_codes=codes("MASSIVE_CODES", MASSIVE_CODES),
            maintenance_interval_minutes=float(number("MAINTENANCE_INTERVAL_MINUTES", 120.0, float, 0)),
            massive_interval_minutes=float(number("MASSIVE_INTERVAL_MINUTES", 10.0, float, 0)),
            min_article_chars=int(number("MIN_ARTICLE_CHARS", 100, int, 0)),
            lease_ttl_seconds=float(number("COLLECTOR_LEASE_TTL_SECONDS", 30.0, float, 1)),
            dashboard_password=secret(SECRET_SETTINGS["dashboard_password"]),
            api_token=secret(SECRET_SETTINGS["api_token"]),
            log_level=(get("LOG_LEVEL") or "INFO").upper(),
            log_format=log_format.lower() if log_format else None,
            allow_insecure_http=insecure_ok,
            on_render=bool(get("RENDER")),
            export_bucket=export_bucket,
            export_path_template=path_template,
            export_retired_status=retired_status,
            keep_awake=keep_awake,
            external_url=external_url.rstrip("/") if external_url else None,
        )
