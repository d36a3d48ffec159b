"""Every setting of the studio in one place: its environment variable, default and help.

Only ``Settings.from_env`` reads the environment (plus an optional ``.env`` file).
Values are validated at load time and a bad one stops the app with a sentence
naming the variable. Secrets (``OPENROUTER_API_KEY``) never appear in ``repr``.
No gradio imports, no I/O at import time.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Mapping

from .backends.hosts import HostSpec, parse_hosts
from .errors import ConfigError, InvalidInput
from .model_id import ModelId


def _setting(env: str, default, help: str, *, secret: bool = False, holds_keys: bool = False):
    """``holds_keys``: the value may hold ``key=SECRET`` (host lists): not in ``repr``, and
    shown with its keys masked (``mask_keys``)."""
    return field(default=default, metadata={"env": env, "help": help, "secret": secret,
                                            "holds_keys": holds_keys},
                 repr=not (secret or holds_keys))


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
                                "Ollama server, same meaning as for the ollama CLI; several "
                                "as a comma-separated list of [name=]address [weight=N] "
                                "(docs/deploy.md, 'Several Ollama hosts').", holds_keys=True)
    comfyui_url: str = _setting("COMFYUI_URL", "http://127.0.0.1:8188",
                                "ComfyUI server; several as a comma-separated list of "
                                "[name=]http://box:8188 [weight=N]: each image prompt goes to "
                                "one that has what it needs, the least busy (docs/deploy.md, "
                                "'Several ComfyUI hosts').", holds_keys=True)
    openai_servers: str = _setting("STUDIO_OPENAI_SERVERS", "",
                                   "OpenAI-compatible local servers (llama.cpp's llama-server, "
                                   "vLLM, LM Studio, SGLang), comma-separated "
                                   "[name=]http://box:8080/v1 [weight=N] [key=SECRET]; their "
                                   "models appear as local:<name> (empty = none).",
                                   holds_keys=True)
    health_interval: float = _setting("STUDIO_HEALTH_INTERVAL", 10.0,
                                      "Seconds between health checks of each host when "
                                      "OLLAMA_HOST or COMFYUI_URL lists several, and of the "
                                      "servers in STUDIO_OPENAI_SERVERS.")
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
                                  "Ollama model picked when a chat starts, e.g. llama3.2 (empty = the "
                                  "first local one; a paid cloud model is never picked for you).")
    title_model: str = _setting("STUDIO_TITLE_MODEL", "",
                                "Small Ollama model that titles each new chat after its first "
                                "reply, e.g. llama3.2:1b (empty = titles are the question's "
                                "first words).")
    request_timeout: float = _setting("STUDIO_REQUEST_TIMEOUT", 300.0,
                                      "Seconds to wait for a backend before giving up.")
    max_message_chars: int = _setting("STUDIO_MAX_MESSAGE_CHARS", 2_000_000,
                                      "Longest chat message accepted, in characters.")
    max_page_sessions: int = _setting("STUDIO_MAX_PAGE_SESSIONS", 500,
                                      "Open pages whose state the server keeps (about 0.6 MB "
                                      "each); past this the least recently used is forgotten.")
    stream_interval: float = _setting("STUDIO_STREAM_INTERVAL", 0.125,
                                      "Seconds between UI updates once a reply streams "
                                      "steadily; the first words show at once and the first "
                                      "second is finer (from 0.04 s).")
    budget_daily_usd: float = _setting("STUDIO_BUDGET_DAILY_USD", 0.0,
                                       "Cloud spending cap per day, all users together, in USD "
                                       "(0 = no cap).")
    budget_monthly_usd: float = _setting("STUDIO_BUDGET_MONTHLY_USD", 0.0,
                                         "Cloud spending cap per calendar month, all users "
                                         "together, in USD (0 = no cap).")
    budget_user_daily_usd: float = _setting("STUDIO_BUDGET_USER_DAILY_USD", 0.0,
                                            "Cloud spending cap per day for each user, in USD "
                                            "(0 = no cap).")
    budget_user_monthly_usd: float = _setting("STUDIO_BUDGET_USER_MONTHLY_USD", 0.0,
                                              "Cloud spending cap per calendar month for each "
                                              "user, in USD (0 = no cap).")
    energy_price_kwh: float = _setting("STUDIO_ENERGY_PRICE_KWH", 0.30,
                                       "Electricity price in USD per kWh, for the energy cost "
                                       "of local generation.")
    gpu_watts: float = _setting("STUDIO_GPU_WATTS", 250.0,
                                "GPU power draw assumed while generating, in watts, when NVML "
                                "can't measure it.")
    fallbacks: str = _setting("STUDIO_FALLBACKS", "",
                              "Models to try when one can't answer: 'model=fallback[,fallback…]' "
                              "entries separated by ';', e.g. ollama:llama3.2:latest="
                              "openrouter:openai/gpt-4o-mini (empty = no fallbacks).")
    comfyui_models_dir: str = _setting("COMFYUI_MODELS_DIR", "",
                                       "ComfyUI's 'models' folder, when the studio can write to "
                                       "it (a shared volume in docker compose); empty = model "
                                       "downloads and file deletes are off.")
    gpu_policy: str = _setting("STUDIO_GPU_POLICY", "automatic",
                               "When an image job or a chat won't fit in GPU memory: 'off' "
                               "(do nothing), 'ask' (propose), 'automatic' (unload idle Ollama "
                               "models / ask ComfyUI to free its models).")
    vram_per_family: str = _setting("STUDIO_VRAM_PER_FAMILY", "",
                                    "GPU memory one image job needs, per workflow family, e.g. "
                                    "'sdxl=9, flux=14 GiB' (numbers are GiB; empty = built-in "
                                    "estimates: sd15 4, sdxl 8, flux 12).")
    gpu_poll_seconds: float = _setting("STUDIO_GPU_POLL_SECONDS", 3.0,
                                       "Seconds between GPU panel updates on the Models tab.")
    output_retention_days: int = _setting("STUDIO_OUTPUT_RETENTION_DAYS", 0,
                                          "Generated outputs older than this many days are "
                                          "offered for deletion (0 = keep forever; favourites "
                                          "always stay).")
    output_retention_gb: float = _setting("STUDIO_OUTPUT_RETENTION_GB", 0.0,
                                          "Generated outputs beyond this many GB, oldest first, "
                                          "are offered for deletion (0 = no limit; favourites "
                                          "always stay).")
    unused_model_days: int = _setting("STUDIO_UNUSED_MODEL_DAYS", 30,
                                      "The Models tab reports models unused for this many days.")
    image_inflight: int = _setting("STUDIO_IMAGE_INFLIGHT", 1,
                                   "Image prompts the studio keeps in each ComfyUI host's "
                                   "queue at once (times its weight). 1 = users' jobs take "
                                   "strict turns; 2 keeps the GPU busy between images.")
    max_input_megapixels: float = _setting("STUDIO_MAX_INPUT_MEGAPIXELS", 16.0,
                                           "Largest input image accepted by the Images tab, in "
                                           "megapixels.")
    limit_chat_per_minute: int = _setting("STUDIO_LIMIT_CHAT_PER_MINUTE", 0,
                                          "Chat messages (send, retry, edit) one user may send "
                                          "per minute (0 = no limit; admins are not limited).")
    limit_tokens_per_day: int = _setting("STUDIO_LIMIT_TOKENS_PER_DAY", 0,
                                         "Tokens (prompt + reply) one user's chats may use per "
                                         "day (0 = no limit; admins are not limited).")
    limit_images_per_hour: int = _setting("STUDIO_LIMIT_IMAGES_PER_HOUR", 0,
                                          "Images one user may ask for per hour (0 = no limit; "
                                          "admins are not limited).")
    limit_concurrent_replies: int = _setting("STUDIO_LIMIT_CONCURRENT_REPLIES", 0,
                                             "Chat replies one user may have being written at "
                                             "once (0 = no limit; admins are not limited).")
    download_allow_hosts: str = _setting("STUDIO_DOWNLOAD_ALLOW_HOSTS", "",
                                         "Hosts (names, IPs or CIDR ranges, comma-separated) "
                                         "that model downloads may fetch from although they "
                                         "are private or local, e.g. your NAS; every other "
                                         "link must lead to a public address.")
    max_upload_mb: float = _setting("STUDIO_MAX_UPLOAD_MB", 50.0,
                                    "Largest file a page may upload (chat attachments, input "
                                    "images, workflows), in MB.")
    no_auth: bool = _setting("STUDIO_NO_AUTH", False,
                             "Run without sign-in even when reachable from other machines "
                             "(bind other than 127.0.0.1, or a share link). Anyone who reaches "
                             "the port can then read every chat and delete models; the page "
                             "says so in a banner.")
    session_days: float = _setting("STUDIO_SESSION_DAYS", 30.0,
                                   "Days a sign-in lasts on a device before asking again.")
    audit_days: float = _setting("STUDIO_AUDIT_DAYS", 90.0,
                                 "Days the audit log (sign-ins, admin actions) is kept.")
    trusted_proxies: str = _setting("STUDIO_TRUSTED_PROXIES", "127.0.0.1,::1",
                                    "Addresses of reverse proxies (Caddy) whose X-Forwarded-For "
                                    "and X-Forwarded-Proto are believed: the client's address "
                                    "and HTTPS (Secure cookies) come from them.")
    allowed_origins: str = _setting("STUDIO_ALLOWED_ORIGINS", "",
                                    "Other web origins allowed to send requests to the studio, "
                                    "comma-separated (e.g. https://ai.example.com when the "
                                    "proxy rewrites the Host header); requests from any other "
                                    "site are refused.")
    cookie_domain: str = _setting("STUDIO_COOKIE_DOMAIN", "",
                                  "Domain of the sign-in cookie, e.g. example.com when the studio "
                                  "is ai.example.com and Caddy lets admins into ComfyUI at "
                                  "comfyui.example.com (the cookie must reach both); empty = "
                                  "the studio's own host only.")
    metrics_token: str = _setting("STUDIO_METRICS_TOKEN", "",
                                  "Bearer token Prometheus (/metrics) and dashboards "
                                  "(/status.json) must send; empty = they are open without "
                                  "sign-in and answer 403 once sign-in is on.", secret=True)
    backup_dir: str = _setting("STUDIO_BACKUP_DIR", "",
                               "Folder for scheduled backups of the data folder (database, "
                               "uploads, outputs, exports); empty = no scheduled backups. "
                               "`studio backup DEST` makes one by hand.")
    backup_every_hours: float = _setting("STUDIO_BACKUP_EVERY_HOURS", 24.0,
                                         "Hours between scheduled backups into "
                                         "STUDIO_BACKUP_DIR.")
    backup_keep: int = _setting("STUDIO_BACKUP_KEEP", 7,
                                "Scheduled backups kept in STUDIO_BACKUP_DIR; older ones are "
                                "deleted.")

    def __post_init__(self) -> None:
        self.fallback_chains  # noqa: B018 - a malformed STUDIO_FALLBACKS stops the app at load

    @property
    def fallback_chains(self) -> dict[str, tuple[str, ...]]:
        """STUDIO_FALLBACKS as {model id: fallback ids in order}; raises ConfigError.

        >>> Settings(fallbacks="ollama:a=openrouter:x/y, ollama:b ; openrouter:x/y=ollama:a").fallback_chains
        {'ollama:a': ('openrouter:x/y', 'ollama:b'), 'openrouter:x/y': ('ollama:a',)}
        """
        chains: dict[str, tuple[str, ...]] = {}
        shape = ("must look like 'ollama:llama3.2:latest=openrouter:openai/gpt-4o-mini' (a model "
                 "id, '=', then fallback ids separated by commas; entries separated by ';')")
        for entry in (e.strip() for e in self.fallbacks.replace("\n", ";").split(";")):
            if not entry:
                continue
            source, eq, rest = entry.partition("=")
            targets = [t.strip() for t in rest.split(",") if t.strip()]
            if not eq or "=" in rest or not source.strip() or not targets:
                raise ConfigError(f"STUDIO_FALLBACKS entry {entry!r} {shape}.")
            for model_id in (source.strip(), *targets):
                try:
                    ModelId.known(model_id)
                    bad = any(c.isspace() for c in model_id)
                except InvalidInput:
                    bad = True
                if bad:
                    raise ConfigError(f"STUDIO_FALLBACKS: {model_id!r} is not a model id; ids "
                                      "start with 'ollama:' or 'openrouter:' (e.g. "
                                      "'ollama:llama3.2:latest', 'openrouter:openai/gpt-4o-mini').")
            if source.strip() in chains:
                raise ConfigError(f"STUDIO_FALLBACKS names {source.strip()!r} twice; "
                                  "list all its fallbacks in one entry, separated by commas.")
            chains[source.strip()] = tuple(targets)
        return chains

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, dotenv_path: str | None = ".env"
                 ) -> "Settings":
        """Build settings from ``env`` (default ``os.environ``) over an optional .env file.

        Raises ConfigError with a sentence naming the variable when a value is invalid.
        """
        values: dict[str, str] = {}
        if dotenv_path and os.path.isfile(dotenv_path):
            values.update(_read_dotenv(dotenv_path))
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
        if not re.match(r"^https?://", self.openrouter_base_url):
            raise ConfigError("OPENROUTER_BASE_URL must start with http:// or https:// "
                              f"(got {self.openrouter_base_url!r}).")
        for hosts, env in ((self.ollama_hosts, "OLLAMA_HOST"), (self.comfyui_hosts, "COMFYUI_URL")):
            if not hosts:
                raise ConfigError(f"{env} names no host; give at least one address.")
        self.openai_server_hosts  # noqa: B018 - parsed now, so a bad entry stops the start
        if not self.health_interval > 0:
            raise ConfigError("STUDIO_HEALTH_INTERVAL must be more than 0 seconds "
                              f"(got {self.health_interval:g}).")
        if not (0 < self.port < 65536):
            raise ConfigError(f"GRADIO_SERVER_PORT must be between 1 and 65535 (got {self.port}).")
        if not re.fullmatch(r"#[0-9a-fA-F]{6}", self.accent_color):
            raise ConfigError(f"STUDIO_ACCENT_COLOR must look like #rrggbb (got {self.accent_color!r}).")
        if self.cookie_domain and not re.fullmatch(r"\.?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+",
                                                   self.cookie_domain):
            raise ConfigError("STUDIO_COOKIE_DOMAIN must be a domain name such as example.com, "
                              f"with no scheme, port or path (got {self.cookie_domain!r}).")
        if self.backup_every_hours <= 0:
            raise ConfigError("STUDIO_BACKUP_EVERY_HOURS must be more than 0 (got "
                              f"{self.backup_every_hours:g}); leave STUDIO_BACKUP_DIR empty to "
                              "turn scheduled backups off.")
        if self.backup_keep < 1:
            raise ConfigError(f"STUDIO_BACKUP_KEEP must be at least 1 (got {self.backup_keep}).")
        if self.title_model.split(":", 1)[0] in ("openrouter",):
            raise ConfigError("STUDIO_TITLE_MODEL must be a local Ollama model such as "
                              f"llama3.2:1b (got {self.title_model!r}): titles never go to "
                              "the cloud.")
        if self.max_page_sessions < 1:
            raise ConfigError("STUDIO_MAX_PAGE_SESSIONS must be at least 1 "
                              f"(got {self.max_page_sessions}).")

    @property
    def ollama_hosts(self) -> tuple[HostSpec, ...]:
        """OLLAMA_HOST's hosts, each address normalised the way the ollama CLI does."""
        return parse_hosts("OLLAMA_HOST", self.ollama_host, normalise=normalize_ollama_host)

    @property
    def comfyui_hosts(self) -> tuple[HostSpec, ...]:
        return parse_hosts("COMFYUI_URL", self.comfyui_url)

    @property
    def openai_server_hosts(self) -> tuple[HostSpec, ...]:
        return parse_hosts("STUDIO_OPENAI_SERVERS", self.openai_servers)

    @property
    def comfyui_first_url(self) -> str:
        """The first ComfyUI host's URL (``services.comfyui``'s)."""
        return self.comfyui_hosts[0].url

    @property
    def ollama_url(self) -> str:
        """The first Ollama host's URL (scheme and port 11434 added, as the ollama CLI does)."""
        return self.ollama_hosts[0].url

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


def _read_dotenv(path: str) -> dict[str, str]:
    """The variables a ``.env`` file sets; ConfigError naming the file when it can't be read."""
    from dotenv import dotenv_values

    try:
        return {k: v for k, v in dotenv_values(path).items() if v is not None}
    except UnicodeDecodeError as err:  # python-dotenv reads UTF-8 only
        raise ConfigError(f"The settings file {path} is not UTF-8 text (byte {err.start} "
                          "can't be read).", hint="Save it as UTF-8.") from err
    except OSError as err:
        raise ConfigError(f"The settings file {path} can't be read: {err.strerror}.") from err


_KIND_WORDS = {bool: "true or false", int: "a whole number", float: "a number"}


def _convert(env: str, raw: str, kind: type):
    """``raw`` as a setting of type ``kind``. Numbers must be finite and not negative: no
    setting means anything below 0, and nan or inf would only fail later, far from here."""
    try:
        if kind is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind is int:
            number = int(raw)
        elif kind is float:
            number = float(raw)
            if not math.isfinite(number):
                raise ValueError(raw)
        else:
            return raw
    except ValueError:
        raise ConfigError(f"{env} must be {_KIND_WORDS[kind]} (got {raw!r}).") from None
    if number < 0:
        raise ConfigError(f"{env} must be 0 or more (got {raw!r}).")
    return number
