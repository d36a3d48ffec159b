"""Settings: environment parsing, validation messages, secrets kept out of repr."""

import re
from pathlib import Path

import pytest

from studio.config import Settings, normalize_ollama_host, settings_table
from studio.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_config_defaults_match_the_port_plan():
    s = Settings.from_env({}, dotenv_path=None)
    assert (s.host, s.port) == ("127.0.0.1", 8189)
    assert s.ollama_url == "http://127.0.0.1:11434"
    assert s.comfyui_url == "http://127.0.0.1:8188"
    assert s.data_path.name == "hephaestus-studio"


def test_config_reads_gradio_server_variables():
    s = Settings.from_env({"GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": "9000"},
                          dotenv_path=None)
    assert (s.host, s.port) == ("0.0.0.0", 9000)


@pytest.mark.parametrize("env, message", [
    ({"COMFYUI_URL": "localhost:8188"}, "COMFYUI_URL: the address in entry 'localhost:8188' must "
                                         "start with http:// or https://"),
    ({"OLLAMA_HOST": "a=http://x:1 weight=0"}, "OLLAMA_HOST: weight in entry"),
    ({"OLLAMA_HOST": " , "}, "OLLAMA_HOST names no host"),
    ({"STUDIO_HEALTH_INTERVAL": "0"}, "STUDIO_HEALTH_INTERVAL must be more than 0"),
    ({"GRADIO_SERVER_PORT": "eighty"}, "GRADIO_SERVER_PORT must be a whole number"),
    ({"GRADIO_SERVER_PORT": "70000"}, "GRADIO_SERVER_PORT must be between 1 and 65535"),
    ({"STUDIO_SHARE": "maybe"}, "STUDIO_SHARE must be true or false"),
    ({"STUDIO_MAX_PAGE_SESSIONS": "0"}, "STUDIO_MAX_PAGE_SESSIONS must be at least 1 (got 0)"),
    ({"STUDIO_ACCENT_COLOR": "orange"}, "STUDIO_ACCENT_COLOR must look like #rrggbb"),
    ({"STUDIO_COOKIE_DOMAIN": "https://example.com"}, "STUDIO_COOKIE_DOMAIN must be a domain"),
    ({"STUDIO_REQUEST_TIMEOUT": "nan"}, "STUDIO_REQUEST_TIMEOUT must be a number (got 'nan')"),
    ({"STUDIO_BUDGET_DAILY_USD": "inf"}, "STUDIO_BUDGET_DAILY_USD must be a number"),
    ({"STUDIO_REQUEST_TIMEOUT": "-5"}, "STUDIO_REQUEST_TIMEOUT must be 0 or more (got '-5')"),
    ({"STUDIO_LIMIT_CHAT_PER_MINUTE": "-1"}, "STUDIO_LIMIT_CHAT_PER_MINUTE must be 0 or more"),
])
def test_config_invalid_value_names_the_variable(env, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        Settings.from_env(env, dotenv_path=None)


def test_config_dotenv_file_is_read_and_environment_wins(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text('OLLAMA_HOST="gpu-box:11434"\nexport STUDIO_BRAND_NAME=Forge # name\n')
    s = Settings.from_env({"STUDIO_BRAND_NAME": "Env wins"}, dotenv_path=str(dotenv))
    assert s.ollama_url == "http://gpu-box:11434"
    assert s.brand_name == "Env wins"


def test_config_dotenv_file_that_is_not_utf8_is_named(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_bytes(b"STUDIO_BRAND_NAME=Caf\xe9\n")  # saved as Latin-1 by an old editor
    with pytest.raises(ConfigError, match=re.escape(f"The settings file {dotenv} is not UTF-8")):
        Settings.from_env({}, dotenv_path=str(dotenv))


def test_config_secret_is_not_in_repr():
    s = Settings.from_env({"OPENROUTER_API_KEY": "sk-or-v1-secret"}, dotenv_path=None)
    assert "sk-or-v1-secret" not in repr(s)
    assert s.cloud_enabled


@pytest.mark.parametrize("raw, url", [
    ("127.0.0.1", "http://127.0.0.1:11434"),
    ("http://box:1234/", "http://box:1234"),
    ("https://box", "https://box:443"),
    ("[::1]", "http://[::1]:11434"),
])
def test_config_ollama_host_normalised_like_the_cli(raw, url):
    assert normalize_ollama_host(raw) == url


def test_config_every_setting_is_documented_in_readme_and_env_example():
    readme = (ROOT / "README.md").read_text()
    example = (ROOT / ".env.example").read_text()
    for env, _default, _help in settings_table():
        assert f"`{env}`" in readme, f"{env} missing from the README's configuration table"
        assert env in example, f"{env} missing from .env.example"
