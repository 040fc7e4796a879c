"""Settings: defaults, sources, validation that names the setting, secrets kept out of output."""

from pathlib import Path

import pytest

from kolray.config import SettingsError, load_settings


def test_defaults_live_under_the_data_dir(data_dir: Path) -> None:
    settings = load_settings()
    assert settings.database_url == f"sqlite:///{data_dir / 'kolray.db'}"
    assert settings.storage_uri == str(data_dir / "store")
    assert settings.is_sqlite
    assert settings.storage_options() == {}


def test_environment_overrides(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOLRAY_DATABASE_URL", "postgresql+psycopg://u:p@db.example/kolray")
    monkeypatch.setenv("KOLRAY_STORAGE_URI", "s3://bucket/prefix")
    monkeypatch.setenv("KOLRAY_S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("KOLRAY_RPC_URLS", "https://a.example/?api-key=k1, https://b.example/v2/k2")
    monkeypatch.setenv("KOLRAY_RPC_RPS", "25.5")
    settings = load_settings()
    assert not settings.is_sqlite
    assert settings.rpc_url_values == ["https://a.example/?api-key=k1", "https://b.example/v2/k2"]
    assert settings.rpc_rps == 25.5
    assert settings.storage_options() == {"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}


def test_rpc_urls_accept_a_json_list(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOLRAY_RPC_URLS", '["http://127.0.0.1:8899", "http://127.0.0.1:8900"]')
    assert load_settings().rpc_url_values == ["http://127.0.0.1:8899", "http://127.0.0.1:8900"]


def test_config_file_is_read_and_env_wins(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "kolray.toml"
    config.write_text('rpc_rps = 3.0\ntracker_actors = 4\nlog_level = "debug"\n')
    monkeypatch.setenv("KOLRAY_CONFIG", str(config))
    monkeypatch.setenv("KOLRAY_TRACKER_ACTORS", "8")
    settings = load_settings()
    assert settings.rpc_rps == 3.0
    assert settings.tracker_actors == 8
    assert settings.log_level == "DEBUG"


def test_yaml_config_file(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "kolray.yaml"
    config.write_text("poll_interval_s: 5\n")
    monkeypatch.setenv("KOLRAY_CONFIG", str(config))
    assert load_settings().poll_interval_s == 5


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("KOLRAY_RPC_RPS", "-1", "KOLRAY_RPC_RPS"),
        ("KOLRAY_RPC_RPS", "fast", "KOLRAY_RPC_RPS"),
        ("KOLRAY_TRACKER_ACTORS", "0", "KOLRAY_TRACKER_ACTORS"),
        ("KOLRAY_RPC_URLS", "ftp://x.example", "KOLRAY_RPC_URLS"),
        ("KOLRAY_DATABASE_URL", "mysql://x/y", "KOLRAY_DATABASE_URL"),
        ("KOLRAY_STORAGE_URI", "gs://bucket/x", "KOLRAY_STORAGE_URI"),
        ("KOLRAY_LOG_LEVEL", "loud", "KOLRAY_LOG_LEVEL"),
        ("KOLRAY_SERVE_PORT", "70000", "KOLRAY_SERVE_PORT"),
    ],
)
def test_bad_values_fail_naming_the_setting(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, named: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=named):
        load_settings()


def test_unknown_key_in_config_file_is_refused(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "kolray.toml"
    config.write_text("rpc_rsp = 3\n")
    monkeypatch.setenv("KOLRAY_CONFIG", str(config))
    with pytest.raises(SettingsError, match="KOLRAY_RPC_RSP: unknown setting"):
        load_settings()


def test_missing_config_file_is_an_error(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOLRAY_CONFIG", "/nonexistent/kolray.toml")
    with pytest.raises(SettingsError, match="KOLRAY_CONFIG"):
        load_settings()


def test_bad_url_error_does_not_echo_the_key(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOLRAY_RPC_URLS", "https://ok.example/?api-key=SECRET123456,notaurl")
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert "SECRET123456" not in str(error.value)


@pytest.mark.parametrize("variable", ["KOLRAY_RPC_URLS", "KOLRAY_WEBHOOK_URLS"])
@pytest.mark.parametrize(
    "value",
    [
        "https//hooks.example.com/services/T0/B0/Tok3nSecretValue",  # the colon forgotten
        "https:/hooks.example.com/services/T0/B0/Tok3nSecretValue",
        "hooks.example.com/services/T0/B0/Tok3nSecretValue",
        "ftp://hooks.example.com/services/T0/B0/Tok3nSecretValue",
        "ftp://127.0.0.1:9/hook/Tok3nSecretValue",  # loopback: its path would be kept if shown
        '["https://ok.example/a", "https//hooks.example.com/hook/Tok3nSecretValue"]',
        "https://ok.example/a, https//hooks.example.com/hook/Tok3nSecretValue",
    ],
)
def test_a_malformed_url_setting_is_named_not_echoed(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """Webhook URLs carry their token in the path, RPC URLs their key: a malformed entry is
    pointed at by setting and position, and no part of it that could be a secret is shown."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as error:
        load_settings()
    message = str(error.value)
    assert "Tok3nSecretValue" not in message and "services" not in message and "hook/" not in message
    assert variable in message and "not an http(s) URL" in message
    assert f"entry {2 if 'ok.example' in value else 1} of {2 if 'ok.example' in value else 1}" in message


def test_public_dict_masks_a_loopback_webhooks_path(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOLRAY_WEBHOOK_URLS", "http://127.0.0.1:9/hook/Tok3n")
    assert load_settings().public_dict()["webhook_urls"] == ["http://127.0.0.1:9/***"]


def test_public_dict_redacts_secrets(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOLRAY_RPC_URLS", "https://mainnet.helius-rpc.com/?api-key=0b1c2d3e-aaaa-bbbb")
    monkeypatch.setenv("KOLRAY_DATABASE_URL", "postgresql+psycopg://kol:hunter2@db.example:5432/kolray")
    monkeypatch.setenv("KOLRAY_API_KEY", "adminkey")
    shown = str(load_settings().public_dict())
    assert "0b1c2d3e" not in shown and "hunter2" not in shown and "adminkey" not in shown
    assert "mainnet.helius-rpc.com" in shown and "db.example" in shown
