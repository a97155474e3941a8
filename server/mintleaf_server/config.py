"""Settings: one object, read from an optional TOML file and the environment (environment wins).

Every field is documented in docs/configuration.md. Bad values fail at start with a message that
names the setting and what is wrong (ConfigError), never later at first use."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

__all__ = ["ConfigError", "Limits", "Settings", "load_settings"]


class ConfigError(Exception):
    """A setting is missing or malformed; the message names it."""


@dataclass(frozen=True)
class Limits:
    """Request and engine limits (all overridable under [limits] or MINTLEAF_LIMIT_<NAME>)."""

    max_message_bytes: int = 16 * 1024 * 1024
    max_page_size: int = 1000
    default_page_size: int = 100
    max_steps_per_execution: int = 100_000
    max_fan_out: int = 10_000
    max_transition_payload_bytes: int = 4 * 1024 * 1024
    max_nesting_depth: int = 16
    max_yield_depth: int = 64
    max_parallelism: int = 1000
    # Requests per second per developer (a token bucket in each server process; 0 = no limit) and
    # the bucket's size (0 = twice the rate): over it, RESOURCE_EXHAUSTED with a retry delay.
    rate_per_second: int = 0
    rate_burst: int = 0


@dataclass(frozen=True)
class Settings:
    """Everything the server reads at start."""

    listen: str = "127.0.0.1:50051"
    data_dir: Path = field(default_factory=lambda: Path(platformdirs.user_data_dir("mintleaf")))
    database_url: str | None = None
    redis_url: str | None = None
    worker_enabled: bool = True
    worker_concurrency: int = 64
    shutdown_grace_seconds: float = 10.0
    pool_min_size: int = 2
    pool_max_size: int = 16
    # How long a request waits for a database connection before it fails UNAVAILABLE (a database
    # that is down, or every connection busy): short, so clients retry rather than hang.
    pool_timeout_seconds: float = 5.0
    key_secret: str | None = None  # HMAC key for API-key hashes; generated in the data dir if unset
    limits: Limits = field(default_factory=Limits)
    models: dict[str, Any] = field(default_factory=dict)
    embeddings: dict[str, Any] = field(default_factory=dict)
    integrations: dict[str, Any] = field(default_factory=dict)
    # api_call tools may reach these networks even if private (CIDRs); everything private is
    # refused otherwise.
    api_call_allow_networks: tuple[str, ...] = ()
    log_level: str = "INFO"
    # metrics: host:port of the Prometheus /metrics endpoint (docs/operations.md); "" = off
    metrics_listen: str = ""
    # TLS for the gRPC port: a PEM certificate (chain) and its private key; both or neither.
    tls_cert_file: str = ""
    tls_key_file: str = ""

    @property
    def embedded_database(self) -> bool:
        return not self.database_url

    @property
    def embedded_redis(self) -> bool:
        return not self.redis_url


_ENV = {
    "listen": "MINTLEAF_LISTEN",
    "data_dir": "MINTLEAF_DATA_DIR",
    "database_url": "DATABASE_URL",
    "redis_url": "REDIS_URL",
    "worker_enabled": "MINTLEAF_WORKER",
    "worker_concurrency": "MINTLEAF_WORKER_CONCURRENCY",
    "shutdown_grace_seconds": "MINTLEAF_SHUTDOWN_GRACE_SECONDS",
    "pool_min_size": "MINTLEAF_POOL_MIN_SIZE",
    "pool_max_size": "MINTLEAF_POOL_MAX_SIZE",
    "pool_timeout_seconds": "MINTLEAF_POOL_TIMEOUT_SECONDS",
    "key_secret": "MINTLEAF_KEY_SECRET",
    "api_call_allow_networks": "MINTLEAF_API_CALL_ALLOW_NETWORKS",
    "log_level": "MINTLEAF_LOG_LEVEL",
    "metrics_listen": "MINTLEAF_METRICS_LISTEN",
    "tls_cert_file": "MINTLEAF_TLS_CERT_FILE",
    "tls_key_file": "MINTLEAF_TLS_KEY_FILE",
}


_MAY_BE_ZERO = ("rate_per_second", "rate_burst")  # 0 means "no limit" / "the default"

_SECTIONS = ("server", "limits", "models", "embeddings", "integrations")


def _coerce(name: str, value: Any, target: Any) -> Any:
    """Converts a file or environment value to the field's type, or raises ConfigError naming it."""
    try:
        if target is bool or target == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if target in (int, "int"):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError("expected an integer")
            return int(value)
        if target in (float, "float"):
            return float(value)
        if target in (Path, "Path"):
            return Path(str(value)).expanduser()
        if target in ("tuple[str, ...]",):
            if isinstance(value, str):
                return tuple(v.strip() for v in value.split(",") if v.strip())
            return tuple(str(v) for v in value)
        if target in ("str | None", "str"):
            return None if value in (None, "") and target == "str | None" else str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name!r}: {value!r} is not valid ({exc})") from exc
    return value


def load_settings(
    config_file: str | Path | None = None, env: dict[str, str] | None = None, **overrides: Any
) -> Settings:
    """Reads MINTLEAF_CONFIG (or `config_file`), then the environment, then explicit overrides."""
    env = dict(os.environ if env is None else env)
    raw: dict[str, Any] = {}
    path = config_file or env.get("MINTLEAF_CONFIG")
    if path:
        p = Path(path).expanduser()
        try:
            raw = tomllib.loads(p.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {str(p)!r} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {str(p)!r} is not valid TOML: {exc}") from exc
    for key in raw:
        if key not in _SECTIONS:
            raise ConfigError(f"unknown setting {key!r} (known sections: {', '.join(_SECTIONS)})")
    for section in ("server", "limits"):
        if not isinstance(raw.get(section, {}), dict):
            raise ConfigError(f"setting '{section}' must be a table")
    server = dict(raw.get("server", {}))
    known = {f.name: f for f in dataclasses.fields(Settings)}
    for key in server:
        if key not in known or key in ("limits", "models", "embeddings", "integrations"):
            raise ConfigError(f"unknown setting 'server.{key}'")
    values: dict[str, Any] = {k: _coerce(f"server.{k}", v, known[k].type) for k, v in server.items()}
    for name, var in _ENV.items():
        if var in env and env[var] != "":
            values[name] = _coerce(var, env[var], known[name].type)
    limit_fields = {f.name: f for f in dataclasses.fields(Limits)}
    limits: dict[str, Any] = {}
    for key, v in dict(raw.get("limits", {})).items():
        if key not in limit_fields:
            raise ConfigError(f"unknown setting 'limits.{key}'")
        limits[key] = _coerce(f"limits.{key}", v, "int")
    for key in limit_fields:
        var = f"MINTLEAF_LIMIT_{key.upper()}"
        if env.get(var):
            limits[key] = _coerce(var, env[var], "int")
    for key, v in limits.items():
        if v < 0 or (v == 0 and key not in _MAY_BE_ZERO):
            raise ConfigError(f"setting 'limits.{key}' must be positive, got {v}")
    values["limits"] = Limits(**limits)
    for section in ("models", "embeddings", "integrations"):
        if section in raw:
            if not isinstance(raw[section], dict):
                raise ConfigError(f"setting '{section}' must be a table")
            values[section] = raw[section]
    values.update(overrides)
    if isinstance(values.get("log_level"), str):
        values["log_level"] = values["log_level"].upper()  # logging accepts upper-case names only
    settings = Settings(**values)
    _validate(settings)
    return settings


def _validate(s: Settings) -> None:
    host, sep, port = s.listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"setting 'listen': {s.listen!r} is not host:port")
    if bool(s.tls_cert_file) != bool(s.tls_key_file):
        raise ConfigError("settings 'tls_cert_file' and 'tls_key_file' go together: set both or neither")
    for name in ("tls_cert_file", "tls_key_file"):
        path = getattr(s, name)
        if path and not Path(path).is_file():
            raise ConfigError(f"setting '{name}': {path!r} is not a readable file")
    if s.metrics_listen:  # metrics: the same shape as `listen`
        host, sep, port = s.metrics_listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ConfigError(f"setting 'metrics_listen': {s.metrics_listen!r} is not host:port")
    if s.database_url and not s.database_url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("setting 'DATABASE_URL' must start with postgresql://")
    if s.redis_url and not s.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("setting 'REDIS_URL' must start with redis://, rediss:// or unix://")
    if s.worker_concurrency < 1:
        raise ConfigError("setting 'worker_concurrency' must be at least 1")
    if s.shutdown_grace_seconds < 0:
        raise ConfigError("setting 'shutdown_grace_seconds' must not be negative")
    if s.limits.default_page_size > s.limits.max_page_size:
        raise ConfigError("setting 'limits.default_page_size' must not exceed 'limits.max_page_size'")
    if s.pool_min_size < 1 or s.pool_max_size < s.pool_min_size:
        raise ConfigError("settings 'pool_min_size'/'pool_max_size' must satisfy 1 <= min <= max")
    if s.pool_timeout_seconds <= 0:
        raise ConfigError("setting 'pool_timeout_seconds' must be positive")
    for net in s.api_call_allow_networks:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError as exc:
            raise ConfigError(f"setting 'api_call_allow_networks': {net!r} is not a CIDR network") from exc
    if s.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"setting 'log_level': {s.log_level!r} is not DEBUG, INFO, WARNING or ERROR")
