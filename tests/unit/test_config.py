"""Settings: a TOML file, then the environment, then explicit overrides; every bad value is a
ConfigError naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from mintleaf_server.config import ConfigError, Limits, Settings, load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mintleaf.toml"
    path.write_text(text)
    return path


def test_defaults_without_file_or_environment():
    s = load_settings(env={})
    assert s == Settings(data_dir=s.data_dir)
    assert s.listen == "127.0.0.1:50051"
    assert s.embedded_database and s.embedded_redis
    assert s.worker_enabled is True
    assert s.limits == Limits()
    assert s.data_dir.name == "mintleaf"


def test_file_values_are_coerced(tmp_path):
    path = write(
        tmp_path,
        """
[server]
listen = "0.0.0.0:6000"
data_dir = "~/mintleaf-data"
database_url = "postgresql://u@db/mintleaf"
redis_url = "redis://cache:6379/0"
worker_enabled = false
worker_concurrency = 8
shutdown_grace_seconds = 2
pool_min_size = 1
pool_max_size = 4
key_secret = "k"
api_call_allow_networks = ["10.0.0.0/8", "127.0.0.1/32"]
log_level = "debug"

[limits]
max_page_size = 50
default_page_size = 10

[models]
default = "gpt-4o-mini"

[integrations.brave]
base_url = "http://127.0.0.1:9"
""",
    )
    s = load_settings(path, env={})
    assert s.listen == "0.0.0.0:6000"
    assert s.data_dir == Path("~/mintleaf-data").expanduser()
    assert s.database_url == "postgresql://u@db/mintleaf" and not s.embedded_database
    assert s.redis_url == "redis://cache:6379/0" and not s.embedded_redis
    assert s.worker_enabled is False
    assert (s.worker_concurrency, s.pool_min_size, s.pool_max_size) == (8, 1, 4)
    assert s.shutdown_grace_seconds == 2.0 and isinstance(s.shutdown_grace_seconds, float)
    assert s.key_secret == "k"
    assert s.api_call_allow_networks == ("10.0.0.0/8", "127.0.0.1/32")
    assert s.log_level == "DEBUG"  # logging only knows upper-case names
    assert (s.limits.max_page_size, s.limits.default_page_size) == (50, 10)
    assert s.limits.max_message_bytes == Limits().max_message_bytes
    assert s.models == {"default": "gpt-4o-mini"}
    assert s.integrations == {"brave": {"base_url": "http://127.0.0.1:9"}}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", True),
        ("true", True),
        ("YES", True),
        (" on ", True),
        ("0", False),
        ("False", False),
        ("no", False),
        ("off", False),
    ],
)
def test_boolean_spellings(text, expected):
    assert load_settings(env={"MINTLEAF_WORKER": text}).worker_enabled is expected


def test_environment_wins_over_the_file_and_overrides_win_over_both(tmp_path):
    path = write(tmp_path, '[server]\nlisten = "127.0.0.1:1000"\nworker_concurrency = 3\n')
    env = {"MINTLEAF_LISTEN": "127.0.0.1:2000", "MINTLEAF_WORKER_CONCURRENCY": ""}
    s = load_settings(path, env=env)
    assert s.listen == "127.0.0.1:2000"
    assert s.worker_concurrency == 3  # an empty variable is unset
    assert load_settings(path, env=env, listen="127.0.0.1:3000").listen == "127.0.0.1:3000"


def test_config_file_from_the_environment(tmp_path):
    path = write(tmp_path, '[server]\nlisten = "127.0.0.1:4242"\n')
    assert load_settings(env={"MINTLEAF_CONFIG": str(path)}).listen == "127.0.0.1:4242"


def test_every_environment_variable(tmp_path):
    env = {
        "MINTLEAF_LISTEN": "[::1]:7000",
        "MINTLEAF_DATA_DIR": str(tmp_path / "d"),
        "DATABASE_URL": "postgres://x@y/z",
        "REDIS_URL": "unix:///tmp/redis.sock",
        "MINTLEAF_WORKER": "off",
        "MINTLEAF_WORKER_CONCURRENCY": "5",
        "MINTLEAF_SHUTDOWN_GRACE_SECONDS": "0.5",
        "MINTLEAF_POOL_MIN_SIZE": "3",
        "MINTLEAF_POOL_MAX_SIZE": "3",
        "MINTLEAF_KEY_SECRET": "secret",
        "MINTLEAF_API_CALL_ALLOW_NETWORKS": "10.1.0.0/16, fd00::/8,",
        "MINTLEAF_LOG_LEVEL": "warning",
        "MINTLEAF_LIMIT_MAX_MESSAGE_BYTES": "1024",
        "MINTLEAF_LIMIT_MAX_PARALLELISM": "7",
    }
    s = load_settings(env=env)
    assert s.listen == "[::1]:7000"
    assert s.data_dir == tmp_path / "d"
    assert (s.database_url, s.redis_url) == ("postgres://x@y/z", "unix:///tmp/redis.sock")
    assert (s.worker_enabled, s.worker_concurrency, s.shutdown_grace_seconds) == (False, 5, 0.5)
    assert (s.pool_min_size, s.pool_max_size, s.key_secret) == (3, 3, "secret")
    assert s.api_call_allow_networks == ("10.1.0.0/16", "fd00::/8")
    assert s.log_level == "WARNING"
    assert (s.limits.max_message_bytes, s.limits.max_parallelism) == (1024, 7)


def test_empty_database_url_in_the_file_means_embedded(tmp_path):
    path = write(tmp_path, '[server]\ndatabase_url = ""\n')
    assert load_settings(path, env={}).embedded_database


def test_whole_float_is_an_integer(tmp_path):
    path = write(tmp_path, "[limits]\nmax_fan_out = 20.0\n")
    assert load_settings(path, env={}).limits.max_fan_out == 20


# -- every error ------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist") as info:
        load_settings(tmp_path / "nope.toml", env={})
    assert "nope.toml" in str(info.value)


def test_invalid_toml(tmp_path):
    path = write(tmp_path, "[server\nlisten = ")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_settings(path, env={})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nlisen = 'x'\n", "unknown setting 'server.lisen'"),
        ("[server]\nlimits = 3\n", "unknown setting 'server.limits'"),
        ("[server]\nmodels = {}\n", "unknown setting 'server.models'"),
        ("[limits]\nmax_pages = 3\n", "unknown setting 'limits.max_pages'"),
        ("[srever]\nlisten = 'x'\n", "unknown setting 'srever'"),
        ("listen = '127.0.0.1:1'\n", "unknown setting 'listen'"),
        ("server = 5\n", "setting 'server' must be a table"),
        ("limits = 'big'\n", "setting 'limits' must be a table"),
        ("models = 'gpt'\n", "setting 'models' must be a table"),
        ("embeddings = [1]\n", "setting 'embeddings' must be a table"),
        ("integrations = 2\n", "setting 'integrations' must be a table"),
        (
            "[server]\nworker_enabled = 'maybe'\n",
            "setting 'server.worker_enabled': 'maybe' is not valid (expected true or false)",
        ),
        ("[server]\nworker_concurrency = 'many'\n", "setting 'server.worker_concurrency'"),
        (
            "[server]\nworker_concurrency = true\n",
            "setting 'server.worker_concurrency': True is not valid (expected an integer)",
        ),
        ("[server]\npool_max_size = 2.5\n", "setting 'server.pool_max_size'"),
        ("[server]\nshutdown_grace_seconds = 'soon'\n", "setting 'server.shutdown_grace_seconds'"),
        ("[server]\napi_call_allow_networks = 5\n", "setting 'server.api_call_allow_networks'"),
        ("[limits]\nmax_fan_out = 'lots'\n", "setting 'limits.max_fan_out'"),
        ("[limits]\nmax_fan_out = 1.5\n", "setting 'limits.max_fan_out'"),
        ("[limits]\nmax_fan_out = 0\n", "setting 'limits.max_fan_out' must be positive, got 0"),
        ("[limits]\nmax_page_size = -5\n", "setting 'limits.max_page_size' must be positive"),
        (
            "[limits]\nmax_page_size = 10\ndefault_page_size = 20\n",
            "'limits.default_page_size' must not exceed",
        ),
        ("[server]\nlisten = 'nohost'\n", "setting 'listen': 'nohost' is not host:port"),
        ("[server]\nlisten = ':50051'\n", "setting 'listen'"),
        ("[server]\nlisten = '127.0.0.1:70000'\n", "setting 'listen'"),
        ("[server]\nlisten = '127.0.0.1:http'\n", "setting 'listen'"),
        ("[server]\ndatabase_url = 'mysql://x'\n", "setting 'DATABASE_URL' must start with postgresql://"),
        ("[server]\nredis_url = 'http://x'\n", "setting 'REDIS_URL' must start with redis://"),
        ("[server]\nworker_concurrency = 0\n", "setting 'worker_concurrency' must be at least 1"),
        ("[server]\nshutdown_grace_seconds = -1\n", "setting 'shutdown_grace_seconds' must not be negative"),
        ("[server]\npool_min_size = 0\n", "settings 'pool_min_size'/'pool_max_size'"),
        ("[server]\npool_min_size = 5\npool_max_size = 4\n", "settings 'pool_min_size'/'pool_max_size'"),
        (
            "[server]\napi_call_allow_networks = ['10.0.0.0/33']\n",
            "setting 'api_call_allow_networks': '10.0.0.0/33' is not a CIDR network",
        ),
        (
            "[server]\nlog_level = 'chatty'\n",
            "setting 'log_level': 'CHATTY' is not DEBUG, INFO, WARNING or ERROR",
        ),
    ],
)
def test_bad_file_values(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"MINTLEAF_WORKER": "maybe"},
            "setting 'MINTLEAF_WORKER': 'maybe' is not valid (expected true or false)",
        ),
        ({"MINTLEAF_WORKER_CONCURRENCY": "ten"}, "setting 'MINTLEAF_WORKER_CONCURRENCY'"),
        ({"MINTLEAF_SHUTDOWN_GRACE_SECONDS": "later"}, "setting 'MINTLEAF_SHUTDOWN_GRACE_SECONDS'"),
        ({"MINTLEAF_POOL_MIN_SIZE": "1.5"}, "setting 'MINTLEAF_POOL_MIN_SIZE'"),
        ({"MINTLEAF_LIMIT_MAX_PAGE_SIZE": "big"}, "setting 'MINTLEAF_LIMIT_MAX_PAGE_SIZE'"),
        ({"MINTLEAF_LIMIT_MAX_PAGE_SIZE": "0"}, "setting 'limits.max_page_size' must be positive"),
        ({"MINTLEAF_LISTEN": "localhost"}, "setting 'listen'"),
        ({"DATABASE_URL": "sqlite:///x"}, "setting 'DATABASE_URL'"),
        ({"REDIS_URL": "memcached://x"}, "setting 'REDIS_URL'"),
        ({"MINTLEAF_API_CALL_ALLOW_NETWORKS": "10.0.0.0/8,not-a-net"}, "'not-a-net' is not a CIDR network"),
        ({"MINTLEAF_LOG_LEVEL": "TRACE"}, "setting 'log_level'"),
        ({"MINTLEAF_CONFIG": "/nonexistent/mintleaf.toml"}, "does not exist"),
    ],
)
def test_bad_environment_values(env, message):
    with pytest.raises(ConfigError) as info:
        load_settings(env=env)
    assert message in str(info.value)
