"""Every setting of the studio in one place: its environment variable, default and help.

Only ``Settings.from_env`` reads the environment (plus an optional ``.env`` file).
Values are validated at load time and a bad one stops the app with a sentence
naming the variable. Secrets (``OPENROUTER_API_KEY``) never appear in ``repr``.
No gradio imports, no I/O at import time.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Mapping

from .errors import ConfigError


def _setting(env: str, default, help: str, *, secret: bool = False):
    return field(default=default, metadata={"env": env, "help": help, "secret": secret},
                 repr=not secret)


def default_data_dir() -> str:
    """Per-user data directory: $XDG_DATA_HOME/hephaestus-studio or ~/.local/share/..."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "hephaestus-studio")


@dataclass(frozen=True)
class Settings:
    host: str = _setting("GRADIO_SERVER_NAME", "127.0.0.1",
                         "Address to bind. 0.0.0.0 serves every device on the LAN.")
    port: int = _setting("GRADIO_SERVER_PORT", 8189, "Port of the web UI.")
    share: bool = _setting("STUDIO_SHARE", False,
                           "Also open a public Gradio share link (needs internet).")
    data_dir: str = _setting("STUDIO_DATA_DIR", "",
                             "Where the SQLite file, exports and images live "
                             "(default ~/.local/share/hephaestus-studio).")
    ollama_host: str = _setting("OLLAMA_HOST", "http://127.0.0.1:11434",
                                "Ollama server, same meaning as for the ollama CLI.")
    comfyui_url: str = _setting("COMFYUI_URL", "http://127.0.0.1:8188", "ComfyUI server.")
    openrouter_api_key: str = _setting("OPENROUTER_API_KEY", "",
                                       "OpenRouter key for cloud models; empty = cloud off.",
                                       secret=True)
    openrouter_base_url: str = _setting("OPENROUTER_BASE_URL", "https://openrouter.ai/api/v1",
                                        "OpenAI-compatible base URL (OpenRouter or a proxy).")
    openrouter_referer: str = _setting("OPENROUTER_REFERER", "https://github.com/hephaestus-studio",
                                       "HTTP-Referer attribution header sent to OpenRouter.")
    openrouter_title: str = _setting("OPENROUTER_TITLE", "Hephaestus Studio",
                                     "X-Title attribution header sent to OpenRouter.")
    brand_name: str = _setting("STUDIO_BRAND_NAME", "Hephaestus Studio", "Name in the header.")
    brand_logo: str = _setting("STUDIO_BRAND_LOGO", "assets/logo.svg",
                               "Logo file shown in the header (path, relative to the app).")
    accent_color: str = _setting("STUDIO_ACCENT_COLOR", "#e8590c", "Accent colour (#rrggbb).")
    default_model: str = _setting("STUDIO_DEFAULT_MODEL", "",
                                  "Model picked when a chat starts (empty = first listed).")
    request_timeout: float = _setting("STUDIO_REQUEST_TIMEOUT", 300.0,
                                      "Seconds to wait for a backend before giving up.")
    max_message_chars: int = _setting("STUDIO_MAX_MESSAGE_CHARS", 2_000_000,
                                      "Longest chat message accepted, in characters.")
    stream_interval: float = _setting("STUDIO_STREAM_INTERVAL", 0.05,
                                      "Seconds between UI updates while a reply streams.")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, dotenv_path: str | None = ".env"
                 ) -> "Settings":
        """Build settings from ``env`` (default ``os.environ``) over an optional .env file.

        Raises ConfigError with a sentence naming the variable when a value is invalid.
        """
        values: dict[str, str] = {}
        if dotenv_path and os.path.isfile(dotenv_path):
            from dotenv import dotenv_values

            values.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
        values.update(os.environ if env is None else env)
        kwargs = {}
        for f in fields(cls):
            raw = values.get(f.metadata["env"])
            if raw is None or raw == "":
                continue
            kwargs[f.name] = _convert(f.metadata["env"], raw.strip(), type(f.default))
        settings = cls(**kwargs)
        settings.validate()
        return settings

    def validate(self) -> None:
        for name in ("ollama_host", "comfyui_url", "openrouter_base_url"):
            value = getattr(self, name)
            env = _env_name(name)
            if name == "ollama_host":
                continue  # the ollama client accepts bare host[:port]; see ollama_url
            if not re.match(r"^https?://", value):
                raise ConfigError(f"{env} must start with http:// or https:// (got {value!r}).")
        if not (0 < self.port < 65536):
            raise ConfigError(f"GRADIO_SERVER_PORT must be between 1 and 65535 (got {self.port}).")
        if not re.fullmatch(r"#[0-9a-fA-F]{6}", self.accent_color):
            raise ConfigError(f"STUDIO_ACCENT_COLOR must look like #rrggbb (got {self.accent_color!r}).")

    @property
    def ollama_url(self) -> str:
        """OLLAMA_HOST normalised the way the ollama CLI does: scheme and port 11434 added."""
        return normalize_ollama_host(self.ollama_host)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir or default_data_dir()).expanduser()

    @property
    def db_path(self) -> Path:
        return self.data_path / "studio.db"

    @property
    def cloud_enabled(self) -> bool:
        return bool(self.openrouter_api_key)


def normalize_ollama_host(host: str) -> str:
    """'0.0.0.0' -> 'http://0.0.0.0:11434'; 'example:1234' -> 'http://example:1234'.

    >>> normalize_ollama_host("127.0.0.1")
    'http://127.0.0.1:11434'
    >>> normalize_ollama_host("https://box:443/")
    'https://box:443'
    """
    host = host.strip().rstrip("/")
    scheme = "http"
    if "://" in host:
        scheme, host = host.split("://", 1)
    if ":" not in host.rsplit("]", 1)[-1]:
        host = f"{host}:{443 if scheme == 'https' else 11434}"
    return f"{scheme}://{host}"


def settings_table() -> list[tuple[str, str, str]]:
    """(variable, default, help) for each setting; the README's table is checked against it."""
    rows = []
    for f in fields(Settings):
        default = f.default if f.default not in ("",) else "(empty)"
        rows.append((f.metadata["env"], str(default), f.metadata["help"]))
    return rows


def _env_name(field_name: str) -> str:
    return next(f.metadata["env"] for f in fields(Settings) if f.name == field_name)


def _convert(env: str, raw: str, kind: type):
    try:
        if kind is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
    except ValueError:
        raise ConfigError(f"{env} must be a {kind.__name__} (got {raw!r}).") from None
    return raw
