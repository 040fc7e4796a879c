"""Settings for every kolray process.

Read from, highest priority first: keyword arguments, environment variables with the ``KOLRAY_``
prefix, a config file (``KOLRAY_CONFIG``, else ``./kolray.toml`` when present; TOML or YAML), then
the defaults below. Invalid values stop the process at start-up with a message naming the setting
(see :func:`load_settings`).

RPC URLs of paid providers carry API keys in their path or query, so they are held as
``SecretStr`` and only ever shown through :func:`kolray.secrets.redact_url`; webhook URLs (the
token is the path, also on loopback) through :func:`kolray.secrets.redact_secret_url`. A malformed
URL is reported by its position in the setting, never echoed.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)

from kolray.secrets import redact_secret_url, redact_url

ENV_PREFIX = "KOLRAY_"
DEFAULT_RPC_URL = "http://127.0.0.1:8899"


def default_data_dir() -> Path:
    """``$KOLRAY_DATA_DIR`` or ``~/.kolray``: absolute, so Ray jobs with another working dir agree."""
    return Path(os.environ.get(f"{ENV_PREFIX}DATA_DIR", "~/.kolray")).expanduser().resolve()


class SettingsError(ValueError):
    """A setting has a bad value. The message names the setting as the user would type it."""


def _config_file() -> Path | None:
    explicit = os.environ.get(f"{ENV_PREFIX}CONFIG")
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise SettingsError(f"{ENV_PREFIX}CONFIG: config file {path} does not exist")
        return path
    local = Path("kolray.toml")
    return local if local.is_file() else None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        validate_default=True,
        case_sensitive=False,
    )

    # Where things live
    data_dir: Path = Field(default_factory=default_data_dir, description="Base directory for local state.")
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL. Default: SQLite file <data_dir>/kolray.db. PostgreSQL: "
        "postgresql+psycopg://user:pass@host/db",
    )
    storage_uri: str = Field(
        default="",
        description="Datasets, models, reports: a local directory (default <data_dir>/store) or s3://bucket/prefix.",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="Endpoint of an S3-compatible store (MinIO, moto); empty for AWS."
    )
    s3_region: str | None = Field(default=None, description="S3 region; default from the AWS environment.")

    # Chain access
    rpc_urls: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=lambda: [SecretStr(DEFAULT_RPC_URL)],
        description="Solana JSON-RPC endpoints, comma-separated or a JSON list; tried in order with failover.",
    )
    rpc_rps: float = Field(default=10.0, gt=0, description="Requests per second allowed per RPC endpoint.")
    rpc_burst: int = Field(default=10, ge=1, description="Token-bucket burst per RPC endpoint.")
    rpc_timeout_s: float = Field(default=20.0, gt=0, description="Per-request timeout.")
    rpc_max_retries: int = Field(default=6, ge=0, description="Retries on 429/5xx/timeouts before giving up.")
    rpc_batch_size: int = Field(
        default=100, ge=1, le=1000, description="getTransaction calls per JSON-RPC batch."
    )

    # Tracking
    poll_interval_s: float = Field(
        default=60.0, gt=0, description="Seconds between polls in continuous mode."
    )
    tracker_actors: int = Field(default=2, ge=1, description="Async poller actors (each holds many wallets).")
    backfill_days: float = Field(
        default=30.0, ge=0, description="History fetched on first sight of a wallet."
    )
    backfill_max_signatures: int = Field(
        default=5000, ge=0, description="Cap on first-sight history per wallet."
    )

    # Serving
    serve_host: str = Field(default="127.0.0.1", description="Ray Serve HTTP host.")
    serve_port: int = Field(default=8000, ge=1, le=65535, description="Ray Serve HTTP port.")
    api_key: SecretStr | None = Field(default=None, description="If set, admin routes need header X-API-Key.")
    webhook_urls: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="Alert webhooks (comma-separated); Discord/Telegram URLs detected."
    )

    # Alerts (kolray.alerts): rules evaluated on each tracked KOL's opening buys, webhook delivery
    alert_rules: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["p3x", "dh", "consensus"],
        description="Alert rules in use (comma-separated): p3x, dh, consensus.",
    )
    alert_p3x_threshold: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="p3x rule: minimum P(3x). Default: the token model's own threshold.",
    )
    alert_dh_min: float = Field(default=0.4, ge=-1, le=1, description="dh rule: minimum Diamond Hand score.")
    alert_dh_min_positions: int = Field(
        default=5, ge=1, description="dh rule: closed positions the KOL's DH score must rest on."
    )
    alert_consensus_kols: int = Field(
        default=3, ge=2, description="consensus rule: distinct KOLs buying the same token within the window."
    )
    alert_consensus_window_s: float = Field(default=3600.0, gt=0, description="consensus rule: the window.")
    alert_max_age_s: float = Field(
        default=3600.0,
        ge=0,
        description="Buys older than this (behind the newest swap) raise no alert, e.g. a new wallet's "
        "backfill; 0: no limit.",
    )
    alert_interval_s: float = Field(
        default=10.0, gt=0, description="`kolray alerts run`: seconds between evaluations."
    )
    webhook_timeout_s: float = Field(default=5.0, gt=0, description="Per webhook request.")
    webhook_max_attempts: int = Field(default=5, ge=1, description="Attempts per alert and webhook.")
    webhook_backoff_s: float = Field(
        default=2.0,
        ge=0,
        description="First retry delay; doubles each attempt (Retry-After wins when longer).",
    )

    # Logging
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["console", "json"] = "console"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("rpc_urls", "webhook_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("alert_rules", mode="before")
    @classmethod
    def _split_rules(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip().lower() for part in value.split(",") if part.strip()]
        return value

    @field_validator("alert_rules")
    @classmethod
    def _check_rules(cls, rules: list[str]) -> list[str]:
        known = ("p3x", "dh", "consensus")
        unknown = [rule for rule in rules if rule not in known]
        if unknown:
            raise ValueError(f"unknown alert rule(s) {unknown}: use {', '.join(known)}")
        return list(dict.fromkeys(rules))

    @field_validator("rpc_urls", "webhook_urls")
    @classmethod
    def _check_urls(cls, urls: list[SecretStr]) -> list[SecretStr]:
        for position, url in enumerate(urls, 1):
            try:
                parts = urlsplit(url.get_secret_value())
                valid = parts.scheme in ("http", "https") and bool(parts.hostname)
            except ValueError:
                valid = False
            if not valid:
                # Never the value itself: a malformed URL (``https//host/<token>``) has no part
                # that is safe to show but its scheme and host, when those parse.
                raise ValueError(
                    f"entry {position} of {len(urls)} is not an http(s) URL: "
                    f"{redact_secret_url(url.get_secret_value())}"
                )
        return urls

    @field_validator("storage_uri")
    @classmethod
    def _check_storage(cls, value: str) -> str:
        if value.startswith("s3://") and len(value) <= len("s3://"):
            raise ValueError("s3:// URI needs a bucket: s3://bucket/prefix")
        if "://" in value and not value.startswith(("s3://", "file://")):
            raise ValueError(f"unsupported scheme in {value!r}: use a local path or s3://bucket/prefix")
        return value

    @field_validator("database_url")
    @classmethod
    def _check_db(cls, value: str) -> str:
        if value and not value.startswith(("sqlite", "postgresql")):
            raise ValueError("only sqlite:/// and postgresql+psycopg:// URLs are supported")
        return value

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'kolray.db'}"
        if not self.storage_uri:
            self.storage_uri = str(self.data_dir / "store")
        elif self.storage_uri.startswith("file://"):
            self.storage_uri = self.storage_uri[len("file://") :]
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_file()
        if path is not None:
            if path.suffix in (".yaml", ".yml"):
                sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
            else:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    # Derived
    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def rpc_url_values(self) -> list[str]:
        """The raw URLs, keys included: hand them to clients only, never to logs."""
        return [url.get_secret_value() for url in self.rpc_urls]

    def storage_options(self) -> dict[str, Any]:
        """fsspec/s3fs options for ``storage_uri``."""
        if not self.storage_uri.startswith("s3://"):
            return {}
        options: dict[str, Any] = {}
        client_kwargs: dict[str, Any] = {}
        if self.s3_endpoint_url:
            client_kwargs["endpoint_url"] = self.s3_endpoint_url
        if self.s3_region:
            client_kwargs["region_name"] = self.s3_region
        if client_kwargs:
            options["client_kwargs"] = client_kwargs
        return options

    def public_dict(self) -> dict[str, Any]:
        """Every setting with secrets redacted: safe to print or log."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name == "rpc_urls":
                value = [redact_url(v.get_secret_value()) for v in value]
            elif name == "webhook_urls":  # secret also on loopback: the path is the token
                value = [redact_secret_url(v.get_secret_value()) for v in value]
            elif isinstance(value, SecretStr):
                value = "***" if value.get_secret_value() else ""
            elif name == "database_url":
                value = redact_url(value)
            elif isinstance(value, Path):
                value = str(value)
            out[name] = value
        return out


def _explain(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        name = ".".join(str(part) for part in item.get("loc", ())) or "settings"
        field = name.split(".")[0]
        env_name = f"{ENV_PREFIX}{field.upper()}"
        message = item.get("msg", "invalid value")
        if item.get("type") == "extra_forbidden":
            message = "unknown setting"
        lines.append(f"{env_name}: {message}")
    return "; ".join(lines)


def load_settings(**overrides: Any) -> Settings:
    """Build settings, turning a validation failure into a :class:`SettingsError` that names the setting."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise SettingsError(f"invalid settings: {_explain(error)}") from None
    except SettingsError:
        raise
    except (ValueError, OSError) as error:  # a broken config file
        raise SettingsError(f"invalid settings: {error}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings, read once. Tests that change the environment call ``get_settings.cache_clear()``."""
    return load_settings()
